//! The MCP endpoint end to end over Streamable HTTP (issue 6): `tools/call` of
//! `file_read` on a 1 KiB file and of `run_command` with `true`, through the official
//! Rust MCP client, to set beside the same operations through the REST API
//! (`file_read_1k`, `exec_true_api`) measured in the same run.

use std::time::Instant;

use anyhow::{Context, ensure};
use nexus_client::WriteOptions;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;

use crate::lab::Lab;
use crate::report::{Group, Operation};
use crate::stats::Samples;

/// Names of the operations measured here, in report order.
pub const NAMES: [&str; 2] = ["mcp_file_read_1k", "mcp_run_true"];

/// Measures both tool calls on one fresh sandbox, which is deleted afterwards.
pub async fn measure(lab: &Lab, url: &str, token: &str, n: usize) -> Vec<Operation> {
    let skipped = |reason: String| {
        NAMES
            .iter()
            .map(|name| Operation::skipped(name, Group::Nexus, reason.clone()))
            .collect()
    };
    let target = match lab.create_running().await {
        Ok(info) => info,
        Err(e) => return skipped(format!("cannot create the sandbox for MCP: {e:#}")),
    };
    let id = target.id.clone();
    let path = "/workspace/mcp-read-1k";
    if let Err(e) = lab
        .client
        .write_file(&id, path, vec![b'm'; 1024], &WriteOptions::default())
        .await
    {
        let _ = lab.delete(&id).await;
        return skipped(format!("cannot write {path}: {e}"));
    }
    let client = match connect(url, token, &id).await {
        Ok(client) => client,
        Err(e) => {
            let _ = lab.delete(&id).await;
            return skipped(format!("cannot open an MCP session: {e:#}"));
        }
    };
    let read = calls(&client, n, "file_read", json!({"path": path}), |v| {
        ensure!(v["length"] == 1024, "read {} bytes, not 1024", v["length"]);
        Ok(())
    })
    .await;
    let run = calls(&client, n, "run_command", json!({"command": "true"}), |v| {
        ensure!(v["exit_code"] == 0, "`true` exited with {}", v["exit_code"]);
        Ok(())
    })
    .await;
    let _ = client.cancel().await;
    let _ = lab.delete(&id).await;
    vec![
        Operation::measured(NAMES[0], Group::Nexus, read),
        Operation::measured(NAMES[1], Group::Nexus, run),
    ]
}

/// A session bound to the sandbox, as an agent would hold one.
async fn connect(
    url: &str,
    token: &str,
    sandbox: &str,
) -> anyhow::Result<RunningService<RoleClient, ()>> {
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        "nexus-mcp-sandbox".parse().context("header name")?,
        sandbox.parse().context("header value")?,
    );
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp"))
        .auth_header(token.to_owned())
        .custom_headers(headers);
    let transport = StreamableHttpClientTransport::from_config(config);
    Ok(().serve(transport).await?)
}

/// `n` timed calls of `tool` after three warm-up calls; `check` vets each result.
async fn calls(
    client: &RunningService<RoleClient, ()>,
    n: usize,
    tool: &'static str,
    arguments: serde_json::Value,
    check: impl Fn(&serde_json::Value) -> anyhow::Result<()>,
) -> Samples {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    let mut samples = Samples::default();
    for i in 0..n + 3 {
        let start = Instant::now();
        let result = client
            .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments.clone()))
            .await;
        let elapsed = start.elapsed();
        let result = result.map_err(anyhow::Error::from).and_then(|r| {
            ensure!(r.is_error != Some(true), "{tool} failed: {:?}", r.content);
            check(&r.structured_content.unwrap_or_default())
        });
        if i >= 3 {
            samples.record(elapsed, result);
        }
    }
    samples
}
