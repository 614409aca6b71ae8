//! Network egress on the wire: a sandbox's policy, changing it, and its network log.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a sandbox may reach: `host:port` rules. Deny wins; nothing is allowed by
/// default. Grammar: `name:port`, `*.name:port` (subdomains), `*:port`, `10.1.2.0/24:port`,
/// `[2001:db8::/32]:port`; port is a number, a range `8000-8100`, or `*`. Private,
/// loopback and link-local addresses are reached only through a rule naming their range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicyBody {
    /// Rules a connection must match.
    #[serde(default)]
    #[schema(example = json!(["pypi.org:443", "files.pythonhosted.org:443", "*.github.com:443"]))]
    pub allow: Vec<String>,
    /// Rules that refuse a connection whatever allows it.
    #[serde(default)]
    #[schema(example = json!(["169.254.0.0/16:*"]))]
    pub deny: Vec<String>,
}

/// A new network policy for a sandbox (replaces both lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNetworkRequest {
    /// Rules a connection must match.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Rules that refuse a connection whatever allows it.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Also cut the sandbox's open connections (otherwise only new ones follow the new
    /// policy).
    #[serde(default)]
    pub kill_existing: bool,
}

/// One connection attempt of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkLogEntry {
    /// Position in the daemon's log; pass it as `after` to read on.
    pub id: u64,
    /// When it was attempted, RFC 3339.
    pub time: String,
    /// The sandbox's id.
    pub sandbox_id: String,
    /// How it reached the proxy: `connect`, `http`, `socks5`, `transparent` or `dns`.
    pub via: String,
    /// The target's name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The target port.
    pub port: u16,
    /// The address dialled (or asked for, when refused before dialling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `allowed` or `denied`.
    pub decision: String,
    /// The rule that decided, or why no rule did.
    pub rule: String,
    /// What went wrong after the decision (target refused, timed out), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes from the sandbox to the target.
    pub bytes_up: u64,
    /// Bytes from the target to the sandbox.
    pub bytes_down: u64,
    /// From the attempt to the end of the connection, milliseconds.
    pub duration_ms: u64,
}

/// A page of a sandbox's network log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkLog {
    /// The entries.
    pub entries: Vec<NetworkLogEntry>,
}
