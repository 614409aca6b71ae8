//! Wire types of workspaces and their snapshots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /v1/workspaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceRequest {
    /// Unique name, same rules as sandbox names. Generated when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "project-a")]
    pub name: Option<String>,
    /// Disk quota in MiB, enforced where the filesystem can (btrfs with quotas on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_mib: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A sandbox that mounts a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceUser {
    /// Sandbox id.
    pub sandbox: String,
    /// Whether it only reads the workspace.
    pub read_only: bool,
}

/// A workspace as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceInfo {
    /// Stable id, e.g. `ws-3f9a1c0e5b7d2a64`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Generation of its current tree: 1 at creation, one more after each restore.
    pub generation: u64,
    /// Bytes its current tree uses on disk, when it could be measured. The answer to a
    /// fork leaves it out (measuring walks every file); inspect and list measure it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Quota in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_mib: Option<u64>,
    /// Whether the quota is enforced here, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_enforced: Option<bool>,
    /// Why the quota is not enforced, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_note: Option<String>,
    /// The sandbox it was made for, which deletes it along with itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Sandboxes that mount it.
    pub used_by: Vec<WorkspaceUser>,
    /// How many snapshots it has.
    pub snapshots: usize,
    /// Storage backend: `btrfs` (O(1) snapshots), `reflink` or `copy`.
    pub backend: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

/// `GET /v1/workspaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceList {
    /// Oldest first.
    pub workspaces: Vec<WorkspaceInfo>,
}

/// Body of `POST /v1/workspaces/{ws}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// Name, unique within the workspace: 1-64 of letters, digits, `-`, `_`, `.`, not
    /// starting with `.`. Generated from the time when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "before-refactor")]
    pub name: Option<String>,
}

/// A snapshot as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    /// Stable id, e.g. `snap-3f9a1c0e5b7d2a64`.
    pub id: String,
    /// Name, unique within its workspace.
    pub name: String,
    /// Id of its workspace.
    pub workspace: String,
    /// The generation of the tree it was taken from.
    pub generation: u64,
    /// When it was taken, RFC 3339.
    pub created_at: String,
}

/// `GET /v1/workspaces/{ws}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    /// Oldest first.
    pub snapshots: Vec<SnapshotInfo>,
}

/// Body of `POST /v1/workspaces/{ws}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The snapshot, by id or name; it must belong to this workspace.
    pub snapshot: String,
}

/// What `POST /v1/workspaces/{ws}/restore` did to the started sandbox that writes the
/// workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoredWriter {
    /// Sandbox id.
    pub sandbox: String,
    /// `true`: the same processes kept running (a paused sandbox stayed paused) and see
    /// the restored files at `/workspace`; files they had open, and a working directory
    /// inside the old tree, keep the old files until opened again. `false`: the sandbox
    /// was restarted on the restored tree (same id; its processes ended), because the
    /// tree cannot be swapped under it here (a daemon not running as root, the host
    /// driver, other workspaces mounted inside `/workspace`) or the swap failed (the
    /// daemon's log says why).
    pub kept_running: bool,
}

/// Answer of `POST /v1/workspaces/{ws}/restore`: the workspace at its new generation,
/// and what happened to its writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoredWorkspace {
    /// The workspace.
    #[serde(flatten)]
    pub workspace: WorkspaceInfo,
    /// The sandbox that writes the workspace, when it was started; absent when the
    /// workspace has no writer or it is stopped (it starts on the restored tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<RestoredWriter>,
}

/// Body of `POST /v1/workspaces/{ws}/fork`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkWorkspaceRequest {
    /// The snapshot to copy, by id or name.
    pub snapshot: String,
    /// Name of the new workspace.
    pub name: String,
}

/// Body of `POST /v1/sandboxes/{id}/fork`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkSandboxRequest {
    /// Name of the new sandbox.
    pub name: String,
}
