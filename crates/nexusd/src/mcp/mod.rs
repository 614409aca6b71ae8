//! The MCP server: sandbox tools for any MCP client over Streamable HTTP at `/mcp`
//! (`nexusctl mcp serve` bridges stdio to it), with tool profiles and sandbox binding.

pub mod auth;
pub mod binding;
pub mod compact;
pub mod conformance;
pub mod server;
pub mod tools;

use std::net::SocketAddr;
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
        Arc::new(tool_sessions()),
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
        let fixtures = StreamableHttpService::new(
            move || Ok(conformance::Fixtures::new(&hub)),
            Arc::new(LocalSessionManager::default()),
            http,
        );
        router = router.route_service("/mcp/conformance", fixtures);
    }
    router
}

/// How long a 2025-11-25 session may go without a message before it is closed (and
/// whatever it still runs in the foreground is killed): longer than the longest
/// foreground command, so a quiet `run_command` of a client that did not ask for progress
/// is never cut short by its own session. A client that vanished without closing its
/// session loses its foreground commands at their own timeout, at the latest.
pub const SESSION_IDLE: std::time::Duration =
    std::time::Duration::from_secs(tools::commands::MAX_TIMEOUT_SECONDS + 300);

fn tool_sessions() -> LocalSessionManager {
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(SESSION_IDLE);
    sessions
}

/// The transport settings shared by every MCP endpoint: DNS-rebinding protection by
/// `Host` (loopback names, the listen address and `mcp.allowed_hosts`) and by `Origin`
/// (refused unless it is the daemon's own origin or listed in `mcp.allowed_origins`),
/// the request size limit, and an end to every session when the daemon stops.
pub fn http_config(config: &McpConfig, state: &AppState) -> StreamableHttpServerConfig {
    let listen = state.info.listen;
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    hosts.push(listen.ip().to_string());
    hosts.extend(config.allowed_hosts.iter().cloned());
    StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(
            config
                .allowed_origins
                .iter()
                .cloned()
                .chain(own_origins(listen)),
        )
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_REQUEST_BYTES)
        .with_cancellation_token(state.shutdown.child_token())
}

/// The browser origins of the daemon itself (`http://127.0.0.1:PORT`, and
/// `http://localhost:PORT` on loopback): pages the daemon serves itself are
/// same-origin, and the conformance suite's DNS-rebinding scenario expects them served.
pub fn own_origins(listen: SocketAddr) -> Vec<String> {
    let mut origins = vec![format!("http://{listen}")];
    if listen.ip().is_loopback() {
        origins.push(format!("http://localhost:{}", listen.port()));
    }
    origins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origins_name_the_listen_address_and_localhost_on_loopback() {
        let loopback: SocketAddr = "127.0.0.1:9600".parse().expect("addr");
        assert_eq!(
            own_origins(loopback),
            ["http://127.0.0.1:9600", "http://localhost:9600"]
        );
        let v6: SocketAddr = "[::1]:80".parse().expect("addr");
        assert_eq!(own_origins(v6), ["http://[::1]:80", "http://localhost:80"]);
        let public: SocketAddr = "192.0.2.7:9600".parse().expect("addr");
        assert_eq!(own_origins(public), ["http://192.0.2.7:9600"]);
    }
}
