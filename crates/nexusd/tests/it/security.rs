//! What sandboxed code must not be able to do, tried from inside real sandboxes of a real
//! daemon. Each test fails when the protection it covers is removed.

use serde_json::json;

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, skip};

/// A daemon with two running sandboxes, `a` and `b`.
async fn two_sandboxes() -> Option<(Dirs, Daemon, Api)> {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return None;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "a", "limits": {"memory_mib": 128, "pids": 128, "tmp_mib": 16}}))
        .await;
    api.create(json!({"name": "b"})).await;
    Some((dirs, daemon, api))
}

fn code(out: &serde_json::Value) -> i64 {
    out["exit_code"].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn host_secrets_are_out_of_reach() {
    let Some((dirs, _daemon, api)) = two_sandboxes().await else {
        return;
    };
    let out = api.sh("a", "cat /etc/shadow").await;
    assert_ne!(code(&out), 0, "/etc/shadow was readable: {out}");
    let token = dirs.token_file();
    let out = api.sh("a", &format!("cat {}", token.display())).await;
    assert_ne!(code(&out), 0, "the API token was readable: {out}");
    assert!(
        !out["stdout"]
            .as_str()
            .unwrap_or("")
            .contains(&crate::harness::read_token(&token))
    );
    let out = api
        .sh("a", "ls -A /root | wc -l; ls -A /home | wc -l")
        .await;
    assert_eq!(out["stdout"], "0\n0\n", "/root or /home is visible: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_cannot_see_each_other() {
    let Some((dirs, _daemon, api)) = two_sandboxes().await else {
        return;
    };
    api.sh("b", "echo secret-of-b > /workspace/note").await;
    let data = dirs.path("data").join("nexus");
    let out = api.sh("a", &format!("cat $(find {} -name note 2>/dev/null) 2>&1; find / -name note -path '*workspace*' 2>/dev/null", data.display())).await;
    assert!(
        !out["stdout"].as_str().unwrap_or("").contains("secret-of-b"),
        "a read b's workspace: {out}"
    );
    let (_, a) = api.get("/v1/sandboxes/a").await;
    let (_, b) = api.get("/v1/sandboxes/b").await;
    if a["isolation"]["uid_host"].is_u64() {
        assert_ne!(
            a["isolation"]["uid_host"], b["isolation"]["uid_host"],
            "two sandboxes share a host uid"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_outside_workspace_and_tmp_fail() {
    let Some((_dirs, _daemon, api)) = two_sandboxes().await else {
        return;
    };
    for path in [
        "/etc/nexus-test",
        "/usr/nexus-test",
        "/nexus-test",
        "/var/nexus-test",
    ] {
        let out = api.sh("a", &format!("echo x > {path}")).await;
        assert_ne!(code(&out), 0, "could write {path}: {out}");
    }
    assert_eq!(
        code(
            &api.sh("a", "echo x > /workspace/ok && echo x > /tmp/ok")
                .await
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_syscalls_are_denied() {
    let Some((_dirs, _daemon, api)) = two_sandboxes().await else {
        return;
    };
    // ptrace(PTRACE_TRACEME) is harmless when allowed, so a success means the filter is off.
    let ptrace = "import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.ptrace(0, 0, 0, 0); print(r, ctypes.get_errno())";
    let out = api.sh("a", &format!("python3 -c '{ptrace}'")).await;
    assert_eq!(out["stdout"], "-1 1\n", "ptrace was allowed: {out}");
    let out = api
        .sh("a", "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m")
        .await;
    assert_ne!(code(&out), 0, "mount worked: {out}");
    let out = api.sh("a", "unshare --user --map-root-user true").await;
    assert_ne!(code(&out), 0, "a new user namespace was created: {out}");
    let status = api
        .sh(
            "a",
            "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status",
        )
        .await;
    let text = status["stdout"].as_str().expect("stdout");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("CapPrm:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn setuid_binaries_do_not_raise_privileges() {
    let Some((_dirs, _daemon, api)) = two_sandboxes().await else {
        return;
    };
    let setuid = [
        "/usr/bin/su",
        "/usr/bin/passwd",
        "/usr/bin/newgrp",
        "/usr/bin/mount",
    ]
    .into_iter()
    .find(|p| {
        std::fs::metadata(p)
            .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o4000 != 0)
    });
    let Some(binary) = setuid else {
        skip("no setuid binary on this host to try");
        return;
    };
    // Whatever the binary does, nothing it runs may end up as root.
    let out = api
        .sh("a", &format!("{binary} --help >/dev/null 2>&1; id -u"))
        .await;
    assert_eq!(out["stdout"], "1000\n", "{out}");
    let out = api.sh("a", "mount -t proc proc /tmp 2>&1; id -u").await;
    assert!(
        out["stdout"].as_str().expect("stdout").ends_with("1000\n"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_processes_are_invisible_and_unkillable() {
    let Some((_dirs, daemon, api)) = two_sandboxes().await else {
        return;
    };
    let out = api.sh("a", "ls /proc | grep -c '^[0-9]'").await;
    let count: u32 = out["stdout"]
        .as_str()
        .expect("stdout")
        .trim()
        .parse()
        .expect("count");
    assert!(count < 10, "the sandbox sees {count} processes: {out}");
    let out = api
        .sh("a", &format!("kill -0 {} 2>&1; echo $?", daemon.pid()))
        .await;
    assert!(
        out["stdout"].as_str().expect("stdout").ends_with("1\n"),
        "could signal the daemon's pid: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_network_is_loopback_only() {
    let Some((_dirs, daemon, api)) = two_sandboxes().await else {
        return;
    };
    let port = daemon.addr.rsplit(':').next().expect("port");
    let probe = format!(
        "import socket; s = socket.socket(); s.settimeout(2)\ntry:\n  s.connect(('127.0.0.1', {port})); print('connected')\nexcept OSError as e:\n  print('refused')"
    );
    let out = api.sh("a", &format!("python3 -c \"{probe}\"")).await;
    assert_eq!(
        out["stdout"], "refused\n",
        "the sandbox reached nexusd: {out}"
    );
    let out = api
        .sh(
            "a",
            "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
        )
        .await;
    assert_eq!(
        out["stdout"], "lo\n",
        "interfaces other than loopback: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_everything_inside_leaves_the_sandbox_manageable() {
    let Some((_dirs, _daemon, api)) = two_sandboxes().await else {
        return;
    };
    api.sh("a", "kill -9 1; true").await;
    api.sh("a", "kill -9 -1; true").await;
    let out = api.sh("a", "echo alive").await;
    assert_eq!(out["stdout"], "alive\n", "{out}");
    let (_, sb) = api.get("/v1/sandboxes/a").await;
    assert_eq!(sb["state"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn bombs_stay_inside() {
    let Some((_dirs, _daemon, api)) = two_sandboxes().await else {
        return;
    };
    let (_, sb) = api.get("/v1/sandboxes/a").await;
    let enforced = |name: &str| {
        sb["isolation"]["limits"]
            .as_array()
            .expect("limits")
            .iter()
            .any(|l| l["name"] == name && l["enforced"] == true)
    };
    let out = api
        .sh(
            "a",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1; rm -f /tmp/fill",
        )
        .await;
    assert!(
        out["stdout"]
            .as_str()
            .expect("stdout")
            .contains("No space left"),
        "/tmp is not size-limited: {out}"
    );
    if enforced("pids") {
        let out = api
            .post("/v1/sandboxes/a/exec", json!({"argv": ["sh", "-c", "for i in $(seq 400); do sleep 5 & done; wait"], "timeout_ms": 20000}))
            .await
            .1;
        assert!(
            out["stderr"].as_str().unwrap_or("").contains("fork") || code(&out) != 0,
            "400 processes under pids=128: {out}"
        );
    } else {
        skip("pids limit not enforceable here");
    }
    // The other sandbox and the daemon still answer.
    assert_eq!(api.sh("b", "echo fine").await["stdout"], "fine\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_cannot_be_replaced_traced_or_impersonated() {
    let Some((dirs, _daemon, api)) = two_sandboxes().await else {
        return;
    };
    // Its binary is bound read-only; its host-side socket does not exist in the sandbox.
    let out = api
        .sh("a", "cp /bin/true /run/nexus/agent 2>&1; echo rc=$?")
        .await;
    assert!(
        out["stdout"].as_str().expect("stdout").contains("rc=1"),
        "the agent binary was writable: {out}"
    );
    let socket = dirs.path("run").join("nexus").join("sandboxes");
    let out = api
        .sh(
            "a",
            &format!(
                "ls {} 2>&1; find / -name agent.sock 2>/dev/null | wc -l",
                socket.display()
            ),
        )
        .await;
    assert!(
        out["stdout"].as_str().expect("stdout").ends_with("0\n"),
        "the agent socket is reachable: {out}"
    );
    // PID 1 (the agent) cannot be traced, and its memory and descriptors cannot be read.
    let out = api
        .sh(
            "a",
            "cat /proc/1/environ 2>&1 >/dev/null; ls /proc/1/fd 2>&1 >/dev/null; echo rc=$?",
        )
        .await;
    assert!(
        out["stdout"].as_str().expect("stdout").contains("rc=2"),
        "/proc/1 is readable: {out}"
    );
    // And the sandbox keeps answering through its real agent.
    assert_eq!(api.sh("a", "echo still").await["stdout"], "still\n");
}
