//! `/v1/workspaces`: persistent workspaces, their snapshots, restore and fork; and
//! `POST /v1/sandboxes/{id}/fork`. Handlers only translate to and from the service.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use nexus_api::{
    CreateSnapshotRequest, CreateWorkspaceRequest, ErrorBody, ForkSandboxRequest,
    ForkWorkspaceRequest, RestoreRequest, RestoredWorkspace, SandboxInfo, SnapshotInfo,
    SnapshotList, WorkspaceInfo, WorkspaceList,
};
use nexus_core::service::CreateWorkspace;

use super::convert::{restored_workspace, sandbox_info, snapshot_info, workspace_info};
use super::error::ApiError;
use super::json::ApiJson;
use crate::state::AppState;

/// Creates a workspace with an empty tree.
#[utoipa::path(
    post,
    path = "/v1/workspaces",
    tag = "workspaces",
    security(("bearer" = [])),
    request_body = CreateWorkspaceRequest,
    responses(
        (status = 201, description = "Created", body = WorkspaceInfo),
        (status = 400, description = "A field is invalid; nothing was created", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateWorkspaceRequest>,
) -> Result<(StatusCode, Json<WorkspaceInfo>), ApiError> {
    let view = state
        .sandboxes
        .create_workspace(CreateWorkspace {
            name: body.name,
            quota_mib: body.quota_mib,
            labels: body.labels,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(workspace_info(view))))
}

/// Every workspace, oldest first, with its size.
#[utoipa::path(
    get,
    path = "/v1/workspaces",
    tag = "workspaces",
    security(("bearer" = [])),
    responses((status = 200, description = "The workspaces", body = WorkspaceList))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<WorkspaceList>, ApiError> {
    let workspaces = state
        .sandboxes
        .list_workspaces()
        .await?
        .into_iter()
        .map(workspace_info)
        .collect();
    Ok(Json(WorkspaceList { workspaces }))
}

/// One workspace, by id or name.
#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("ws" = String, Path, description = "Workspace id or name")),
    responses(
        (status = 200, description = "The workspace", body = WorkspaceInfo),
        (status = 404, description = "No such workspace", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(ws): Path<String>,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    Ok(Json(workspace_info(state.sandboxes.workspace(&ws).await?)))
}

/// Deletes a workspace with its snapshots. Refused while a sandbox mounts it.
#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("ws" = String, Path, description = "Workspace id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "Sandboxes use it; the message lists them", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(ws): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.sandboxes.delete_workspace(&ws).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a read-only snapshot of the workspace's current tree (a running sandbox that
/// writes it is paused for that moment, so the snapshot is consistent).
#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/snapshots",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("ws" = String, Path, description = "Workspace id or name")),
    request_body = CreateSnapshotRequest,
    responses(
        (status = 201, description = "Taken", body = SnapshotInfo),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 507, description = "No space left", body = ErrorBody),
    )
)]
pub async fn snapshot(
    State(state): State<AppState>,
    Path(ws): Path<String>,
    ApiJson(body): ApiJson<CreateSnapshotRequest>,
) -> Result<(StatusCode, Json<SnapshotInfo>), ApiError> {
    let snapshot = state.sandboxes.snapshot_workspace(&ws, body.name).await?;
    Ok((StatusCode::CREATED, Json(snapshot_info(snapshot))))
}

/// A workspace's snapshots, oldest first.
#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/snapshots",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("ws" = String, Path, description = "Workspace id or name")),
    responses(
        (status = 200, description = "The snapshots", body = SnapshotList),
        (status = 404, description = "No such workspace", body = ErrorBody),
    )
)]
pub async fn snapshots(
    State(state): State<AppState>,
    Path(ws): Path<String>,
) -> Result<Json<SnapshotList>, ApiError> {
    let snapshots = state
        .sandboxes
        .snapshots(&ws)
        .await?
        .into_iter()
        .map(snapshot_info)
        .collect();
    Ok(Json(SnapshotList { snapshots }))
}

/// Deletes one snapshot.
#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/snapshots/{snapshot}",
    tag = "workspaces",
    security(("bearer" = [])),
    params(
        ("ws" = String, Path, description = "Workspace id or name"),
        ("snapshot" = String, Path, description = "Snapshot id or name"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such workspace or snapshot", body = ErrorBody),
    )
)]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    Path((ws, snapshot)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.sandboxes.delete_snapshot(&ws, &snapshot).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rolls the workspace back to one of its snapshots, in place. A running (or paused)
/// sandbox that writes it keeps running and sees the restored files at `/workspace` from
/// then on (files it has open, and a working directory inside the old tree, keep the old
/// files until opened again); where the driver cannot swap the tree under it (a daemon
/// not running as root, the host driver), it is restarted on the restored tree instead
/// (same sandbox, same id). `writer` says which happened.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/restore",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("ws" = String, Path, description = "Workspace id or name")),
    request_body = RestoreRequest,
    responses(
        (status = 200, description = "Restored", body = RestoredWorkspace),
        (status = 404, description = "No such workspace or snapshot (or the snapshot is another workspace's)", body = ErrorBody),
        (status = 507, description = "No space left", body = ErrorBody),
    )
)]
pub async fn restore(
    State(state): State<AppState>,
    Path(ws): Path<String>,
    ApiJson(body): ApiJson<RestoreRequest>,
) -> Result<Json<RestoredWorkspace>, ApiError> {
    let restored = state
        .sandboxes
        .restore_workspace(&ws, &body.snapshot)
        .await?;
    Ok(Json(restored_workspace(restored)))
}

/// A new, independent workspace made from one of this workspace's snapshots.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/fork",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("ws" = String, Path, description = "Workspace id or name")),
    request_body = ForkWorkspaceRequest,
    responses(
        (status = 201, description = "Forked", body = WorkspaceInfo),
        (status = 404, description = "No such workspace or snapshot", body = ErrorBody),
        (status = 409, description = "The new name is taken", body = ErrorBody),
    )
)]
pub async fn fork(
    State(state): State<AppState>,
    Path(ws): Path<String>,
    ApiJson(body): ApiJson<ForkWorkspaceRequest>,
) -> Result<(StatusCode, Json<WorkspaceInfo>), ApiError> {
    let view = state
        .sandboxes
        .fork_workspace(&ws, &body.snapshot, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(workspace_info(view))))
}

/// Snapshots the sandbox's workspace and starts a new sandbox like it on a copy.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/fork",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ForkSandboxRequest,
    responses(
        (status = 201, description = "The new sandbox, running", body = SandboxInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The new name is taken", body = ErrorBody),
    )
)]
pub async fn fork_sandbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ForkSandboxRequest>,
) -> Result<(StatusCode, Json<SandboxInfo>), ApiError> {
    let view = state.sandboxes.fork_sandbox(&id, &body.name).await?;
    Ok((StatusCode::CREATED, Json(sandbox_info(view))))
}
