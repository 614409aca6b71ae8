//! The connection machinery behind [`super::AgentClient`]: the routing table of open
//! channels, the reader task that routes incoming frames to them (enforcing the output
//! credit the client granted), and the writer task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::codec::Framed;

use super::closed_error;
use crate::{
    AgentInfo, ConnectionError, ErrorCode, Frame, FrameCodec, FrameType, ProtoError, Response,
};

/// What the reader task hands to a channel.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(Frame),
    /// The connection ended; `Some` when the agent said why in an ERROR frame.
    Closed(Option<(ErrorCode, String)>),
}

/// The open channels of a connection, and whether it is closed.
#[derive(Debug, Default)]
struct Routes {
    channels: HashMap<u32, Route>,
    closed: Option<Option<(ErrorCode, String)>>,
}

/// Where a channel's frames go, and for output channels how many more output bytes the
/// agent may send: the client enforces the credit it granted, so a misbehaving agent
/// cannot make it buffer without bound.
#[derive(Debug)]
struct Route {
    tx: mpsc::UnboundedSender<Incoming>,
    allowance: Option<u64>,
}

impl Routes {
    fn close(&mut self, reason: Option<(ErrorCode, String)>) {
        if self.closed.is_none() {
            self.closed = Some(reason.clone());
        }
        for (_, route) in self.channels.drain() {
            let _ = route.tx.send(Incoming::Closed(reason.clone()));
        }
    }
}

/// The connection state every handle, channel and stream shares.
#[derive(Debug)]
pub(crate) struct Shared {
    out: mpsc::UnboundedSender<Frame>,
    routes: Arc<Mutex<Routes>>,
    next_channel: AtomicU32,
    reader: AbortHandle,
    pub(crate) info: AgentInfo,
    pub(crate) output_window: u32,
    pub(crate) file_window: u32,
}

impl Shared {
    /// Starts the reader and writer tasks on a handshaken connection.
    pub(crate) fn start<S>(
        framed: Framed<S, FrameCodec>,
        info: AgentInfo,
        window: u32,
        file_window: u32,
    ) -> Arc<Self>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, source) = framed.split();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (out, out_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(source, Arc::clone(&routes)));
        tokio::spawn(write_loop(sink, out_rx, Arc::clone(&routes)));
        Arc::new(Shared {
            out,
            routes,
            next_channel: AtomicU32::new(1),
            reader: reader.abort_handle(),
            info,
            output_window: window,
            file_window,
        })
    }

    /// Whether the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock_routes().closed.is_some()
    }

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Opens a channel with a fresh id.
    pub(crate) fn open(self: &Arc<Self>) -> Result<Channel, ProtoError> {
        self.open_with(None)
    }

    /// Opens a channel whose output the agent may send `credit` bytes of.
    pub(crate) fn open_output(self: &Arc<Self>, credit: u32) -> Result<Channel, ProtoError> {
        self.open_with(Some(u64::from(credit)))
    }

    fn open_with(self: &Arc<Self>, allowance: Option<u64>) -> Result<Channel, ProtoError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.lock_routes();
        if let Some(reason) = &routes.closed {
            return Err(closed_error(reason.clone()));
        }
        let id = loop {
            let id = self.next_channel.fetch_add(1, Ordering::Relaxed);
            if id != crate::CONTROL_CHANNEL && !routes.channels.contains_key(&id) {
                break id;
            }
        };
        routes.channels.insert(id, Route { tx, allowance });
        Ok(Channel {
            id,
            rx,
            shared: Arc::clone(self),
            finished: false,
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The writer ends by itself once `out` is dropped; the reader must be told.
        self.reader.abort();
    }
}

/// One open channel: its frames arrive on `rx`. Dropping it before its RESPONSE sends
/// CANCEL, so the agent stops working for nobody.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) id: u32,
    rx: mpsc::UnboundedReceiver<Incoming>,
    shared: Arc<Shared>,
    pub(crate) finished: bool,
}

impl Channel {
    /// Queues `frame` for the writer. A frame over the size limit is refused here: the
    /// writer could not encode it, and failing there would end the connection and every
    /// operation on it.
    pub(crate) fn send(&self, frame: Frame) -> Result<(), ProtoError> {
        let len = crate::frame::HEADER_LEN + frame.payload.len();
        if len > crate::MAX_FRAME_LEN {
            return Err(ProtoError::FrameTooLarge {
                len,
                max: crate::MAX_FRAME_LEN,
            });
        }
        self.shared.out.send(frame).map_err(|_| ProtoError::Closed)
    }

    pub(crate) async fn recv(&mut self) -> Result<Frame, ProtoError> {
        match self.rx.recv().await {
            Some(Incoming::Frame(frame)) => Ok(frame),
            Some(Incoming::Closed(reason)) => Err(closed_error(reason)),
            None => Err(ProtoError::Closed),
        }
    }

    /// Grants the agent `bytes` more output on this channel.
    pub(crate) fn grant(&self, bytes: u32) -> Result<(), ProtoError> {
        if let Some(Route {
            allowance: Some(allowance),
            ..
        }) = self.shared.lock_routes().channels.get_mut(&self.id)
        {
            *allowance += u64::from(bytes);
        }
        self.send(Frame::credit(self.id, bytes))
    }

    /// What every stream over a channel polls: nothing once the stream is `done`; the next
    /// incoming item; or, when the connection went away, [`ProtoError::Closed`] once (the
    /// stream is then done).
    pub(crate) fn poll_stream(
        &mut self,
        done: &mut bool,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Incoming, ProtoError>>> {
        use std::task::Poll;
        if *done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(incoming)) => Poll::Ready(Some(Ok(incoming))),
            Poll::Ready(None) => {
                *done = true;
                Poll::Ready(Some(Err(ProtoError::Closed)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Waits for the channel's RESPONSE (or PACKED answer), ignoring nothing else (a
    /// request channel carries no other frame).
    pub(crate) async fn response(&mut self) -> Result<Response, ProtoError> {
        let frame = self.recv().await?;
        if !frame.is_answer() {
            return Err(ProtoError::Protocol(format!(
                "expected a RESPONSE on channel {}, got a {:?} frame",
                self.id, frame.kind
            )));
        }
        self.finished = true;
        frame.response()
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.shared.lock_routes().channels.remove(&self.id);
        // An answer that already arrived ends the channel too (a reader of a file's
        // known length stops at its last byte, before the RESPONSE): the agent is done
        // with it, and a CANCEL would only wake it for nothing.
        while !self.finished {
            match self.rx.try_recv() {
                Ok(Incoming::Frame(frame)) if frame.is_answer() => self.finished = true,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if !self.finished {
            let _ = self
                .shared
                .out
                .send(Frame::new(FrameType::Cancel, self.id, Bytes::new()));
        }
    }
}

type Source<S> = futures::stream::SplitStream<Framed<S, FrameCodec>>;
type Sink<S> = futures::stream::SplitSink<Framed<S, FrameCodec>, Frame>;

/// Routes every frame to its channel until the connection ends, then closes all channels.
async fn read_loop<S>(mut source: Source<S>, routes: Arc<Mutex<Routes>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reason = loop {
        let frame = match source.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                tracing::warn!(error = %err, "agent connection failed");
                break None;
            }
            None => break None,
        };
        if frame.kind == FrameType::Error {
            let reason = match frame.parse::<ConnectionError>() {
                Ok(error) => (error.code, error.message),
                Err(err) => (ErrorCode::ProtocolError, err.to_string()),
            };
            tracing::warn!(code = %reason.0, message = %reason.1, "agent closed the connection");
            break Some(reason);
        }
        let mut routes = routes.lock().unwrap_or_else(|poison| poison.into_inner());
        // Frames for a channel the client gave up (late output after CANCEL) are dropped.
        let Some(route) = routes.channels.get_mut(&frame.channel) else {
            continue;
        };
        if let (FrameType::Stdout | FrameType::Stderr | FrameType::FileData, Some(allowance)) =
            (frame.kind, &mut route.allowance)
        {
            let len = frame.payload.len().saturating_sub(8) as u64;
            if len > *allowance {
                let message = format!(
                    "agent sent {len} output bytes on channel {} with {allowance} bytes of credit",
                    frame.channel
                );
                tracing::warn!("{message}");
                break Some((ErrorCode::ProtocolError, message));
            }
            *allowance -= len;
        }
        let _ = route.tx.send(Incoming::Frame(frame));
    };
    routes
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .close(reason);
}

/// Writes queued frames, flushing once the queue is empty, until every sender is gone.
async fn write_loop<S>(
    mut sink: Sink<S>,
    mut queue: mpsc::UnboundedReceiver<Frame>,
    routes: Arc<Mutex<Routes>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result: Result<(), ProtoError> = async {
        while let Some(frame) = queue.recv().await {
            sink.feed(frame).await?;
            while let Ok(frame) = queue.try_recv() {
                sink.feed(frame).await?;
            }
            sink.flush().await?;
        }
        sink.close().await
    }
    .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "writing to the agent failed");
        routes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .close(None);
    }
}
