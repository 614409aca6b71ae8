//! `nexusctl sandbox stats` against a daemon running a real sandbox: one JSON sample, a
//! bounded `--watch` as JSON lines and as tables, and a stopped sandbox refused.

use predicates::prelude::*;
use serde_json::Value;

use crate::harness::{Env, bwrap_usable};

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_stats_from_the_command_line() {
    if !bwrap_usable() {
        #[allow(clippy::print_stderr)] // a skip must be seen in the test output
        {
            eprintln!("SKIPPED: bubblewrap cannot run sandboxes on this host");
        }
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
    nxc(&["sandbox", "create", "stat", "--memory", "128"])
        .assert()
        .success();

    // --json: one object, the API's shape.
    let out = nxc(&["sandbox", "stats", "stat", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let sample: Value = serde_json::from_slice(&out).expect("one JSON object");
    assert_eq!(sample["name"], "stat");
    assert_eq!(sample["state"], "running");
    assert!(sample["unmeasured"].is_array(), "{sample}");
    assert!(sample["timestamp_ms"].as_u64().is_some(), "{sample}");
    if sample["memory_bytes"].is_u64() {
        assert_eq!(sample["memory_limit_bytes"], 128 << 20, "{sample}");
    }

    // --watch --json: one line per sample, stopping after --count.
    let out = nxc(&[
        "sandbox",
        "stats",
        "stat",
        "--watch",
        "--json",
        "--count",
        "2",
        "--interval",
        "100ms",
    ])
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1]["timestamp_ms"].as_u64() >= lines[0]["timestamp_ms"].as_u64());

    // The table, from two samples.
    nxc(&["sandbox", "stats", "stat", "--interval", "100ms"])
        .assert()
        .success()
        .stdout(
            predicate::str::starts_with("NAME")
                .and(predicate::str::contains("CPU %"))
                .and(predicate::str::contains("MEMORY"))
                .and(predicate::str::contains("stat"))
                .and(
                    predicate::str::contains("128.0 MiB")
                        .or(predicate::str::contains("not measured on this host: ")),
                ),
        );
    // --watch without a terminal: one table after another.
    let out = nxc(&[
        "sandbox",
        "stats",
        "stat",
        "--watch",
        "--count",
        "2",
        "--interval",
        "100ms",
    ])
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("NAME").count(), 2, "{text}");
    assert!(
        !text.contains('\x1b'),
        "no screen control codes into a pipe: {text:?}"
    );

    // --count only means something with --watch.
    nxc(&["sandbox", "stats", "stat", "--count", "2"])
        .assert()
        .code(2);

    nxc(&["sandbox", "stop", "stat"]).assert().success();
    nxc(&["sandbox", "stats", "stat"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not running"));
}
