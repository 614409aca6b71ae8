//! `nexusctl image list|inspect|import|build|delete` against a real daemon.

use predicates::prelude::*;

use crate::harness::Env;

#[tokio::test(flavor = "multi_thread")]
async fn images_from_the_command_line() {
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    let nxc = |args: &[&str]| {
        let mut cmd = env.nexusctl(&url);
        cmd.args(args);
        cmd
    };
    let tree = env.path("tree");
    std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
    std::fs::write(tree.join("etc/marker"), "x\n").expect("write");
    let tree = tree.to_str().expect("utf-8").to_owned();

    nxc(&["image", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("host").and(predicate::str::contains("builtin")));
    nxc(&["image", "import", &tree, "--name", "tiny"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("tiny imported (img-"));
    nxc(&["image", "inspect", "tiny"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("imported from {tree}")));
    nxc(&["--json", "image", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"name\": \"tiny\""));
    nxc(&["image", "import", &tree, "--name", "tiny"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
    nxc(&["image", "build", "py", "--from", "alpine:3"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("debian:<suite>"));
    nxc(&["image", "delete", "tiny"])
        .assert()
        .success()
        .stdout("tiny deleted\n");
    nxc(&["image", "inspect", "tiny"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no image \"tiny\""));
    drop(daemon);
}
