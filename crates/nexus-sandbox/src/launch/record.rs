//! The launch record: a sandbox's host processes, written to its runtime directory as
//! soon as each is known (bwrap right after the fork, the init once bwrap reports it), so
//! that a daemon killed in the middle of a start finds them at its next start even where
//! there is no cgroup to find them by (an unprivileged daemon without a delegated one).

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::process::{self, SandboxProcess};

/// The record's file name in the runtime directory.
pub const RECORD_NAME: &str = "process.json";

/// How long [`kill_recorded`] waits for the killed processes to go.
const GONE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes `process` as the record of the sandbox whose runtime directory is `dir`,
/// replacing the previous one whole (a temporary file, then a rename).
pub fn write(dir: &Path, process: &SandboxProcess) -> std::io::Result<()> {
    let staging = dir.join(".process.json.new");
    let json = serde_json::to_vec(process).map_err(std::io::Error::other)?;
    std::fs::write(&staging, json)?;
    std::fs::rename(&staging, dir.join(RECORD_NAME))
}

/// Kills what the record in `dir` names and is still running, the very processes (pid
/// and start time) and nothing that reused a pid: the init first, which takes its whole
/// pid namespace down, then bwrap. A record written before bwrap reported the init names
/// bwrap alone; its children are then the init to be. Returns the pids killed; none when
/// there is no record.
pub fn kill_recorded(dir: &Path) -> Vec<u32> {
    let Some(recorded) = std::fs::read(dir.join(RECORD_NAME))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<SandboxProcess>(&bytes).ok())
    else {
        return Vec::new();
    };
    let mut inits = Vec::new();
    if recorded.init_pid != 0 && recorded.is_alive() {
        inits.push(recorded.init_pid);
    }
    let bwrap_alive = recorded.bwrap_alive();
    if bwrap_alive && inits.is_empty() {
        inits.extend(children(recorded.bwrap_pid));
    }
    let mut killed = Vec::new();
    for pid in inits {
        if signal_kill(pid) {
            killed.push(pid);
        }
    }
    if bwrap_alive && signal_kill(recorded.bwrap_pid) {
        killed.push(recorded.bwrap_pid);
    }
    // Gone, or reaped by whoever is their parent now (the host's init or a subreaper).
    process::wait_until(GONE_TIMEOUT, || {
        !recorded.bwrap_alive() && (recorded.init_pid == 0 || !recorded.is_alive())
    });
    killed
}

/// The children of process `pid` (its main thread's, which are bwrap's).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL to `pid`; whether it was sent.
fn signal_kill(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|raw| kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};

    use super::*;

    /// A stand-in for bwrap: `sh` whose child (the "init") sleeps.
    fn stand_in() -> (std::process::Child, u32) {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 1000 & echo $!; wait"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("sh");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
            &mut line,
        )
        .expect("the child's pid");
        (child, line.trim().parse().expect("a pid"))
    }

    fn record_of(bwrap: u32, init: Option<u32>) -> SandboxProcess {
        SandboxProcess {
            bwrap_pid: bwrap,
            bwrap_start: process::start_time(bwrap).expect("bwrap runs"),
            init_pid: init.unwrap_or(0),
            init_start: init.and_then(process::start_time).unwrap_or(0),
        }
    }

    #[test]
    fn a_record_naming_bwrap_alone_kills_bwrap_and_its_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut bwrap, child) = stand_in();
        let child_start = process::start_time(child).expect("the child runs");
        write(dir.path(), &record_of(bwrap.id(), None)).expect("write");
        let killed = kill_recorded(dir.path());
        assert_eq!(killed, vec![child, bwrap.id()]);
        let _ = bwrap.wait();
        assert!(
            !process::is_alive(child, child_start),
            "the child still runs"
        );
    }

    #[test]
    fn a_whole_record_kills_the_init_then_bwrap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut bwrap, child) = stand_in();
        write(dir.path(), &record_of(bwrap.id(), Some(child))).expect("write");
        assert_eq!(kill_recorded(dir.path()), vec![child, bwrap.id()]);
        let _ = bwrap.wait();
    }

    #[test]
    fn a_pid_taken_by_another_process_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut bwrap, child) = stand_in();
        // The same pids with other start times: what a reused pid looks like.
        let mut stale = record_of(bwrap.id(), Some(child));
        stale.bwrap_start += 1;
        stale.init_start += 1;
        write(dir.path(), &stale).expect("write");
        assert!(kill_recorded(dir.path()).is_empty());
        assert!(process::start_time(child).is_some(), "the child was killed");
        let group = i32::try_from(bwrap.id()).expect("a pid");
        let _ = kill(Pid::from_raw(-group), Signal::SIGKILL);
        let _ = bwrap.wait();
    }

    #[test]
    fn no_record_kills_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(kill_recorded(dir.path()).is_empty());
    }
}
