//! `nexusctl sandbox ...`, `exec` and `run` against a daemon running real sandboxes.

use predicates::prelude::*;

use crate::harness::{Env, bwrap_usable};

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_lifecycle_from_the_command_line() {
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
        "sandbox", "create", "web", "--memory", "256", "--env", "FOO=bar",
    ])
    .assert()
    .success()
    .stdout(predicate::str::starts_with("web running (sb-"));
    nxc(&["sandbox", "list"]).assert().success().stdout(
        predicate::str::contains("NAME")
            .and(predicate::str::contains("web"))
            .and(predicate::str::contains("running")),
    );
    let out = nxc(&["sandbox", "inspect", "web"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("seccomp") && text.contains("1000 inside"),
        "{text}"
    );
    assert!(
        text.contains("memory") && text.contains("256 MiB"),
        "{text}"
    );

    nxc(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo $FOO; echo to-err >&2; exit 7",
    ])
    .assert()
    .code(7)
    .stdout("bar\n")
    .stderr(predicate::str::contains("to-err"));
    // Output is passed through byte for byte, and a streamed exec has no output cap.
    let big = nxc(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "printf 'a\\000\\377'; head -c 3000000 /dev/zero",
    ])
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    assert_eq!(big.len(), 3_000_003);
    assert_eq!(&big[..3], b"a\0\xff");
    nxc(&["exec", "web", "--", "sh", "-c", "kill -9 $$"])
        .assert()
        .code(137);
    nxc(&["exec", "web", "--timeout", "300ms", "--", "sleep", "10"])
        .assert()
        .code(137)
        .stderr(predicate::str::contains("timed out"));
    nxc(&["exec", "-i", "web", "--", "wc", "-c"])
        .write_stdin("12345")
        .assert()
        .success()
        .stdout("5\n");
    nxc(&["exec", "nope", "--", "true"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("sandbox_not_found"));

    nxc(&["sandbox", "stop", "web"])
        .assert()
        .success()
        .stdout("web stopped\n");
    nxc(&["exec", "web", "--", "true"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not running"));
    nxc(&["sandbox", "delete", "web"]).assert().success();
    nxc(&["sandbox", "list", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"sandboxes\": []"));
    daemon.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_uses_a_throwaway_sandbox() {
    if !bwrap_usable() {
        return;
    }
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    env.nexusctl(&url)
        .args(["run", "--", "sh", "-c", "echo hi; exit 3"])
        .assert()
        .code(3)
        .stdout("hi\n");
    env.nexusctl(&url)
        .args(["sandbox", "list", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"sandboxes\": []"));
    daemon.shutdown().await.expect("shutdown");
}
