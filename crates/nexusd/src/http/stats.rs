//! `GET /v1/sandboxes/{id}/stats`: a live sample of a sandbox's resource usage.

use axum::Json;
use axum::extract::{Path, State};
use nexus_api::{ErrorBody, SandboxStats};

use super::convert::sandbox_stats;
use super::error::ApiError;
use crate::state::AppState;

/// CPU time, memory, processes, block I/O and OOM kills of a running or paused sandbox,
/// read from its cgroups now. A counter this host cannot measure is `null` and named in
/// `unmeasured`; `timestamp_ms` lets clients turn two samples into CPU percent.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/stats",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "One sample", body = SandboxStats),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Neither running nor paused (`sandbox_not_running`)", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxStats>, ApiError> {
    Ok(Json(sandbox_stats(state.sandboxes.stats(&id).await?)))
}
