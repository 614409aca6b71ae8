//! A running sandbox's processes as the host sees them: identity that survives pid
//! reuse, liveness, reaping, and the stop sequence.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cgroups::SandboxCgroup;

use super::LaunchError;

/// How long [`stop`] waits for bwrap to go once everything has been killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The host processes of a sandbox, identified by pid and start time so that a recycled
/// pid is never mistaken for them. Persist it to adopt the sandbox after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxProcess {
    /// The outer bwrap process (a child of the daemon that launched it).
    pub bwrap_pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub bwrap_start: u64,
    /// The sandbox's PID 1 (the command, thanks to `--as-pid-1`) as the host sees it.
    pub init_pid: u32,
    /// Its start time.
    pub init_start: u64,
}

/// How [`stop`] ended the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was not running.
    AlreadyStopped,
    /// Its init exited within the grace period after SIGTERM.
    Exited,
    /// It had to be killed.
    Killed,
}

impl SandboxProcess {
    /// Whether the sandbox runs: its init is alive (when init dies, the kernel kills
    /// everything else in its pid namespace).
    pub fn is_alive(&self) -> bool {
        is_alive(self.init_pid, self.init_start)
    }

    /// Whether the outer bwrap process is alive (not exited, not a zombie).
    pub fn bwrap_alive(&self) -> bool {
        is_alive(self.bwrap_pid, self.bwrap_start)
    }

    /// Collects bwrap's exit status if this process is its parent and it has exited.
    /// Returns the exit code (or 128 + signal).
    pub fn try_reap(&self) -> Option<i32> {
        try_reap(self.bwrap_pid)
    }
}

/// Whether process `pid` exists, is not a zombie, and started at `start_time`.
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    match stat(pid) {
        Some(stat) => stat.start_time == start_time && !matches!(stat.state, 'Z' | 'X'),
        None => false,
    }
}

/// The start time of process `pid`, in clock ticks after boot.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|stat| stat.start_time)
}

/// Reaps `pid` without blocking if it is our exited child: its exit code (or 128 +
/// signal). `None` if it runs, is not our child, or was reaped already.
pub fn try_reap(pid: u32) -> Option<i32> {
    let pid = Pid::from_raw(i32::try_from(pid).ok()?);
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, signal, _)) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Stops a sandbox: SIGTERM to its init (which, as PID 1 of its namespace, only gets it
/// if it handles it; the agent does), up to `grace` for it to exit, then SIGKILL to the
/// init, which takes its whole pid namespace down. bwrap reaps the init and exits; we
/// reap bwrap when we are its parent. Killing init before bwrap matters: killed the
/// other way round, the init would be orphaned to the host's init as a zombie. Last,
/// whatever is still in the cgroup is killed.
pub fn stop(
    process: &SandboxProcess,
    cgroup: &SandboxCgroup,
    grace: Duration,
) -> Result<StopOutcome, LaunchError> {
    let init = Pid::from_raw(i32::try_from(process.init_pid).unwrap_or(0));
    let bwrap = Pid::from_raw(i32::try_from(process.bwrap_pid).unwrap_or(0));
    let bwrap_gone = || {
        process.try_reap();
        !process.bwrap_alive()
    };
    if !process.is_alive() && bwrap_gone() && !has_processes(cgroup) {
        return Ok(StopOutcome::AlreadyStopped);
    }
    let mut outcome = StopOutcome::Exited;
    if process.is_alive() {
        let _ = kill(init, Signal::SIGTERM);
        if !wait_until(grace, || !process.is_alive()) {
            let _ = kill(init, Signal::SIGKILL);
            outcome = StopOutcome::Killed;
            wait_until(EXIT_TIMEOUT, || !process.is_alive());
        }
    }
    wait_until(EXIT_TIMEOUT, bwrap_gone);
    if has_processes(cgroup) {
        outcome = StopOutcome::Killed;
        cgroup.kill_all()?;
    }
    if !bwrap_gone() {
        let _ = kill(bwrap, Signal::SIGKILL);
        if !wait_until(EXIT_TIMEOUT, bwrap_gone) {
            return Err(LaunchError::StillRunning {
                pid: process.bwrap_pid,
            });
        }
    }
    Ok(outcome)
}

fn has_processes(cgroup: &SandboxCgroup) -> bool {
    cgroup.pids().is_ok_and(|pids| !pids.is_empty())
}

/// Polls `done` until it holds or `timeout` passes; whether it held. Polls every
/// 250 µs for the first 50 ms (a launch takes about 10 ms, and each poll is one read
/// of a small procfs file), then backs off to 10 ms.
pub(super) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return false;
        }
        let pause = if elapsed < Duration::from_millis(50) {
            Duration::from_micros(250)
        } else {
            Duration::from_millis(10)
        };
        std::thread::sleep(pause);
    }
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stat {
    pub comm: String,
    pub state: char,
    pub start_time: u64,
}

pub(super) fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid (comm) state ppid ... starttime ...`: comm may hold spaces and parentheses, so
/// the fields after it are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // state is field 3; starttime is field 22.
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let text = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 \
                    1000 200 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                comm: "a) b (c".into(),
                state: 'S',
                start_time: 98765
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id();
        let start = start_time(pid).expect("our stat");
        assert!(is_alive(pid, start));
        assert!(
            !is_alive(pid, start + 1),
            "a recycled pid has another start time"
        );
        assert!(!is_alive(u32::MAX, start));
    }

    #[test]
    fn zombies_are_dead_and_reaped() {
        #[expect(clippy::zombie_processes, reason = "reaping it is what is tested")]
        let child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let start = start_time(pid).expect("running or zombie");
        assert!(wait_until(Duration::from_secs(5), || !is_alive(pid, start)));
        assert_eq!(try_reap(pid), Some(0));
        assert_eq!(try_reap(pid), None, "reaped once");
    }
}
