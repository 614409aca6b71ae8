//! The HTTP layer: the router, its middleware and thin handlers that only translate
//! between HTTP and the core.

pub mod auth;
pub mod console;
pub mod convert;
pub mod error;
pub mod files;
pub mod images;
pub mod json;
pub mod metrics;
pub mod network;
pub mod openapi;
pub mod processes;
pub mod sandboxes;
pub mod stats;
pub mod system;
pub mod terminal;
pub mod workspaces;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, Method, Uri};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use nexus_api::ErrorCode;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `/v1` routes anyone may call.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(system::health))
}

/// `/v1` routes that need the bearer token.
fn protected_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(system::status))
        .routes(routes!(sandboxes::create, sandboxes::list))
        .routes(routes!(sandboxes::get, sandboxes::delete))
        .routes(routes!(sandboxes::start))
        .routes(routes!(sandboxes::stop))
        .routes(routes!(sandboxes::pause))
        .routes(routes!(sandboxes::resume))
        .routes(routes!(stats::get))
        .routes(routes!(workspaces::fork_sandbox))
        .routes(routes!(workspaces::create, workspaces::list))
        .routes(routes!(workspaces::get, workspaces::delete))
        .routes(routes!(workspaces::snapshot, workspaces::snapshots))
        .routes(routes!(workspaces::delete_snapshot))
        .routes(routes!(workspaces::restore))
        .routes(routes!(workspaces::fork))
        .routes(routes!(images::list, images::import))
        .routes(routes!(images::get, images::delete))
        .routes(routes!(images::build))
        .routes(routes!(images::builds))
        .routes(routes!(images::cancel_build))
        .routes(routes!(sandboxes::exec))
        .routes(routes!(network::set))
        .routes(routes!(network::log))
        .routes(routes!(processes::start, processes::list))
        .routes(routes!(processes::output))
        .routes(routes!(processes::wait))
        .routes(routes!(processes::signal))
        .routes(routes!(processes::write_stdin, processes::close_stdin))
        .routes(routes!(files::read, files::write))
        .routes(routes!(files::stat, files::stat_many))
        .routes(routes!(files::list))
        .routes(routes!(files::mkdir))
        .routes(routes!(files::move_path))
        .routes(routes!(files::copy))
        .routes(routes!(files::remove))
        .routes(routes!(files::batch))
        .routes(routes!(files::glob))
        .routes(routes!(files::grep))
        .routes(routes!(files::download_archive, files::upload_archive))
        .routes(routes!(files::watch))
        .routes(routes!(terminal::list, terminal::create))
        .routes(routes!(terminal::delete))
}

/// `/v1` routes that check the token themselves because it may arrive where the auth
/// layer cannot see it: the terminal WebSocket accepts it in its first message too
/// (browsers cannot set headers on a WebSocket), and refuses everything until then.
fn self_authenticating_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(terminal::ws::attach))
}

/// The OpenAPI document of every `/v1` route, as served at `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = OpenApiRouter::<AppState>::with_openapi(openapi::ApiDoc::openapi())
        .merge(public_routes())
        .merge(protected_routes())
        .merge(self_authenticating_routes())
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document rendered once, pretty-printed, exactly as checked into the repository.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

/// The whole application: every route with its middleware.
pub fn app(state: AppState) -> Router {
    let (public, _) = public_routes().split_for_parts();
    let (protected, _) = protected_routes().split_for_parts();
    let (self_authenticating, _) = self_authenticating_routes().split_for_parts();
    let protected = protected.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    Router::new()
        .merge(public)
        .merge(protected)
        .merge(self_authenticating)
        .merge(crate::mcp::routes(state.clone()))
        .merge(console::routes())
        .route("/v1/openapi.json", get(serve_openapi))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, RandomRequestId))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let id = request
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}

async fn serve_openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no route for {method} {}; the API is described at /v1/openapi.json",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} does not accept {method}; see /v1/openapi.json",
            uri.path()
        ),
    )
}

/// Random 64-bit request ids, unique enough to find one request in the log.
#[derive(Debug, Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:016x}", rand::random::<u64>());
        Some(RequestId::new(
            id.parse().expect("hex is a valid header value"),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    use axum::body::Body;
    use http_body_util::BodyExt;
    use nexus_api::DaemonPaths;
    use nexus_core::testing::MemoryStore;
    use tower::ServiceExt;

    use super::*;
    use crate::state::DaemonInfo;
    use crate::token::ApiToken;

    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/nexus-v1.json");

    /// Fails when a route changes without the checked-in document; run with
    /// `NEXUS_BLESS=1` to rewrite the file after a deliberate change.
    #[test]
    fn the_checked_in_openapi_document_matches_the_routes() {
        let generated = openapi_json();
        if std::env::var_os("NEXUS_BLESS").is_some() {
            std::fs::write(CHECKED_IN, generated).expect("write the OpenAPI document");
        }
        let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
        assert!(
            checked_in == generated,
            "openapi/nexus-v1.json is out of date; run `NEXUS_BLESS=1 cargo nextest run -p nexusd openapi` and commit it"
        );
    }

    /// A state over `store` with no drivers, for handler tests.
    pub(crate) fn state(store: Arc<MemoryStore>) -> AppState {
        let sandboxes = nexus_core::service::SandboxService::new(
            store.clone(),
            Vec::new(),
            Arc::new(nexus_core::testing::FakeStorage::default()),
            Arc::new(nexus_core::SystemClock),
            nexus_core::service::ServiceConfig::default(),
        );
        AppState {
            store,
            sandboxes: Arc::new(sandboxes),
            token: Arc::new(ApiToken::new("0123456789abcdef".into())),
            metrics: Arc::new(metrics::Metrics::new()),
            netlog: Arc::new(crate::netlog::NetLog::new(Default::default(), None)),
            mcp: Arc::default(),
            shutdown: Default::default(),
            info: Arc::new(DaemonInfo {
                started: Instant::now(),
                started_at: SystemTime::now(),
                listen: "127.0.0.1:9600".parse().expect("addr"),
                paths: DaemonPaths {
                    config_file: None,
                    token_file: None,
                    state_dir: "/s".into(),
                    data_dir: "/d".into(),
                    runtime_dir: "/r".into(),
                },
            }),
        }
    }

    async fn get(app: Router, path: &str) -> (u16, String) {
        let req = axum::http::Request::get(path)
            .body(Body::empty())
            .expect("request");
        let res = app.oneshot(req).await.expect("infallible");
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_failing_store_makes_readyz_and_health_report_it() {
        let store = Arc::new(MemoryStore::default());
        let app = app(state(store.clone()));
        assert_eq!(get(app.clone(), "/readyz").await, (200, "ready\n".into()));
        store.set_failing(true);
        let (status, body) = get(app.clone(), "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.starts_with("not ready: database:"), "{body}");
        let (status, body) = get(app.clone(), "/v1/health").await;
        assert_eq!(status, 503);
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["database"]["status"], "degraded");
        // Liveness does not depend on the store.
        assert_eq!(get(app, "/healthz").await, (200, "ok\n".into()));
    }
}
