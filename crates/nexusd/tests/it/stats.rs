//! Live sandbox stats through a real daemon and real sandboxes: `GET
//! /v1/sandboxes/{id}/stats` follows CPU, memory and I/O as they grow, answers 409 for a
//! stopped sandbox, and `/metrics` carries per-sandbox series only for live sandboxes, up
//! to the configured cap.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, skip};

/// Every counter field of the stats response.
const COUNTERS: [&str; 11] = [
    "cpu_usec",
    "cpu_user_usec",
    "cpu_system_usec",
    "memory_bytes",
    "memory_peak_bytes",
    "pids",
    "io_read_bytes",
    "io_write_bytes",
    "io_read_ops",
    "io_write_ops",
    "oom_kills",
];

async fn stats(api: &Api, sandbox: &str) -> Value {
    let (status, body) = api.get(&format!("/v1/sandboxes/{sandbox}/stats")).await;
    assert_eq!(status, 200, "{body}");
    check_shape(&body);
    body
}

/// Every counter is a number, or `null` and named in `unmeasured`.
fn check_shape(body: &Value) {
    let unmeasured: Vec<&str> = body["unmeasured"]
        .as_array()
        .unwrap_or_else(|| panic!("unmeasured is a list: {body}"))
        .iter()
        .map(|v| v.as_str().expect("a field name"))
        .collect();
    for field in COUNTERS {
        let value = &body[field];
        assert!(
            value.is_u64() || (value.is_null() && unmeasured.contains(&field)),
            "{field} is neither a number nor listed as unmeasured: {body}"
        );
        assert_eq!(
            value.is_null(),
            unmeasured.contains(&field),
            "{field}: {body}"
        );
    }
    assert!(body["timestamp_ms"].as_u64().expect("timestamp_ms") > 0);
    assert!(
        body["timestamp"]
            .as_str()
            .expect("timestamp")
            .ends_with('Z')
    );
}

fn counter(body: &Value, field: &str) -> Option<u64> {
    body[field].as_u64()
}

async fn metrics(daemon: &Daemon) -> String {
    let res = reqwest::get(daemon.url("/metrics")).await.expect("metrics");
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.expect("body")
}

/// Lines of per-sandbox series naming `name`.
fn series_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let label = format!("name=\"{name}\"");
    text.lines()
        .filter(|l| l.starts_with("nexus_sandbox_") && l.contains(&label))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_follow_cpu_memory_and_io_of_a_real_sandbox() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let created = api
        .create(json!({"name": "busy", "limits": {"memory_mib": 256, "pids": 64}}))
        .await;

    let before = stats(&api, "busy").await;
    assert_eq!(before["id"], created["id"]);
    assert_eq!(before["name"], "busy");
    assert_eq!(before["state"], "running");
    if counter(&before, "memory_bytes").is_some() {
        assert_eq!(
            counter(&before, "memory_limit_bytes"),
            Some(256 << 20),
            "{before}"
        );
    }
    if counter(&before, "pids").is_some() {
        assert_eq!(counter(&before, "pids_limit"), Some(64), "{before}");
        assert!(
            counter(&before, "pids") >= Some(1),
            "the agent runs: {before}"
        );
    }

    // CPU: a finite busy loop, then the CPU time has grown.
    api.sh("busy", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
        .await;
    let after_cpu = stats(&api, "busy").await;
    match (
        counter(&before, "cpu_usec"),
        counter(&after_cpu, "cpu_usec"),
    ) {
        (Some(was), Some(now)) => assert!(now > was, "CPU time did not grow: {was} -> {now}"),
        _ => skip("CPU growth not checked: this host does not measure sandbox CPU time"),
    }
    assert!(after_cpu["timestamp_ms"].as_u64() >= before["timestamp_ms"].as_u64());

    // Memory: a command that holds 64 MB for a moment raises the peak for good.
    let held = api
        .sh(
            "busy",
            "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo ${#x}",
        )
        .await;
    assert_eq!(held["stdout"], "64000000\n", "{held}");
    let after_memory = stats(&api, "busy").await;
    match (
        counter(&before, "memory_peak_bytes"),
        counter(&after_memory, "memory_peak_bytes"),
    ) {
        (Some(was), Some(now)) => assert!(
            now >= was.max(64_000_000),
            "the peak did not reach the 64 MB held: {was} -> {now}"
        ),
        _ => skip("memory peak not checked: this host does not measure sandbox memory"),
    }
    // ...and a process that keeps it shows in the current use while it runs.
    if let Some(was) = counter(&after_memory, "memory_bytes") {
        let (status, started) = api
            .post(
                "/v1/sandboxes/busy/processes",
                json!({"argv": ["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo held; sleep 120"]}),
            )
            .await;
        assert_eq!(status, 201, "{started}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = counter(&stats(&api, "busy").await, "memory_bytes").expect("measured");
            if now >= was + 48_000_000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "memory in use never grew by the 64 MB held: {was} -> {now}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // I/O: 2 MiB written past the page cache to the workspace.
    let written = api
        .sh(
            "busy",
            "dd if=/dev/zero of=/workspace/io.bin bs=64k count=32 oflag=direct conv=fsync 2>&1",
        )
        .await;
    assert_eq!(written["exit_code"], 0, "{written}");
    let after_io = stats(&api, "busy").await;
    match (
        counter(&before, "io_write_bytes"),
        counter(&after_io, "io_write_bytes"),
    ) {
        (Some(was), Some(now)) => {
            assert!(
                now >= was + (2 << 20),
                "2 MiB written directly, counted {was} -> {now}"
            );
            assert!(counter(&after_io, "io_write_ops") > counter(&before, "io_write_ops"));
        }
        _ => {
            let unmeasured = after_io["unmeasured"].to_string();
            for field in [
                "io_read_bytes",
                "io_write_bytes",
                "io_read_ops",
                "io_write_ops",
            ] {
                assert!(unmeasured.contains(field), "{after_io}");
            }
            skip(
                "I/O growth not checked: this host does not measure block I/O per sandbox (the response says so)",
            );
        }
    }

    // A paused sandbox still answers.
    let (status, paused) = api.post("/v1/sandboxes/busy/pause", json!({})).await;
    if status == 200 {
        assert_eq!(stats(&api, "busy").await["state"], "paused");
        let (status, resumed) = api.post("/v1/sandboxes/busy/resume", json!({})).await;
        assert_eq!(status, 200, "{resumed}");
    } else {
        assert_eq!(status, 422, "{paused}");
        skip("stats of a paused sandbox not checked: this host cannot freeze sandboxes");
    }

    // Stopped: 409 like exec; unknown: 404.
    let (status, stopped) = api.post("/v1/sandboxes/busy/stop", json!({})).await;
    assert_eq!(status, 200, "{stopped}");
    let (status, body) = api.get("/v1/sandboxes/busy/stats").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("sandbox_not_running")),
        "{body}"
    );
    let (status, body) = api.get("/v1/sandboxes/nope/stats").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("sandbox_not_found")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_have_series_for_live_sandboxes_and_none_after_delete() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let created = api
        .create(json!({"name": "watched", "labels": {"secret-team": "x"}}))
        .await;
    let id = created["id"].as_str().expect("id");

    let text = metrics(&daemon).await;
    assert!(
        text.lines()
            .any(|l| l == r#"nexus_sandboxes{state="running"} 1"#),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "nexus_sandbox_series_omitted 0"));
    let series = series_of(&text, "watched");
    let sample = stats(&api, "watched").await;
    if sample["unmeasured"].as_array().map(Vec::len) == Some(COUNTERS.len()) {
        skip("per-sandbox series not checked: this host measures nothing per sandbox");
    } else {
        assert!(
            !series.is_empty(),
            "no series for a running sandbox:\n{text}"
        );
        for line in &series {
            assert!(line.contains(&format!("id=\"{id}\"")), "{line}");
            assert!(!line.contains("secret-team"), "user labels leaked: {line}");
        }
        if sample["memory_bytes"].is_u64() {
            assert!(
                series
                    .iter()
                    .any(|l| l.starts_with("nexus_sandbox_memory_bytes{")),
                "{text}"
            );
        }
        if sample["cpu_usec"].is_u64() {
            assert!(
                series
                    .iter()
                    .any(|l| l.starts_with("nexus_sandbox_cpu_seconds_total{")),
                "{text}"
            );
        }
    }

    let (status, body) = api.delete("/v1/sandboxes/watched?force=true").await;
    assert_eq!(status, 204, "{body}");
    let text = metrics(&daemon).await;
    assert!(
        series_of(&text, "watched").is_empty(),
        "stale series:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == r#"nexus_sandboxes{state="running"} 0"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_cap_leaves_sandboxes_out_and_counts_them() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return;
    }
    let dirs = Dirs::new();
    dirs.write_config("metrics:\n  max_sandboxes: 1\n");
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "first"})).await;
    api.create(json!({"name": "second"})).await;

    let text = metrics(&daemon).await;
    assert!(
        text.lines()
            .any(|l| l == r#"nexus_sandboxes{state="running"} 2"#),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "nexus_sandbox_series_omitted 1"),
        "{text}"
    );
    assert!(
        series_of(&text, "second").is_empty(),
        "beyond the cap:\n{text}"
    );
    let sample = stats(&api, "first").await;
    if sample["unmeasured"].as_array().map(Vec::len) != Some(COUNTERS.len()) {
        assert!(
            !series_of(&text, "first").is_empty(),
            "the oldest sandbox keeps its series:\n{text}"
        );
    }
}
