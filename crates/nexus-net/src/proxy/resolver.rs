//! The sandbox's resolver: DNS over UDP on the namespace's loopback (every query to port
//! 53 anywhere is redirected here). It answers only for names some allow rule matches
//! and that exist on the host, each with its synthetic address (see `NameTable`); it
//! refuses the rest, and records the refusals.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::SandboxNet;
use super::open::Attempt;
use crate::audit::Via;
use crate::dns::{self, QueryKind, Refusal};
use crate::target::{Host, Target};

/// Queries answered at once per sandbox; more wait for a free slot.
const CONCURRENT_QUERIES: usize = 64;

pub(super) async fn serve(net: Arc<SandboxNet>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_QUERIES));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let packet = buf.get(..len).unwrap_or_default().to_vec();
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (net, socket) = (net.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(reply) = respond(&net, &packet).await {
                let _ = socket.send_to(&reply, peer).await;
            }
            drop(slot);
        });
    }
}

async fn respond(net: &SandboxNet, packet: &[u8]) -> Option<Vec<u8>> {
    let question = match dns::parse_query(packet) {
        Ok(question) => question,
        Err(e) => return e.refusal.and_then(|code| dns::refuse(packet, code)),
    };
    let policy = net.policy();
    let verdict = policy.may_resolve(&question.name);
    if !verdict.allowed {
        let attempt = Attempt::new(Via::Dns, Target::new(Host::Name(question.name), 53));
        net.record(attempt.record(&net.id, &verdict, None, (0, 0)));
        return dns::refuse(packet, Refusal::Refused);
    }
    if question.kind != QueryKind::A {
        // Names are reached through synthetic IPv4 addresses only: no AAAA, no others.
        return dns::answer(packet, &[], net.shared.config.dns_ttl).ok();
    }
    // Only names that exist get an address, so a typo fails as it would anywhere.
    match net.shared.resolver.resolve(&question.name).await {
        Ok(_) => {}
        Err(crate::resolve::ResolveError::Timeout { .. }) => {
            return dns::refuse(packet, Refusal::ServFail);
        }
        // getaddrinfo does not tell "no such name" from other failures.
        Err(_) => return dns::refuse(packet, Refusal::NxDomain),
    }
    let address = IpAddr::V4(net.address_for(&question.name));
    dns::answer(packet, &[address], net.shared.config.dns_ttl).ok()
}
