//! The MCP server: sandbox tools for any MCP client over Streamable HTTP at `/mcp`
//! (`nexusctl mcp serve` bridges stdio to it), with tool profiles and sandbox binding.

pub mod auth;
pub mod binding;
pub mod compact;
pub mod conformance;
pub mod server;
pub mod tools;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::config::McpConfig;
use crate::state::AppState;

/// Largest JSON-RPC request body accepted (a `file_write` of a few MiB fits).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The `/mcp` routes: the sandbox tools behind a bearer token, and the conformance
/// fixtures at `/mcp/conformance` (no token: they touch nothing) when the config
/// switches them on.
pub fn routes(state: AppState) -> Router<AppState> {
    let http = http_config(&state.mcp, &state);
    let tools_state = state.clone();
    let tools = StreamableHttpService::new(
        move || Ok(server::NexusTools::new(tools_state.clone())),
        Arc::new(LocalSessionManager::default()),
        http.clone(),
    );
    let mut router =
        Router::new()
            .route_service("/mcp", tools)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_mcp_token,
            ));
    if state.mcp.conformance {
        let hub = conformance::Hub::new();
        let mut http = http;
        http.allowed_origins
            .extend(conformance::own_origins(state.info.listen));
        let fixtures = StreamableHttpService::new(
            move || Ok(conformance::Fixtures::new(&hub)),
            Arc::new(LocalSessionManager::default()),
            http,
        );
        router = router.route_service("/mcp/conformance", fixtures);
    }
    router
}

/// The transport settings shared by every MCP endpoint: DNS-rebinding protection by
/// `Host` (loopback names, the listen address and `mcp.allowed_hosts`) and by `Origin`
/// (refused unless listed in `mcp.allowed_origins`), and the request size limit.
pub fn http_config(config: &McpConfig, state: &AppState) -> StreamableHttpServerConfig {
    let listen = state.info.listen;
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    hosts.push(listen.ip().to_string());
    hosts.extend(config.allowed_hosts.iter().cloned());
    StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(config.allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_REQUEST_BYTES)
        .with_cancellation_token(state.shutdown.child_token())
}
