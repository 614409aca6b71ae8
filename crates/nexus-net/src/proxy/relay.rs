//! Copying both ways between a sandbox's connection and its target, counting bytes,
//! until either side closes or a policy change cuts the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::splice::{self, Pipe};

/// Buffer per direction: large enough for loopback throughput in the GiB/s.
const BUFFER: usize = 256 * 1024;

/// Bytes moved, and why the relay ended early if it did.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    pub up: u64,
    pub down: u64,
    pub error: Option<String>,
}

/// Relays until both directions are done (with `splice`, see [`splice`]; through a
/// buffer when pipes cannot be had), or `kill` changes (a policy change with
/// `kill_existing`, or the sandbox detached).
pub(crate) async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    mut kill: watch::Receiver<u64>,
) -> Relayed {
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    if let (Ok(up_pipe), Ok(down_pipe)) = (Pipe::new(), Pipe::new()) {
        let error = tokio::select! {
            done = async {
                tokio::try_join!(
                    splice::one_way(&client, &upstream, &up_pipe, &up),
                    splice::one_way(&upstream, &client, &down_pipe, &down),
                )
            } => done.err().map(|e| e.to_string()),
            _ = kill.changed() => {
                reset(client);
                reset(upstream);
                Some("cut by a policy change".to_owned())
            }
        };
        return Relayed {
            up: up.load(Ordering::Relaxed),
            down: down.load(Ordering::Relaxed),
            error,
        };
    }
    // Out of descriptors for pipes: copy through memory instead.
    let mut client = Counted::new(client, up.clone());
    let mut upstream = Counted::new(upstream, down.clone());
    let error = tokio::select! {
        done = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER) => {
            done.err().map(|e| e.to_string())
        }
        _ = kill.changed() => {
            // A reset, not a clean close: a download cut short must not look complete.
            reset(client.inner);
            reset(upstream.inner);
            Some("cut by a policy change".to_owned())
        }
    };
    Relayed {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        error,
    }
}

/// Closes with a reset: the program on the other end sees "connection reset" at once.
pub(crate) fn reset(stream: TcpStream) {
    // A zero linger time makes close send a reset and return at once (no blocking).
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger);
    drop(stream);
}

/// A stream that counts the bytes read from it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    fn new(inner: S, read: Arc<AtomicU64>) -> Self {
        Self { inner, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
