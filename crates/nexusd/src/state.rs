//! `AppState`: what every handler can reach. Cheap to clone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nexus_api::DaemonPaths;
use nexus_core::Store;
use nexus_core::service::SandboxService;

use crate::http::metrics::Metrics;
use crate::token::ApiToken;

/// Shared state of the running daemon.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The state store.
    pub store: Arc<dyn Store>,
    /// The bearer token every protected route checks.
    pub token: Arc<ApiToken>,
    /// Prometheus registry.
    pub metrics: Arc<Metrics>,
    /// The sandbox lifecycle.
    pub sandboxes: Arc<SandboxService>,
    /// Facts about this process for `/v1/status`.
    pub info: Arc<DaemonInfo>,
    /// Every connection attempt of every sandbox.
    pub netlog: Arc<crate::netlog::NetLog>,
    /// The MCP endpoint's settings and scoped tokens.
    pub mcp: Arc<crate::config::McpConfig>,
    /// Cancelled when the daemon stops, so long-lived streams (MCP sessions) end and the
    /// graceful shutdown does not wait for them.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Facts fixed at start.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// Monotonic start time, for uptime.
    pub started: Instant,
    /// Wall-clock start time, for display.
    pub started_at: SystemTime,
    /// The address actually bound.
    pub listen: SocketAddr,
    /// Directories and files in use.
    pub paths: DaemonPaths,
}
