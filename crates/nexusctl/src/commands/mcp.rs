//! `nexusctl mcp serve`: an MCP server on stdio for desktop MCP clients. It is a
//! transport bridge, not a second implementation: every JSON-RPC message goes to the
//! daemon's Streamable HTTP endpoint `/mcp` and every answer comes back, so the tools,
//! profiles and confinement are the daemon's. `--sandbox` and `--profile` travel as the
//! `Nexus-Mcp-Sandbox` and `Nexus-Mcp-Profile` headers, which can only narrow what the
//! token allows. When stdin closes the session is ended on the daemon, which kills any
//! foreground command still running.

use std::collections::HashMap;

use anyhow::Context;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, Transport};
use rmcp::{RoleClient, RoleServer};

use crate::cli::McpServeArgs;
use crate::config::Connection;

/// Bridges stdin/stdout to the daemon's `/mcp` until either side closes.
pub async fn serve(conn: &Connection, args: McpServeArgs) -> anyhow::Result<()> {
    let url = format!("{}/mcp", conn.url.trim_end_matches('/'));
    if !url.starts_with("http://") {
        anyhow::bail!(
            "nexusctl mcp serve speaks plain HTTP to the daemon, got {url:?}; give --url http://HOST:PORT (put TLS termination on the daemon's side)"
        );
    }
    let mut headers = HashMap::new();
    if let Some(profile) = &args.profile {
        headers.insert(
            "nexus-mcp-profile".parse().context("header name")?,
            profile
                .parse()
                .context("the profile is not a valid header value")?,
        );
    }
    if let Some(sandbox) = &args.sandbox {
        headers.insert(
            "nexus-mcp-sandbox".parse().context("header name")?,
            sandbox
                .parse()
                .context("--sandbox must be printable ASCII (a sandbox id or name)")?,
        );
    }
    let mut config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers);
    if let Some(token) = &conn.token {
        config = config.auth_header(token.clone());
    }
    let mut upstream = StreamableHttpClientTransport::from_config(config);
    let mut local = IntoTransport::<RoleServer, _, _>::into_transport(rmcp::transport::io::stdio());
    let outcome = pump(&mut local, &mut upstream).await;
    let _ = Transport::<RoleClient>::close(&mut upstream).await;
    let _ = Transport::<RoleServer>::close(&mut local).await;
    outcome
}

/// Moves messages both ways until one side ends.
async fn pump<L, U>(local: &mut L, upstream: &mut U) -> anyhow::Result<()>
where
    L: Transport<RoleServer>,
    U: Transport<RoleClient>,
    L::Error: std::error::Error + Send + Sync + 'static,
    U::Error: std::error::Error + Send + Sync + 'static,
{
    loop {
        tokio::select! {
            message = local.receive() => match message {
                Some(message) => upstream
                    .send(message)
                    .await
                    .context("cannot pass a message to the daemon's /mcp endpoint")?,
                None => return Ok(()),
            },
            message = upstream.receive() => match message {
                Some(message) => local
                    .send(message)
                    .await
                    .context("cannot write to stdout")?,
                None => anyhow::bail!("the daemon's /mcp endpoint closed the session"),
            },
        }
    }
}
