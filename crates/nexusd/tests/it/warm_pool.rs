//! The warm pool through a real daemon with real bubblewrap sandboxes: a create is
//! served by a pooled sandbox that looks fresh (its name as host name, an empty
//! workspace, a uid of its own), pooled sandboxes stay hidden, the pool refills, and a
//! restarted daemon replaces the previous run's pool.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, skip};

macro_rules! require_bwrap {
    () => {
        if !bwrap_usable() {
            skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
            return;
        }
    };
}

/// The warm pool section of `GET /v1/status`.
async fn pool(api: &Api) -> Value {
    let (status, body) = api.get("/v1/status").await;
    assert_eq!(status, 200, "{body}");
    body["warm_pool"].clone()
}

/// Waits until the first profile has `ready` sandboxes ready.
async fn wait_ready(api: &Api, daemon: &Daemon, ready: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pool = pool(api).await;
        if pool[0]["ready"] == ready {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not reach {ready} ready: {pool}\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ids of the sandboxes the daemon logged as ready in its pool.
fn pooled_ids(daemon: &Daemon) -> BTreeSet<String> {
    daemon
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["fields"]["message"] == "warm pool sandbox ready")
        .filter_map(|v| v["fields"]["sandbox_id"].as_str().map(str::to_owned))
        .collect()
}

/// The names in a list answer (`{"sandboxes": [...]}` or `{"workspaces": [...]}`).
fn names(list: &Value) -> Vec<String> {
    list["sandboxes"]
        .as_array()
        .or_else(|| list["workspaces"].as_array())
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_is_served_by_the_pool_with_a_fresh_looking_sandbox() {
    require_bwrap!();
    let dirs = Dirs::new();
    dirs.write_config("warm_pool:\n  - size: 2\n");
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);

    let ready = wait_ready(&api, &daemon, 2).await;
    assert_eq!(ready[0]["image"], "host", "{ready}");
    assert_eq!(ready[0]["size"], 2, "{ready}");
    assert_eq!(ready[0]["limits"]["tmp_mib"], 512, "{ready}");
    if let Some(bytes) = ready[0]["memory_bytes"].as_u64() {
        assert!(bytes > 0, "two running sandboxes use some memory: {ready}");
    }
    let pooled = pooled_ids(&daemon);
    assert_eq!(pooled.len(), 2, "{}", daemon.logs());

    // Hidden while they wait.
    let (status, list) = api.get("/v1/sandboxes").await;
    assert_eq!(status, 200);
    assert!(names(&list).is_empty(), "pooled sandboxes listed: {list}");
    let (_, workspaces) = api.get("/v1/workspaces").await;
    assert!(
        names(&workspaces).is_empty(),
        "pool workspaces listed: {workspaces}"
    );
    for id in &pooled {
        let (status, body) = api.get(&format!("/v1/sandboxes/{id}")).await;
        assert_eq!(status, 404, "a pooled sandbox was found by id: {body}");
    }

    let first = api
        .create(json!({"name": "first", "env": {"GREETING": "hello"}, "labels": {"team": "a"}}))
        .await;
    let first_id = first["id"].as_str().expect("id").to_owned();
    assert!(
        pooled.contains(&first_id),
        "not served by the pool: {first}"
    );
    assert_eq!(first["labels"]["team"], "a");
    assert_eq!(first["isolation"]["isolated"], true, "{first}");

    let out = api
        .sh(
            "first",
            "hostname; echo $GREETING; ls -A /workspace | wc -l; pwd",
        )
        .await;
    assert_eq!(
        out["stdout"], "first\nhello\n0\n/workspace\n",
        "the host name (needs the bwrap driver's set_hostname), env or workspace: {out}"
    );
    api.sh("first", "echo mine > /workspace/note").await;

    let second = api.create(json!({"name": "second"})).await;
    let second_id = second["id"].as_str().expect("id").to_owned();
    assert!(
        pooled.contains(&second_id),
        "not served by the pool: {second}"
    );
    assert_eq!(
        api.sh("second", "hostname; ls -A /workspace | wc -l").await["stdout"],
        "second\n0\n",
        "another sandbox's files, or its host name"
    );
    if first["isolation"]["uid_host"].is_u64() {
        assert_ne!(
            first["isolation"]["uid_host"], second["isolation"]["uid_host"],
            "two pooled sandboxes share a host uid"
        );
    }

    // Only the user's sandboxes and workspaces are listed, named after them.
    let (_, list) = api.get("/v1/sandboxes").await;
    assert_eq!(names(&list), ["first", "second"], "{list}");
    let (_, workspaces) = api.get("/v1/workspaces").await;
    assert_eq!(names(&workspaces), ["first", "second"], "{workspaces}");

    // The pool refills with new sandboxes.
    wait_ready(&api, &daemon, 2).await;
    let refilled = pooled_ids(&daemon);
    assert_eq!(refilled.len(), 4, "{}", daemon.logs());
    // The pool's own starts are not logged at info under their placeholder names.
    let placeholder_lines: Vec<String> = daemon
        .logs()
        .lines()
        .filter(|l| l.contains(r#""level":"INFO""#) && l.contains("0pool-"))
        .map(str::to_owned)
        .collect();
    assert!(placeholder_lines.is_empty(), "{placeholder_lines:#?}");
    let res = reqwest::get(daemon.url("/metrics")).await.expect("metrics");
    let text = res.text().await.expect("body");
    assert!(
        text.lines()
            .any(|l| l == r#"nexus_warm_pool_ready{image="host",profile="0"} 2"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"nexus_sandboxes{state="running"} 4"#),
        "pooled sandboxes counted as the user's: {text}"
    );

    // A request that does not match the pool is created cold.
    let cold = api
        .create(json!({"name": "cold", "limits": {"memory_mib": 256}}))
        .await;
    assert!(!refilled.contains(cold["id"].as_str().expect("id")));
    assert_eq!(pool(&api).await[0]["ready"], 2);

    for name in ["first", "second", "cold"] {
        let (status, body) = api
            .delete(&format!("/v1/sandboxes/{name}?force=true"))
            .await;
        assert_eq!(status, 204, "{body}");
    }
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_replaces_the_previous_pool() {
    require_bwrap!();
    let dirs = Dirs::new();
    dirs.write_config("warm_pool:\n  - size: 1\n");
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    wait_ready(&api, &daemon, 1).await;
    let before = pooled_ids(&daemon);
    daemon.stop();

    let runtime = dirs.path("run").join("nexus").join("sandboxes");
    for id in &before {
        assert!(
            runtime.join(id).exists(),
            "a pooled sandbox survives a daemon stop like any other"
        );
    }
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    wait_ready(&api, &daemon, 1).await;
    let after = pooled_ids(&daemon);
    assert_eq!(after.len(), 1, "{}", daemon.logs());
    assert!(after.is_disjoint(&before), "the old pool was kept");
    for id in &before {
        assert!(
            !runtime.join(id).exists(),
            "the previous pool's sandbox {id} was left behind"
        );
    }
    let (_, list) = api.get("/v1/sandboxes").await;
    assert!(names(&list).is_empty(), "{list}");
    daemon.stop();
}
