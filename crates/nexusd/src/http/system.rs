//! Health, readiness, status and metrics of the daemon itself.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use nexus_api::{DaemonStatus, DatabaseHealth, DatabaseStatus, ErrorBody, Health, HealthStatus};

use super::error::ApiError;
use crate::state::AppState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Daemon and database health. Needs no token.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "system",
    responses(
        (status = 200, description = "The daemon and its database answer", body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let database = match state.store.info().await {
        Ok(info) => DatabaseHealth {
            status: HealthStatus::Ok,
            backend: info.backend.to_owned(),
            schema_version: Some(info.schema_version),
            error: None,
        },
        Err(err) => {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(err)),
                "health check: database does not answer"
            );
            DatabaseHealth {
                status: HealthStatus::Degraded,
                backend: "unknown".into(),
                schema_version: None,
                error: Some("the database does not answer; see the daemon log".into()),
            }
        }
    };
    let status = database.status;
    let code = if status == HealthStatus::Ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            status,
            version: VERSION.into(),
            database,
        }),
    )
}

/// Everything about the running daemon: version, uptime, database, paths, warm pool.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "system",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Status of the daemon", body = DaemonStatus),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    )
)]
pub async fn status(State(state): State<AppState>) -> Result<Json<DaemonStatus>, ApiError> {
    let info = state
        .store
        .info()
        .await
        .map_err(|e| ApiError::unavailable("the database", e))?;
    let daemon = &state.info;
    let uptime = daemon.started.elapsed();
    Ok(Json(DaemonStatus {
        status: HealthStatus::Ok,
        version: VERSION.into(),
        pid: std::process::id(),
        started_at: humantime::format_rfc3339_seconds(daemon.started_at).to_string(),
        uptime_seconds: uptime.as_secs(),
        listen: daemon.listen.to_string(),
        database: DatabaseStatus {
            backend: info.backend.into(),
            path: info.location.display().to_string(),
            schema_version: info.schema_version,
            table_count: info.table_count,
            size_bytes: info.size_bytes,
        },
        paths: daemon.paths.clone(),
        warm_pool: state
            .sandboxes
            .warm_pool_status()
            .await
            .into_iter()
            .map(super::convert::warm_pool_status)
            .collect(),
    }))
}

/// Liveness for process supervisors: the daemon answers HTTP.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 200 when the store is open, migrated and answering, 503 with the reason otherwise.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    // A store that hangs is as unready as one that fails.
    match tokio::time::timeout(Duration::from_secs(5), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(err)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: database: {:#}\n", anyhow::Error::from(err)),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database did not answer within 5s\n".into(),
        ),
    }
}

/// Prometheus metrics in the text exposition format, with the sandbox series read now
/// (see `http::metrics`).
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let live = match state
        .sandboxes
        .live_stats(state.metrics.max_sandboxes())
        .await
    {
        Ok(live) => Some(live),
        Err(error) => {
            tracing::warn!(error = %error, "cannot read sandboxes for /metrics; their series are left out");
            None
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render_with(live.as_ref()),
    )
}
