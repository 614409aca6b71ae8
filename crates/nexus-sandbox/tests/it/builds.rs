//! Build cgroups on the real cgroup hierarchies of this machine, each usable place in
//! turn (cgroup2, v1 freezer, v1 pids): a spawned child joins before it runs, and the
//! startup sweep kills what a killed daemon's build left, a process that left the
//! build's session with `setsid` included, and removes the cgroups.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nexus_sandbox::cgroups::{BUILDS_PARENT, BuildCgroups};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::skipped;

/// Every place this host offers for the build cgroups of a test-only instance, or `None`
/// (said loudly) when the test cannot run here.
fn places(test: &str) -> Option<Vec<BuildCgroups>> {
    if !nix::unistd::Uid::effective().is_root() {
        skipped(test, "build cgroups need root (or a delegated cgroup)");
        return None;
    }
    let instance = format!("test-{}-{test}", std::process::id());
    match BuildCgroups::places(&instance) {
        Ok(places) => Some(places),
        Err(error) => {
            skipped(test, &format!("no build cgroup on this host: {error}"));
            None
        }
    }
}

/// Kills the processes a test started and removes the cgroup directories it made,
/// whatever happened to it.
struct Reaper(Vec<i32>, Vec<PathBuf>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for dir in &self.1 {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Whether `pid` is gone within two seconds (a zombie counts as gone): SIGKILL lands
/// asynchronously, while a process that escaped it (a `sleep 1000`) stays.
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let dead = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        };
        if dead {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `pid` has exec'd `sleep` (each shell execs it after saying its pid).
fn wait_for_sleep(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .as_deref()
        != Some("sleep\n")
    {
        assert!(Instant::now() < deadline, "{pid} never became sleep");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The process group and session of `pid`.
fn group_and_session(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(") ").expect("a stat line");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    (
        fields[2].parse().expect("pgrp"),
        fields[3].parse().expect("session"),
    )
}

#[test]
fn a_spawned_child_is_in_its_build_cgroup_before_it_runs() {
    let Some(places) = places("build-join") else {
        return;
    };
    for builds in places {
        let build = builds.create("b-join").expect("create");
        let mut command = Command::new("cat");
        command.arg("/proc/self/cgroup");
        build.join_at_spawn(&mut command);
        let output = command.output().expect("run cat");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let suffix = format!("/{BUILDS_PARENT}/{}/b-join", instance_of(builds.home()));
        assert!(
            text.lines().any(|line| line.ends_with(&suffix)),
            "cat did not run in {} ({:?}):\n{text}",
            build.path().display(),
            builds.hierarchy()
        );
        build.destroy().expect("destroy");
        assert!(!build.path().exists());
        assert!(
            !builds.home().exists(),
            "the empty instance directory stays"
        );
    }
}

/// A daemon killed with SIGKILL mid-build leaves its build's cgroup with live processes,
/// one of them in a session of its own; the next start's sweep ends them all. Fails when
/// the sweep is removed (the sleeps stay) or when it spares processes outside the
/// build's process group.
#[test]
fn the_startup_sweep_kills_a_leftover_build_and_removes_its_cgroup() {
    let Some(places) = places("build-sweep") else {
        return;
    };
    for (index, builds) in places.into_iter().enumerate() {
        let build = builds.create("b-leftover").expect("create");
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "(setsid sh -c 'echo $$; exec sleep 1000' </dev/null 2>/dev/null &); exec sleep 1000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        build.join_at_spawn(&mut command);
        let mut child = command.spawn().expect("spawn");
        let tool = i32::try_from(child.id()).expect("a pid");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read");
        let escaped: i32 = line.trim().parse().expect("the escaped pid");
        let home = builds.home().to_path_buf();
        let parent = home.parent().expect("nexus-builds").to_path_buf();
        let _reaper = Reaper(
            vec![tool, escaped],
            vec![build.path().to_path_buf(), home, parent],
        );
        for pid in [tool, escaped] {
            wait_for_sleep(pid);
        }
        assert_ne!(
            group_and_session(escaped).1,
            group_and_session(tool).1,
            "the escapee has a session of its own"
        );
        let path = build.path().to_path_buf();
        // The daemon dies here: nothing destroys the cgroup.
        drop(build);

        // The next daemon finds the same place.
        let fresh = BuildCgroups::places(&instance_of(builds.home()))
            .expect("places")
            .into_iter()
            .nth(index)
            .expect("the same places");
        assert_eq!(fresh, builds);
        let leftovers = fresh.sweep().expect("sweep");
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let leftover = &leftovers[0];
        assert_eq!(leftover.path, path);
        assert!(leftover.result.is_ok(), "{leftover:?}");
        let mut found: Vec<i32> = leftover
            .processes
            .iter()
            .map(|(pid, _)| i32::try_from(*pid).expect("a pid"))
            .collect();
        found.sort_unstable();
        let mut expected = vec![tool, escaped];
        expected.sort_unstable();
        assert_eq!(found, expected, "{leftover:?}");
        assert!(
            leftover.processes.iter().all(|(_, name)| name == "sleep"),
            "{leftover:?}"
        );
        assert!(gone(tool), "the build's tool {tool} survived the sweep");
        assert!(
            gone(escaped),
            "the process {escaped} that left the build's session survived the sweep ({:?})",
            fresh.hierarchy()
        );
        let _ = child.wait();
        assert!(!path.exists(), "{} is left over", path.display());
        assert!(
            !fresh.home().exists(),
            "{} is left over",
            fresh.home().display()
        );
        assert!(fresh.sweep().expect("sweep again").is_empty());
    }
}

/// The instance name is the last component of a home.
fn instance_of(home: &Path) -> String {
    home.file_name()
        .expect("a home has a name")
        .to_string_lossy()
        .into_owned()
}
