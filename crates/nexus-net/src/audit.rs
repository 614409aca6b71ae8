//! The audit record of one connection attempt, and where records go.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How a connection reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// An HTTP `CONNECT` through the proxy variables.
    Connect,
    /// A plain HTTP request through the proxy variables.
    Http,
    /// SOCKS5 through `ALL_PROXY`.
    Socks5,
    /// A connection that ignored the proxy variables, captured in the namespace.
    Transparent,
    /// A name lookup through the sandbox's resolver (recorded when refused).
    Dns,
}

impl Via {
    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Http => "http",
            Self::Socks5 => "socks5",
            Self::Transparent => "transparent",
            Self::Dns => "dns",
        }
    }
}

/// What became of a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The policy allowed it (whether or not the target answered).
    Allowed,
    /// The policy refused it.
    Denied,
}

impl Decision {
    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// One connection attempt, written when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// When it was attempted.
    pub started_at: SystemTime,
    /// The sandbox's id.
    pub sandbox: String,
    /// How it reached the proxy.
    pub via: Via,
    /// The target's name, when one is known (from the request, SNI, `Host`, or the
    /// resolver's answers).
    pub host: Option<String>,
    /// The target port.
    pub port: u16,
    /// The address dialled (or the one asked for, when refused before dialling).
    pub address: Option<SocketAddr>,
    /// Allowed or denied.
    pub decision: Decision,
    /// The rule that decided, or why no rule did.
    pub rule: String,
    /// What went wrong after the decision (the target refused, timed out...), if anything.
    pub error: Option<String>,
    /// Bytes from the sandbox to the target.
    pub bytes_up: u64,
    /// Bytes from the target to the sandbox.
    pub bytes_down: u64,
    /// From the attempt to the end of the connection.
    pub duration: Duration,
}

/// Where connection records go (the daemon's network log).
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Takes one record; must not block.
    fn record(&self, record: ConnectionRecord);
}
