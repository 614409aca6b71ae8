//! `nexusctl image list|inspect|import|build|builds|cancel|delete` against a real daemon,
//! builds with a stand-in for mmdebstrap.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

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

/// A stand-in for mmdebstrap (set as the daemon's `mmdebstrap_path`): prints a line,
/// starts a child `sleep 1000`, writes both pids to `<root>/pids-<its pid>` and waits.
fn stand_in(env: &Env) {
    let script = env.path("fake-mmdebstrap");
    let record = env.path("builds");
    std::fs::create_dir_all(&record).expect("mkdir");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = --version ]; then echo 'mmdebstrap 0.0-fake'; exit 0; fi\n\
             echo 'I: fake bootstrap'\n\
             sleep 1000 &\n\
             echo \"$$ $!\" > {record}/tmp-$$ && mv {record}/tmp-$$ {record}/pids-$$\n\
             wait\n",
            record = record.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = env.path("config").join("nexus");
    std::fs::create_dir_all(&config).expect("mkdir");
    std::fs::write(
        config.join("nexus.yaml"),
        format!("mmdebstrap_path: {}\n", script.display()),
    )
    .expect("write config");
}

/// The pids (the stand-in's, its child's) of every build it started so far.
fn stand_in_pids(env: &Env) -> Vec<(i32, i32)> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(env.path("builds"))
        .expect("read_dir")
        .filter_map(Result::ok)
    {
        if !entry.file_name().to_string_lossy().starts_with("pids-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("read");
        let mut words = text.split_whitespace().map(|w| w.parse().expect("pid"));
        pids.push((words.next().expect("pid"), words.next().expect("pid")));
    }
    pids
}

/// Waits until the stand-in has started `n` builds; returns their pids.
fn wait_for_pids(env: &Env, n: usize) -> Vec<(i32, i32)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = stand_in_pids(env);
        if pids.len() >= n {
            return pids;
        }
        assert!(Instant::now() < deadline, "the stand-in started {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is gone (a zombie waiting for its reaper counts as gone).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// `nexusctl image build NAME` running in the background, its stderr collected.
struct Build {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Build {
    fn start(env: &Env, url: &str, name: &str) -> Self {
        let mut child = env
            .nexusctl_process(url)
            .args(["image", "build", name, "--packages", "git"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nexusctl");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.seen.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no {text:?} on stderr; saw {:?}", self.seen),
            }
        }
    }

    /// Waits for the exit; returns the code and the whole stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "nexusctl image build did not exit; stderr so far {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_builds_are_listed_and_cancelled_from_the_command_line_and_by_ctrl_c() {
    let env = Env::new();
    stand_in(&env);
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    let nxc = |args: &[&str]| {
        let mut cmd = env.nexusctl(&url);
        cmd.args(args);
        cmd
    };
    nxc(&["image", "cancel", "py"]).assert().code(1).stderr(
        predicate::str::contains("no build of image \"py\" is running")
            .and(predicate::str::contains("image_build_not_found")),
    );

    // `image cancel` from another shell.
    let mut build = Build::start(&env, &url, "py");
    build.wait_for("I: fake bootstrap");
    wait_for_pids(&env, 1);
    nxc(&["image", "builds"])
        .assert()
        .success()
        .stdout(predicate::str::contains("py").and(predicate::str::contains("debian:bookworm")));
    nxc(&["--json", "image", "builds"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"name\": \"py\""));
    nxc(&["image", "build", "py"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "image py is already being built; cancel it with `nexusctl image cancel py`",
        ));
    nxc(&["image", "cancel", "py"])
        .assert()
        .success()
        .stdout("the build of py is cancelled\n");
    let (code, stderr) = build.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the build of image py was cancelled (image_build_cancelled)"),
        "{stderr}"
    );

    // Ctrl-C during `image build` cancels the build on the daemon.
    let mut build = Build::start(&env, &url, "py");
    build.wait_for("I: fake bootstrap");
    wait_for_pids(&env, 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(build.child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let (code, stderr) = build.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("cancelling the build of py"), "{stderr}");
    nxc(&["--json", "image", "builds"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"builds\": []"));
    let pids = stand_in_pids(&env);
    assert_eq!(pids.len(), 2, "{pids:?}");
    for (tool, child) in pids {
        assert!(
            gone(tool) && gone(child),
            "{tool} or {child} outlived its build"
        );
    }
    nxc(&["image", "inspect", "py"]).assert().code(1);
    daemon.shutdown().await.expect("shutdown");
}
