//! `nexusctl workspace ...`, `sandbox create --workspace/--mount`, `sandbox fork` and
//! `sandbox pause|resume` against a daemon running real sandboxes.

use predicates::prelude::*;

use crate::harness::{Env, bwrap_usable};

#[tokio::test(flavor = "multi_thread")]
async fn workspaces_from_the_command_line() {
    if !bwrap_usable() {
        eprintln!("SKIP: bubblewrap cannot run sandboxes on this host");
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

    nxc(&["workspace", "create", "proj"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("proj created (ws-"));
    nxc(&["sandbox", "create", "dev", "--workspace", "proj"])
        .assert()
        .success();
    nxc(&["exec", "dev", "--", "sh", "-c", "echo one > f"])
        .assert()
        .success();
    nxc(&["workspace", "snapshot", "proj", "--name", "first"])
        .assert()
        .success()
        .stdout(predicate::str::contains("snapshot first"));
    nxc(&["exec", "dev", "--", "sh", "-c", "echo two > f"])
        .assert()
        .success();
    nxc(&["workspace", "snapshots", "proj"])
        .assert()
        .success()
        .stdout(predicate::str::contains("first"));
    // A root daemon swaps the tree under the running sandbox; another restarts it.
    let writer = if nix::unistd::geteuid().is_root() {
        "kept running on it"
    } else {
        "was restarted on it"
    };
    nxc(&["workspace", "restore", "proj", "first"])
        .assert()
        .success()
        .stdout(predicate::str::contains("generation 2").and(predicate::str::contains(writer)));
    nxc(&["exec", "dev", "--", "cat", "f"])
        .assert()
        .success()
        .stdout("one\n");

    nxc(&["sandbox", "fork", "dev", "--as", "twin"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("twin running"));
    nxc(&["sandbox", "create", "reader", "--mount", "proj:/mnt/proj"])
        .assert()
        .success();
    nxc(&["exec", "reader", "--", "cat", "/mnt/proj/f"])
        .assert()
        .success()
        .stdout("one\n");
    nxc(&["sandbox", "create", "bad", "--mount", "proj"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("WORKSPACE:/PATH"));

    nxc(&["sandbox", "pause", "dev"])
        .assert()
        .success()
        .stdout("dev paused\n");
    nxc(&["exec", "dev", "--", "true"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("sandbox_paused"));
    nxc(&["sandbox", "resume", "dev"])
        .assert()
        .success()
        .stdout("dev running\n");

    nxc(&["workspace", "list"]).assert().success().stdout(
        predicate::str::contains("proj")
            .and(predicate::str::contains("SIZE"))
            .and(predicate::str::contains("twin")),
    );
    nxc(&["workspace", "inspect", "proj"])
        .assert()
        .success()
        .stdout(predicate::str::contains("read-write").and(predicate::str::contains("read-only")));
    nxc(&["workspace", "delete", "proj"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("workspace_in_use"));
    nxc(&["sandbox", "delete", "-f", "dev"]).assert().success();
    nxc(&["sandbox", "delete", "-f", "reader"])
        .assert()
        .success();
    nxc(&["sandbox", "delete", "-f", "--keep-workspace", "twin"])
        .assert()
        .success();
    nxc(&["workspace", "delete", "proj"]).assert().success();
    nxc(&["workspace", "inspect", "twin"])
        .assert()
        .success()
        .stdout(predicate::str::contains("kept until deleted"));
}
