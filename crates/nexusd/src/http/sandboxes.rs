//! `/v1/sandboxes`: lifecycle and exec. Handlers only translate to and from the service.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::StreamExt;
use nexus_agent_proto::{ExitInfo, OutputEvent, StreamKind};
use nexus_api::{
    CreateSandboxRequest, ErrorBody, ExecEvent, ExecRequest, ExecResult, ExitStatus,
    OutputEncoding, SandboxInfo, SandboxList, exec_stream,
};
use serde::Deserialize;

use super::convert::{create_request, sandbox_info};
use super::error::ApiError;
use super::json::ApiJson;
use crate::state::AppState;

/// Creates a sandbox and (unless `start` is false) starts it.
#[utoipa::path(
    post,
    path = "/v1/sandboxes",
    tag = "sandboxes",
    security(("bearer" = [])),
    request_body = CreateSandboxRequest,
    responses(
        (status = 201, description = "Created (and running, unless `start` was false)", body = SandboxInfo),
        (status = 400, description = "A field is invalid; nothing was created", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "The driver cannot work on this host", body = ErrorBody),
        (status = 500, description = "Starting failed; everything was rolled back", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSandboxRequest>,
) -> Result<(StatusCode, Json<SandboxInfo>), ApiError> {
    let view = state.sandboxes.create(create_request(body)).await?;
    Ok((StatusCode::CREATED, Json(sandbox_info(view))))
}

/// Lists every sandbox, oldest first.
#[utoipa::path(
    get,
    path = "/v1/sandboxes",
    tag = "sandboxes",
    security(("bearer" = [])),
    responses((status = 200, description = "Every sandbox", body = SandboxList))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<SandboxList>, ApiError> {
    let sandboxes = state
        .sandboxes
        .list()
        .await?
        .into_iter()
        .map(sandbox_info)
        .collect();
    Ok(Json(SandboxList { sandboxes }))
}

/// One sandbox, by id or name, with its isolation report while it runs.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The sandbox", body = SandboxInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    let view = state.sandboxes.get(&id).await?;
    let usage = state.sandboxes.usage(&view.sandbox).await;
    let mut info = sandbox_info(view);
    info.usage = super::convert::usage(usage);
    Ok(Json(info))
}

/// Starts a created, stopped or crashed sandbox.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/start",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "Running", body = SandboxInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 500, description = "Starting failed", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(sandbox_info(state.sandboxes.start(&id).await?)))
}

/// Stops a sandbox: SIGTERM to its processes, SIGKILL after the grace period. The
/// workspace is kept.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/stop",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "Stopped", body = SandboxInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(sandbox_info(state.sandboxes.stop(&id).await?)))
}

/// Pauses a running sandbox: every process frozen in place (freezer cgroup), memory
/// kept, no CPU used. Exec and file operations answer 409 `sandbox_paused` until resumed.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/pause",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "Paused", body = SandboxInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody),
        (status = 422, description = "This host or driver cannot freeze sandboxes", body = ErrorBody),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(sandbox_info(state.sandboxes.pause(&id).await?)))
}

/// Resumes a paused sandbox: its processes continue where they were.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/resume",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "Running again", body = SandboxInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Neither paused nor running", body = ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(sandbox_info(state.sandboxes.resume(&id).await?)))
}

/// Query of `DELETE /v1/sandboxes/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete even when it is running (it is stopped first).
    #[serde(default)]
    pub force: bool,
    /// Keep the workspace made for the sandbox, as a workspace of its own. (A workspace
    /// the sandbox was given by name is always kept.)
    #[serde(default)]
    pub keep_workspace: bool,
}

/// Deletes a sandbox and every trace of it: processes, mounts, cgroups, files, and the
/// workspace made for it unless `keep_workspace`.
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "It is running and `force` was not given", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let sandbox = state.sandboxes.get(&id).await?.sandbox.id;
    state
        .sandboxes
        .delete(sandbox.as_str(), query.force, query.keep_workspace)
        .await?;
    state.netlog.forget(sandbox.as_str());
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a command in a running sandbox: the whole result at the end, or (with
/// `stream: true`) newline-delimited JSON events as output is written. A streaming client
/// that sends `Accept: application/vnd.nexus.exec-stream` gets binary frames instead:
/// the output's bytes as they are, without base64 (see `nexus_api::exec_stream`).
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/exec",
    tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "Finished (or, when streaming, one `ExecEvent` per line; binary frames with `Accept: application/vnd.nexus.exec-stream`)", body = ExecResult),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
    )
)]
pub async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let wire = Wire::chosen_by(&headers);
    let stream = body.stream;
    let encoding = body.encoding;
    let stdin = body.stdin.clone().map(String::into_bytes);
    let request = agent_request(body);
    if !stream {
        let result = state.sandboxes.run(&id, request, stdin).await?;
        let completed = result.completed;
        return Ok(Json(ExecResult {
            stdout: encode(&completed.stdout, encoding),
            stderr: encode(&completed.stderr, encoding),
            encoding,
            status: exit_status(&completed.exit, result.oom_killed),
        })
        .into_response());
    }
    let process = state.sandboxes.exec(&id, request, stdin).await?;
    let service = state.sandboxes.clone();
    let pid = process.handle.pid;
    let events = async_stream(process, service, pid, wire);
    Ok((
        [(header::CONTENT_TYPE, wire.media_type())],
        Body::from_stream(events),
    )
        .into_response())
}

/// How a streamed exec is sent: NDJSON `ExecEvent`s with base64 output (the default), or
/// the binary frames of [`nexus_api::exec_stream`] when the client accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Ndjson,
    Binary,
}

impl Wire {
    fn chosen_by(headers: &HeaderMap) -> Self {
        let accepts_binary = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.split(';').next().map(str::trim) == Some(exec_stream::MEDIA_TYPE));
        if accepts_binary {
            Self::Binary
        } else {
            Self::Ndjson
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Binary => exec_stream::MEDIA_TYPE,
        }
    }

    fn event(self, event: &ExecEvent) -> Bytes {
        match self {
            Self::Ndjson => {
                let mut bytes = serde_json::to_vec(event).expect("events always serialize");
                bytes.push(b'\n');
                bytes.into()
            }
            Self::Binary => exec_stream::encode_event(event),
        }
    }

    fn output(self, kind: StreamKind, bytes: &[u8]) -> Bytes {
        match (self, kind) {
            (Self::Ndjson, StreamKind::Stdout) => self.event(&ExecEvent::Stdout {
                data: BASE64.encode(bytes),
            }),
            (Self::Ndjson, StreamKind::Stderr) => self.event(&ExecEvent::Stderr {
                data: BASE64.encode(bytes),
            }),
            (Self::Binary, StreamKind::Stdout) => exec_stream::encode(exec_stream::STDOUT, bytes),
            (Self::Binary, StreamKind::Stderr) => exec_stream::encode(exec_stream::STDERR, bytes),
        }
    }
}

/// The body of a streamed exec, ending with `exit` or `error`.
fn async_stream(
    process: nexus_core::service::StartedProcess,
    service: std::sync::Arc<nexus_core::service::SandboxService>,
    pid: u32,
    wire: Wire,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let started = futures::stream::once(async move { Ok(wire.event(&ExecEvent::Started { pid })) });
    let rest = futures::stream::unfold(Some(process), move |state| {
        let service = service.clone();
        async move {
            let mut process = state?;
            let chunk = match process.output.next().await {
                Some(Ok(OutputEvent::Stdout { bytes, .. })) => {
                    wire.output(StreamKind::Stdout, &bytes)
                }
                Some(Ok(OutputEvent::Stderr { bytes, .. })) => {
                    wire.output(StreamKind::Stderr, &bytes)
                }
                Some(Ok(OutputEvent::Skipped { .. })) => Bytes::new(),
                Some(Ok(OutputEvent::Exit(exit))) => {
                    let oom = service.oom_killed(&process, &exit).await;
                    if let Err(e) = process.handle.forget().await {
                        tracing::debug!(error = %e, "forgetting a finished process failed");
                    }
                    let last = wire.event(&ExecEvent::Exit(exit_status(&exit, oom)));
                    return Some((Ok(last), None));
                }
                Some(Err(e)) => {
                    let message = e.to_string();
                    return Some((Ok(wire.event(&ExecEvent::Error { message })), None));
                }
                None => {
                    let message = "the output stream ended without an exit status".to_owned();
                    return Some((Ok(wire.event(&ExecEvent::Error { message })), None));
                }
            };
            Some((Ok(chunk), Some(process)))
        }
    });
    started.chain(rest)
}

/// The agent's request for an exec. The output cap bounds what is *collected*: a
/// streamed exec collects nothing (the agent keeps only its recent window, and a slow
/// reader holds the process back), so it has no cap unless the request sets one;
/// `nexusctl exec SB -- cat big.log` streams the whole file.
fn agent_request(body: ExecRequest) -> nexus_agent_proto::ExecRequest {
    let default_cap = if body.stream {
        u64::MAX
    } else {
        nexus_api::exec::DEFAULT_MAX_OUTPUT_BYTES
    };
    let mut request = nexus_agent_proto::ExecRequest::new(body.argv);
    request.env = body.env;
    request.cwd = body.cwd;
    request.timeout_ms = body.timeout_ms;
    request.max_output_bytes = body.max_output_bytes.unwrap_or(default_cap);
    request
}

fn encode(bytes: &[u8], encoding: OutputEncoding) -> String {
    match encoding {
        OutputEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        OutputEncoding::Base64 => BASE64.encode(bytes),
    }
}

/// The API's view of how a process ended.
pub fn exit_status(exit: &ExitInfo, oom_killed: bool) -> ExitStatus {
    ExitStatus {
        exit_code: exit.exit_code,
        signal: exit.signal,
        timed_out: exit.timed_out,
        oom_killed,
        output_truncated: exit.output_truncated,
        duration_ms: exit.duration_ms,
    }
}
