//! Bearer-token authentication of `/v1` routes. Tokens are compared in constant time
//! and never logged.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use nexus_api::ErrorCode;

use super::error::ApiError;
use crate::state::AppState;

/// Middleware: lets the request through only with `Authorization: Bearer <token>`.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match check_header(&state, request.headers(), request.uri().path()) {
        Some(Ok(())) => Ok(next.run(request).await),
        Some(Err(err)) => Err(err),
        None => {
            tracing::warn!(path = %request.uri().path(), "request without a bearer token refused");
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing bearer token: send `Authorization: Bearer <token>`; nexusd wrote its token to $XDG_CONFIG_HOME/nexus/token on its host",
            ))
        }
    }
}

/// Checks an `Authorization` header: `None` when there is none, `Some(Err(401))` when it
/// does not carry the token. For routes that also accept the token elsewhere (the
/// terminal WebSocket's handshake), which therefore sit outside the middleware.
pub fn check_header(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Option<Result<(), ApiError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    Some(match presented {
        Some(token) if state.token.matches(token) => Ok(()),
        _ => {
            tracing::warn!(path, "request with a wrong bearer token refused");
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "invalid bearer token: use the token nexusd wrote to $XDG_CONFIG_HOME/nexus/token, or the one configured as NEXUS_TOKEN",
            ))
        }
    })
}
