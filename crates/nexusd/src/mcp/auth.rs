//! Bearer-token authentication of `/mcp`: the daemon's token (narrowable by headers) or
//! one of the scoped tokens of `mcp.tokens`. Failures are answered as MCP clients expect:
//! 401 with `WWW-Authenticate`, 403 for a binding the token may not take.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::binding::Binding;
use crate::state::AppState;

/// Middleware: resolves the caller's [`Binding`] from its token and narrowing headers and
/// hands it to the MCP service in the request's extensions.
pub async fn require_mcp_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        tracing::warn!("MCP request without a bearer token refused");
        return unauthorized(
            "invalid_request",
            "missing bearer token: send `Authorization: Bearer <token>` (the daemon's token, or one from mcp.tokens in nexus.yaml)",
        );
    };
    let granted = if state.token.matches(presented) {
        Some(Binding::unrestricted())
    } else {
        state.mcp.binding_for(presented)
    };
    let Some(granted) = granted else {
        tracing::warn!("MCP request with a wrong bearer token refused");
        return unauthorized(
            "invalid_token",
            "invalid bearer token: use the daemon's token or one listed under mcp.tokens in nexus.yaml",
        );
    };
    match granted.narrowed(request.headers()) {
        Ok(binding) => {
            request.extensions_mut().insert(binding);
            next.run(request).await
        }
        Err(message) => {
            tracing::warn!(%message, "MCP request asked for a binding its token does not allow");
            (StatusCode::FORBIDDEN, message).into_response()
        }
    }
}

fn unauthorized(error: &str, message: &'static str) -> Response {
    let challenge = format!("Bearer realm=\"nexus\", error=\"{error}\"");
    let mut response = (StatusCode::UNAUTHORIZED, message).into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
