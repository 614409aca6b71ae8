//! Pause and resume through the REST API of a real daemon: a busy sandbox stops using
//! CPU while paused, refuses commands with 409 `sandbox_paused`, and continues after resume.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, skip};

/// CPU time the sandbox has used so far, from its cgroup, as inspect reports it.
async fn cpu_usec(api: &Api, sandbox: &str) -> Option<u64> {
    let (status, info) = api.get(&format!("/v1/sandboxes/{sandbox}")).await;
    assert_eq!(status, 200, "{info}");
    info["usage"]["cpu_usage_usec"].as_u64()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_sandbox_uses_no_cpu_refuses_commands_and_resumes() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "spin"})).await;
    if cpu_usec(&api, "spin").await.is_none() {
        skip("this host reports no cgroup CPU usage, so a pause cannot be observed");
        return;
    }
    let (status, started) = api
        .post(
            "/v1/sandboxes/spin/processes",
            json!({"argv": ["sh", "-c", "while :; do :; done"]}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let process = started["id"].as_u64().expect("id");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, paused) = api.post("/v1/sandboxes/spin/pause", json!({})).await;
    if status == 422 {
        skip(&format!("this host cannot freeze sandboxes: {paused}"));
        return;
    }
    assert_eq!(
        (status, &paused["state"]),
        (200, &json!("paused")),
        "{paused}"
    );
    let frozen_at = cpu_usec(&api, "spin").await.expect("usage");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = cpu_usec(&api, "spin").await.expect("usage");
    // A spinning loop would use ~500 ms of CPU in that time; frozen, it uses none.
    assert!(
        later - frozen_at < 20_000,
        "a paused sandbox used {} µs of CPU in 500 ms",
        later - frozen_at
    );

    for (path, body) in [
        ("/v1/sandboxes/spin/exec", json!({"argv": ["true"]})),
        ("/v1/sandboxes/spin/processes", json!({"argv": ["true"]})),
    ] {
        let (status, err) = api.post(path, body).await;
        assert_eq!(
            (status, &err["error"]["code"]),
            (409, &json!("sandbox_paused")),
            "{path}: {err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .expect("message")
                .contains("resume"),
            "{err}"
        );
    }
    let (status, err) = api.post("/v1/sandboxes/spin/start", json!({})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("sandbox_state_conflict"))
    );

    let (status, resumed) = api.post("/v1/sandboxes/spin/resume", json!({})).await;
    assert_eq!(
        (status, &resumed["state"]),
        (200, &json!("running")),
        "{resumed}"
    );
    let thawed_at = cpu_usec(&api, "spin").await.expect("usage");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = cpu_usec(&api, "spin").await.expect("usage");
    assert!(
        later - thawed_at > 100_000,
        "the loop did not continue after resume: {} µs of CPU in 500 ms",
        later - thawed_at
    );
    let (_, list) = api.get("/v1/sandboxes/spin/processes").await;
    let entry = list["processes"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["id"] == process)
        .cloned()
        .expect("the process survived the pause");
    assert_eq!(entry["state"], "running", "{entry}");

    // A paused sandbox stops cleanly (it is thawed so its processes get SIGTERM).
    let (status, _) = api.post("/v1/sandboxes/spin/pause", json!({})).await;
    assert_eq!(status, 200);
    let (status, stopped) = api.post("/v1/sandboxes/spin/stop", json!({})).await;
    assert_eq!(
        (status, &stopped["state"]),
        (200, &json!("stopped")),
        "{stopped}"
    );
    let (status, err) = api.post("/v1/sandboxes/spin/resume", json!({})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("sandbox_not_running")),
        "{err}"
    );
}
