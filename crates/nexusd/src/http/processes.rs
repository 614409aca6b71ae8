//! `/v1/sandboxes/{id}/processes`: background processes, their output (re-attachable from
//! an offset), stdin, signals and exit.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use nexus_agent_proto::{OutputEvent, OutputOffsets, ProcessId, ProcessState, StreamKind};
use nexus_api::{
    ErrorBody, ExitStatus, OutputLine, ProcessInfo, ProcessList, SignalRequest, StartProcessRequest,
};
use serde::Deserialize;

use super::error::ApiError;
use super::json::ApiJson;
use super::sandboxes::exit_status;
use crate::state::AppState;

/// Starts a process in the background and returns at once.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/processes",
    tag = "processes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = StartProcessRequest,
    responses(
        (status = 201, description = "Started", body = ProcessInfo),
        (status = 400, description = "Invalid request or program not found", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartProcessRequest>,
) -> Result<(StatusCode, Json<ProcessInfo>), ApiError> {
    let argv = body.argv.clone();
    let mut request = nexus_agent_proto::ExecRequest::new(body.argv);
    request.env = body.env;
    request.cwd = body.cwd;
    request.stdin = body.stdin;
    request.timeout_ms = body.timeout_ms;
    request.max_output_bytes = body
        .max_output_bytes
        .unwrap_or(nexus_api::exec::DEFAULT_MAX_OUTPUT_BYTES);
    let handle = state.sandboxes.start_process(&id, request).await?;
    let started_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    Ok((
        StatusCode::CREATED,
        Json(ProcessInfo {
            id: handle.id.0,
            pid: handle.pid,
            argv,
            state: "running".into(),
            started_at,
            exit: None,
        }),
    ))
}

/// Lists the sandbox's running processes and exited ones not yet waited for.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/processes",
    tag = "processes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The processes", body = ProcessList))
)]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ProcessList>, ApiError> {
    let processes = state
        .sandboxes
        .processes(&id)
        .await?
        .into_iter()
        .map(|p| ProcessInfo {
            id: p.id.0,
            pid: p.pid,
            argv: p.argv,
            state: match p.state {
                ProcessState::Running => "running".into(),
                ProcessState::Exited => "exited".into(),
            },
            started_at: humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_millis(p.started_at_ms),
            )
            .to_string(),
            exit: p.exit.as_ref().map(|e| exit_status(e, false)),
        })
        .collect();
    Ok(Json(ProcessList { processes }))
}

/// Query of `GET .../output`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// Stdout offset to resume from [default: 0].
    #[serde(default)]
    pub stdout_offset: u64,
    /// Stderr offset to resume from [default: 0].
    #[serde(default)]
    pub stderr_offset: u64,
}

/// The process's output from the given offsets, live until it exits, as NDJSON
/// (`OutputLine` per line). Bytes older than the sandbox's recent window come back as
/// `skipped`.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/processes/{process}/output",
    tag = "processes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), ("process" = u64, Path, description = "Process id"), OutputQuery),
    responses(
        (status = 200, description = "One `OutputLine` per line", body = OutputLine, content_type = "application/x-ndjson"),
        (status = 404, description = "No such sandbox or process", body = ErrorBody),
    )
)]
pub async fn output(
    State(state): State<AppState>,
    Path((id, process)): Path<(String, u64)>,
    Query(query): Query<OutputQuery>,
) -> Result<Response, ApiError> {
    let from = OutputOffsets {
        stdout: query.stdout_offset,
        stderr: query.stderr_offset,
    };
    let mut stream = state
        .sandboxes
        .process_output(&id, ProcessId(process), from)
        .await?;
    // The first item tells whether the agent accepted the stream (an unknown process is
    // refused there), so that refusal is an HTTP error rather than a line.
    let first = match stream.next().await {
        Some(Ok(event)) => event,
        Some(Err(e)) => return Err(nexus_core::service::ServiceError::Agent(e).into()),
        None => {
            return Err(ApiError::internal(anyhow::anyhow!(
                "the agent closed the output stream at once"
            )));
        }
    };
    let lines =
        futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Some(first)) })
            .chain(stream.map(|item| Ok(item.ok())))
            .scan(false, |done, item| {
                if *done {
                    return futures::future::ready(None);
                }
                let line = match item {
                    Ok(Some(event)) => {
                        *done = matches!(event, OutputEvent::Exit(_));
                        output_line(event)
                    }
                    _ => {
                        *done = true;
                        OutputLine::Error {
                            message: "the output stream broke".into(),
                        }
                    }
                };
                futures::future::ready(Some(Ok::<_, std::convert::Infallible>(encode_line(&line))))
            });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Waits for the process to end and returns how it ended.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/processes/{process}/wait",
    tag = "processes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), ("process" = u64, Path, description = "Process id")),
    responses(
        (status = 200, description = "It ended", body = ExitStatus),
        (status = 404, description = "No such sandbox or process", body = ErrorBody),
    )
)]
pub async fn wait(
    State(state): State<AppState>,
    Path((id, process)): Path<(String, u64)>,
) -> Result<Json<ExitStatus>, ApiError> {
    let (exit, oom) = state
        .sandboxes
        .wait_process(&id, ProcessId(process))
        .await?;
    Ok(Json(exit_status(&exit, oom)))
}

/// Sends a signal to the process's whole process group.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/processes/{process}/signal",
    tag = "processes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), ("process" = u64, Path, description = "Process id")),
    request_body = SignalRequest,
    responses(
        (status = 204, description = "Sent"),
        (status = 404, description = "No such sandbox or process", body = ErrorBody),
    )
)]
pub async fn signal(
    State(state): State<AppState>,
    Path((id, process)): Path<(String, u64)>,
    ApiJson(body): ApiJson<SignalRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .sandboxes
        .signal_process(&id, ProcessId(process), body.signal)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Writes the request body (raw bytes) to the process's stdin.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/processes/{process}/stdin",
    tag = "processes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), ("process" = u64, Path, description = "Process id")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Written"),
        (status = 409, description = "Its stdin is closed or was not kept open", body = ErrorBody),
    )
)]
pub async fn write_stdin(
    State(state): State<AppState>,
    Path((id, process)): Path<(String, u64)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    state
        .sandboxes
        .write_stdin(&id, ProcessId(process), &body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Closes the process's stdin (it sees end of file).
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}/processes/{process}/stdin",
    tag = "processes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), ("process" = u64, Path, description = "Process id")),
    responses(
        (status = 204, description = "Closed"),
        (status = 404, description = "No such sandbox or process", body = ErrorBody),
    )
)]
pub async fn close_stdin(
    State(state): State<AppState>,
    Path((id, process)): Path<(String, u64)>,
) -> Result<StatusCode, ApiError> {
    state.sandboxes.close_stdin(&id, ProcessId(process)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn output_line(event: OutputEvent) -> OutputLine {
    match event {
        OutputEvent::Stdout { offset, bytes } => OutputLine::Stdout {
            offset,
            data: BASE64.encode(&bytes),
        },
        OutputEvent::Stderr { offset, bytes } => OutputLine::Stderr {
            offset,
            data: BASE64.encode(&bytes),
        },
        OutputEvent::Skipped {
            stream,
            offset,
            bytes,
        } => OutputLine::Skipped {
            stream: match stream {
                StreamKind::Stdout => "stdout".into(),
                StreamKind::Stderr => "stderr".into(),
            },
            offset,
            bytes,
        },
        OutputEvent::Exit(exit) => OutputLine::Exit(exit_status(&exit, false)),
    }
}

fn encode_line(line: &OutputLine) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(line).expect("lines always serialize");
    bytes.push(b'\n');
    bytes
}
