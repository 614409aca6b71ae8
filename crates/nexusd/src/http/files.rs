//! `/v1/sandboxes/{id}/files...`: the sandbox's file API over REST. Handlers only
//! translate: check the path, ask the sandbox's agent (`AgentClient::fs_*`), map the answer.
//!
//! Shapes chosen here:
//! - Content is raw bytes both ways (`GET`/`PUT .../files/content`, `.../files/archive`),
//!   streamed between the HTTP body and the agent with its flow control, never buffered
//!   whole. Raw bodies are taken as `axum::body::Body`, which `DefaultBodyLimit` does not
//!   cap (only the buffering extractors such as `ApiJson` are capped), so uploads have no
//!   size limit beyond the sandbox's own storage. A failing upload body makes the agent
//!   abandon the write: a replaced file keeps its old content.
//! - A read or download that fails after the headers were sent ends the connection
//!   early, so the client sees a truncated body (shorter than `Content-Length`), never a
//!   silently short file.
//! - Paths are absolute or relative to `/workspace`; an empty path or one with NUL is
//!   refused here before reaching the agent. Everything else (`..`, symlinks, `/proc`
//!   magic links) is resolved by the agent inside the sandbox's own view, which refuses
//!   magic links (400 `invalid_path`).
//! - Agent codes map to API codes in [`fs_error`]; per-item results of bulk calls use the
//!   same codes.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use nexus_agent_proto::fs as proto;
use nexus_agent_proto::{AgentClient, ErrorCode as RemoteCode, ProtoError};
use nexus_api::files::{
    BatchItem, BatchOp, BatchRequest, BatchResponse, ContentEncoding, FILE_OFFSET_HEADER,
    FILE_SIZE_HEADER, FileList, FileStat, FileType, GlobMatch, GlobRequest, GlobResponse,
    GrepMatch, GrepRequest, GrepResponse, MkdirRequest, RemoveResponse, StatItem, StatManyRequest,
    StatManyResponse, TransferRequest, TreeSummary, WatchEvent,
};
use nexus_api::{ErrorBody, ErrorCode, ErrorDetail};
use serde::Deserialize;

use super::error::ApiError;
use super::json::ApiJson;
use crate::file_args::{mode_bits, path_problem};
use crate::state::AppState;

/// `?path=` of the single-path routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Absolute, or relative to `/workspace`.
    pub path: String,
}

/// Query of `GET .../files/content`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// The file (a final symlink is followed, within the sandbox).
    pub path: String,
    /// First byte [default: 0].
    #[serde(default)]
    pub offset: u64,
    /// Most bytes [default: to the end]. A range past the end gives an empty body.
    pub length: Option<u64>,
}

/// Query of `PUT .../files/content`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    /// The file.
    pub path: String,
    /// Append instead of replacing atomically [default: false].
    #[serde(default)]
    pub append: bool,
    /// Create missing parent directories [default: false].
    #[serde(default)]
    pub create_parents: bool,
    /// Permission bits in octal, e.g. `644` [default: kept, 0644 for a new file].
    pub mode: Option<String>,
}

/// Query of `GET .../files/list`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The directory.
    pub path: String,
    /// 1 = direct children, 2 = and theirs, ... [default: 1].
    pub depth: Option<u32>,
    /// Most entries [default: 10000].
    pub max_entries: Option<u32>,
}

/// Query of `DELETE .../files`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// File, symlink (removed itself) or directory.
    pub path: String,
    /// Remove a non-empty directory with its content [default: false].
    #[serde(default)]
    pub recursive: bool,
}

/// Query of `GET .../files/watch`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Directory (or file) watched.
    pub path: String,
    /// Watch subdirectories too, including new ones [default: false].
    #[serde(default)]
    pub recursive: bool,
}

/// Reads a file, whole or a byte range, as raw bytes.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/files/content",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), ReadQuery),
    responses(
        (status = 200, description = "The bytes; `x-nexus-file-size` is the whole file's size", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Invalid path (or a /proc magic link)", body = ErrorBody),
        (status = 404, description = "No such sandbox or file", body = ErrorBody),
        (status = 409, description = "Not running, or a directory", body = ErrorBody),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<ReadQuery>,
) -> Result<Response, ApiError> {
    check_path(&query.path)?;
    let agent = agent(&state, &id).await?;
    let (info, stream) = agent
        .fs_read(&query.path, query.offset, query.length)
        .await
        .map_err(fs_error)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, info.length.into());
    headers.insert(FILE_SIZE_HEADER, info.stat.size.into());
    headers.insert(FILE_OFFSET_HEADER, info.offset.into());
    let body = Body::from_stream(stream.inspect_err(|e| {
        tracing::warn!(error = %e, "file read broke off midway");
    }));
    Ok((headers, body).into_response())
}

/// Writes the raw request body to a file: an atomic replace, or an append.
#[utoipa::path(
    put,
    path = "/v1/sandboxes/{id}/files/content",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The file after the write", body = FileStat),
        (status = 400, description = "Invalid path or mode", body = ErrorBody),
        (status = 404, description = "A parent directory is missing", body = ErrorBody),
        (status = 507, description = "No space left; a replaced file keeps its old content", body = ErrorBody),
    )
)]
pub async fn write(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<WriteQuery>,
    body: Body,
) -> Result<Json<FileStat>, UploadError> {
    check_path(&query.path)?;
    let request = proto::WriteRequest {
        path: query.path,
        append: query.append,
        create_parents: query.create_parents,
        mode: parse_mode(query.mode.as_deref())?,
    };
    let agent = agent(&state, &id).await?;
    let result = agent
        .fs_write(request, body.into_data_stream())
        .await
        .map_err(fs_error)?;
    Ok(Json(file_stat(result.stat)))
}

/// One path's metadata, with the SHA-256 of a regular file up to 64 MiB.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/files/stat",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses(
        (status = 200, description = "Its stat", body = FileStat),
        (status = 404, description = "No such sandbox or path", body = ErrorBody),
    )
)]
pub async fn stat(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Json<FileStat>, ApiError> {
    check_path(&query.path)?;
    let agent = agent(&state, &id).await?;
    let stat = agent
        .fs_stat(&query.path, proto::HashMode::Auto)
        .await
        .map_err(fs_error)?;
    Ok(Json(file_stat(stat)))
}

/// Many paths' metadata at once; each result has its stat or its own error.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/files/stat",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = StatManyRequest,
    responses((status = 200, description = "One result per path, in order", body = StatManyResponse))
)]
pub async fn stat_many(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<StatManyRequest>,
) -> Result<Json<StatManyResponse>, ApiError> {
    // Bad paths get their own per-item error without costing the others theirs.
    let mut results: Vec<Option<StatItem>> = Vec::with_capacity(body.paths.len());
    let mut asked: Vec<String> = Vec::with_capacity(body.paths.len());
    for path in body.paths {
        match path_problem(&path) {
            Some(message) => results.push(Some(StatItem {
                path,
                stat: None,
                error: Some(ErrorDetail {
                    code: ErrorCode::InvalidPath.as_str().to_owned(),
                    message,
                }),
            })),
            None => {
                results.push(None);
                asked.push(path);
            }
        }
    }
    let mut answers = if asked.is_empty() {
        Vec::new().into_iter()
    } else {
        let agent = agent(&state, &id).await?;
        agent
            .fs_stat_many(proto::StatRequest {
                paths: asked,
                hash: proto::HashMode::Auto,
            })
            .await
            .map_err(fs_error)?
            .into_iter()
    };
    for slot in results.iter_mut().filter(|r| r.is_none()) {
        let answer = answers.next().ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("the agent answered fewer stats than asked"))
        })?;
        *slot = Some(match answer.result {
            proto::Outcome::Ok(stat) => StatItem {
                path: answer.path,
                stat: Some(file_stat(stat)),
                error: None,
            },
            proto::Outcome::Error(e) => StatItem {
                path: answer.path,
                stat: None,
                error: Some(item_error(e)),
            },
        });
    }
    Ok(Json(StatManyResponse {
        results: results.into_iter().flatten().collect(),
    }))
}

/// A directory's entries down to `depth`, sorted by path.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/files/list",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), ListQuery),
    responses(
        (status = 200, description = "The entries", body = FileList),
        (status = 404, description = "No such sandbox or directory", body = ErrorBody),
        (status = 409, description = "Not a directory", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<FileList>, ApiError> {
    check_path(&query.path)?;
    let mut request = proto::ListRequest::new(query.path);
    if let Some(depth) = query.depth {
        if depth == 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "depth must be at least 1",
            ));
        }
        request.depth = depth;
    }
    if let Some(max) = query.max_entries {
        request.max_entries = max;
    }
    let agent = agent(&state, &id).await?;
    let listed = agent.fs_list(request).await.map_err(fs_error)?;
    Ok(Json(FileList {
        entries: listed.entries.into_iter().map(file_stat).collect(),
        truncated: listed.truncated,
    }))
}

/// Makes a directory (with `parents`, like `mkdir -p`).
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/files/mkdir",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = MkdirRequest,
    responses(
        (status = 200, description = "The directory", body = FileStat),
        (status = 409, description = "It exists (without `parents`)", body = ErrorBody),
    )
)]
pub async fn mkdir(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<MkdirRequest>,
) -> Result<Json<FileStat>, ApiError> {
    check_path(&body.path)?;
    let request = proto::MkdirRequest {
        path: body.path,
        parents: body.parents,
        mode: parse_mode(body.mode.as_deref())?,
    };
    let agent = agent(&state, &id).await?;
    let stat = agent.fs_mkdir(request).await.map_err(fs_error)?;
    Ok(Json(file_stat(stat)))
}

/// Renames a path (same file system); an existing destination needs `overwrite`.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/files/move",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = TransferRequest,
    responses(
        (status = 200, description = "The destination", body = FileStat),
        (status = 409, description = "The destination exists", body = ErrorBody),
    )
)]
pub async fn move_path(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<TransferRequest>,
) -> Result<Json<FileStat>, ApiError> {
    check_path(&body.from)?;
    check_path(&body.to)?;
    let agent = agent(&state, &id).await?;
    let stat = agent
        .fs_move(proto::MoveRequest {
            from: body.from,
            to: body.to,
            overwrite: body.overwrite,
        })
        .await
        .map_err(fs_error)?;
    Ok(Json(file_stat(stat)))
}

/// Copies a file, symlink or directory tree inside the sandbox.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/files/copy",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = TransferRequest,
    responses(
        (status = 200, description = "What was created", body = TreeSummary),
        (status = 409, description = "The destination exists", body = ErrorBody),
    )
)]
pub async fn copy(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<TransferRequest>,
) -> Result<Json<TreeSummary>, ApiError> {
    check_path(&body.from)?;
    check_path(&body.to)?;
    let agent = agent(&state, &id).await?;
    let summary = agent
        .fs_copy(proto::CopyRequest {
            from: body.from,
            to: body.to,
            overwrite: body.overwrite,
        })
        .await
        .map_err(fs_error)?;
    Ok(Json(tree_summary(summary)))
}

/// Removes a file, symlink or directory (a non-empty one only with `recursive`).
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}/files",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), RemoveQuery),
    responses(
        (status = 200, description = "Removed", body = RemoveResponse),
        (status = 404, description = "No such path", body = ErrorBody),
        (status = 409, description = "A non-empty directory without `recursive`", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Result<Json<RemoveResponse>, ApiError> {
    check_path(&query.path)?;
    let agent = agent(&state, &id).await?;
    let summary = agent
        .fs_remove(proto::RemoveRequest {
            path: query.path,
            recursive: query.recursive,
        })
        .await
        .map_err(fs_error)?;
    Ok(Json(RemoveResponse {
        removed: summary.removed,
    }))
}

/// Runs file operations in order on one round trip; each reports its own result.
/// The JSON body is capped like every JSON body: large content goes through
/// `PUT .../files/content`.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/files/batch",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = BatchRequest,
    responses((status = 200, description = "One result per operation", body = BatchResponse))
)]
pub async fn batch(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    let ops = body
        .ops
        .into_iter()
        .map(batch_op)
        .collect::<Result<Vec<_>, _>>()?;
    let agent = agent(&state, &id).await?;
    let results = agent
        .fs_batch(proto::BatchRequest {
            ops,
            stop_on_error: body.stop_on_error,
        })
        .await
        .map_err(fs_error)?;
    Ok(Json(BatchResponse {
        results: results.into_iter().map(batch_item).collect(),
    }))
}

/// Paths under `root` matching glob patterns.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/files/glob",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = GlobRequest,
    responses(
        (status = 200, description = "Matches", body = GlobResponse),
        (status = 400, description = "Invalid pattern or path", body = ErrorBody),
    )
)]
pub async fn glob(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<GlobRequest>,
) -> Result<Json<GlobResponse>, ApiError> {
    check_path(&body.root)?;
    let agent = agent(&state, &id).await?;
    let result = agent
        .fs_glob(proto::GlobRequest {
            root: body.root,
            patterns: body.patterns,
            respect_gitignore: body.respect_gitignore,
            skip_hidden: body.skip_hidden,
            max_results: body
                .max_results
                .unwrap_or(proto_defaults::DEFAULT_MAX_GLOB_RESULTS),
        })
        .await
        .map_err(fs_error)?;
    Ok(Json(GlobResponse {
        matches: result
            .matches
            .into_iter()
            .map(|m| GlobMatch {
                path: m.path,
                file_type: file_type(m.file_type),
            })
            .collect(),
        truncated: result.truncated,
    }))
}

/// Lines matching a regular expression (or a literal) in the files under `root`.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/files/grep",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = GrepRequest,
    responses(
        (status = 200, description = "Matches", body = GrepResponse),
        (status = 400, description = "Invalid pattern or path", body = ErrorBody),
    )
)]
pub async fn grep(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<GrepRequest>,
) -> Result<Json<GrepResponse>, ApiError> {
    check_path(&body.root)?;
    let agent = agent(&state, &id).await?;
    let result = agent
        .fs_grep(proto::GrepRequest {
            root: body.root,
            pattern: body.pattern,
            fixed_string: body.fixed_string,
            case_insensitive: body.case_insensitive,
            globs: body.globs,
            respect_gitignore: body.respect_gitignore,
            skip_hidden: body.skip_hidden,
            max_results: body
                .max_results
                .unwrap_or(proto_defaults::DEFAULT_MAX_GREP_RESULTS),
        })
        .await
        .map_err(fs_error)?;
    Ok(Json(GrepResponse {
        matches: result
            .matches
            .into_iter()
            .map(|m| GrepMatch {
                path: m.path,
                line: m.line,
                column: m.column,
                text: m.text,
            })
            .collect(),
        truncated: result.truncated,
        binary_files_skipped: result.binary_files_skipped,
    }))
}

/// A file or directory tree as a tar stream; entries are named from the path's last
/// component on (`/workspace/src` gives `src/...`).
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/files/archive",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses(
        (status = 200, description = "A tar stream", body = Vec<u8>, content_type = "application/x-tar"),
        (status = 404, description = "No such sandbox or path", body = ErrorBody),
    )
)]
pub async fn download_archive(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, ApiError> {
    check_path(&query.path)?;
    let agent = agent(&state, &id).await?;
    let mut stream = agent.fs_download_tar(&query.path).await.map_err(fs_error)?;
    // The first item tells whether the agent could open the path, so that refusal is an
    // HTTP error rather than a broken body.
    let first = match stream.next().await {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => return Err(fs_error(e)),
        None => axum::body::Bytes::new(),
    };
    let body = futures::stream::once(async move { Ok(first) })
        .chain(stream)
        .inspect_err(|e| tracing::warn!(error = %e, "tar download broke off midway"));
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Unpacks the raw request body, a tar stream, under `path` (created when missing).
/// Entries that would land outside it are refused (400 `invalid_path`).
#[utoipa::path(
    put,
    path = "/v1/sandboxes/{id}/files/archive",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses(
        (status = 200, description = "What was unpacked", body = TreeSummary),
        (status = 400, description = "Invalid path or archive", body = ErrorBody),
    )
)]
pub async fn upload_archive(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<PathQuery>,
    body: Body,
) -> Result<Json<TreeSummary>, UploadError> {
    check_path(&query.path)?;
    let agent = agent(&state, &id).await?;
    let summary = agent
        .fs_upload_tar(
            proto::TarUploadRequest { dest: query.path },
            body.into_data_stream(),
        )
        .await
        .map_err(fs_error)?;
    Ok(Json(tree_summary(summary)))
}

/// Changes under a path, as NDJSON (`WatchEvent` per line) until the client hangs up.
/// The response starts once the watch is in place, so every later change is reported.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/files/watch",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), WatchQuery),
    responses(
        (status = 200, description = "One `WatchEvent` per line", body = WatchEvent, content_type = "application/x-ndjson"),
        (status = 404, description = "No such sandbox or path", body = ErrorBody),
    )
)]
pub async fn watch(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<WatchQuery>,
) -> Result<Response, ApiError> {
    check_path(&query.path)?;
    let agent = agent(&state, &id).await?;
    let stream = agent
        .fs_watch(proto::WatchRequest {
            path: query.path,
            recursive: query.recursive,
        })
        .await
        .map_err(fs_error)?;
    let lines = stream.scan(false, |done, item| {
        if *done {
            return futures::future::ready(None);
        }
        let event = match item {
            Ok(event) => watch_event(event),
            Err(e) => {
                *done = true;
                tracing::warn!(error = %e, "file watch broke off");
                WatchEvent::Error {
                    message: "the watch broke off".into(),
                }
            }
        };
        let mut line = serde_json::to_vec(&event).expect("watch events always serialize");
        line.push(b'\n');
        futures::future::ready(Some(Ok::<_, std::convert::Infallible>(line)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// The error of a route that streams the request body: the same body as [`ApiError`],
/// plus `Connection: close`. Such an error often comes before the client finished
/// sending (a full disk, a missing parent), and the unread rest of the body makes the
/// connection unusable; without the header a client's pool may reuse it and see its next
/// request fail.
#[derive(Debug)]
pub struct UploadError(ApiError);

impl From<ApiError> for UploadError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl From<nexus_core::service::ServiceError> for UploadError {
    fn from(err: nexus_core::service::ServiceError) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for UploadError {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// An agent refusal as the API's error: the agent's message names the path.
pub fn fs_error(err: ProtoError) -> ApiError {
    match err {
        ProtoError::Remote { code, message } => match api_code(code) {
            Some(code) => ApiError::new(code, message),
            None => ApiError::internal(ProtoError::Remote { code, message }),
        },
        other => ApiError::internal(other),
    }
}

/// The API code of an agent's file error code; `None` for internal failures.
fn api_code(code: RemoteCode) -> Option<ErrorCode> {
    Some(match code {
        RemoteCode::InvalidPath | RemoteCode::SymlinkRefused => ErrorCode::InvalidPath,
        RemoteCode::NotFound => ErrorCode::FileNotFound,
        RemoteCode::Exists
        | RemoteCode::NotADirectory
        | RemoteCode::IsADirectory
        | RemoteCode::NotEmpty => ErrorCode::FileConflict,
        RemoteCode::PermissionDenied | RemoteCode::ReadOnly => ErrorCode::FilePermissionDenied,
        RemoteCode::NoSpace => ErrorCode::InsufficientStorage,
        RemoteCode::BadRequest => ErrorCode::InvalidRequest,
        _ => return None,
    })
}

/// The defaults of the agent's requests, used when a field is absent here.
mod proto_defaults {
    pub use nexus_agent_proto::fs::{DEFAULT_MAX_GLOB_RESULTS, DEFAULT_MAX_GREP_RESULTS};
}

/// The sandbox's agent; 404/409 when it has none (unknown, stopped, paused).
async fn agent(state: &AppState, id: &str) -> Result<AgentClient, ApiError> {
    Ok(state.sandboxes.agent(id).await?.1)
}

/// Refuses what can never be a path before bothering the agent.
fn check_path(path: &str) -> Result<(), ApiError> {
    match path_problem(path) {
        Some(message) => Err(ApiError::new(ErrorCode::InvalidPath, message)),
        None => Ok(()),
    }
}

/// Octal permission bits (`644`, `0644`, `0o644`) up to `7777`.
fn parse_mode(mode: Option<&str>) -> Result<Option<u32>, ApiError> {
    let Some(text) = mode else {
        return Ok(None);
    };
    match mode_bits(text) {
        Some(bits) => Ok(Some(bits)),
        None => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("mode {text:?} is not octal permission bits such as 644 or 0755"),
        )),
    }
}

fn file_type(t: proto::FileType) -> FileType {
    match t {
        proto::FileType::File => FileType::File,
        proto::FileType::Dir => FileType::Dir,
        proto::FileType::Symlink => FileType::Symlink,
        proto::FileType::Other => FileType::Other,
    }
}

fn file_stat(s: proto::FileStat) -> FileStat {
    let modified = if s.mtime_sec >= 0 {
        UNIX_EPOCH + Duration::new(s.mtime_sec.unsigned_abs(), s.mtime_nsec)
    } else {
        UNIX_EPOCH
    };
    FileStat {
        path: s.path,
        file_type: file_type(s.file_type),
        size: s.size,
        mode: format!("{:04o}", s.mode),
        uid: s.uid,
        gid: s.gid,
        modified_at: {
            // Sized once: `to_string` would grow the string three times.
            let mut text = String::with_capacity(30);
            let _ = write!(text, "{}", humantime::format_rfc3339_nanos(modified));
            text
        },
        mtime_ms: s.mtime_ms,
        symlink_target: s.symlink_target,
        sha256: s.sha256,
    }
}

fn tree_summary(s: proto::TreeSummary) -> TreeSummary {
    TreeSummary {
        files: s.files,
        dirs: s.dirs,
        symlinks: s.symlinks,
        bytes: s.bytes,
    }
}

fn item_error(e: proto::ItemError) -> ErrorDetail {
    let code = match e.code {
        RemoteCode::Cancelled => "cancelled",
        other => api_code(other).map_or("internal", ErrorCode::as_str),
    };
    ErrorDetail {
        code: code.to_owned(),
        message: e.message,
    }
}

fn batch_op(op: BatchOp) -> Result<proto::BatchOp, ApiError> {
    Ok(match op {
        BatchOp::Write {
            path,
            content,
            encoding,
            append,
            create_parents,
            mode,
        } => {
            check_path(&path)?;
            proto::BatchOp::Write {
                request: proto::WriteRequest {
                    path,
                    append,
                    create_parents,
                    mode: parse_mode(mode.as_deref())?,
                },
                content,
                encoding: match encoding {
                    ContentEncoding::Text => proto::ContentEncoding::Text,
                    ContentEncoding::Base64 => proto::ContentEncoding::Base64,
                },
            }
        }
        BatchOp::Mkdir {
            path,
            parents,
            mode,
        } => {
            check_path(&path)?;
            proto::BatchOp::Mkdir(proto::MkdirRequest {
                path,
                parents,
                mode: parse_mode(mode.as_deref())?,
            })
        }
        BatchOp::Remove { path, recursive } => {
            check_path(&path)?;
            proto::BatchOp::Remove(proto::RemoveRequest { path, recursive })
        }
        BatchOp::Move {
            from,
            to,
            overwrite,
        } => {
            check_path(&from)?;
            check_path(&to)?;
            proto::BatchOp::Move(proto::MoveRequest {
                from,
                to,
                overwrite,
            })
        }
        BatchOp::Copy {
            from,
            to,
            overwrite,
        } => {
            check_path(&from)?;
            check_path(&to)?;
            proto::BatchOp::Copy(proto::CopyRequest {
                from,
                to,
                overwrite,
            })
        }
        BatchOp::Stat { path } => {
            check_path(&path)?;
            proto::BatchOp::Stat {
                path,
                hash: proto::HashMode::Auto,
            }
        }
    })
}

fn batch_item(outcome: proto::Outcome<proto::BatchOutput>) -> BatchItem {
    let mut item = BatchItem {
        stat: None,
        bytes: None,
        removed: None,
        copied: None,
        error: None,
    };
    match outcome {
        proto::Outcome::Ok(proto::BatchOutput::Written { stat, bytes }) => {
            item.stat = Some(file_stat(stat));
            item.bytes = Some(bytes);
        }
        proto::Outcome::Ok(proto::BatchOutput::Stat { stat }) => {
            item.stat = Some(file_stat(stat));
        }
        proto::Outcome::Ok(proto::BatchOutput::Removed { removed }) => {
            item.removed = Some(removed);
        }
        proto::Outcome::Ok(proto::BatchOutput::Copied { summary }) => {
            item.copied = Some(tree_summary(summary));
        }
        proto::Outcome::Error(e) => item.error = Some(item_error(e)),
    }
    item
}

fn watch_event(event: proto::WatchEvent) -> WatchEvent {
    match event {
        proto::WatchEvent::Create { path, dir } => WatchEvent::Create { path, dir },
        proto::WatchEvent::Modify { path } => WatchEvent::Modify { path },
        proto::WatchEvent::Delete { path, dir } => WatchEvent::Delete { path, dir },
        proto::WatchEvent::Rename { from, to, dir } => WatchEvent::Rename { from, to, dir },
        proto::WatchEvent::Overflow => WatchEvent::Overflow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_codes_map_to_the_documented_api_codes() {
        let cases = [
            (RemoteCode::InvalidPath, ErrorCode::InvalidPath),
            (RemoteCode::SymlinkRefused, ErrorCode::InvalidPath),
            (RemoteCode::NotFound, ErrorCode::FileNotFound),
            (RemoteCode::NotEmpty, ErrorCode::FileConflict),
            (RemoteCode::IsADirectory, ErrorCode::FileConflict),
            (RemoteCode::ReadOnly, ErrorCode::FilePermissionDenied),
            (RemoteCode::NoSpace, ErrorCode::InsufficientStorage),
            (RemoteCode::BadRequest, ErrorCode::InvalidRequest),
        ];
        for (remote, api) in cases {
            let err = fs_error(ProtoError::Remote {
                code: remote,
                message: "open /workspace/x: m".into(),
            });
            assert_eq!(err.code(), api, "{remote}");
        }
        let err = fs_error(ProtoError::Remote {
            code: RemoteCode::Internal,
            message: "m".into(),
        });
        assert_eq!(err.code(), ErrorCode::Internal);
    }

    #[test]
    fn paths_and_modes_are_checked() {
        assert_eq!(
            check_path("").expect_err("empty").code(),
            ErrorCode::InvalidPath
        );
        assert_eq!(
            check_path("/a\0b").expect_err("nul").code(),
            ErrorCode::InvalidPath
        );
        assert!(check_path("a/b").is_ok());
        assert_eq!(parse_mode(Some("644")).expect("ok"), Some(0o644));
        assert_eq!(parse_mode(Some("0o4755")).expect("ok"), Some(0o4755));
        assert!(parse_mode(Some("9")).is_err());
        assert!(parse_mode(Some("17777")).is_err());
        assert_eq!(parse_mode(None).expect("ok"), None);
    }
}
