//! Background processes: start, list, re-attach to output from an offset, stdin, signal, wait.

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, read_token, skip};

/// The NDJSON lines of a process's output from the given offsets.
async fn output(
    daemon: &Daemon,
    dirs: &Dirs,
    sandbox: &str,
    process: u64,
    stdout_offset: u64,
) -> Vec<Value> {
    let url = daemon.url(&format!(
        "/v1/sandboxes/{sandbox}/processes/{process}/output?stdout_offset={stdout_offset}"
    ));
    let res = reqwest::Client::new()
        .get(url)
        .bearer_auth(read_token(&dirs.token_file()))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let body = res.text().await.expect("body");
    body.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn stdout_of(lines: &[Value]) -> String {
    let bytes: Vec<u8> = lines
        .iter()
        .filter(|l| l["type"] == "stdout")
        .flat_map(|l| {
            base64::engine::general_purpose::STANDARD
                .decode(l["data"].as_str().expect("data"))
                .expect("b64")
        })
        .collect();
    String::from_utf8(bytes).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn background_processes_can_be_followed_and_reattached() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "bg"})).await;

    let (status, started) = api
        .post(
            "/v1/sandboxes/bg/processes",
            json!({"argv": ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"]}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_u64().expect("id");
    let (_, list) = api.get("/v1/sandboxes/bg/processes").await;
    assert!(
        list["processes"]
            .as_array()
            .expect("list")
            .iter()
            .any(|p| p["id"] == id),
        "{list}"
    );

    // Follow from the start: everything, then the exit.
    let lines = output(&daemon, &dirs, "bg", id, 0).await;
    assert_eq!(stdout_of(&lines), "1\n2\n3\n");
    assert_eq!(lines.last().expect("last")["type"], "exit");
    // Re-attach from an offset: only what came after it.
    let lines = output(&daemon, &dirs, "bg", id, 2).await;
    assert_eq!(stdout_of(&lines), "2\n3\n");
    assert_eq!(
        lines
            .iter()
            .find(|l| l["type"] == "stdout")
            .expect("stdout")["offset"],
        2
    );

    let (status, exit) = api
        .post(&format!("/v1/sandboxes/bg/processes/{id}/wait"), json!({}))
        .await;
    assert_eq!(
        (status, exit["exit_code"].as_i64()),
        (200, Some(0)),
        "{exit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_and_signals_reach_the_process() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "io"})).await;
    let http = reqwest::Client::new();
    let token = read_token(&dirs.token_file());

    let (_, cat) = api
        .post(
            "/v1/sandboxes/io/processes",
            json!({"argv": ["cat"], "stdin": true}),
        )
        .await;
    let cat = cat["id"].as_u64().expect("id");
    let res = http
        .post(daemon.url(&format!("/v1/sandboxes/io/processes/{cat}/stdin")))
        .bearer_auth(&token)
        .body(b"abc\0def".to_vec())
        .send()
        .await
        .expect("write");
    assert_eq!(res.status().as_u16(), 204);
    let (status, _) = api
        .delete(&format!("/v1/sandboxes/io/processes/{cat}/stdin"))
        .await;
    assert_eq!(status, 204);
    let lines = output(&daemon, &dirs, "io", cat, 0).await;
    assert_eq!(stdout_of(&lines), "abc\0def");

    let (_, sleeper) = api
        .post(
            "/v1/sandboxes/io/processes",
            json!({"argv": ["sleep", "100"]}),
        )
        .await;
    let sleeper = sleeper["id"].as_u64().expect("id");
    let (status, _) = api
        .post(
            &format!("/v1/sandboxes/io/processes/{sleeper}/signal"),
            json!({"signal": 15}),
        )
        .await;
    assert_eq!(status, 204);
    let (_, exit) = api
        .post(
            &format!("/v1/sandboxes/io/processes/{sleeper}/wait"),
            json!({}),
        )
        .await;
    assert_eq!(exit["signal"], 15, "{exit}");

    let (status, err) = api
        .post("/v1/sandboxes/io/processes/999999/wait", json!({}))
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("process_not_found")),
        "{err}"
    );
    let (status, err) = api
        .post(
            "/v1/sandboxes/io/processes",
            json!({"argv": ["/no/such/program"]}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &json!("invalid_request")),
        "{err}"
    );
    let (status, err) = api
        .post(
            &format!("/v1/sandboxes/io/processes/{sleeper}/signal"),
            json!({"signal": 0}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
}
