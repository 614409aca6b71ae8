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

#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_daemon_runs_sandboxes_as_itself_with_loopback_only() {
    if !nix::unistd::geteuid().is_root() {
        skip("the suite already runs unprivileged: every other test covers this case");
        return;
    }
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return;
    }
    if !Path::new("/usr/bin/setpriv").exists() && !Path::new("/bin/setpriv").exists() {
        skip("setpriv (util-linux) is not installed");
        return;
    }
    let agent = agent_binary();
    if !reachable_by_others(&agent) {
        skip(&format!(
            "{} is out of reach of other users, so an unprivileged daemon cannot use it",
            agent.display()
        ));
        return;
    }
    let dirs = Dirs::new();
    for sub in ["home", "config", "state", "data", "run"] {
        std::fs::create_dir_all(dirs.path(sub)).expect("mkdir");
    }
    chown_tree(dirs.root.path(), NOBODY);
    let mut command = dirs.command_as(NOBODY);
    command.args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
    let daemon = Daemon::spawn(command);
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
