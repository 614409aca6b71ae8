//! Health and status of the daemon itself.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Overall health: `ok`, or `degraded` when a dependency fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything answers.
    Ok,
    /// The daemon runs but a dependency (the database) does not answer.
    Degraded,
}

/// `GET /v1/health`: is the daemon up and its database usable. Needs no token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: HealthStatus,
    /// Version of the running `nexusd`.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// State of the database.
    pub database: DatabaseHealth,
}

/// The database part of [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseHealth {
    /// `ok` or `degraded`.
    pub status: HealthStatus,
    /// Storage backend, e.g. `sqlite`.
    #[schema(example = "sqlite")]
    pub backend: String,
    /// Schema version the database is at, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// Why the database is unusable, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/status`: everything an operator wants to know about the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DaemonStatus {
    /// `ok` or `degraded`.
    pub status: HealthStatus,
    /// Version of the running `nexusd`.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// Process id of the daemon.
    pub pid: u32,
    /// When the daemon started, RFC 3339 UTC.
    #[schema(example = "2026-11-22T19:30:00Z")]
    pub started_at: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Address the API listens on.
    #[schema(example = "127.0.0.1:9600")]
    pub listen: String,
    /// The state database.
    pub database: DatabaseStatus,
    /// Where the daemon keeps its files.
    pub paths: DaemonPaths,
    /// The warm pool, one entry per profile of `warm_pool` in `nexus.yaml` (empty when
    /// none is configured, the default).
    #[serde(default)]
    pub warm_pool: Vec<WarmPoolStatus>,
}

/// One profile of the warm pool: sandboxes started ahead of need, handed out by a
/// create request that asks for exactly this kind of sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WarmPoolStatus {
    /// Image of its sandboxes.
    #[schema(example = "host")]
    pub image: String,
    /// Driver of its sandboxes.
    #[schema(example = "bwrap")]
    pub driver: String,
    /// Limits of its sandboxes, defaults applied; a create must ask for these.
    pub limits: crate::LimitsBody,
    /// Network policy of its sandboxes, defaults applied; a create must ask for this.
    pub network: crate::network::NetworkPolicyBody,
    /// Sandboxes it keeps ready.
    pub size: usize,
    /// Sandboxes ready now.
    pub ready: usize,
    /// Memory the ready sandboxes use together, bytes (their cgroups' `memory.current`);
    /// absent when this host cannot measure it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Why it cannot be filled right now (it retries, at least once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The database part of [`DaemonStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseStatus {
    /// Storage backend, e.g. `sqlite`.
    #[schema(example = "sqlite")]
    pub backend: String,
    /// Where the database lives (a file path for SQLite).
    pub path: String,
    /// Schema version (number of migrations applied).
    pub schema_version: u32,
    /// Tables in the schema.
    pub table_count: u32,
    /// Bytes on disk, write-ahead log included.
    pub size_bytes: u64,
}

/// Directories and files the daemon uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonPaths {
    /// The config file that was loaded, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    /// The file holding the generated API token, when the token was not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// State directory (database).
    pub state_dir: String,
    /// Data directory (images, workspaces).
    pub data_dir: String,
    /// Runtime directory (sockets, pid files).
    pub runtime_dir: String,
}
