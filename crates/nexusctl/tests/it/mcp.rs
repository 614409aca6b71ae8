//! `nexusctl mcp serve` as a desktop MCP client launches it: the official Rust MCP
//! client speaks stdio to the real binary, which bridges to a real daemon's `/mcp`.

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::json;

use crate::harness::{Env, bwrap_usable};

fn serve_command(env: &Env, url: &str, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("nexusctl"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.path("home"))
        .env("XDG_CONFIG_HOME", env.path("config"))
        .env("XDG_STATE_HOME", env.path("state"))
        .env("XDG_DATA_HOME", env.path("data"))
        .env("XDG_RUNTIME_DIR", env.path("run"))
        .env("NEXUS_URL", url)
        .args(["mcp", "serve"])
        .args(extra);
    cmd
}

fn arguments(value: serde_json::Value) -> rmcp::model::JsonObject {
    value.as_object().cloned().expect("an object")
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_serve_bridges_stdio_to_the_daemon_with_the_launch_binding() {
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());

    let transport = TokioChildProcess::new(serve_command(&env, &url, &["--profile", "minimal"]))
        .expect("spawn");
    let client = ().serve(transport).await.expect("MCP over stdio starts");
    let info = client.peer_info().expect("server info");
    let server = info.server_info.as_ref().expect("server info");
    assert_eq!(server.name, "nexus");
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["file_list", "file_read", "file_stat", "glob"]);
    client.cancel().await.expect("closed");

    if !bwrap_usable() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED: the sandbox half of the stdio test needs bubblewrap");
        }
        return;
    }
    env.nexusctl(&url)
        .args(["sandbox", "create", "desk"])
        .assert()
        .success();
    let transport = TokioChildProcess::new(serve_command(
        &env,
        &url,
        &["--sandbox", "desk", "--profile", "execution"],
    ))
    .expect("spawn");
    let client = ().serve(transport).await.expect("MCP over stdio starts");
    let written = client
        .call_tool(
            CallToolRequestParams::new("file_write").with_arguments(arguments(
                json!({"path": "hello.txt", "content": "from stdio\n"}),
            )),
        )
        .await
        .expect("file_write");
    assert_ne!(written.is_error, Some(true), "{written:?}");
    let run = client
        .call_tool(
            CallToolRequestParams::new("run_command")
                .with_arguments(arguments(json!({"command": "cat hello.txt"}))),
        )
        .await
        .expect("run_command");
    let structured = run.structured_content.expect("structured");
    assert_eq!(structured["stdout"], "from stdio\n", "{structured}");
    assert_eq!(structured["exit_code"], 0);
    client.cancel().await.expect("closed");
    // Sandboxes outlive their daemon by design, so the test removes its own.
    env.nexusctl(&url)
        .args(["sandbox", "delete", "--force", "desk"])
        .assert()
        .success();
}
