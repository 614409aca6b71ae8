//! `nexusctl sandbox network|netlog` against a daemon running real sandboxes.

use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::harness::{Env, bwrap_usable};

/// The policy `sandbox network SB --json` prints.
fn policy(env: &Env, url: &str, sandbox: &str) -> serde_json::Value {
    let out = env
        .nexusctl(url)
        .args(["sandbox", "network", sandbox, "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_network_shows_and_changes_the_policy() {
    if !bwrap_usable() {
        return;
    }
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    let nxc = |args: &[&str]| {
        let mut cmd = env.nexusctl(&url);
        cmd.args(args);
        cmd
    };
    nxc(&[
        "sandbox",
        "create",
        "web",
        "--allow",
        "pypi.org:443",
        "--deny",
        "10.0.0.0/8:*",
    ])
    .assert()
    .success();

    let shown = nxc(&["sandbox", "network", "web"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let shown = String::from_utf8_lossy(&shown);
    for expected in ["Allow", "pypi.org:443", "Deny", "10.0.0.0/8:*", "Network"] {
        assert!(shown.contains(expected), "{expected} missing:\n{shown}");
    }

    // A list given replaces its old self; the other is kept.
    nxc(&[
        "sandbox",
        "network",
        "web",
        "--allow",
        "*.github.com:443",
        "--allow",
        "files.pythonhosted.org:443",
    ])
    .assert()
    .success()
    .stdout(
        predicate::str::contains("*.github.com:443").and(predicate::str::contains("10.0.0.0/8:*")),
    );
    assert_eq!(
        policy(&env, &url, "web"),
        serde_json::json!({
            "allow": ["*.github.com:443", "files.pythonhosted.org:443"],
            "deny": ["10.0.0.0/8:*"],
        })
    );
    nxc(&["sandbox", "network", "web", "--deny", "169.254.0.0/16:*"])
        .assert()
        .success();
    assert_eq!(
        policy(&env, &url, "web"),
        serde_json::json!({
            "allow": ["*.github.com:443", "files.pythonhosted.org:443"],
            "deny": ["169.254.0.0/16:*"],
        })
    );

    // Only cutting open connections keeps the policy.
    nxc(&["sandbox", "network", "web", "--kill-existing"])
        .assert()
        .success();
    assert_eq!(
        policy(&env, &url, "web")["deny"],
        serde_json::json!(["169.254.0.0/16:*"])
    );

    // A bad rule: refused, named, nothing changed.
    nxc(&["sandbox", "network", "web", "--allow", "pypi.org"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("network.allow[0]").and(predicate::str::contains("pypi.org")),
        );
    assert_eq!(
        policy(&env, &url, "web")["allow"],
        serde_json::json!(["*.github.com:443", "files.pythonhosted.org:443"])
    );

    // --clear empties both, then fills the lists given.
    nxc(&[
        "sandbox",
        "network",
        "web",
        "--clear",
        "--allow",
        "pypi.org:443",
    ])
    .assert()
    .success();
    assert_eq!(
        policy(&env, &url, "web"),
        serde_json::json!({"allow": ["pypi.org:443"], "deny": []})
    );
    nxc(&["sandbox", "network", "web", "--clear", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"allow\": []"));
    nxc(&["sandbox", "network", "web"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "none (every connection is refused)",
        ));

    nxc(&["sandbox", "network", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("sandbox_not_found"));
    nxc(&["sandbox", "delete", "--force", "web"])
        .assert()
        .success();
    daemon.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_netlog_of_a_fresh_sandbox_is_empty() {
    if !bwrap_usable() {
        return;
    }
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    let nxc = |args: &[&str]| {
        let mut cmd = env.nexusctl(&url);
        cmd.args(args);
        cmd
    };
    nxc(&["sandbox", "create", "web", "--no-start"])
        .assert()
        .success();

    nxc(&["sandbox", "netlog", "web", "--json"])
        .assert()
        .success()
        .stdout("");
    nxc(&["sandbox", "netlog", "web", "--limit", "5", "--after", "3"])
        .assert()
        .success()
        .stdout("no connection attempts recorded for web\n");
    nxc(&["sandbox", "netlog", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("sandbox_not_found"));
    // Usage errors, caught before asking the daemon.
    nxc(&["sandbox", "netlog", "web", "--limit", "0"])
        .assert()
        .code(2);
    nxc(&["sandbox", "netlog", "web", "--follow", "--limit", "5"])
        .assert()
        .code(2);

    // Following ends, successfully, when the sandbox goes.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_nexusctl"));
    follow
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.path("home"))
        .env("XDG_CONFIG_HOME", env.path("config"))
        .env("XDG_STATE_HOME", env.path("state"))
        .env("XDG_DATA_HOME", env.path("data"))
        .env("XDG_RUNTIME_DIR", env.path("run"))
        .env("NEXUS_URL", &url)
        .args(["sandbox", "netlog", "web", "--follow", "--json"])
        .stdout(std::process::Stdio::piped());
    let mut child = follow.spawn().expect("spawn nexusctl");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "--follow keeps running"
    );
    nxc(&["sandbox", "delete", "web"]).assert().success();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("--follow did not end after the sandbox was deleted");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let out = child.wait_with_output().expect("output");
    assert!(out.stdout.is_empty(), "no connection, no line");
    daemon.shutdown().await.expect("shutdown");
}
