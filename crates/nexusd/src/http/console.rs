//! The web console: `/` serves its page and `/console/...` its scripts, styles and the
//! bundled xterm.js, all embedded at build time (see `build.rs`). The files hold no data and
//! need no token; every call the page makes to `/v1` sends it.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nexus_api::ErrorCode;

use super::error::ApiError;
use crate::state::AppState;

/// What the console's pages may load: only this origin's scripts, connections (the API and
/// the terminal WebSocket) and images. Styles also allow inline ones, because xterm.js
/// writes `<style>` elements and `style` attributes for the terminal's colours and
/// dimensions at run time; scripts never run inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's routes: `/` and `/console/{path}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*path}", get(asset))
}

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path under `/console/`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A strong validator of the bytes, quoted.
    pub etag: &'static str,
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The embedded file at `path` (under `/console/`), if there is one.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

async fn index(headers: HeaderMap) -> Response {
    let asset = find("index.html").expect("build.rs embeds console/src/index.html");
    serve(asset, &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    match find(&path) {
        Some(asset) => Ok(serve(asset, &headers)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("the console has no file {path:?}"),
        )),
    }
}

/// The file with its type, validator and security headers; `304` when the client's copy
/// is current. Browsers revalidate every time (`no-cache`), which costs one small request
/// per file on a local daemon and never leaves an old console after an upgrade.
fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let current = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim().trim_start_matches("W/") == asset.etag)
        });
    let common = [
        (header::ETAG, HeaderValue::from_static(asset.etag)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    if current {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_terminal_are_embedded() {
        let index = find("index.html").expect("index.html");
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        let xterm = find("vendor/xterm.mjs").expect("xterm.js");
        assert!(xterm.content_type.starts_with("text/javascript"));
        assert!(xterm.body.len() > 100_000, "xterm.js looks truncated");
        assert!(find("../Cargo.toml").is_none());
    }

    #[test]
    fn etags_are_quoted_and_distinct() {
        let mut tags: Vec<_> = ASSETS.iter().map(|a| a.etag).collect();
        assert!(tags.iter().all(|t| t.starts_with('"') && t.ends_with('"')));
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
