//! `ApiError`: the one error type handlers return, rendered as the standard error body.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nexus_api::{ErrorBody, ErrorCode};

/// An error on its way to the client: a stable code plus a message.
///
/// Internal errors carry their cause for the log only; the client sees a generic message.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    internal: Option<anyhow::Error>,
}

impl ApiError {
    /// An error with this code and a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            internal: None,
        }
    }

    /// A 500 whose cause is logged but never sent.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: "internal error; the daemon log has the details".into(),
            internal: Some(cause.into()),
        }
    }

    /// A 503 for a dependency that does not answer; the cause is logged.
    pub fn unavailable(what: &str, cause: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::Unavailable,
            message: format!(
                "{what} is unavailable right now; retry later, and see the daemon log if it persists"
            ),
            internal: Some(cause.into()),
        }
    }

    /// The code this error is sent with.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The code and the client's message, for errors sent some other way than as a
    /// response (a WebSocket close frame); an internal cause is logged here, never sent.
    pub fn into_parts(self) -> (ErrorCode, String) {
        if let Some(cause) = &self.internal {
            tracing::error!(code = %self.code, error = format!("{cause:#}"), "request failed");
        }
        (self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.internal {
            tracing::error!(code = %self.code, error = format!("{cause:#}"), "request failed");
        }
        let status = StatusCode::from_u16(self.code.http_status())
            .expect("every error code maps to a valid HTTP status");
        let mut response = (status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if self.code == ErrorCode::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
