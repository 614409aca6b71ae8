//! Connections that ignored the proxy variables, captured by the namespace's rules.
//!
//! The target's name comes, in order, from the resolver's synthetic address (the
//! sandbox dialled the address its resolver gave out for that name, so protocols where
//! the server speaks first, such as SSH, work), from the TLS SNI or the HTTP `Host`
//! header of the client's first bytes, or, failing both, the address alone decides. A
//! name is always resolved and checked here: an address is never taken on trust with it. A refusal closes the connection with a reset (an HTTP client
//! gets a 403 naming the rule instead), so nothing inside waits for a timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::front::denial_message;
use super::open::{Attempt, Opened};
use super::relay::{relay, reset};
use super::{SandboxNet, is_synthetic};
use crate::audit::Via;
use crate::capture::original_destination;
use crate::netns::CAPTURE_PORT;
use crate::policy::Verdict;
use crate::target::{Host, Target};
use crate::wire::Sniff;
use crate::wire::http::{bad_gateway_response, forbidden_response, origin_target, request_head};
use crate::wire::tls::client_hello_sni;

/// The most bytes watched for a TLS or HTTP opening.
const MAX_SNIFF: usize = 16 * 1024;

/// What the client's first bytes said.
enum Opening {
    Tls(String),
    Http(Target),
    Unknown,
}

pub(super) async fn serve(net: &SandboxNet, mut stream: TcpStream) {
    let original = match original_destination(&stream) {
        Ok(addr) => addr,
        Err(e) => {
            tracing::debug!(sandbox_id = %net.id, error = %e, "captured connection without a destination");
            return;
        }
    };
    if original.port() == CAPTURE_PORT && original.ip().is_loopback() {
        return; // dialled the capture port itself: nothing to forward to
    }
    let port = original.port();
    let synthetic = is_synthetic(original.ip());
    let (target, sniffed, opening) = match net.name_of(original.ip()) {
        Some(name) => (Target::new(Host::Name(name), port), Vec::new(), None),
        None if synthetic => {
            // An address the resolver never gave out (or forgot): nothing to go on.
            let attempt = Attempt::new(
                Via::Transparent,
                Target::new(Host::Ip(original.ip().to_canonical()), port),
            );
            let verdict = Verdict {
                allowed: false,
                rule: "address not handed out by the sandbox's resolver (look the name up again)"
                    .into(),
            };
            reset(stream);
            net.record(attempt.record(&net.id, &verdict, None, (0, 0)));
            return;
        }
        None => {
            let (sniffed, opening) = sniff(&mut stream, net.shared.config.sniff_timeout).await;
            let target = match &opening {
                Opening::Tls(name) => Target::new(Host::Name(name.clone()), port),
                Opening::Http(target) => Target::new(target.host.clone(), port),
                Opening::Unknown => Target::new(Host::Ip(original.ip().to_canonical()), port),
            };
            (target, sniffed, Some(opening))
        }
    };
    let is_http = matches!(opening, Some(Opening::Http(_)));
    let mut attempt = Attempt::new(Via::Transparent, target);
    if !synthetic {
        attempt.address = Some(SocketAddr::new(original.ip().to_canonical(), port));
    }
    match net.open(&mut attempt).await {
        Opened::Denied(verdict) => {
            if is_http {
                let _ = stream
                    .write_all(&forbidden_response(&denial_message(&attempt, &verdict)))
                    .await;
            } else {
                reset(stream);
            }
            net.record(attempt.record(&net.id, &verdict, None, (0, 0)));
        }
        Opened::Failed(verdict, error) => {
            if is_http {
                let _ = stream
                    .write_all(&bad_gateway_response(&format!(
                        "nexus proxy: cannot reach {}: {error}",
                        attempt.target
                    )))
                    .await;
            } else {
                reset(stream);
            }
            net.record(attempt.record(&net.id, &verdict, Some(error), (0, 0)));
        }
        Opened::Connected(verdict, mut upstream) => {
            if let Err(e) = upstream.write_all(&sniffed).await {
                net.record(attempt.record(&net.id, &verdict, Some(e.to_string()), (0, 0)));
                return;
            }
            let relayed = relay(stream, upstream, net.kill.subscribe()).await;
            net.record(attempt.record(
                &net.id,
                &verdict,
                relayed.error,
                (relayed.up + sniffed.len() as u64, relayed.down),
            ));
        }
    }
}

/// Reads the client's first bytes until they show a TLS ClientHello or an HTTP request
/// head, show neither, or `window` passes.
async fn sniff(stream: &mut TcpStream, window: Duration) -> (Vec<u8>, Opening) {
    let deadline = Instant::now() + window;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return (buf, Opening::Unknown),
        };
        buf.extend_from_slice(chunk.get(..read).unwrap_or_default());
        let tls = client_hello_sni(&buf);
        let http = request_head(&buf);
        match (tls, http) {
            (Sniff::Found(Some(name)), _) => return (buf, Opening::Tls(name)),
            (_, Sniff::Found(head)) => {
                let opening = origin_target(&head, 80).map_or(Opening::Unknown, Opening::Http);
                return (buf, opening);
            }
            (Sniff::NeedMore, _) | (_, Sniff::NeedMore) if buf.len() < MAX_SNIFF => {}
            _ => return (buf, Opening::Unknown),
        }
    }
}
