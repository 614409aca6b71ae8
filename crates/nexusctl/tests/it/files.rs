//! `nexusctl fs ...` against a daemon running real sandboxes: stdin to a file and back,
//! listing, and `fs cp` of a directory tree up into a sandbox and back down.

use predicates::prelude::*;

use crate::harness::{Env, bwrap_usable};

#[tokio::test(flavor = "multi_thread")]
async fn files_go_in_and_out_through_the_command_line() {
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
    nxc(&["sandbox", "create", "files"]).assert().success();

    // stdin -> file -> stdout, a range, append.
    nxc(&[
        "fs",
        "write",
        "files",
        "/workspace/notes/a.txt",
        "--parents",
        "--mode",
        "600",
    ])
    .write_stdin("hello\nworld\n")
    .assert()
    .success();
    nxc(&["fs", "cat", "files", "/workspace/notes/a.txt"])
        .assert()
        .success()
        .stdout("hello\nworld\n");
    nxc(&[
        "fs",
        "cat",
        "files",
        "notes/a.txt",
        "--offset",
        "6",
        "--length",
        "5",
    ])
    .assert()
    .success()
    .stdout("world");
    nxc(&["fs", "write", "files", "notes/a.txt", "--append"])
        .write_stdin("!\n")
        .assert()
        .success();
    nxc(&["fs", "cat", "files", "notes/a.txt"])
        .assert()
        .success()
        .stdout("hello\nworld\n!\n");
    nxc(&["fs", "ls", "files", "/workspace/notes"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("/workspace/notes/a.txt")
                .and(predicate::str::contains("0600")),
        );
    nxc(&["fs", "stat", "files", "notes/a.txt", "notes/nope"])
        .assert()
        .failure()
        .stdout(predicate::str::contains("sha256").and(predicate::str::contains("file_not_found")));
    nxc(&["fs", "cat", "files", "/workspace/missing"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("file_not_found"));

    // A directory tree up and back down.
    let tree = env.path("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
    std::fs::write(tree.join("top.txt"), "top").expect("write");
    std::fs::write(tree.join("sub").join("deep.bin"), [0u8, 1, 2, 255]).expect("write");
    // Larger than one upload chunk, so the streamed tar crosses chunk boundaries.
    let big: Vec<u8> = (0..700_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(tree.join("big.bin"), &big).expect("write");
    nxc(&[
        "fs",
        "cp",
        tree.to_str().expect("utf-8"),
        "files:/workspace/up",
    ])
    .assert()
    .success();
    nxc(&["fs", "cat", "files", "/workspace/up/tree/top.txt"])
        .assert()
        .success()
        .stdout("top");
    nxc(&[
        "fs",
        "mv",
        "files",
        "/workspace/up/tree",
        "/workspace/moved",
    ])
    .assert()
    .success();
    let down = env.path("down");
    nxc(&[
        "fs",
        "cp",
        "files:/workspace/moved",
        down.to_str().expect("utf-8"),
    ])
    .assert()
    .success();
    assert_eq!(
        std::fs::read(down.join("moved").join("sub").join("deep.bin")).expect("read"),
        [0u8, 1, 2, 255]
    );
    assert_eq!(
        std::fs::read_to_string(down.join("moved").join("top.txt")).expect("read"),
        "top"
    );
    assert!(
        std::fs::read(down.join("moved").join("big.bin")).expect("read") == big,
        "the large file came back byte for byte"
    );
    nxc(&[
        "fs",
        "cp",
        env.path("no-such-dir").to_str().expect("utf-8"),
        "files:/workspace/up",
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("cannot read"));
    nxc(&["fs", "rm", "files", "/workspace/moved"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("file_conflict"));
    nxc(&["fs", "rm", "files", "/workspace/moved", "-r"])
        .assert()
        .success();

    // Bad `cp` sides are explained.
    nxc(&["fs", "cp", "/tmp/a", "/tmp/b"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("SANDBOX:/path"));
    nxc(&["fs", "cp", "files:", "/tmp/b"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("names no path"));
    // Sandboxes outlive the daemon by design: leave none behind.
    nxc(&["sandbox", "delete", "--force", "files"])
        .assert()
        .success();
}
