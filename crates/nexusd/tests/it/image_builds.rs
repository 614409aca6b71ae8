//! Image builds of a real daemon with a stand-in for mmdebstrap (`mmdebstrap_path` in
//! `nexus.yaml`): one build per name, cancelled through REST or by the daemon's shutdown,
//! with the builder's whole process tree gone and nothing left behind.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::harness::{Api, Daemon, Dirs, read_token, skip};

/// A stand-in for mmdebstrap that prints its version, or a line, then starts a child
/// `sleep 1000`, writes its own pid, the child's and the directory it was asked to fill
/// into `<dir>/build-<n>`, and waits.
fn stand_in(dirs: &Dirs) -> PathBuf {
    write_stand_in(dirs, "")
}

/// [`stand_in`] that also double-forks a `setsid sleep 1000`, which leaves the build's
/// process group and session, and adds its pid to the record.
fn escaping_stand_in(dirs: &Dirs) -> PathBuf {
    write_stand_in(
        dirs,
        "escaped=$( (setsid sh -c 'echo $$; exec sleep 1000' </dev/null 2>/dev/null &) | head -n 1)\n",
    )
}

fn write_stand_in(dirs: &Dirs, escape: &str) -> PathBuf {
    let script = dirs.path("fake-mmdebstrap");
    let record = dirs.path("builds");
    std::fs::create_dir_all(&record).expect("mkdir");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = --version ]; then echo 'mmdebstrap 0.0-fake'; exit 0; fi\n\
             for dest; do :; done\n\
             echo 'I: fake bootstrap'\n\
             echo half-made > \"$dest/marker\"\n\
             {escape}\
             sleep 1000 &\n\
             echo \"$$ $! $dest $escaped\" > {record}/build-$$.tmp && mv {record}/build-$$.tmp {record}/build-$$\n\
             wait\n",
            record = record.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dirs.write_config(&format!("mmdebstrap_path: {}\n", script.display()));
    script
}

/// One build the stand-in is running: its pid, its child's, the directory it fills, and
/// the process that left its group (from [`escaping_stand_in`]).
#[derive(Debug)]
struct Running {
    tool: i32,
    child: i32,
    dest: PathBuf,
    escaped: Option<i32>,
}

/// Waits for the stand-in's record of a build not in `seen`.
async fn started(dirs: &Dirs, seen: &[i32]) -> Running {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = std::fs::read_dir(dirs.path("builds")).expect("read_dir");
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).expect("read");
            let mut words = text.split_whitespace();
            let tool: i32 = words.next().expect("pid").parse().expect("pid");
            let child: i32 = words.next().expect("pid").parse().expect("pid");
            if !seen.contains(&tool) {
                let dest = PathBuf::from(words.next().expect("dest"));
                let escaped = words.next().map(|pid| pid.parse().expect("pid"));
                return Running {
                    tool,
                    child,
                    dest,
                    escaped,
                };
            }
        }
        assert!(Instant::now() < deadline, "the stand-in never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is gone within two seconds (a zombie waiting for its reaper counts
/// as gone): SIGKILL is delivered asynchronously, so a process killed a moment ago may
/// still be tearing down, while one that escaped the kill (a `sleep 1000`) stays.
fn gone(pid: i32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !dead_now(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Whether `pid` is gone now (a zombie waiting for its reaper counts as gone).
fn dead_now(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// The NDJSON events of a build as they come.
struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    /// Starts a build; asserts the daemon accepted it.
    async fn start(daemon: &Daemon, dirs: &Dirs, name: &str) -> Self {
        let response = reqwest::Client::new()
            .post(daemon.url("/v1/images/build"))
            .bearer_auth(read_token(&dirs.token_file()))
            .json(&json!({"name": name, "from": "debian:bookworm", "packages": ["git"]}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200, "build {name} refused");
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=at).collect();
                return Some(serde_json::from_slice(&line).expect("an NDJSON line"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("the stream moves")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => {
                    assert!(self.buffer.is_empty(), "a cut line at the end");
                    return None;
                }
            }
        }
    }

    /// Reads until the stand-in's line shows up.
    async fn until_started(&mut self) {
        loop {
            let event = self.next().await.expect("the build runs");
            assert_eq!(event["type"], "progress", "{event}");
            if event["line"] == "I: fake bootstrap" {
                return;
            }
        }
    }

    /// Reads to the end; returns the last event.
    async fn last(&mut self) -> Value {
        let mut last = Value::Null;
        while let Some(event) = self.next().await {
            last = event;
        }
        last
    }
}

fn scratch_leftovers(dirs: &Dirs) -> Vec<PathBuf> {
    let root = dirs.path("data").join("nexus").join("images");
    std::fs::read_dir(&root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(".tmp-build-"))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_dead(build: &Running, when: &str) {
    assert!(
        gone(build.tool),
        "the builder {} outlived {when}",
        build.tool
    );
    assert!(
        gone(build.child),
        "the builder's child {} outlived {when}",
        build.child
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_cancelled_over_rest_kills_its_process_tree_and_frees_its_name() {
    let dirs = Dirs::new();
    stand_in(&dirs);
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);

    let mut events = Events::start(&daemon, &dirs, "py").await;
    events.until_started().await;
    let first = started(&dirs, &[]).await;
    assert!(!dead_now(first.tool) && !dead_now(first.child), "{first:?}");
    assert!(first.dest.join("marker").exists(), "{first:?}");

    let (status, list) = api.get("/v1/images/builds").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["builds"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["builds"][0]["name"], "py", "{list}");
    assert_eq!(list["builds"][0]["from"], "debian:bookworm", "{list}");
    assert_eq!(list["builds"][0]["packages"], json!(["git"]), "{list}");

    // A second build of the name is refused while the first runs, saying how to cancel.
    let (status, err) = api
        .post(
            "/v1/images/build",
            json!({"name": "py", "from": "debian:bookworm"}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("image_build_in_progress")),
        "{err}"
    );
    assert_eq!(
        err["error"]["message"],
        "image py is already being built; cancel it with `nexusctl image cancel py`"
    );

    let (status, body) = api.delete("/v1/images/builds/py").await;
    assert_eq!(status, 204, "{body}");
    // When the cancel has answered, the builder's whole tree is gone.
    assert_dead(&first, "its cancel");
    assert!(!first.dest.exists(), "the scratch directory is left over");
    assert_eq!(scratch_leftovers(&dirs), Vec::<PathBuf>::new());
    let last = events.last().await;
    assert_eq!(last["type"], "failed", "{last}");
    assert_eq!(last["error"]["code"], "image_build_cancelled", "{last}");
    assert_eq!(
        last["error"]["message"], "the build of image py was cancelled",
        "{last}"
    );
    let (status, err) = api.get("/v1/images/py").await;
    assert_eq!(status, 404, "nothing is recorded: {err}");
    let (_, list) = api.get("/v1/images/builds").await;
    assert_eq!(list["builds"], json!([]), "{list}");
    let (status, err) = api.delete("/v1/images/builds/py").await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("image_build_not_found")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nexusctl image builds")),
        "{err}"
    );

    // The name is free at once: a new build of it starts.
    let mut again = Events::start(&daemon, &dirs, "py").await;
    again.until_started().await;
    let second = started(&dirs, &[first.tool]).await;
    let (status, body) = api.delete("/v1/images/builds/py").await;
    assert_eq!(status, 204, "{body}");
    assert_dead(&second, "its cancel");
    assert_eq!(again.last().await["error"]["code"], "image_build_cancelled");

    let logs = daemon.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("image build cancelled") && l.contains("INFO")),
        "no info line says the build was cancelled:\n{logs}"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_shutting_down_cancels_its_builds() {
    let dirs = Dirs::new();
    stand_in(&dirs);
    let daemon = Daemon::start(&dirs);
    let mut events = Events::start(&daemon, &dirs, "py").await;
    events.until_started().await;
    let build = started(&dirs, &[]).await;

    let began = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let last = events.last().await;
    assert_eq!(last["type"], "failed", "{last}");
    assert_eq!(last["error"]["code"], "image_build_cancelled", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down")),
        "{last}"
    );
    let (status, logs) = daemon.wait();
    assert!(
        status.success(),
        "nexusd exited with {status}; log:\n{logs}"
    );
    // The build does not hold the shutdown up for the whole shutdown timeout (30 s).
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "the shutdown took {:?}",
        began.elapsed()
    );
    assert_dead(&build, "the daemon");
    assert!(!build.dest.exists(), "the scratch directory is left over");
}

/// Builds report a missing builder as a failure naming the configured program.
#[tokio::test(flavor = "multi_thread")]
async fn the_configured_builder_program_is_the_one_run() {
    let dirs = Dirs::new();
    let missing = dirs.path("no-such-mmdebstrap");
    dirs.write_config(&format!("mmdebstrap_path: {}\n", missing.display()));
    let daemon = Daemon::start(&dirs);
    let mut events = Events::start(&daemon, &dirs, "py").await;
    let last = events.last().await;
    assert_eq!(last["error"]["code"], "image_build_failed", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&*missing.to_string_lossy())),
        "{last}"
    );
    drop(daemon);
}

/// Kills the processes a test started, whatever happens to it.
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Sweeps the build cgroups of the daemon using `dirs`, whatever happens to the test.
struct SweepCgroups(String);

impl Drop for SweepCgroups {
    fn drop(&mut self) {
        for place in nexus_sandbox::cgroups::BuildCgroups::places(&self.0).unwrap_or_default() {
            let _ = place.sweep();
        }
    }
}

/// The build cgroup `pid` is in (`/nexus-builds/<instance>/<build>` under the daemon's
/// cgroup), from `/proc/<pid>/cgroup`.
fn build_cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find(|path| path.contains("/nexus-builds/"))
        .map(str::to_owned)
}

/// Regression: a daemon killed with SIGKILL mid-build left the build's processes running
/// forever (only the scratch directory was swept). Its next start kills them all, the one
/// that left the build's process group with `setsid` included, removes the build's cgroup
/// and logs what it killed. Fails when builds get no cgroup or the startup sweep is
/// removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_left_running_by_a_killed_daemon_is_killed_at_the_next_start() {
    let test = "a_build_left_running_by_a_killed_daemon_is_killed_at_the_next_start";
    if !nix::unistd::Uid::effective().is_root() {
        skip(&format!("{test}: build cgroups need root"));
        return;
    }
    if let Err(error) = nexus_sandbox::cgroups::BuildCgroups::detect("probe") {
        skip(&format!("{test}: no build cgroup on this machine: {error}"));
        return;
    }
    let dirs = Dirs::new();
    let instance = nexusd::image_build::instance(&dirs.path("data").join("nexus"));
    let _sweep = SweepCgroups(instance.clone());
    escaping_stand_in(&dirs);
    let daemon = Daemon::start(&dirs);
    let mut events = Events::start(&daemon, &dirs, "py").await;
    events.until_started().await;
    let build = started(&dirs, &[]).await;
    let escaped = build.escaped.expect("the stand-in records the escaped pid");
    let _reaper = Reaper(vec![build.tool, build.child, escaped]);
    let path = build_cgroup_of(build.tool).expect("the build runs in a cgroup of its own");
    assert!(
        path.contains(&format!("/nexus-builds/{instance}/build-")),
        "{path}"
    );
    assert_eq!(
        build_cgroup_of(escaped).as_deref(),
        Some(path.as_str()),
        "the escaped process stays in the build's cgroup"
    );
    let cgroup = path.rsplit('/').next().expect("a name").to_owned();

    // It says its pid, then execs sleep: the log names it by what it runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{escaped}/comm"))
        .ok()
        .as_deref()
        != Some("sleep\n")
    {
        assert!(Instant::now() < deadline, "{escaped} never became sleep");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    daemon.signal(Signal::SIGKILL);
    let _ = daemon.wait();
    drop(events);
    for pid in [build.tool, build.child, escaped] {
        assert!(
            !dead_now(pid),
            "{pid} died with the daemon: nothing to sweep"
        );
    }

    let daemon = Daemon::start(&dirs);
    assert_dead(&build, "the next start");
    assert!(
        gone(escaped),
        "the process {escaped} that left the build's group outlived the next start"
    );
    assert_eq!(
        crate::harness::cgroup_dirs_named(&cgroup),
        Vec::<String>::new(),
        "the build's cgroup is left over"
    );
    assert_eq!(scratch_leftovers(&dirs), Vec::<PathBuf>::new());
    let logs = daemon.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("killed the processes of an image build")
                && l.contains(&format!("{escaped} (sleep)"))),
        "no line says what was killed:\n{logs}"
    );
    drop(daemon);
}
