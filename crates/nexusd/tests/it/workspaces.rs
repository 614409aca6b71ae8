//! Workspaces through the REST API of a real daemon with real bubblewrap and real files:
//! they outlive sandboxes, snapshot, restore in place, fork, mount read-only elsewhere.

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

async fn read(api: &Api, sandbox: &str, path: &str) -> String {
    let out = api.sh(sandbox, &format!("cat {path}")).await;
    assert_eq!(out["exit_code"], 0, "cat {path} in {sandbox}: {out}");
    out["stdout"].as_str().expect("stdout").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_workspace_outlives_its_sandbox_and_a_fresh_one_does_not() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);

    let first = api
        .create(json!({"name": "first", "workspace": "proj"}))
        .await;
    let ws_id = first["workspace"]
        .as_str()
        .expect("workspace id")
        .to_owned();
    let out = api.sh("first", "echo kept > /workspace/notes.txt").await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let (status, _) = api.delete("/v1/sandboxes/first?force=true").await;
    assert_eq!(status, 204);

    let (status, ws) = api.get("/v1/workspaces/proj").await;
    assert_eq!(status, 200, "{ws}");
    assert_eq!(ws["id"], ws_id);
    assert!(ws["size_bytes"].as_u64().expect("size") > 0, "{ws}");
    assert_eq!(ws["used_by"], json!([]));

    api.create(json!({"name": "second", "workspace": "proj"}))
        .await;
    assert_eq!(read(&api, "second", "/workspace/notes.txt").await, "kept\n");
    let (status, err) = api
        .post(
            "/v1/sandboxes",
            json!({"name": "third", "workspace": "proj"}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("workspace_in_use")),
        "{err}"
    );
    let (status, err) = api.delete("/v1/workspaces/proj").await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("workspace_in_use")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("message")
            .contains("second"),
        "{err}"
    );

    // A sandbox without --workspace gets a fresh one, gone with it.
    let solo = api.create(json!({"name": "solo"})).await;
    let solo_ws = solo["workspace"].as_str().expect("workspace").to_owned();
    let (status, _) = api.get(&format!("/v1/workspaces/{solo_ws}")).await;
    assert_eq!(status, 200);
    let (status, _) = api.delete("/v1/sandboxes/solo?force=true").await;
    assert_eq!(status, 204);
    let (status, err) = api.get(&format!("/v1/workspaces/{solo_ws}")).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("workspace_not_found"))
    );
    let trees = dirs.path("data/nexus/workspaces").join(&solo_ws);
    assert!(!trees.exists(), "{} is left behind", trees.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_restore_in_place_and_fork() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let sb = api
        .create(json!({"name": "dev", "workspace": "code"}))
        .await;
    let id = sb["id"].clone();
    api.sh(
        "dev",
        "mkdir -p src && echo v1 > src/main.txt && ln -s /etc/hostname link",
    )
    .await;

    let (status, snap) = api
        .post("/v1/workspaces/code/snapshots", json!({"name": "v1"}))
        .await;
    assert_eq!(status, 201, "{snap}");
    assert_eq!(snap["name"], "v1");
    api.sh("dev", "echo v2 > src/main.txt && touch extra").await;
    let (status, err) = api
        .post("/v1/workspaces/code/snapshots", json!({"name": "v1"}))
        .await;
    assert_eq!(status, 409, "a snapshot name is unique: {err}");

    let (status, restored) = api
        .post("/v1/workspaces/code/restore", json!({"snapshot": "v1"}))
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["generation"], 2);
    let (_, after) = api.get("/v1/sandboxes/dev").await;
    assert_eq!(
        (&after["id"], &after["state"]),
        (&id, &json!("running")),
        "{after}"
    );
    assert_eq!(read(&api, "dev", "/workspace/src/main.txt").await, "v1\n");
    let out = api
        .sh("dev", "test -e /workspace/extra; echo $?; readlink link")
        .await;
    assert_eq!(out["stdout"], "1\n/etc/hostname\n", "{out}");

    // Fork the workspace, and fork the sandbox: both independent of the original.
    let (status, fork) = api
        .post(
            "/v1/workspaces/code/fork",
            json!({"snapshot": "v1", "name": "code-b"}),
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    // The fork's answer does not walk the new tree; inspecting it measures the copy.
    assert!(fork.get("size_bytes").is_none(), "{fork}");
    let (status, inspected) = api.get("/v1/workspaces/code-b").await;
    assert_eq!(status, 200, "{inspected}");
    assert!(
        inspected["size_bytes"].as_u64().expect("size") > 0,
        "{inspected}"
    );
    let (status, twin) = api
        .post("/v1/sandboxes/dev/fork", json!({"name": "twin"}))
        .await;
    assert_eq!((status, &twin["state"]), (201, &json!("running")), "{twin}");
    assert_ne!(twin["workspace"], sb["workspace"]);
    api.sh("twin", "echo twin > src/main.txt").await;
    assert_eq!(read(&api, "dev", "/workspace/src/main.txt").await, "v1\n");
    assert_eq!(
        read(&api, "twin", "/workspace/src/main.txt").await,
        "twin\n"
    );

    // Bad restores name the problem and change nothing.
    let (status, err) = api
        .post(
            "/v1/workspaces/code-b/restore",
            json!({"snapshot": snap["id"]}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("snapshot_not_found")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("m")
            .contains("another workspace")
    );
    let (status, err) = api
        .post("/v1/workspaces/code/restore", json!({"snapshot": "nope"}))
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("snapshot_not_found")),
        "{err}"
    );
    let (status, _) = api.delete("/v1/workspaces/code/snapshots/v1").await;
    assert_eq!(status, 204);
    let (status, err) = api
        .post("/v1/workspaces/code/restore", json!({"snapshot": "v1"}))
        .await;
    assert_eq!(status, 404, "a deleted snapshot cannot be restored: {err}");
    let (_, ws) = api.get("/v1/workspaces/code").await;
    assert_eq!(ws["generation"], 2, "nothing changed: {ws}");
}

/// The background process `process` of `sandbox` as listed, which must be there.
async fn listed_process(api: &Api, sandbox: &str, process: u64) -> serde_json::Value {
    let (status, list) = api.get(&format!("/v1/sandboxes/{sandbox}/processes")).await;
    assert_eq!(status, 200, "{list}");
    list["processes"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["id"] == process)
        .cloned()
        .unwrap_or_else(|| panic!("process {process} is gone: {list}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_keeps_a_running_writer_running_on_the_restored_tree() {
    require_bwrap!();
    if !nix::unistd::geteuid().is_root() {
        skip(
            "swapping the tree under a running sandbox needs a root daemon (an unprivileged one restarts the sandbox, see unprivileged.rs)",
        );
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let sb = api
        .create(json!({"name": "dev", "workspace": "code"}))
        .await;
    let (id, ws) = (
        sb["id"].clone(),
        sb["workspace"].as_str().expect("ws").to_owned(),
    );
    let out = api.sh("dev", "echo v1 > /workspace/file").await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let (status, snap) = api
        .post("/v1/workspaces/code/snapshots", json!({"name": "v1"}))
        .await;
    assert_eq!(status, 201, "{snap}");
    // A process whose working directory is the workspace, as a dev server's would be.
    let (status, started) = api
        .post(
            "/v1/sandboxes/dev/processes",
            json!({"argv": ["sh", "-c", "cd /workspace && while :; do sleep 0.1; done"]}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let process = started["id"].as_u64().expect("id");
    let pid = listed_process(&api, "dev", process).await["pid"].clone();
    api.sh("dev", "echo v2 > /workspace/file && touch /workspace/extra")
        .await;
    let (_, before) = api.get("/v1/sandboxes/dev").await;

    let (status, restored) = api
        .post("/v1/workspaces/code/restore", json!({"snapshot": "v1"}))
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["generation"], 2, "{restored}");
    assert_eq!(
        restored["writer"],
        json!({"sandbox": id, "kept_running": true}),
        "{restored}"
    );
    let (_, after) = api.get("/v1/sandboxes/dev").await;
    assert_eq!(
        (&after["id"], &after["state"], &after["started_at"]),
        (&id, &json!("running"), &before["started_at"]),
        "the same sandbox, never restarted: {after}"
    );
    let entry = listed_process(&api, "dev", process).await;
    assert_eq!(
        (&entry["state"], &entry["pid"]),
        (&json!("running"), &pid),
        "{entry}"
    );
    // New lookups see the snapshot's files, through exec and through the file API.
    assert_eq!(read(&api, "dev", "/workspace/file").await, "v1\n");
    assert_eq!(
        read(&api, "dev", "file").await,
        "v1\n",
        "relative to the workdir"
    );
    let out = api.sh("dev", "test -e /workspace/extra; echo $?").await;
    assert_eq!(out["stdout"], "1\n", "{out}");
    let (status, stat) = api
        .get("/v1/sandboxes/dev/files/stat?path=/workspace/file")
        .await;
    assert_eq!((status, &stat["size"]), (200, &json!(3)), "{stat}");
    // The new mount has the old one's options, and is the only one there.
    let out = api
        .sh("dev", "grep ' /workspace ' /proc/self/mountinfo")
        .await;
    let mounts = out["stdout"].as_str().expect("stdout");
    assert_eq!(mounts.lines().count(), 1, "{mounts}");
    assert!(
        mounts.contains("/trees/2 /workspace rw,nosuid,nodev"),
        "{mounts}"
    );
    // Writes land in the new tree; the old one is gone.
    let out = api.sh("dev", "echo after > /workspace/new").await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let trees = dirs.path("data/nexus/workspaces").join(&ws).join("trees");
    assert_eq!(
        std::fs::read_to_string(trees.join("2/new")).expect("the write is in tree 2"),
        "after\n"
    );
    assert!(!trees.join("1").exists(), "the replaced tree is removed");

    // A paused writer is swapped too, and stays paused until resumed.
    api.sh("dev", "echo v3 > /workspace/file").await;
    let (status, _) = api.post("/v1/sandboxes/dev/pause", json!({})).await;
    if status == 422 {
        skip("this host cannot freeze sandboxes; the paused case is not checked");
        return;
    }
    assert_eq!(status, 200);
    let (status, restored) = api
        .post("/v1/workspaces/code/restore", json!({"snapshot": "v1"}))
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["writer"]["kept_running"], true, "{restored}");
    let (_, paused) = api.get("/v1/sandboxes/dev").await;
    assert_eq!(paused["state"], "paused", "{paused}");
    let (status, _) = api.post("/v1/sandboxes/dev/resume", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(read(&api, "dev", "/workspace/file").await, "v1\n");
    let entry = listed_process(&api, "dev", process).await;
    assert_eq!(
        (&entry["state"], &entry["pid"]),
        (&json!("running"), &pid),
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_mounts_read_only_into_another_sandbox() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "producer", "workspace": "data"}))
        .await;
    api.sh("producer", "echo shared > /workspace/table.csv")
        .await;

    let reader = api
        .create(json!({"name": "reader", "mounts": [{"workspace": "data", "path": "/mnt/data"}]}))
        .await;
    assert_eq!(reader["mounts"][0]["path"], "/mnt/data", "{reader}");
    assert_eq!(
        read(&api, "reader", "/mnt/data/table.csv").await,
        "shared\n"
    );
    let out = api.sh("reader", "echo evil > /mnt/data/table.csv").await;
    assert_ne!(out["exit_code"], 0, "a read-only mount was written: {out}");
    assert_eq!(
        read(&api, "producer", "/workspace/table.csv").await,
        "shared\n"
    );

    for (body, field) in [
        (
            json!({"mounts": [{"workspace": "data", "path": "/proc/x"}]}),
            "mounts[0].path",
        ),
        (
            json!({"mounts": [{"workspace": "nope", "path": "/mnt/x"}]}),
            "mounts[0].workspace",
        ),
        (json!({"workspace": "Bad Name"}), "workspace"),
    ] {
        let (status, err) = api.post("/v1/sandboxes", body.clone()).await;
        assert!(matches!(status, 400 | 404), "{body}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .expect("message")
                .contains(field),
            "{body}: {err}"
        );
    }
}

/// Every `.tmp-*` entry under the workspace storage: what an interrupted operation left.
fn leftovers(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                found.push(path);
            } else if path.components().count() < root.components().count() + 3
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                stack.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn nexusd_killed_during_a_restore_leaves_the_old_or_the_new_tree() {
    require_bwrap!();
    let dirs = Dirs::new();
    let root = dirs.path("data/nexus/workspaces");
    let mut interrupted = 0;
    // Kill later and later into the restore, until one kill lands in its middle.
    for (attempt, delay_ms) in [30u64, 120, 300, 700].into_iter().enumerate() {
        let daemon = Daemon::start(&dirs);
        let api = Api::new(&daemon, &dirs);
        let name = format!("dev{attempt}");
        let ws = format!("big{attempt}");
        api.create(json!({"name": name, "workspace": ws})).await;
        // A large file makes the copy (or clone) take long enough to be interrupted.
        let out = api
            .sh(
                &name,
                "head -c 300000000 /dev/zero > blob && echo old > mark",
            )
            .await;
        assert_eq!(out["exit_code"], 0, "{out}");
        let (status, snap) = api
            .post(
                &format!("/v1/workspaces/{ws}/snapshots"),
                json!({"name": "v1"}),
            )
            .await;
        assert_eq!(status, 201, "{snap}");
        api.sh(&name, "echo new > mark").await;

        let restore = {
            let api = Api::new(&daemon, &dirs);
            let ws = ws.clone();
            tokio::spawn(async move {
                api.post_unanswered(
                    &format!("/v1/workspaces/{ws}/restore"),
                    json!({"snapshot": "v1"}),
                )
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        daemon.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = daemon.wait();
        let _ = restore.await;
        let left = leftovers(&root);
        eprintln!(
            "attempt {attempt}: killed {delay_ms} ms into the restore, {} leftovers",
            left.len()
        );
        if !left.is_empty() {
            interrupted += 1;
        }

        let daemon = Daemon::start(&dirs);
        let api = Api::new(&daemon, &dirs);
        assert!(
            leftovers(&root).is_empty(),
            "a restart sweeps half-made trees"
        );
        let (status, info) = api.get(&format!("/v1/workspaces/{ws}")).await;
        assert_eq!(status, 200, "{info}");
        let generation = info["generation"].as_u64().expect("generation");
        // The sandbox may have been mid-restart; bring it up if needed.
        let (_, sb) = api.get(&format!("/v1/sandboxes/{name}")).await;
        if sb["state"] != "running" {
            let (status, started) = api
                .post(&format!("/v1/sandboxes/{name}/start"), json!({}))
                .await;
            assert_eq!(status, 200, "{started}");
        }
        let mark = read(&api, &name, "/workspace/mark").await;
        let expected = if generation == 1 { "new\n" } else { "old\n" };
        assert_eq!(
            mark, expected,
            "generation {generation} must show its own tree, never a mix"
        );
        let out = api.sh(&name, "stat -c %s blob").await;
        assert_eq!(out["stdout"], "300000000\n", "the big file is whole: {out}");
        let (status, _) = api
            .delete(&format!("/v1/sandboxes/{name}?force=true"))
            .await;
        assert_eq!(status, 204);
        drop(daemon);
        if interrupted > 0 {
            break;
        }
    }
    assert!(
        interrupted > 0,
        "no kill landed inside a restore; the storage was too fast to interrupt (make the file bigger)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nexusd_killed_during_a_snapshot_or_fork_leaves_all_or_nothing() {
    require_bwrap!();
    let dirs = Dirs::new();
    let root = dirs.path("data/nexus/workspaces");
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "dev", "workspace": "big"})).await;
    let out = api
        .sh(
            "dev",
            "head -c 300000000 /dev/zero > blob && echo one > mark",
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let (status, base) = api
        .post("/v1/workspaces/big/snapshots", json!({"name": "base"}))
        .await;
    assert_eq!(status, 201, "{base}");
    let mut daemon = daemon;
    let mut interrupted = 0;
    for (step, delay_ms) in [(0, 30u64), (1, 30), (0, 150), (1, 150)] {
        let api = Api::new(&daemon, &dirs);
        let (path, body) = if step == 0 {
            ("/v1/workspaces/big/snapshots", json!({"name": "cut"}))
        } else {
            (
                "/v1/workspaces/big/fork",
                json!({"snapshot": "base", "name": "copy"}),
            )
        };
        let call = tokio::spawn(async move { api.post_unanswered(path, body).await });
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        daemon.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = daemon.wait();
        let _ = call.await;
        if !leftovers(&root).is_empty() {
            interrupted += 1;
        }
        daemon = Daemon::start(&dirs);
        let api = Api::new(&daemon, &dirs);
        assert!(
            leftovers(&root).is_empty(),
            "a restart sweeps half-made results"
        );
        // Whatever exists now is whole: a recorded snapshot can be forked and read.
        let (_, snaps) = api.get("/v1/workspaces/big/snapshots").await;
        let names: Vec<String> = snaps["snapshots"]
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s["name"].as_str().expect("name").to_owned())
            .collect();
        for name in &names {
            let check = format!("check-{name}-{step}-{delay_ms}");
            let (status, fork) = api
                .post(
                    "/v1/workspaces/big/fork",
                    json!({"snapshot": name, "name": check}),
                )
                .await;
            assert_eq!(status, 201, "{fork}");
            let reader = api.create(json!({"name": check, "workspace": check})).await;
            assert_eq!(reader["state"], "running");
            let out = api.sh(&check, "stat -c %s blob; cat mark").await;
            assert_eq!(out["stdout"], "300000000\none\n", "snapshot {name}: {out}");
            api.delete(&format!("/v1/sandboxes/{check}?force=true"))
                .await;
            api.delete(&format!("/v1/workspaces/{check}")).await;
        }
        let (status, copy) = api.get("/v1/workspaces/copy").await;
        if status == 200 {
            api.create(json!({"name": "copy-reader", "workspace": "copy"}))
                .await;
            let out = api.sh("copy-reader", "stat -c %s blob; cat mark").await;
            assert_eq!(out["stdout"], "300000000\none\n", "fork: {out} {copy}");
            api.delete("/v1/sandboxes/copy-reader?force=true").await;
            api.delete("/v1/workspaces/copy").await;
        }
        api.delete("/v1/workspaces/big/snapshots/cut").await;
    }
    assert!(
        interrupted > 0,
        "no kill landed inside a snapshot or fork; the storage was too fast to interrupt"
    );
}
