//! Sandbox lifecycle and exec through the REST API of a real daemon with real bubblewrap.

use base64::Engine;
use serde_json::json;

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, skip};

macro_rules! require_bwrap {
    () => {
        if !bwrap_usable() {
            skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread")]
async fn create_exec_stop_start_delete() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);

    let sb = api
        .create(json!({"name": "first", "env": {"GREETING": "hello"}, "labels": {"team": "a"}}))
        .await;
    assert_eq!(sb["name"], "first");
    assert_eq!(sb["driver"], "bwrap");
    let isolation = &sb["isolation"];
    assert_eq!(isolation["isolated"], true, "{sb}");
    assert_eq!(isolation["seccomp"], true);
    assert_eq!(isolation["capabilities"], "none");
    assert_eq!(isolation["uid_inside"], 1000);
    for ns in ["user", "mount", "pid", "ipc", "uts", "net"] {
        assert!(
            isolation["namespaces"]
                .as_array()
                .expect("list")
                .iter()
                .any(|n| n == ns),
            "{ns} missing: {isolation}"
        );
    }

    let out = api
        .sh("first", "echo $GREETING; id -u; pwd; echo oops >&2; exit 3")
        .await;
    assert_eq!(out["stdout"], "hello\n1000\n/workspace\n");
    assert_eq!(out["stderr"], "oops\n");
    assert_eq!(out["exit_code"], 3);
    assert_eq!(out["timed_out"], false);

    // The id works wherever the name does.
    let id = sb["id"].as_str().expect("id").to_owned();
    let (status, got) = api.get(&format!("/v1/sandboxes/{id}")).await;
    assert_eq!((status, &got["name"]), (200, &json!("first")));

    let (status, stopped) = api.post("/v1/sandboxes/first/stop", json!({})).await;
    assert_eq!(
        (status, &stopped["state"]),
        (200, &json!("stopped")),
        "{stopped}"
    );
    let (status, err) = api
        .post("/v1/sandboxes/first/exec", json!({"argv": ["true"]}))
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("sandbox_not_running")),
        "{err}"
    );

    let (status, started) = api.post("/v1/sandboxes/first/start", json!({})).await;
    assert_eq!(
        (status, &started["state"]),
        (200, &json!("running")),
        "{started}"
    );
    assert_eq!(api.sh("first", "echo again").await["stdout"], "again\n");

    let (status, err) = api.delete("/v1/sandboxes/first").await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("sandbox_state_conflict")),
        "{err}"
    );
    let (status, err) = api.delete("/v1/sandboxes/first?force=true").await;
    assert_eq!(status, 204, "{err}\n{}", daemon.logs());
    let (status, err) = api.get("/v1/sandboxes/first").await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("sandbox_not_found"))
    );
    // Nothing of it is left on the host.
    let leftovers: Vec<_> = std::fs::read_dir(dirs.path("run").join("nexus").join("sandboxes"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "runtime files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_exec_is_ndjson_and_binary_safe() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "stream"})).await;
    let (status, content_type, body) = api
        .exec_stream(
            "stream",
            &["sh", "-c", "printf 'a\\000\\377b'; echo err >&2"],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    let events: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.first().expect("first")["type"], "started");
    let last = events.last().expect("last");
    assert_eq!(
        (last["type"].as_str(), last["exit_code"].as_i64()),
        (Some("exit"), Some(0)),
        "{body}"
    );
    let stdout: Vec<u8> = events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .flat_map(|e| {
            base64::engine::general_purpose::STANDARD
                .decode(e["data"].as_str().expect("data"))
                .expect("b64")
        })
        .collect();
    assert_eq!(stdout, b"a\0\xffb");
    assert!(events.iter().any(|e| e["type"] == "stderr"));
}

/// With `Accept: application/vnd.nexus.exec-stream` the output comes as binary frames:
/// every byte as written, on its own stream, then the exit.
#[tokio::test(flavor = "multi_thread")]
async fn binary_exec_stream_carries_the_bytes_as_they_are() {
    use nexus_api::ExecEvent;
    use nexus_api::exec_stream::{Decoder, Frame};
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "binary"})).await;
    let script = "printf 'a\\000\\377b'; head -c 3000000 /dev/zero; echo err >&2; exit 3";
    let (status, content_type, body) = api
        .exec_stream_binary("binary", &["sh", "-c", script])
        .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, nexus_api::exec_stream::MEDIA_TYPE);
    let mut decoder = Decoder::default();
    decoder.push(&body);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().expect("well-formed frames") {
        frames.push(frame);
    }
    decoder.finish().expect("the body ends between frames");
    assert!(
        matches!(
            frames.first(),
            Some(Frame::Event(ExecEvent::Started { .. }))
        ),
        "{frames:?}"
    );
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for frame in &frames {
        match frame {
            Frame::Stdout(bytes) => stdout.extend_from_slice(bytes),
            Frame::Stderr(bytes) => stderr.extend_from_slice(bytes),
            Frame::Event(_) => {}
        }
    }
    assert_eq!(stdout.len(), 3_000_004, "no cap on a streamed exec");
    assert_eq!(&stdout[..4], b"a\0\xffb");
    assert!(stdout[4..].iter().all(|&b| b == 0));
    assert_eq!(stderr, b"err\n");
    match frames.last() {
        Some(Frame::Event(ExecEvent::Exit(status))) => assert_eq!(status.exit_code, Some(3)),
        other => panic!("the last frame is not the exit: {other:?}"),
    }

    // Without the header, the same request still gets NDJSON.
    let (_, content_type, _) = api.exec_stream("binary", &["true"]).await;
    assert_eq!(content_type, "application/x-ndjson");
}

/// The output cap bounds collected output only: a streamed exec delivers every byte.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_exec_has_no_output_cap_unless_asked() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "big"})).await;
    let five_mb = ["head", "-c", "5000000", "/dev/zero"];
    let (status, _, body) = api.exec_stream("big", &five_mb).await;
    assert_eq!(status, 200);
    let events: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let streamed: usize = events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| {
            base64::engine::general_purpose::STANDARD
                .decode(e["data"].as_str().expect("data"))
                .expect("b64")
                .len()
        })
        .sum();
    let last = events.last().expect("last");
    assert_eq!(streamed, 5_000_000, "{last}");
    assert_eq!(last["output_truncated"], false, "{last}");

    // Collected, the default cap applies.
    let (_, collected) = api
        .post("/v1/sandboxes/big/exec", json!({"argv": five_mb}))
        .await;
    assert_eq!(
        collected["output_truncated"], true,
        "{}",
        collected["exit_code"]
    );
    assert_eq!(
        collected["stdout"].as_str().expect("stdout").len(),
        nexus_api::exec::DEFAULT_MAX_OUTPUT_BYTES as usize
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_that_bite_are_reported() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "limits", "limits": {"memory_mib": 64, "pids": 64}}))
        .await;

    let (_, timed) = api
        .post(
            "/v1/sandboxes/limits/exec",
            json!({"argv": ["sleep", "30"], "timeout_ms": 300}),
        )
        .await;
    assert_eq!(
        (timed["timed_out"].as_bool(), timed["signal"].as_i64()),
        (Some(true), Some(9)),
        "{timed}"
    );

    let (_, flood) = api
        .post(
            "/v1/sandboxes/limits/exec",
            json!({"argv": ["head", "-c", "5000000", "/dev/zero"], "max_output_bytes": 1000}),
        )
        .await;
    assert_eq!(flood["output_truncated"], true, "{flood}");
    assert_eq!(flood["stdout"].as_str().expect("stdout").len(), 1000);

    let (_, oom) = api
        .post(
            "/v1/sandboxes/limits/exec",
            json!({"argv": ["python3", "-c", "b = bytearray(512 * 1024 * 1024); print(len(b))"], "timeout_ms": 60000}),
        )
        .await;
    let (_, sb) = api.get("/v1/sandboxes/limits").await;
    let memory_enforced = sb["isolation"]["limits"]
        .as_array()
        .expect("limits")
        .iter()
        .any(|l| l["name"] == "memory" && l["enforced"] == true);
    if memory_enforced {
        assert_eq!(oom["oom_killed"], true, "{oom}");
        assert_eq!(oom["signal"], 9, "{oom}");
        // The sandbox reports it too, where the user looks.
        let (_, sb) = api.get("/v1/sandboxes/limits").await;
        assert!(
            sb["usage"]["oom_kills"].as_u64().expect("oom_kills") >= 1,
            "{sb}"
        );
    } else {
        skip("this host cannot enforce memory limits; the isolation report says so");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_creates_nothing() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    for (body, field) in [
        (json!({"name": "Bad Name"}), "name"),
        (json!({"limits": {"memory_mib": 1}}), "limits.memory_mib"),
        (json!({"limits": {"pids": 1}}), "limits.pids"),
        (json!({"image": "nope"}), "image"),
        (json!({"driver": "vm"}), "driver"),
        (json!({"ttl_seconds": 0}), "ttl_seconds"),
    ] {
        let (status, err) = api.post("/v1/sandboxes", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .expect("message")
                .contains(field),
            "{body} -> {err}"
        );
    }
    let (status, err) = api.post("/v1/sandboxes", json!({"nmae": "x"})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &json!("invalid_json")),
        "{err}"
    );
    let (status, err) = api.post("/v1/sandboxes", json!({"driver": "host"})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (422, &json!("driver_unavailable")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("allow_host_driver"),
        "{err}"
    );
    let (_, list) = api.get("/v1/sandboxes").await;
    assert_eq!(
        list["sandboxes"],
        json!([]),
        "a refused create left a sandbox behind"
    );
    let (status, err) = api
        .post("/v1/sandboxes/nope/exec", json!({"argv": ["true"]}))
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("sandbox_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_unique() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "same"})).await;
    let (status, err) = api.post("/v1/sandboxes", json!({"name": "same"})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("sandbox_name_taken")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_driver_runs_unisolated_when_allowed() {
    let dirs = Dirs::new();
    dirs.write_config("allow_host_driver: true\n");
    let daemon = Daemon::start_with(&dirs, &["--listen", "127.0.0.1:0"]);
    let api = Api::new(&daemon, &dirs);
    let sb = api.create(json!({"name": "plain", "driver": "host"})).await;
    assert_eq!(sb["isolation"]["isolated"], false, "{sb}");
    assert!(
        !sb["isolation"]["warnings"]
            .as_array()
            .expect("warnings")
            .is_empty()
    );
    let out = api.sh("plain", "pwd").await;
    let cwd = out["stdout"].as_str().expect("stdout").trim().to_owned();
    // No mount namespace: the command runs right in the workspace's tree on the host.
    let ws = sb["workspace"].as_str().expect("workspace id");
    assert!(cwd.contains(ws) && cwd.contains("/trees/"), "{out}");
    let (status, _) = api.delete("/v1/sandboxes/plain?force=true").await;
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_adopts_running_sandboxes() {
    require_bwrap!();
    let dirs = Dirs::new();
    let first = Daemon::start(&dirs);
    let api = Api::new(&first, &dirs);
    api.create(json!({"name": "survivor"})).await;
    api.sh("survivor", "echo kept > /workspace/mark").await;
    // kill -9: no chance to clean up.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.wait();

    let second = Daemon::start(&dirs);
    let api = Api::new(&second, &dirs);
    let (status, sb) = api.get("/v1/sandboxes/survivor").await;
    assert_eq!((status, &sb["state"]), (200, &json!("running")), "{sb}");
    assert_eq!(
        api.sh("survivor", "cat /workspace/mark").await["stdout"],
        "kept\n"
    );
    let logs = second.stop();
    assert!(logs.contains("sandbox adopted"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_that_died_while_the_daemon_was_down_is_crashed() {
    require_bwrap!();
    let dirs = Dirs::new();
    let first = Daemon::start(&dirs);
    let api = Api::new(&first, &dirs);
    let sb = api.create(json!({"name": "victim"})).await;
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.wait();
    // Kill the sandbox's whole process tree behind the daemon's back.
    let runtime = dirs
        .path("run")
        .join("nexus")
        .join("sandboxes")
        .join(sb["id"].as_str().expect("id"));
    let pid: i32 = std::fs::read_to_string(runtime.join("init.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    std::thread::sleep(std::time::Duration::from_millis(300));

    let second = Daemon::start(&dirs);
    let api = Api::new(&second, &dirs);
    let (_, sb) = api.get("/v1/sandboxes/victim").await;
    assert_eq!(sb["state"], "crashed", "{sb}");
    assert!(
        sb["crash_reason"]
            .as_str()
            .expect("reason")
            .contains("gone"),
        "{sb}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_stops_the_sandbox() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "brief", "ttl_seconds": 1})).await;
    wait_for_state(&api, "brief", "stopped").await;
}

/// Polls sandbox `name` until it is in `state` (15 s at most).
async fn wait_for_state(api: &Api, name: &str, state: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, sb) = api.get(&format!("/v1/sandboxes/{name}")).await;
        if sb["state"] == state {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not {state}: {sb}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A graceful stop lets the periodic check under way finish: here the TTL stop of a
/// sandbox whose shell ignores SIGTERM, which waits out the 5 s grace period before
/// SIGKILL. Cut off (as the check used to be), the stop left the shell running after
/// the daemon had exited.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_lets_a_ttl_stop_under_way_finish() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let created = api.create(json!({"name": "brief", "ttl_seconds": 2})).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, started) = api
        .post(
            "/v1/sandboxes/brief/processes",
            json!({"argv": ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    wait_for_state(&api, "brief", "stopping").await;
    let cgroups = crate::harness::cgroup_dirs_named(&id);
    assert!(!cgroups.is_empty(), "no cgroup named {id}");
    daemon.stop();
    let left: Vec<String> = cgroups
        .iter()
        .filter_map(|dir| std::fs::read_to_string(format!("{dir}/cgroup.procs")).ok())
        .flat_map(|procs| procs.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(left.is_empty(), "processes of {id} still running: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bubblewrap_is_a_clear_error_that_changes_nothing() {
    let dirs = Dirs::new();
    dirs.write_config("bwrap_path: /nonexistent/bwrap\n");
    let daemon = Daemon::start_with(&dirs, &["--listen", "127.0.0.1:0"]);
    let api = Api::new(&daemon, &dirs);
    let (status, err) = api.post("/v1/sandboxes", json!({"name": "nope"})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (422, &json!("driver_unavailable")),
        "{err}"
    );
    let message = err["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("apt-get install -y bubblewrap") && message.contains("nexusctl doctor"),
        "{message}"
    );
    let (_, list) = api.get("/v1/sandboxes").await;
    assert_eq!(list["sandboxes"], json!([]));
}
