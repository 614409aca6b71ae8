//! Resource limits through cgroups, observed while real payloads push against them.

use std::time::Duration;

use nexus_sandbox::cgroups::{LimitStatus, Limits};

use crate::support::{Harness, Options, PYTHON, skipped};

fn enforced(test: &str, status: &LimitStatus) -> bool {
    if status.enforced() {
        return true;
    }
    skipped(test, &format!("the limit is {status}"));
    false
}

/// Fails without the memory limit: the allocation succeeds and no OOM kill is counted.
#[test]
fn a_memory_bomb_is_oom_killed_and_counted() {
    let Some(h) = Harness::new("memory_limit") else {
        return;
    };
    let options = Options {
        limits: Limits {
            memory_mib: Some(64),
            ..Limits::default()
        },
        ..Options::default()
    };
    let script =
        format!("{PYTHON} -c 'b = b\"x\" * (200 * 1024 * 1024); print(\"ALLOCATED\")'; echo py=$?");
    let (running, report) = h.start(&script, &options).expect("launch");
    if !enforced("memory_limit", &report.memory) {
        return;
    }
    let finished = running.finish(Duration::from_secs(60));
    assert!(!finished.log.contains("ALLOCATED"), "{}", finished.log);
    assert!(finished.log.contains("py=137"), "SIGKILL: {}", finished.log);
    assert!(finished.stats.oom_kills >= Some(1), "{:?}", finished.stats);
    let peak = finished.stats.memory_peak.expect("peak");
    assert!(peak <= 64 * 1024 * 1024, "peak {peak}");
}

/// Fails without the pids limit: all 200 forks succeed.
#[test]
fn a_fork_bomb_stays_inside_its_pids_limit() {
    let Some(h) = Harness::new("pids_limit") else {
        return;
    };
    let options = Options {
        limits: Limits {
            pids: Some(50),
            ..Limits::default()
        },
        ..Options::default()
    };
    let (id, _) = h.ids();
    let workspace = h.workspace(&id);
    std::fs::write(workspace.join("bomb.py"), BOMB).expect("write");
    let script = format!("{PYTHON} bomb.py");
    let (running, report) = h
        .start(
            &script,
            &Options {
                workspace: Some(workspace),
                ..options
            },
        )
        .expect("launch");
    if !enforced("pids_limit", &report.pids) {
        return;
    }
    assert!(
        running.wait_for_file("ready", Duration::from_secs(30)),
        "{}",
        running.log()
    );
    let stats = running.launched().cgroup.stats();
    let current = stats.pids_current.expect("pids.current");
    assert!(current <= 50, "{current}");
    let log = running.log();
    let counts = log.lines().last().unwrap_or_default().to_owned();
    let started: u32 = counts
        .split_whitespace()
        .find_map(|w| w.strip_prefix("started="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(started < 50, "{log}");
    assert!(counts.contains("failed="), "{log}");
    // The host is fine: it can still start processes.
    assert!(
        std::process::Command::new("true")
            .status()
            .expect("spawn")
            .success()
    );
    drop(running);
}

const BOMB: &str = r#"
import os, time
started = failed = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    started += 1
print(f"started={started} failed={failed}", flush=True)
open("ready", "w").close()
time.sleep(60)
"#;

/// Fails without the CPU quota: a busy loop gets a whole CPU.
#[test]
fn a_busy_loop_gets_its_cpu_quota() {
    let Some(h) = Harness::new("cpu_limit") else {
        return;
    };
    let options = Options {
        limits: Limits {
            cpus: Some(0.2),
            ..Limits::default()
        },
        ..Options::default()
    };
    let script = format!(
        "{PYTHON} -c '\nimport time\nstart = time.monotonic()\nwhile time.monotonic() - start < 1.5: pass\n\
         print(\"cpu_ms\", int(time.process_time() * 1000))\n'"
    );
    let (running, report) = h.start(&script, &options).expect("launch");
    if !enforced("cpu_limit", &report.cpus) {
        return;
    }
    let finished = running.finish(Duration::from_secs(30));
    let cpu_ms: u64 = finished
        .log
        .lines()
        .find_map(|l| l.strip_prefix("cpu_ms "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", finished.log));
    // 20% of 1.5 s is 300 ms; a whole CPU would give ~1500 ms.
    assert!(cpu_ms < 600, "{cpu_ms} ms of CPU in 1.5 s");
}

#[test]
fn this_host_enforces_every_limit_or_says_why() {
    let Some(h) = Harness::new("limit_report") else {
        return;
    };
    let options = Options {
        limits: Limits {
            memory_mib: Some(128),
            cpus: Some(1.0),
            pids: Some(100),
        },
        ..Options::default()
    };
    let (running, report) = h.start("true", &options).expect("launch");
    for status in [&report.memory, &report.cpus, &report.pids] {
        match status {
            LimitStatus::Enforced => {}
            LimitStatus::Degraded { reason } | LimitStatus::NotEnforced { reason } => {
                assert!(!reason.is_empty());
                skipped(
                    "limit_report",
                    &format!("a limit is not fully enforced: {reason}"),
                );
            }
            LimitStatus::NotRequested => panic!("all were requested"),
        }
    }
    drop(running);
}
