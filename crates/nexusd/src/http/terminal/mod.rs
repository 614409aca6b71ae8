//! Terminal sessions of a sandbox: `GET /v1/sandboxes/{id}/terminal` (the WebSocket,
//! [`ws`], speaking ttyd's protocol, [`ttyd`]) and the JSON routes that list, create and
//! close sessions (`/v1/sandboxes/{id}/terminals`).

pub mod ttyd;
pub mod ws;

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use nexus_agent_proto::{TermSize, TerminalId};
use nexus_api::{CreateTerminalRequest, ErrorBody, ErrorCode, TerminalInfo, TerminalList};

use super::error::ApiError;
use crate::state::AppState;

/// Lists the sandbox's terminal sessions (ended ones too, until deleted).
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/terminals",
    tag = "terminals",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The sessions, oldest first", body = TerminalList),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running or paused", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TerminalList>, ApiError> {
    let terminals = state
        .sandboxes
        .terminals(&id)
        .await?
        .into_iter()
        .map(info)
        .collect();
    Ok(Json(TerminalList { terminals }))
}

/// Opens a terminal session (a login shell) without attaching to it; attach with
/// `GET /v1/sandboxes/{id}/terminal?session=ID`. The body is optional.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/terminals",
    tag = "terminals",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body(content = Option<CreateTerminalRequest>, description = "Size; optional"),
    responses(
        (status = 201, description = "Opened", body = TerminalInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running or paused", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TerminalInfo>), ApiError> {
    let request: CreateTerminalRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateTerminalRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("request body must be {{\"cols\": N, \"rows\": N}} or empty: {e}"),
            )
        })?
    };
    let size = TermSize::clamped(
        request
            .cols
            .map_or(u64::from(TermSize::DEFAULT.cols), u64::from),
        request
            .rows
            .map_or(u64::from(TermSize::DEFAULT.rows), u64::from),
    );
    let (_, terminal) = state.sandboxes.open_terminal(&id, size).await?;
    Ok((StatusCode::CREATED, Json(info(terminal))))
}

/// Closes a terminal session: its processes get SIGHUP, then SIGKILL after a second.
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}/terminals/{session}",
    tag = "terminals",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Sandbox id or name"),
        ("session" = String, Path, description = "Session id"),
    ),
    responses(
        (status = 204, description = "Closed"),
        (status = 404, description = "No such sandbox or session", body = ErrorBody),
        (status = 409, description = "The sandbox is not running or paused", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let terminal = parse_session(&session)?;
    state.sandboxes.close_terminal(&id, terminal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A session id from a path or query; anything that is not one is an unknown session.
pub fn parse_session(session: &str) -> Result<TerminalId, ApiError> {
    session.parse::<u64>().map(TerminalId).map_err(|_| {
        ApiError::new(
            ErrorCode::TerminalNotFound,
            format!(
                "no terminal session {session:?}; `GET /v1/sandboxes/{{id}}/terminals` lists them"
            ),
        )
    })
}

/// A session as the API shows it.
pub fn info(t: nexus_agent_proto::TerminalInfo) -> TerminalInfo {
    TerminalInfo {
        id: t.id.to_string(),
        created_at: humantime::format_rfc3339_millis(
            UNIX_EPOCH + Duration::from_millis(t.created_at_ms),
        )
        .to_string(),
        cols: t.size.cols,
        rows: t.size.rows,
        pid: t.pid,
        attached: t.attached,
        alive: t.alive,
        exit_code: t.exit.and_then(|e| e.exit_code),
        signal: t.exit.and_then(|e| e.signal),
    }
}
