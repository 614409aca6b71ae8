//! The proxy's front door: what the proxy variables point at. The first byte tells
//! SOCKS5 (`0x05`) from HTTP; HTTP is either `CONNECT host:port` (a tunnel, for HTTPS)
//! or a plain request in absolute form (`GET http://host/path`), forwarded with one
//! request per upstream connection.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::SandboxNet;
use super::open::{Attempt, Opened};
use super::relay::relay;
use crate::audit::Via;
use crate::policy::Verdict;
use crate::wire::Sniff;
use crate::wire::http::{
    CONNECT_ESTABLISHED, ProxyRequest, bad_gateway_response, bad_request_response,
    forbidden_response, proxy_target, request_head,
};
use crate::wire::socks5::{self, Reply};

/// Largest request head read before giving up.
const MAX_HEAD: usize = 64 * 1024;

pub(super) async fn serve(net: &SandboxNet, stream: TcpStream) {
    let timeout = net.shared.config.handshake_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] == 5 {
        socks(net, stream).await;
    } else {
        http(net, stream).await;
    }
}

async fn socks(net: &SandboxNet, mut stream: TcpStream) {
    let timeout = net.shared.config.handshake_timeout;
    let target = match tokio::time::timeout(timeout, socks5::accept(&mut stream)).await {
        Ok(Ok(target)) => target,
        Ok(Err(e)) => {
            tracing::debug!(sandbox_id = %net.id, error = %e, "bad SOCKS5 handshake");
            return;
        }
        Err(_) => return,
    };
    let mut attempt = Attempt::new(Via::Socks5, target);
    match net.open(&mut attempt).await {
        Opened::Denied(verdict) => {
            let _ = socks5::reply(&mut stream, Reply::NotAllowed).await;
            net.record(attempt.record(&net.id, &verdict, None, (0, 0)));
        }
        Opened::Failed(verdict, error) => {
            let _ = socks5::reply(&mut stream, Reply::HostUnreachable).await;
            net.record(attempt.record(&net.id, &verdict, Some(error), (0, 0)));
        }
        Opened::Connected(verdict, upstream) => {
            if socks5::reply(&mut stream, Reply::Succeeded).await.is_err() {
                net.record(attempt.record(
                    &net.id,
                    &verdict,
                    Some("the client left".into()),
                    (0, 0),
                ));
                return;
            }
            let relayed = relay(stream, upstream, net.kill.subscribe()).await;
            net.record(attempt.record(
                &net.id,
                &verdict,
                relayed.error,
                (relayed.up, relayed.down),
            ));
        }
    }
}

async fn http(net: &SandboxNet, mut stream: TcpStream) {
    let timeout = net.shared.config.handshake_timeout;
    let mut buf = Vec::with_capacity(4096);
    let head = loop {
        let mut chunk = [0u8; 4096];
        let read = match tokio::time::timeout(timeout, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..read).unwrap_or_default());
        match request_head(&buf) {
            Sniff::Found(head) => break head,
            Sniff::NeedMore if buf.len() < MAX_HEAD => {}
            Sniff::NeedMore | Sniff::NotThis => {
                let reply = bad_request_response(
                    "nexus proxy: not an HTTP proxy request (use CONNECT, an absolute http:// URL, or SOCKS5)",
                );
                let _ = stream.write_all(&reply).await;
                return;
            }
        }
    };
    let rest = buf.get(head.head_len..).unwrap_or_default().to_vec();
    let (via, target, preamble, established) = match proxy_target(&head) {
        Ok(ProxyRequest::Connect(target)) => {
            (Via::Connect, target, rest, Some(CONNECT_ESTABLISHED))
        }
        Ok(ProxyRequest::Forward {
            target,
            origin_head,
        }) => {
            let mut preamble = origin_head;
            preamble.extend_from_slice(&rest);
            (Via::Http, target, preamble, None)
        }
        Err(e) => {
            let _ = stream
                .write_all(&bad_request_response(&format!("nexus proxy: {e}")))
                .await;
            return;
        }
    };
    let mut attempt = Attempt::new(via, target);
    match net.open(&mut attempt).await {
        Opened::Denied(verdict) => {
            let _ = stream
                .write_all(&forbidden_response(&denial_message(&attempt, &verdict)))
                .await;
            net.record(attempt.record(&net.id, &verdict, None, (0, 0)));
        }
        Opened::Failed(verdict, error) => {
            let _ = stream
                .write_all(&bad_gateway_response(&format!(
                    "nexus proxy: cannot reach {}: {error}",
                    attempt.target
                )))
                .await;
            net.record(attempt.record(&net.id, &verdict, Some(error), (0, 0)));
        }
        Opened::Connected(verdict, mut upstream) => {
            let handshake = async {
                if let Some(reply) = established {
                    stream.write_all(reply).await?;
                }
                upstream.write_all(&preamble).await
            };
            if let Err(e) = handshake.await {
                net.record(attempt.record(&net.id, &verdict, Some(e.to_string()), (0, 0)));
                return;
            }
            let relayed = relay(stream, upstream, net.kill.subscribe()).await;
            net.record(attempt.record(
                &net.id,
                &verdict,
                relayed.error,
                (relayed.up + preamble.len() as u64, relayed.down),
            ));
        }
    }
}

/// The body of a refusal: the target and the rule, so a person or a model can act.
pub(super) fn denial_message(attempt: &Attempt, verdict: &Verdict) -> String {
    format!(
        "nexus: connection to {} denied by the sandbox's network policy: {}",
        attempt.target, verdict.rule
    )
}
