//! Sandboxes on the wire: create requests, the sandbox view and its isolation report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sandboxes`. Every field is optional; unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Unique name: 1-63 of `a-z`, `0-9`, `-`, starting with a letter. Generated when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "web-1")]
    pub name: Option<String>,
    /// Image of the root filesystem [default: `host`, the host's own `/`, read-only, secrets masked].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "host")]
    pub image: Option<String>,
    /// `bwrap` (default) or `host` (no isolation; only when the daemon allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "bwrap")]
    pub driver: Option<String>,
    /// Environment of every process in the sandbox.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsBody,
    /// Stop the sandbox this many seconds after it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Start it right away [default: true].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// Workspace mounted read-write at `/workspace`, by id or name: an existing one
    /// (that no other sandbox writes), or a new one made under this name. Kept when the
    /// sandbox is deleted. Omitted: a fresh workspace deleted with the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "project-a")]
    pub workspace: Option<String>,
    /// Other workspaces mounted read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountBody>,
    /// What it may reach on the network. Omitted: the daemon's default (`network` in
    /// `nexus.yaml`; nothing allowed unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkPolicyBody>,
}

/// A workspace mounted read-only into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MountBody {
    /// The workspace, by id or name.
    #[schema(example = "datasets")]
    pub workspace: String,
    /// Absolute path inside the sandbox (not `/`, `/workspace`, or under `/proc`, `/sys`, `/dev`).
    #[schema(example = "/mnt/datasets")]
    pub path: String,
}

/// Resource limits of a sandbox; an absent field means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    /// Memory in MiB (16 to 1048576). Exceeding it OOM-kills the biggest process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// CPU quota in cores (0.01 to 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Maximum processes and threads (8 to 1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Size of the private `/tmp` in MiB [default: 512].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_mib: Option<u64>,
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SandboxInfo {
    /// Stable id, e.g. `sb-3f9a1c0e5b7d2a64`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Image of the root filesystem.
    pub image: String,
    /// Isolation driver: `bwrap` or `host`.
    pub driver: String,
    /// `created`, `starting`, `running`, `paused`, `stopping`, `stopped` or `crashed`.
    pub state: String,
    /// Why it crashed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_reason: Option<String>,
    /// Environment of its processes.
    pub env: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Requested limits.
    pub limits: LimitsBody,
    /// Seconds after start when it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Id of its workspace (mounted read-write at `/workspace`); absent only for
    /// sandboxes made before workspaces existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Other workspaces mounted read-only (by id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountBody>,
    /// What it may reach on the network.
    #[serde(default)]
    pub network: crate::network::NetworkPolicyBody,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last state change, RFC 3339.
    pub updated_at: String,
    /// When it last became running, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// What isolation is actually in force (present while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationReport>,
    /// Resource usage from its cgroups, when running and the host can tell (inspect only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<SandboxUsage>,
}

/// Resource usage of a running sandbox. A field is absent where this host cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxUsage {
    /// Memory in use, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Highest memory use so far, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// Processes the kernel's OOM killer ended in this sandbox (its memory limit bit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// Processes and threads now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU time used, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage_usec: Option<u64>,
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    /// Every sandbox, oldest first.
    pub sandboxes: Vec<SandboxInfo>,
}

/// The isolation a sandbox really has, as opposed to what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IsolationReport {
    /// `false` for the host driver: nothing separates the sandbox from the host.
    pub isolated: bool,
    /// Namespaces the sandbox has of its own, e.g. `user`, `mount`, `pid`, `net`.
    pub namespaces: Vec<String>,
    /// Whether the seccomp filter is loaded.
    pub seccomp: bool,
    /// Capabilities the sandboxed processes hold: `none`, or a list.
    pub capabilities: String,
    /// Whether `no_new_privs` is set (setuid binaries cannot raise privileges).
    pub no_new_privs: bool,
    /// Uid of sandboxed processes inside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_inside: Option<u32>,
    /// Host uid they map to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_host: Option<u32>,
    /// Each requested limit and whether this host enforces it.
    pub limits: Vec<LimitReport>,
    /// Anything else the user should know about this sandbox's isolation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// How it reaches the network, and what is not enforced, in plain words.
    #[serde(default)]
    pub network: String,
}

/// Whether one limit is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitReport {
    /// `memory`, `cpu`, `pids` or `tmp`.
    pub name: String,
    /// The requested value, as text (`256 MiB`, `0.5 cpus`).
    pub requested: String,
    /// Whether the host enforces it.
    pub enforced: bool,
    /// How (e.g. `cgroup v1 memory.limit_in_bytes`) or why not.
    pub detail: String,
}
