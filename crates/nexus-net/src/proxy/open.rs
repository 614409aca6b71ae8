//! Deciding on a target and dialling it: the one path every way into the proxy shares,
//! so the policy is applied the same whatever the sandbox's program did.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::net::TcpStream;

use super::SandboxNet;
use crate::audit::{ConnectionRecord, Decision, Via};
use crate::policy::Verdict;
use crate::target::{Host, Target};

/// What became of an attempt to reach a target.
#[derive(Debug)]
pub(crate) enum Opened {
    /// The policy refused it.
    Denied(Verdict),
    /// Allowed, but the target could not be reached.
    Failed(Verdict, String),
    /// Connected.
    Connected(Verdict, TcpStream),
}

/// One attempt, from its start to its record.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub via: Via,
    pub target: Target,
    pub started: Instant,
    pub started_at: std::time::SystemTime,
    pub address: Option<SocketAddr>,
}

impl Attempt {
    pub fn new(via: Via, target: Target) -> Self {
        Self {
            via,
            target,
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            address: None,
        }
    }

    /// The record of this attempt.
    pub fn record(
        &self,
        sandbox: &str,
        verdict: &Verdict,
        error: Option<String>,
        bytes: (u64, u64),
    ) -> ConnectionRecord {
        ConnectionRecord {
            started_at: self.started_at,
            sandbox: sandbox.to_owned(),
            via: self.via,
            host: self.target.host.name().map(str::to_owned),
            port: self.target.port,
            address: self.address.or(match self.target.host {
                Host::Ip(ip) => Some(SocketAddr::new(ip, self.target.port)),
                Host::Name(_) => None,
            }),
            decision: if verdict.allowed {
                Decision::Allowed
            } else {
                Decision::Denied
            },
            rule: verdict.rule.clone(),
            error,
            bytes_up: bytes.0,
            bytes_down: bytes.1,
            duration: self.started.elapsed(),
        }
    }
}

impl SandboxNet {
    /// Decides on the attempt's target and, when allowed, dials it. A name is resolved
    /// here, and every address it resolves to is checked again before it is dialled.
    pub(crate) async fn open(&self, attempt: &mut Attempt) -> Opened {
        let policy = self.policy();
        let port = attempt.target.port;
        let verdict = policy.decide(&attempt.target.host, port);
        if !verdict.allowed {
            return Opened::Denied(verdict);
        }
        let candidates: Vec<IpAddr> = match &attempt.target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => match self.shared.resolver.resolve(name).await {
                Ok(addrs) => addrs,
                Err(e) => return Opened::Failed(verdict, e.to_string()),
            },
        };
        let mut refusal = None;
        let mut last_error = None;
        for ip in candidates {
            let dialled = match attempt.target.host {
                Host::Ip(_) => verdict.clone(),
                Host::Name(_) => policy.decide_dialled(ip, port, &verdict),
            };
            if !dialled.allowed {
                attempt.address.get_or_insert(SocketAddr::new(ip, port));
                refusal.get_or_insert(dialled);
                continue;
            }
            let address = SocketAddr::new(ip, port);
            attempt.address = Some(address);
            match tokio::time::timeout(
                self.shared.config.connect_timeout,
                TcpStream::connect(address),
            )
            .await
            {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Opened::Connected(dialled, stream);
                }
                Ok(Err(e)) => last_error = Some((dialled, format!("{address}: {e}"))),
                Err(_) => {
                    last_error = Some((
                        dialled,
                        format!(
                            "{address}: no answer within {:?}",
                            self.shared.config.connect_timeout
                        ),
                    ));
                }
            }
        }
        match (last_error, refusal) {
            (Some((verdict, error)), _) => Opened::Failed(verdict, error),
            (None, Some(refusal)) => Opened::Denied(refusal),
            (None, None) => Opened::Failed(verdict, "the name has no address".into()),
        }
    }
}
