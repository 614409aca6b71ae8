//! Killing every process of a sandbox cgroup, removing it, and moving processes.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::files::{self, write_file};
use super::{CgroupError, SandboxCgroup};

/// How long [`SandboxCgroup::kill_all`] keeps killing before giving up.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`SandboxCgroup::remove`] retries while exiting processes drain.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

impl SandboxCgroup {
    /// Kills every process in the cgroup and waits until none is left, for at most
    /// [`DEFAULT_KILL_TIMEOUT`].
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        self.kill_all_within(DEFAULT_KILL_TIMEOUT)
    }

    /// Kills every process in the cgroup and waits until none is left, for at most
    /// `timeout`.
    ///
    /// cgroup v2 with `cgroup.kill` (Linux 5.14+) kills the whole cgroup atomically.
    /// Otherwise the cgroup is frozen (when a freezer exists, so nothing forks or exits
    /// meanwhile), every listed process gets SIGKILL, the cgroup is thawed so the kills
    /// take effect, and this repeats until `cgroup.procs` is empty. Without a freezer a
    /// process could fork between listing and killing; the loop catches its children.
    pub fn kill_all_within(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        for dir in self
            .dirs
            .iter()
            .filter(|dir| dir.path.join("cgroup.kill").exists())
        {
            write_file(&dir.path.join("cgroup.kill"), "1")?;
        }
        let mut pause = Duration::from_millis(1);
        loop {
            let pids = self.live_pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::KillTimeout {
                    path: self
                        .dirs
                        .first()
                        .map(|d| d.path.clone())
                        .unwrap_or_default(),
                    remaining: pids.len(),
                });
            }
            self.kill_listed(&pids)?;
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL to every process in the cgroup once, without waiting for them to
    /// end: for a drop guard, which must not block. `cgroup.kill` where it exists;
    /// otherwise one round of [`kill_all_within`](Self::kill_all_within)'s freeze and
    /// kill, which can miss a child forked while the pids are listed (the repeating
    /// `kill_all_within` does not).
    pub fn kill_once(&self) -> Result<(), CgroupError> {
        let mut killed = false;
        for dir in self
            .dirs
            .iter()
            .filter(|dir| dir.path.join("cgroup.kill").exists())
        {
            write_file(&dir.path.join("cgroup.kill"), "1")?;
            killed = true;
        }
        if killed {
            return Ok(());
        }
        let pids = self.live_pids()?;
        self.kill_listed(&pids)
    }

    /// Freezes the cgroup where a freezer exists, SIGKILLs each of `pids` and thaws it so
    /// the kills take effect.
    fn kill_listed(&self, pids: &[u32]) -> Result<(), CgroupError> {
        if pids.is_empty() {
            return Ok(());
        }
        let frozen = self.can_freeze() && self.set_frozen(true).is_ok();
        for &pid in pids {
            let Ok(pid) = i32::try_from(pid) else {
                continue;
            };
            // ESRCH: it exited meanwhile, which is what we want.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if frozen {
            self.set_frozen(false)?;
        }
        Ok(())
    }

    /// Removes every directory of the cgroup, retrying briefly while the last processes
    /// finish exiting. Directories already gone are fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        for dir in &self.dirs {
            loop {
                match std::fs::remove_dir(&dir.path) {
                    Ok(()) => break,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                    Err(error)
                        if error.raw_os_error() == Some(libc::EBUSY)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(source) => {
                        return Err(CgroupError::Remove {
                            path: dir.path.clone(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Pids in the cgroup; a directory that vanished counts as empty.
    fn live_pids(&self) -> Result<Vec<u32>, CgroupError> {
        match self.pids() {
            Err(CgroupError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Vec::new())
            }
            other => other,
        }
    }
}

/// Moves every process listed in `from/cgroup.procs` into the cgroup `to` (created if
/// missing). A process that exits meanwhile is skipped.
pub(crate) fn move_processes(from: &Path, to: &Path) -> Result<(), CgroupError> {
    let pids = files::read(&from.join("cgroup.procs"))?;
    let mut pids = pids
        .lines()
        .map(str::trim)
        .filter(|pid| !pid.is_empty())
        .peekable();
    if pids.peek().is_none() {
        return Ok(());
    }
    match std::fs::create_dir(to) {
        Err(source) if source.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(CgroupError::Write {
                path: to.to_path_buf(),
                value: "(mkdir)".to_owned(),
                source,
            });
        }
        _ => {}
    }
    let target = to.join("cgroup.procs");
    for pid in pids {
        match write_file(&target, pid) {
            Ok(()) => {}
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_processes_writes_each_pid_into_the_leaf() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cgroup.procs"), "").expect("write");
        let leaf = dir.path().join("nexusd");
        move_processes(dir.path(), &leaf).expect("nothing to move");
        assert!(!leaf.exists(), "no leaf is made for an empty cgroup");

        std::fs::write(dir.path().join("cgroup.procs"), "41\n42\n").expect("write");
        move_processes(dir.path(), &leaf).expect("moves");
        // One write per pid (the fake file appends them).
        let written = std::fs::read_to_string(leaf.join("cgroup.procs")).expect("read");
        assert_eq!(written, "4142");
    }
}
