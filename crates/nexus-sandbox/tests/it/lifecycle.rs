//! Launch, stop, destroy, re-attach and failure paths: what is left behind, and what is
//! not.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_sandbox::bwrap::BwrapSpec;
use nexus_sandbox::cgroups::{CgroupError, CgroupManager, Limits};
use nexus_sandbox::launch::{self, HostUser, LaunchError, LaunchRequest, StopOutcome};

use crate::support::{Harness, Options, processes_of};

/// Fails if the cgroup kill misses processes that left the process group and session
/// (a plain kill of the process tree would), or if removal leaves directories.
#[test]
fn destroy_leaves_no_process_cgroup_or_runtime_file() {
    let Some(h) = Harness::new("destroy") else {
        return;
    };
    let script = "sleep 1000 & setsid sleep 1000 & (sleep 1000 &) ; \
                  sh -c 'trap \"\" TERM HUP; sleep 1000' & touch ready; wait";
    let options = Options {
        limits: Limits {
            pids: Some(64),
            ..Limits::default()
        },
        ..Options::default()
    };
    let (running, _) = h.start(script, &options).expect("launch");
    assert!(
        running.wait_for_file("ready", Duration::from_secs(10)),
        "{}",
        running.log()
    );
    // Borrowed, not taken: if an assertion fails, dropping `running` still cleans up.
    let launched = running.launched();
    let uid = running.uid;
    assert!(
        processes_of(uid).len() >= 6,
        "bwrap, sh and the sleepers: {:?}",
        processes_of(uid)
    );
    let dirs: Vec<PathBuf> = launched
        .cgroup
        .dirs()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    assert!(!dirs.is_empty());

    let outcome = launch::destroy(
        &launched.process,
        &launched.cgroup,
        &launched.runtime_dir,
        Duration::from_millis(200),
    )
    .expect("destroy");
    assert_eq!(outcome, StopOutcome::Killed, "sh as PID 1 ignores SIGTERM");
    let left: Vec<String> = processes_of(uid)
        .iter()
        .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "{left:#?}");
    for dir in &dirs {
        assert!(!dir.exists(), "{}", dir.display());
    }
    assert!(!launched.runtime_dir.exists());
    assert!(!launched.process.is_alive());
    assert!(matches!(
        h.cgroups.open(launched.cgroup.id()),
        Err(CgroupError::NotFound(_))
    ));
}

#[test]
fn an_init_that_handles_sigterm_stops_gracefully() {
    let Some(h) = Harness::new("graceful_stop") else {
        return;
    };
    let script = "trap 'echo bye; exit 0' TERM; touch ready; while :; do sleep 0.05; done";
    let (running, _) = h.start(script, &Options::default()).expect("launch");
    assert!(running.wait_for_file("ready", Duration::from_secs(10)));
    let launched = running.launched();
    let outcome =
        launch::stop(&launched.process, &launched.cgroup, Duration::from_secs(5)).expect("stop");
    assert_eq!(outcome, StopOutcome::Exited, "{}", running.log());
    assert!(running.log().contains("bye"));
    assert!(
        !launched.process.bwrap_alive(),
        "bwrap exited and was reaped"
    );
}

/// The daemon may restart: a fresh manager finds the cgroup, the recorded processes
/// are recognised, and destroying through them works.
#[test]
fn a_restarted_daemon_re_attaches_and_destroys() {
    let Some(h) = Harness::new("adopt") else {
        return;
    };
    let (running, _) = h
        .start("touch ready; sleep 1000", &Options::default())
        .expect("launch");
    assert!(running.wait_for_file("ready", Duration::from_secs(10)));
    let launched = running.launched();
    let id = launched.cgroup.id().to_owned();

    let fresh = CgroupManager::detect("nexus-test");
    let cgroup = fresh.open(&id).expect("re-attach");
    assert_eq!(cgroup, launched.cgroup);
    let recorded = launched.process;
    assert!(recorded.is_alive() && recorded.bwrap_alive());
    assert!(cgroup.pids().expect("pids").contains(&recorded.init_pid));
    assert!(cgroup.stats().memory_current.is_some() || !cgroup.tracks_processes());

    launch::destroy(
        &recorded,
        &cgroup,
        &launched.runtime_dir,
        Duration::from_millis(100),
    )
    .expect("destroy");
    assert!(!recorded.is_alive());
    assert!(fresh.open(&id).is_err());
}

/// bwrap is detached from the daemon: its own session, output to the log file.
#[test]
fn bwrap_runs_in_its_own_session_writing_to_the_log() {
    let Some(h) = Harness::new("detached") else {
        return;
    };
    let (running, _) = h
        .start("echo hello; touch ready; sleep 1000", &Options::default())
        .expect("launch");
    assert!(running.wait_for_file("ready", Duration::from_secs(10)));
    let launched = running.launched();
    let pid = launched.process.bwrap_pid;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "session id is bwrap's own pid: {stat}"
    );
    for fd in [1, 2] {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("readlink");
        assert_eq!(target, launched.log_path);
    }
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("readlink");
    assert_eq!(stdin, PathBuf::from("/dev/null"));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(
        environ.is_empty(),
        "bwrap gets no environment from the daemon"
    );
    assert!(running.log().contains("hello"));
}

fn assert_nothing_left(h: &Harness, id: &str, runtime_dir: &std::path::Path) {
    assert!(
        matches!(h.cgroups.open(id), Err(CgroupError::NotFound(_))),
        "cgroup of {id} left"
    );
    assert!(!runtime_dir.exists(), "{}", runtime_dir.display());
}

#[test]
fn failed_launches_leave_nothing_behind() {
    let Some(h) = Harness::new("failed_launch") else {
        return;
    };
    type Change = Box<dyn Fn(&mut BwrapSpec)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "missing workspace",
            Box::new(|spec| spec.workspace = "/nonexistent/workspace".into()),
        ),
        (
            "missing agent",
            Box::new(|spec| spec.agent = Some("/nonexistent/agent".into())),
        ),
        (
            "missing command",
            Box::new(|spec| spec.command = vec!["/nonexistent/cmd".into()]),
        ),
        (
            "bad hostname",
            Box::new(|spec| spec.hostname = "no spaces".into()),
        ),
    ];
    for (case, change) in cases {
        let (id, uid) = h.ids();
        let workspace = h.workspace(&id);
        let mut spec = h.spec(&workspace, "true", &Options::default(), uid);
        change(&mut spec);
        let setup = h
            .cgroups
            .create(
                &id,
                &Limits {
                    pids: Some(10),
                    ..Limits::default()
                },
            )
            .expect("cgroup");
        let runtime_dir = h.dir.path().join("run").join(&id);
        let request = LaunchRequest {
            bwrap: &h.bwrap,
            spec: &spec,
            seccomp: &h.seccomp,
            runtime_dir: &runtime_dir,
            user: HostUser::Dedicated(uid),
            groups: &[],
            netns: None,
        };
        let error = launch::launch(&request, setup.cgroup).expect_err(case);
        match case {
            "missing workspace" => {
                assert!(matches!(error, LaunchError::Workspace { .. }), "{error}")
            }
            "missing agent" => assert!(matches!(error, LaunchError::Missing { .. }), "{error}"),
            "bad hostname" => assert!(matches!(error, LaunchError::Spec(_)), "{error}"),
            _ => {
                let LaunchError::BwrapFailed { log, .. } = &error else {
                    panic!("{case}: {error}");
                };
                assert!(log.contains("bwrap: "), "{case}: {log}");
            }
        }
        assert_nothing_left(&h, &id, &runtime_dir);
        assert!(processes_of(uid).is_empty(), "{case}");
    }
}

/// Prints launch timings (not asserted): launch() returning, and the first byte of the
/// command's output, over 20 runs of each way of making the root (bwrap alone, the
/// launcher's shared tree); plain bwrap for comparison.
#[test]
fn launch_timings() {
    let Some(h) = Harness::new("timings") else {
        return;
    };
    for tree in [None, Some(h.root_tree())] {
        launch_timings_of(&h, tree);
    }
}

#[expect(
    clippy::print_stderr,
    reason = "timings are printed for the reader, never asserted"
)]
fn launch_timings_of(h: &Harness, tree: Option<std::path::PathBuf>) {
    let mode = if tree.is_some() { "tree" } else { "bwrap" };
    let options = Options {
        tree,
        ..Options::default()
    };
    let mut returned = Vec::new();
    let mut first_output = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let (running, _) = h.start("echo ready; sleep 1000", &options).expect("launch");
        returned.push(start.elapsed());
        let log = running.launched().log_path.clone();
        while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
        first_output.push(start.elapsed());
        drop(running);
    }
    let mut plain = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let status = std::process::Command::new(&h.bwrap)
            .args([
                "--unshare-all",
                "--unshare-user",
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
            ])
            .args(["--dev", "/dev", "true"])
            .status()
            .expect("bwrap");
        assert!(status.success());
        plain.push(start.elapsed());
    }
    let p = |samples: &mut Vec<Duration>, q: f64| {
        samples.sort();
        let index = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[index]
    };
    eprintln!(
        "TIMING ({mode}) launch() returned: p50 {:?} p90 {:?}; first output: p50 {:?} p90 {:?}; \
         plain `bwrap true` round trip: p50 {:?} p90 {:?}",
        p(&mut returned, 0.5),
        p(&mut returned, 0.9),
        p(&mut first_output, 0.5),
        p(&mut first_output, 0.9),
        p(&mut plain, 0.5),
        p(&mut plain, 0.9),
    );
}

/// A running sandbox can be renamed (a sandbox from the warm pool gets its name so), and
/// only its own host name changes: the daemon's and another sandbox's stay.
#[test]
fn a_running_sandbox_can_be_renamed() {
    let Some(h) = Harness::new("rename") else {
        return;
    };
    let script = "hostname > before; touch ready; \
                  while [ ! -e go ]; do sleep 0.01; done; hostname > after; touch done; sleep 30";
    let (running, _) = h.start(script, &Options::default()).expect("launch");
    let (other, _) = h
        .start(script, &Options::default())
        .expect("launch another");
    for sandbox in [&running, &other] {
        assert!(
            sandbox.wait_for_file("ready", Duration::from_secs(10)),
            "{}",
            sandbox.log()
        );
    }
    let host_before = nix::unistd::gethostname().expect("hostname");
    launch::set_hostname(&running.launched().process, "renamed-sandbox").expect("rename");
    assert!(matches!(
        launch::set_hostname(&running.launched().process, "not valid"),
        Err(launch::HostnameError::Invalid(_))
    ));
    for sandbox in [&running, &other] {
        std::fs::write(sandbox.workspace.join("go"), "").expect("go");
        assert!(sandbox.wait_for_file("done", Duration::from_secs(10)));
    }
    let read = |sandbox: &crate::support::Running, file: &str| {
        std::fs::read_to_string(sandbox.workspace.join(file)).expect("read")
    };
    assert_eq!(read(&running, "after"), "renamed-sandbox\n");
    assert_eq!(read(&other, "after"), read(&other, "before"));
    assert_ne!(read(&running, "before"), "renamed-sandbox\n");
    assert_eq!(nix::unistd::gethostname().expect("hostname"), host_before);
}
