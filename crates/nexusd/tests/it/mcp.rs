//! The MCP endpoint `/mcp` against a real daemon with real sandboxes, driven by the
//! official Rust MCP client over Streamable HTTP: authentication and DNS-rebinding
//! protection, profiles, sandbox binding, every tool family, cancellation.

use std::collections::HashMap;
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, JsonObject,
    ProgressNotificationParam,
};
use rmcp::service::{PeerRequestOptions, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, read_token, skip};

type Client = RunningService<RoleClient, ()>;

async fn connect(daemon: &Daemon, token: &str, headers: &[(&'static str, &str)]) -> Client {
    let mut custom = HashMap::new();
    for (name, value) in headers {
        custom.insert(
            name.parse().expect("header name"),
            value.parse().expect("header value"),
        );
    }
    let config = StreamableHttpClientTransportConfig::with_uri(daemon.url("/mcp"))
        .auth_header(token.to_owned())
        .custom_headers(custom);
    let transport = StreamableHttpClientTransport::from_config(config);
    ().serve(transport).await.expect("MCP session starts")
}

fn args(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("arguments must be an object, got {other}"),
    }
}

async fn call(client: &Client, tool: &'static str, arguments: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args(arguments)))
        .await
        .unwrap_or_else(|e| panic!("{tool} call failed at the protocol level: {e}"))
}

/// A successful call's structured content.
async fn ok(client: &Client, tool: &'static str, arguments: Value) -> Value {
    let result = call(client, tool, arguments).await;
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} failed: {}",
        text(&result)
    );
    result.structured_content.expect("structured content")
}

/// A failed call's message.
async fn failure(client: &Client, tool: &'static str, arguments: Value) -> String {
    let result = call(client, tool, arguments).await;
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} should fail: {}",
        text(&result)
    );
    text(&result)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}})
}

async fn raw_post(daemon: &Daemon, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(daemon.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize_body());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_refuses_missing_or_wrong_tokens_and_foreign_origins_and_hosts() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let token = read_token(&dirs.token_file());
    let bearer = format!("Bearer {token}");

    let res = raw_post(&daemon, &[]).await;
    assert_eq!(res.status(), 401);
    let challenge = res
        .headers()
        .get("www-authenticate")
        .expect("WWW-Authenticate");
    assert!(
        challenge.to_str().expect("ascii").starts_with("Bearer"),
        "{challenge:?}"
    );

    let res = raw_post(
        &daemon,
        &[("authorization", "Bearer wrong-token-0123456789")],
    )
    .await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));

    let res = raw_post(
        &daemon,
        &[
            ("authorization", &bearer),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(res.status(), 403, "a foreign Origin must be refused");

    let res = raw_post(
        &daemon,
        &[("authorization", &bearer), ("host", "evil.example")],
    )
    .await;
    assert_eq!(
        res.status(),
        403,
        "a foreign Host must be refused (DNS rebinding)"
    );

    let res = raw_post(
        &daemon,
        &[("authorization", &bearer), ("nexus-mcp-profile", "root")],
    )
    .await;
    assert_eq!(res.status(), 403);
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("unknown MCP profile")
    );

    let res = raw_post(&daemon, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), 200, "the daemon's token opens a session");
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "no CORS"
    );

    // A request body beyond the limit is refused before it is parsed.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(17 * 1024 * 1024)
    );
    let res = reqwest::Client::new()
        .post(daemon.url("/mcp"))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 413, "an oversized request is refused");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_decide_the_tools_and_hidden_tools_are_not_found() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let token = read_token(&dirs.token_file());

    let minimal = connect(&daemon, &token, &[("nexus-mcp-profile", "minimal")]).await;
    assert_eq!(
        tool_names(&minimal).await,
        ["file_list", "file_read", "file_stat", "glob"]
    );
    let hidden = minimal
        .call_tool(
            CallToolRequestParams::new("run_command")
                .with_arguments(args(json!({"sandbox": "x", "command": "true"}))),
        )
        .await
        .expect_err("a tool outside the profile");
    let unknown = minimal
        .call_tool(CallToolRequestParams::new("no_such_tool"))
        .await
        .expect_err("an unknown tool");
    let strip = |e: &dyn std::fmt::Display| {
        e.to_string()
            .replace("run_command", "T")
            .replace("no_such_tool", "T")
    };
    assert_eq!(
        strip(&hidden),
        strip(&unknown),
        "hidden and unknown tools must look alike"
    );
    assert!(hidden.to_string().contains("tool not found"), "{hidden}");

    let full = connect(&daemon, &token, &[]).await;
    let names = tool_names(&full).await;
    for expected in [
        "sandbox_create",
        "sandbox_list",
        "sandbox_delete",
        "sandbox_snapshot",
        "sandbox_fork",
        "run_command",
        "process_output",
        "process_kill",
        "file_read",
        "file_write",
        "file_edit",
        "file_delete",
        "file_list",
        "file_stat",
        "file_move",
        "make_directory",
        "glob",
        "grep",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let tools = full.list_all_tools().await.expect("tools/list");
    for tool in &tools {
        let annotations = tool.annotations.as_ref().expect("annotations");
        assert!(
            annotations.read_only_hint.is_some(),
            "{} has no readOnlyHint",
            tool.name
        );
        assert!(
            tool.output_schema.is_some(),
            "{} has no outputSchema",
            tool.name
        );
    }
    let read = tools
        .iter()
        .find(|t| t.name == "file_read")
        .expect("file_read");
    assert_eq!(
        read.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );
    let delete = tools
        .iter()
        .find(|t| t.name == "sandbox_delete")
        .expect("sandbox_delete");
    assert_eq!(
        delete.annotations.as_ref().and_then(|a| a.destructive_hint),
        Some(true)
    );

    let message = failure(&full, "file_read", json!({"sandbox": "nope", "path": "a"})).await;
    assert!(message.contains("no sandbox \"nope\""), "{message}");
    let message = failure(&full, "file_read", json!({"path": "a"})).await;
    assert!(message.contains("missing argument `sandbox`"), "{message}");
    let message = failure(&full, "file_read", json!({"sandbox": "nope", "path": 7})).await;
    assert!(
        message.contains("`path`"),
        "schema failures name the field: {message}"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_drives_a_sandbox_through_every_tool_family() {
    if !bwrap_usable() {
        skip("bubblewrap cannot create sandboxes here");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let token = read_token(&dirs.token_file());
    let client = connect(&daemon, &token, &[]).await;

    let created = ok(&client, "sandbox_create", json!({"name": "agent1"})).await;
    assert_eq!(created["state"], "running");
    let listed = ok(&client, "sandbox_list", json!({})).await;
    assert!(
        listed["sandboxes"]
            .as_array()
            .expect("list")
            .iter()
            .any(|s| s["name"] == "agent1")
    );

    let sb = |extra: Value| {
        let mut map = args(extra);
        map.insert("sandbox".into(), json!("agent1"));
        Value::Object(map)
    };
    ok(
        &client,
        "file_write",
        sb(json!({"path": "src/app.py", "content": "def greet():\n    return 'hello'\n"})),
    )
    .await;
    let read = ok(
        &client,
        "file_read",
        sb(json!({"path": "/workspace/src/app.py"})),
    )
    .await;
    assert_eq!(read["content"], "def greet():\n    return 'hello'\n");
    let part = ok(
        &client,
        "file_read",
        sb(json!({"path": "src/app.py", "offset": 4, "length": 5})),
    )
    .await;
    assert_eq!(part["content"], "greet");

    ok(
        &client,
        "file_edit",
        sb(json!({"path": "src/app.py", "old_text": "'hello'", "new_text": "'hi there'"})),
    )
    .await;
    let message = failure(
        &client,
        "file_edit",
        sb(json!({"path": "src/app.py", "old_text": "'hello'", "new_text": "x"})),
    )
    .await;
    assert!(message.contains("not found"), "{message}");

    let grep = ok(&client, "grep", sb(json!({"pattern": "hi there"}))).await;
    assert_eq!(
        grep["matches"][0]["path"], "/workspace/src/app.py",
        "{grep}"
    );
    let glob = ok(&client, "glob", sb(json!({"patterns": ["**/*.py"]}))).await;
    assert_eq!(
        glob["matches"].as_array().expect("matches").len(),
        1,
        "{glob}"
    );

    let run = ok(&client, "run_command", sb(json!({"command": "cd src && python3 -c 'import app; print(app.greet())'; echo err >&2; exit 3"}))).await;
    assert_eq!(run["exit_code"], 3, "{run}");
    assert_eq!(run["stdout"], "hi there\n", "{run}");
    assert_eq!(run["stderr"], "err\n", "{run}");

    let long = call(
        &client,
        "run_command",
        sb(json!({"command": "seq 1 200000"})),
    )
    .await;
    let long_text = text(&long);
    assert!(
        long_text.contains("\n1\n2\n") && long_text.contains("199999\n200000"),
        "head and tail kept"
    );
    assert!(long_text.contains("cut from the middle"), "the cut is said");
    assert!(
        long_text.len() < 40_000,
        "compact: {} bytes",
        long_text.len()
    );

    let timed_out = failure(
        &client,
        "run_command",
        sb(json!({"command": "sleep 30", "timeout_seconds": 1})),
    )
    .await;
    assert!(timed_out.contains("timed out after 1 s"), "{timed_out}");

    let bg = ok(
        &client,
        "run_command",
        sb(json!({"command": "echo started; sleep 300", "background": true})),
    )
    .await;
    let process = bg["process_id"].as_u64().expect("process id");
    let out = ok(
        &client,
        "process_output",
        sb(json!({"process_id": process, "wait_seconds": 1})),
    )
    .await;
    assert_eq!(out["running"], true, "{out}");
    assert_eq!(out["stdout"], "started\n", "{out}");
    let again = ok(
        &client,
        "process_output",
        sb(json!({"process_id": process, "stdout_offset": out["next_stdout_offset"]})),
    )
    .await;
    assert_eq!(again["stdout"], "", "only new output: {again}");
    ok(&client, "process_kill", sb(json!({"process_id": process}))).await;
    let done = ok(
        &client,
        "process_output",
        sb(json!({"process_id": process, "wait_seconds": 5})),
    )
    .await;
    assert_eq!(done["running"], false, "{done}");
    assert_eq!(done["signal"], 9, "{done}");

    ok(&client, "make_directory", sb(json!({"path": "out/deep"}))).await;
    ok(
        &client,
        "file_move",
        sb(json!({"from": "src/app.py", "to": "out/deep/app.py"})),
    )
    .await;
    let stat = ok(&client, "file_stat", sb(json!({"path": "out/deep/app.py"}))).await;
    assert_eq!(stat["type"], "file", "{stat}");
    let listing = ok(&client, "file_list", sb(json!({"path": "out", "depth": 3}))).await;
    assert!(listing.to_string().contains("app.py"), "{listing}");
    let message = failure(&client, "file_delete", sb(json!({"path": "out"}))).await;
    assert!(message.contains("recursive"), "{message}");

    let snap = ok(
        &client,
        "sandbox_snapshot",
        sb(json!({"name": "before-delete"})),
    )
    .await;
    assert_eq!(snap["name"], "before-delete");
    let fork = ok(
        &client,
        "sandbox_fork",
        json!({"sandbox": "agent1", "name": "agent2"}),
    )
    .await;
    assert_eq!(fork["state"], "running", "{fork}");
    ok(
        &client,
        "file_delete",
        sb(json!({"path": "out", "recursive": true})),
    )
    .await;
    let forked = ok(
        &client,
        "file_read",
        json!({"sandbox": "agent2", "path": "out/deep/app.py"}),
    )
    .await;
    assert!(
        forked["content"]
            .as_str()
            .expect("text")
            .contains("hi there"),
        "the fork keeps its own copy"
    );

    for name in ["agent2", "agent1"] {
        ok(&client, "sandbox_delete", json!({"sandbox": name})).await;
    }
    let listed = ok(&client, "sandbox_list", json!({})).await;
    assert_eq!(listed["sandboxes"], json!([]));
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_token_reaches_its_sandbox_only_and_no_host_path() {
    if !bwrap_usable() {
        skip("bubblewrap cannot create sandboxes here");
        return;
    }
    let dirs = Dirs::new();
    let scoped = "scoped-token-for-mine-0123456789";
    let config = dirs.write_config(&format!(
        "mcp:\n  tokens:\n    - token: {scoped}\n      profile: coding\n      sandbox: mine\n"
    ));
    let daemon = Daemon::start_with(&dirs, &["--config", config.to_str().expect("utf-8")]);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "mine"})).await;
    api.create(json!({"name": "other"})).await;
    api.sh("other", "echo other-secret > /workspace/secret")
        .await;

    let client = connect(&daemon, scoped, &[]).await;
    let names = tool_names(&client).await;
    assert!(
        !names
            .iter()
            .any(|n| n == "run_command" || n.starts_with("sandbox_")),
        "{names:?}"
    );
    let tools = client.list_all_tools().await.expect("tools/list");
    for tool in &tools {
        assert!(
            tool.input_schema
                .get("properties")
                .and_then(|p| p.get("sandbox"))
                .is_none(),
            "{} takes a sandbox",
            tool.name
        );
    }

    ok(
        &client,
        "file_write",
        json!({"path": "note.txt", "content": "mine"}),
    )
    .await;
    let read = ok(&client, "file_read", json!({"path": "note.txt"})).await;
    assert_eq!(read["content"], "mine");
    let (_, out) = (0, api.sh("mine", "cat /workspace/note.txt").await);
    assert_eq!(
        out["stdout"], "mine",
        "the write landed in the bound sandbox"
    );

    let message = failure(
        &client,
        "file_read",
        json!({"sandbox": "other", "path": "secret"}),
    )
    .await;
    assert_eq!(message, "no sandbox \"other\"");

    // Paths that leave the sandbox's own view read exactly like missing files.
    api.sh("mine", "ln -s /proc/1/root/etc/hostname /workspace/escape")
        .await;
    let missing = failure(
        &client,
        "file_read",
        json!({"path": "/workspace/nothing-here"}),
    )
    .await;
    for path in ["/proc/1/root/etc/shadow", "/workspace/escape"] {
        let refused = failure(&client, "file_read", json!({"path": path})).await;
        assert_eq!(
            refused.replace(path, "P"),
            missing.replace("/workspace/nothing-here", "P"),
            "{path} must be refused like a missing file"
        );
    }

    // A scoped token cannot widen itself with the narrowing headers.
    let res = reqwest::Client::new()
        .post(daemon.url("/mcp"))
        .bearer_auth(scoped)
        .header("accept", "application/json, text/event-stream")
        .header("nexus-mcp-sandbox", "other")
        .json(&initialize_body())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 403);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_or_abandoning_a_command_kills_it() {
    if !bwrap_usable() {
        skip("bubblewrap cannot create sandboxes here");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let token = read_token(&dirs.token_file());
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "runner"})).await;
    let client = connect(&daemon, &token, &[("nexus-mcp-sandbox", "runner")]).await;

    let params = CallToolRequestParams::new("run_command").with_arguments(args(
        json!({"command": "echo $$ > /workspace/pid1; exec sleep 300"}),
    ));
    let handle = client
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("request sent");
    wait_for_file(&api, "runner", "/workspace/pid1").await;
    handle
        .cancel(Some("test".into()))
        .await
        .expect("cancel sent");
    assert_gone(&api, "runner", "/workspace/pid1").await;

    // A client that goes away mid-run does not leave its command running either.
    let params = CallToolRequestParams::new("run_command").with_arguments(args(
        json!({"command": "echo $$ > /workspace/pid2; exec sleep 300"}),
    ));
    let peer = client.peer().clone();
    let call = tokio::spawn(async move { peer.call_tool(params).await });
    wait_for_file(&api, "runner", "/workspace/pid2").await;
    call.abort();
    client.cancel().await.expect("session closed");
    assert_gone(&api, "runner", "/workspace/pid2").await;
    daemon.stop();
}

async fn wait_for_file(api: &Api, sandbox: &str, path: &str) {
    for _ in 0..100 {
        let out = api
            .sh(sandbox, &format!("test -s {path} && echo yes"))
            .await;
        if out["stdout"] == "yes\n" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never appeared in {sandbox}");
}

async fn assert_gone(api: &Api, sandbox: &str, pid_file: &str) {
    for _ in 0..100 {
        let out = api
            .sh(
                sandbox,
                &format!("kill -0 $(cat {pid_file}) 2>/dev/null && echo alive || echo gone"),
            )
            .await;
        if out["stdout"] == "gone\n" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the command of {pid_file} is still running");
}

/// A client that keeps the progress notifications it receives.
#[derive(Clone, Default)]
struct ProgressRecorder(std::sync::Arc<std::sync::Mutex<Vec<ProgressNotificationParam>>>);

impl rmcp::ClientHandler for ProgressRecorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.0.lock().expect("lock").push(params);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_command_reports_progress_when_asked() {
    if !bwrap_usable() {
        skip("bubblewrap cannot create sandboxes here");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let token = read_token(&dirs.token_file());
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "slow"})).await;
    let config = StreamableHttpClientTransportConfig::with_uri(daemon.url("/mcp"))
        .auth_header(token)
        .custom_headers(HashMap::from([(
            "nexus-mcp-sandbox".parse().expect("name"),
            "slow".parse().expect("value"),
        )]));
    let recorder = ProgressRecorder::default();
    let client = recorder
        .clone()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP session starts");

    let params = CallToolRequestParams::new("run_command").with_arguments(args(
        json!({"command": "echo step-one; sleep 2.5; echo done"}),
    ));
    let handle = client
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("request sent");
    // The client asks for progress on every request, with a token of its own.
    let token = handle.progress_token.clone();
    let response = handle.await_response().await.expect("the command finishes");
    assert!(format!("{response:?}").contains("done"), "{response:?}");
    let seen = recorder.0.lock().expect("lock").clone();
    assert!(
        seen.len() >= 2,
        "one progress notification a second: {seen:?}"
    );
    assert!(seen.iter().all(|p| p.progress_token == token));
    assert!(
        seen.windows(2).all(|w| w[1].progress > w[0].progress),
        "progress rises: {seen:?}"
    );
    assert_eq!(seen[0].message.as_deref(), Some("step-one"), "{seen:?}");
    let _ = client.cancel().await;

    daemon.stop();
}

/// One stateless (2026-07-28) JSON-RPC request to `/mcp`; the answer's `result` or `error`.
async fn stateless(daemon: &Daemon, token: &str, method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let mut request = reqwest::Client::new()
        .post(daemon.url("/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        request = request.header("mcp-name", name);
    }
    let res = request
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
        .send()
        .await
        .expect("request");
    let status = res.status();
    if status != 200 {
        panic!(
            "{method}: HTTP {status}: {}",
            res.text().await.unwrap_or_default()
        );
    }
    assert!(
        res.headers().get("mcp-session-id").is_none(),
        "stateless: no session"
    );
    let body = res.text().await.expect("body");
    // JSON, or one SSE event carrying it.
    let json = body
        .lines()
        .find_map(|l| l.strip_prefix("data: ").filter(|d| !d.is_empty()))
        .unwrap_or(&body);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{method}: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stateless_protocol_is_served_on_the_same_endpoint() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let token = read_token(&dirs.token_file());

    let discovered = stateless(&daemon, &token, "server/discover", json!({})).await;
    let versions = discovered["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-11-25"),
        "{discovered}"
    );
    let listed = stateless(&daemon, &token, "tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().expect("tools");
    assert!(tools.iter().any(|t| t["name"] == "run_command"), "{listed}");
    let called = stateless(
        &daemon,
        &token,
        "tools/call",
        json!({"name": "file_stat", "arguments": {"sandbox": "absent", "path": "x"}}),
    )
    .await;
    assert_eq!(called["result"]["isError"], true, "{called}");
    daemon.stop();
}
