//! The one error shape every failing API call returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code plus a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine code, e.g. `unauthorized` or `not_found`. Never changes meaning.
    #[schema(example = "not_found")]
    pub code: String,
    /// What went wrong and, where possible, how to fix it. Names the offending field or object.
    #[schema(example = "no route for GET /v1/nope")]
    pub message: String,
}

impl ErrorBody {
    /// An error body with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.into(),
            },
        }
    }
}

/// The stable error codes of the API.
///
/// Clients should match on these, never on messages. New codes may be added; existing
/// ones keep their meaning and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the request is malformed (a field has a bad value, a query is invalid).
    InvalidRequest,
    /// 400: the body is not valid JSON or does not match the expected shape.
    InvalidJson,
    /// 401: the bearer token is missing or wrong.
    Unauthorized,
    /// 404: no such route.
    NotFound,
    /// 404: no sandbox has this id or name.
    SandboxNotFound,
    /// 409: the operation needs a running sandbox.
    SandboxNotRunning,
    /// 409: another sandbox has this name.
    SandboxNameTaken,
    /// 409: the sandbox is in a state that does not allow this (e.g. deleting a running one
    /// without `force`).
    SandboxStateConflict,
    /// 404: the sandbox has no process with this id (or it was already waited for).
    ProcessNotFound,
    /// 409: the process is not in a state that allows this (e.g. stdin already closed).
    ProcessStateConflict,
    /// 404: the sandbox has no terminal session with this id (never existed, or closed).
    TerminalNotFound,
    /// 409: the sandbox is paused; resume it first.
    SandboxPaused,
    /// 422: the requested driver or image cannot work on this host; `nexusctl doctor` says why.
    DriverUnavailable,
    /// 422: the sandbox's driver cannot do this here (e.g. pause without a freezer cgroup).
    OperationUnsupported,
    /// 400: a path is empty, contains NUL, or is refused (it escapes through a magic link).
    InvalidPath,
    /// 404: no file or directory at this path inside the sandbox.
    FileNotFound,
    /// 409: the path's current state does not allow this (it exists, is a directory,
    /// is not empty, is not a directory).
    FileConflict,
    /// 403: the sandbox's user may not do this there (permissions, read-only filesystem).
    FilePermissionDenied,
    /// 507: the disk or the quota is full; the file kept its previous content.
    InsufficientStorage,
    /// 404: no workspace has this id or name.
    WorkspaceNotFound,
    /// 409: another workspace has this name.
    WorkspaceNameTaken,
    /// 409: the workspace is in use by sandboxes that do not allow this; the message lists them.
    WorkspaceInUse,
    /// 404: the workspace has no snapshot with this id or name.
    SnapshotNotFound,
    /// 404: no image has this id or name; the message lists the existing ones.
    ImageNotFound,
    /// 409: another image has this name.
    ImageNameTaken,
    /// 409: sandboxes are on this image; the message lists them.
    ImageInUse,
    /// 422: building an image failed (unknown package, mirror unreachable); the message
    /// carries the tool's last lines. Nothing was recorded.
    ImageBuildFailed,
    /// 409: a build of this image name is already running (or is recording its image and
    /// can no longer be cancelled).
    ImageBuildInProgress,
    /// 404: no build of this image name is running.
    ImageBuildNotFound,
    /// 409: the build was cancelled (`DELETE /v1/images/builds/{name}`, or the daemon
    /// shut down); its processes were stopped and nothing was recorded.
    ImageBuildCancelled,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 413: the body is larger than the route accepts.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 500: the sandbox could not be started; the message says why (and it was rolled back).
    SandboxStartFailed,
    /// 500: the daemon failed; details are in its log, never in the response.
    Internal,
    /// 503: a dependency (such as the database) is unavailable right now.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidJson => "invalid_json",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::SandboxNotFound => "sandbox_not_found",
            Self::SandboxNotRunning => "sandbox_not_running",
            Self::SandboxNameTaken => "sandbox_name_taken",
            Self::SandboxStateConflict => "sandbox_state_conflict",
            Self::SandboxPaused => "sandbox_paused",
            Self::DriverUnavailable => "driver_unavailable",
            Self::OperationUnsupported => "operation_unsupported",
            Self::InvalidPath => "invalid_path",
            Self::FileNotFound => "file_not_found",
            Self::FileConflict => "file_conflict",
            Self::FilePermissionDenied => "file_permission_denied",
            Self::InsufficientStorage => "insufficient_storage",
            Self::WorkspaceNotFound => "workspace_not_found",
            Self::WorkspaceNameTaken => "workspace_name_taken",
            Self::WorkspaceInUse => "workspace_in_use",
            Self::SnapshotNotFound => "snapshot_not_found",
            Self::ImageNotFound => "image_not_found",
            Self::ImageNameTaken => "image_name_taken",
            Self::ImageInUse => "image_in_use",
            Self::ImageBuildFailed => "image_build_failed",
            Self::ImageBuildInProgress => "image_build_in_progress",
            Self::ImageBuildNotFound => "image_build_not_found",
            Self::ImageBuildCancelled => "image_build_cancelled",
            Self::ProcessNotFound => "process_not_found",
            Self::ProcessStateConflict => "process_state_conflict",
            Self::TerminalNotFound => "terminal_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::SandboxStartFailed => "sandbox_start_failed",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
        }
    }

    /// The HTTP status this code is always returned with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest | Self::InvalidJson | Self::InvalidPath => 400,
            Self::Unauthorized => 401,
            Self::FilePermissionDenied => 403,
            Self::NotFound
            | Self::SandboxNotFound
            | Self::ProcessNotFound
            | Self::TerminalNotFound
            | Self::FileNotFound
            | Self::WorkspaceNotFound
            | Self::SnapshotNotFound
            | Self::ImageNotFound
            | Self::ImageBuildNotFound => 404,
            Self::ProcessStateConflict | Self::FileConflict => 409,
            Self::SandboxNotRunning
            | Self::SandboxNameTaken
            | Self::SandboxStateConflict
            | Self::SandboxPaused
            | Self::WorkspaceNameTaken
            | Self::WorkspaceInUse
            | Self::ImageNameTaken
            | Self::ImageInUse
            | Self::ImageBuildInProgress
            | Self::ImageBuildCancelled => 409,
            Self::DriverUnavailable | Self::OperationUnsupported | Self::ImageBuildFailed => 422,
            Self::InsufficientStorage => 507,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::SandboxStartFailed | Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ErrorBody::new(ErrorCode::NotFound, "no route for GET /x");
        let json = serde_json::to_value(&body).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "not_found", "message": "no route for GET /x"}})
        );
    }
}
