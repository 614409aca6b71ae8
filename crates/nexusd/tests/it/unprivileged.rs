//! A daemon that is not root (the test switches to `nobody` with `setpriv`, so it runs
//! wherever the suite runs as root): sandboxes still start, run as the daemon's own uid
//! mapped to 1000 inside, with loopback only and the limits this host cannot enforce for
//! an unprivileged user reported as such, and leave nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::harness::{Api, Daemon, Dirs, agent_binary, bwrap_usable, skip};

/// `nobody` on Debian and Ubuntu.
const NOBODY: u32 = 65_534;

/// Whether every directory above `path` lets others through, and `path` lets them read
/// and run it.
fn reachable_by_others(path: &Path) -> bool {
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    path.ancestors()
        .skip(1)
        .all(|dir| dir.as_os_str().is_empty() || mode(dir) & 0o001 != 0)
        && mode(path) & 0o005 == 0o005
}

/// Gives the whole temporary tree to `uid`.
fn chown_tree(root: &Path, uid: u32) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(root)
        .status()
        .expect("chown");
    assert!(status.success(), "chown -R {}", root.display());
}

/// Directories owned by `nobody` for an unprivileged daemon, or `None` (with a loud
/// skip) when this host cannot run one.
fn unprivileged_dirs() -> Option<Dirs> {
    if !nix::unistd::geteuid().is_root() {
        skip("the suite already runs unprivileged: every other test covers this case");
        return None;
    }
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return None;
    }
    if !Path::new("/usr/bin/setpriv").exists() && !Path::new("/bin/setpriv").exists() {
        skip("setpriv (util-linux) is not installed");
        return None;
    }
    let agent = agent_binary();
    if !reachable_by_others(&agent) {
        skip(&format!(
            "{} is out of reach of other users, so an unprivileged daemon cannot use it",
            agent.display()
        ));
        return None;
    }
    let dirs = Dirs::new();
    for sub in ["home", "config", "state", "data", "run"] {
        std::fs::create_dir_all(dirs.path(sub)).expect("mkdir");
    }
    chown_tree(dirs.root.path(), NOBODY);
    Some(dirs)
}

/// `nexusd` as `nobody` on `dirs`, with `extra` flags.
fn start_as_nobody(dirs: &Dirs, extra: &[&str]) -> Daemon {
    let mut command = dirs.command_as(NOBODY);
    command.args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
    command.args(extra);
    Daemon::spawn(command)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_daemon_runs_sandboxes_as_itself_with_loopback_only() {
    let Some(dirs) = unprivileged_dirs() else {
        return;
    };
    let daemon = start_as_nobody(&dirs, &[]);
    let api = Api::new(&daemon, &dirs);

    let created = api
        .create(json!({
            "name": "plain",
            "limits": {"memory_mib": 256},
            "network": {"allow": ["*:*"]},
        }))
        .await;
    let isolation = &created["isolation"];
    assert_eq!(isolation["uid_host"], NOBODY, "{created}");
    assert_eq!(isolation["uid_inside"], 1000, "{created}");
    let network = isolation["network"].as_str().unwrap_or_default();
    assert!(network.contains("loopback only"), "{created}");
    let memory = isolation["limits"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["name"] == "memory")
        .cloned()
        .unwrap_or_default();
    assert_eq!(memory["requested"], "256 MiB", "{created}");
    if memory["enforced"] == false {
        assert!(
            !memory["detail"].as_str().unwrap_or_default().is_empty(),
            "an unenforced limit says why: {created}"
        );
    }

    let out = api
        .sh(
            "plain",
            "id -u; echo kept > /workspace/note; cat /workspace/note; python3 -c '
import socket
for target in [(\"127.0.0.1\", 9600), (\"192.0.2.1\", 80)]:
    try:
        socket.create_connection(target, timeout=3); print(target[1], \"reached\")
    except OSError as e:
        print(target[1], e.errno)
'",
        )
        .await;
    let stdout = out["stdout"].as_str().unwrap_or_default();
    assert!(stdout.starts_with("1000\nkept\n"), "{out}");
    // The daemon's port is on the host's loopback, not the sandbox's: refused.
    assert!(stdout.contains("9600 111"), "{out}");
    // With loopback only, even an address the policy allows is unreachable at once.
    assert!(stdout.contains("80 101"), "{out}");

    // It cannot enter the sandbox's mount namespace, so a restore restarts the writer.
    let (status, snap) = api
        .post("/v1/workspaces/plain/snapshots", json!({"name": "s"}))
        .await;
    assert_eq!(status, 201, "{snap}");
    let (status, restored) = api
        .post("/v1/workspaces/plain/restore", json!({"snapshot": "s"}))
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(
        restored["writer"],
        json!({"sandbox": created["id"], "kept_running": false}),
        "{restored}"
    );
    let out = api.sh("plain", "cat /workspace/note").await;
    assert_eq!(out["stdout"], "kept\n", "{out}");

    let (status, _) = api.delete("/v1/sandboxes/plain?force=true").await;
    assert_eq!(status, 204);
    let left = Command::new("pgrep")
        .args(["-u", &NOBODY.to_string(), "-f", "nexus-agent"])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "an agent of the deleted sandbox is still running"
    );
    daemon.stop();
}

/// The launch record of the one sandbox under `run`, once it names the sandbox's init.
fn recorded_start(dirs: &Dirs) -> Option<serde_json::Value> {
    let sandboxes = dirs.path("run").join("nexus").join("sandboxes");
    std::fs::read_dir(sandboxes)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| std::fs::read(entry.path().join("process.json")).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .filter(|record| record["init_pid"].as_u64().is_some_and(|pid| pid != 0))
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

/// Without a cgroup to find a sandbox's processes by, a daemon killed in the middle of a
/// start, before the sandbox's record had its runtime handle, used to leave them running
/// for good. The launch record names them, and the next start kills them. The start is
/// held open by an agent that never answers (it sleeps).
#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_daemon_killed_mid_start_kills_that_sandbox_at_its_next_start() {
    let Some(dirs) = unprivileged_dirs() else {
        return;
    };
    let stand_in = dirs.path("silent-agent");
    std::fs::write(&stand_in, "#!/bin/sh\nexec sleep 1000\n").expect("write the stand-in");
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    chown_tree(&stand_in, NOBODY);
    let stand_in = stand_in.to_str().expect("utf-8 path").to_owned();
    let daemon = start_as_nobody(&dirs, &["--agent-path", &stand_in]);
    let api = Api::new(&daemon, &dirs);
    let create = tokio::spawn(async move { api.post_unanswered("/v1/sandboxes", json!({})).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let record = loop {
        if let Some(record) = recorded_start(&dirs) {
            break record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no launch record; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = daemon.wait();
    create.abort();
    // A kill a few milliseconds earlier, before the sandbox's record got its runtime
    // handle, leaves this: nothing but the launch record names the processes.
    let conn = rusqlite::Connection::open(dirs.db_file()).expect("open the database");
    let unhandled = conn
        .execute(
            "UPDATE sandboxes SET runtime = NULL WHERE state = 'starting'",
            [],
        )
        .expect("update");
    assert_eq!(unhandled, 1, "one sandbox was starting");
    drop(conn);
    let pids: Vec<u64> = ["init_pid", "bwrap_pid"]
        .iter()
        .filter_map(|key| record[key].as_u64())
        .collect();
    assert!(
        pids.iter().all(|pid| running(*pid)),
        "the start's processes {pids:?} should outlive the killed daemon"
    );

    let daemon = start_as_nobody(&dirs, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while pids.iter().any(|pid| running(*pid)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{pids:?} still running after the restart; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    daemon.stop();
}
