//! Every command as a user runs it: output, JSON, exit codes and error advice.

use predicates::prelude::*;
use serde_json::Value;

use crate::harness::{Env, dead_addr};

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn status_finds_the_token_by_itself_and_shows_the_database() {
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    let db = env.path("state").join("nexus").join("nexus.db");

    let out = env
        .nexusctl(&url)
        .arg("status")
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok (nexusd"), "{text}");
    assert!(text.contains(&db.display().to_string()), "{text}");
    assert!(
        text.contains("schema") && text.contains("tables") && text.contains("size"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "colour codes on a pipe: {text}");

    let out = env
        .nexusctl(&url)
        .args(["status", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let json = stdout_json(&out);
    assert_eq!(json["status"], "ok");
    assert_eq!(json["database"]["path"], db.display().to_string());
    assert!(
        json["database"]["schema_version"]
            .as_u64()
            .expect("version")
            >= 1
    );
    assert!(json["database"]["table_count"].as_u64().expect("tables") >= 1);
    assert!(json["database"]["size_bytes"].as_u64().expect("size") > 0);
    daemon.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn version_shows_client_and_server() {
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    let version = env!("CARGO_PKG_VERSION");
    env.nexusctl(&url)
        .arg("version")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("nexusctl  {version}")))
        .stdout(predicate::str::contains(format!("nexusd    {version}")));
    let out = env
        .nexusctl(&url)
        .args(["--json", "version"])
        .assert()
        .success()
        .get_output()
        .clone();
    let json = stdout_json(&out);
    assert_eq!(
        (json["client"].as_str(), json["server"].as_str()),
        (Some(version), Some(version))
    );
    daemon.shutdown().await.expect("shutdown");
}

#[test]
fn a_stopped_daemon_gets_the_documented_message() {
    let env = Env::new();
    let addr = dead_addr();
    let out = env
        .nexusctl(&addr)
        .arg("status")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "Error: cannot connect to Nexus daemon at {addr}\n\
             The daemon does not appear to be running.\n\
             Start it: systemctl --user start nexus.service   (or: nexusd)\n"
        )
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_says_where_the_right_one_is() {
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    env.nexusctl(&url)
        .args(["status", "--token", "definitely-not-the-token"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("invalid bearer token"))
        .stderr(predicate::str::contains("NEXUS_TOKEN"));
    env.nexusctl(&url)
        .arg("status")
        .env("NEXUS_TOKEN", "also-not-the-token-123")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unauthorized"));
    daemon.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_config_file_points_at_the_daemon() {
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let config = env.path("config").join("nexusctl").join("config.yaml");
    std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
    std::fs::write(&config, format!("url: http://{}\n", daemon.addr())).expect("write");
    let mut cmd = env.nexusctl("unused");
    cmd.env_remove("NEXUS_URL").arg("status").assert().success();
    daemon.shutdown().await.expect("shutdown");
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.nexusctl("127.0.0.1:1")
        .args(["status", "--bogus"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--bogus"));
    env.nexusctl("127.0.0.1:1")
        .arg("frobnicate")
        .assert()
        .code(2);
    env.nexusctl("127.0.0.1:1")
        .args(["completion", "tcsh"])
        .assert()
        .code(2);
}

#[test]
fn a_bad_url_is_a_clear_error() {
    let env = Env::new();
    env.nexusctl("ftp://example:1")
        .arg("status")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("invalid daemon URL"));
}

#[test]
fn completion_scripts_cover_nexusctl_and_nxc() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env
            .nexusctl("x")
            .args(["completion", shell])
            .assert()
            .success()
            .get_output()
            .clone();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("nexusctl") && script.contains("nxc"),
            "{shell}: {script}"
        );
        assert!(
            script.contains("status"),
            "{shell} completion lacks subcommands"
        );
    }
}

#[test]
fn doctor_needs_no_daemon_and_its_exit_code_follows_the_report() {
    let env = Env::new();
    let out = env
        .nexusctl(&dead_addr())
        .args(["doctor", "--json"])
        .output()
        .expect("run");
    let json = stdout_json(&out);
    let ok = json["ok"].as_bool().expect("ok flag");
    assert_eq!(out.status.code(), Some(if ok { 0 } else { 1 }), "{json}");
    let names: Vec<&str> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for expected in [
        "bwrap",
        "bwrap_functional",
        "user_namespaces",
        "seccomp",
        "landlock",
        "kvm",
    ] {
        assert!(
            names.contains(&expected),
            "missing check {expected}: {names:?}"
        );
    }
    let out = env
        .nexusctl(&dead_addr())
        .arg("doctor")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("nexus doctor") && text.contains("bwrap"),
        "{text}"
    );
}
