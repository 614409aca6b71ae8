//! What a sandbox cgroup offers once made: joining, listing, freezing (statistics are in
//! `stats`).

use std::path::{Path, PathBuf};

use super::files::{self, read_keyed, write_file};
use super::{CgroupDir, CgroupError, CgroupManager, Controller, Hierarchy, SandboxCgroup};

impl SandboxCgroup {
    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every directory of this cgroup (one per v1 hierarchy, one on v2).
    pub fn dirs(&self) -> Vec<&Path> {
        self.dirs.iter().map(|dir| dir.path.as_path()).collect()
    }

    /// The `cgroup.procs` files a process writes its pid into to join this cgroup.
    pub fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| dir.path.join("cgroup.procs"))
            .collect()
    }

    /// The files a freshly forked, single-threaded process writes `0` into to move
    /// itself into this cgroup: `tasks` on v1, `cgroup.procs` on v2.
    ///
    /// On v1 a thread moving itself through `tasks` does not take the kernel's
    /// `cgroup_threadgroup_rwsem` for writing (Linux 6.0+), which would otherwise wait
    /// for an RCU grace period (about 10 ms here); for a process with one thread it is
    /// the same move as writing its pid to `cgroup.procs`.
    pub fn self_join_paths(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| match dir.hierarchy {
                Hierarchy::V1 => dir.path.join("tasks"),
                Hierarchy::V2 => dir.path.join("cgroup.procs"),
            })
            .collect()
    }

    /// Whether any directory exists, so processes are tracked and can be killed by cgroup.
    pub fn tracks_processes(&self) -> bool {
        !self.dirs.is_empty()
    }

    /// Whether [`set_frozen`](Self::set_frozen) can pause the sandbox.
    pub fn can_freeze(&self) -> bool {
        self.dirs.iter().any(|dir| match dir.hierarchy {
            Hierarchy::V1 => dir.controllers.contains(&Controller::Freezer),
            Hierarchy::V2 => dir.path.join("cgroup.freeze").exists(),
        })
    }

    /// Moves process `pid` (with all its threads) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        let value = pid.to_string();
        for path in self.procs_paths() {
            write_file(&path, &value)?;
        }
        Ok(())
    }

    /// The pids of every process in the cgroup, from all its directories.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for path in self.procs_paths() {
            let text = files::read(&path)?;
            pids.extend(
                text.lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok()),
            );
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Freezes (`true`) or thaws (`false`) every process, where a freezer exists.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            match dir.hierarchy {
                Hierarchy::V1 if dir.controllers.contains(&Controller::Freezer) => {
                    let state = if frozen { "FROZEN" } else { "THAWED" };
                    write_file(&dir.path.join("freezer.state"), state)?;
                }
                Hierarchy::V2 if dir.path.join("cgroup.freeze").exists() => {
                    write_file(
                        &dir.path.join("cgroup.freeze"),
                        if frozen { "1" } else { "0" },
                    )?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Freezes or thaws every process and waits until the kernel reports the change done
    /// (v1 `freezer.state` reads `FROZEN`/`THAWED`, v2 `cgroup.events` says `frozen 1`/`0`),
    /// for at most `timeout`. The cost does not depend on the processes' memory: freezing
    /// only parks each task.
    pub fn freeze(&self, frozen: bool, timeout: std::time::Duration) -> Result<(), CgroupError> {
        if !self.can_freeze() {
            return Err(CgroupError::NoFreezer);
        }
        self.set_frozen(frozen)?;
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(100);
        for dir in &self.dirs {
            loop {
                let done = match dir.hierarchy {
                    Hierarchy::V1 if dir.controllers.contains(&Controller::Freezer) => {
                        let want = if frozen { "FROZEN" } else { "THAWED" };
                        files::read(&dir.path.join("freezer.state"))?.trim() == want
                    }
                    Hierarchy::V2 if dir.path.join("cgroup.freeze").exists() => {
                        let text = files::read(&dir.path.join("cgroup.events"))?;
                        read_keyed(&text, "frozen") == Some(u64::from(frozen))
                    }
                    _ => true,
                };
                if done {
                    break;
                }
                if start.elapsed() >= timeout {
                    return Err(CgroupError::FreezeTimeout {
                        path: dir.path.clone(),
                        state: if frozen { "frozen" } else { "thawed" },
                        waited: timeout,
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// Processes the OOM killer ended in this cgroup: the one counter of
    /// [`Self::stats`] read on every command, so it reads one file instead of all of them.
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.dir_of(Controller::Memory)?;
        let (name, key) = oom_file(dir.hierarchy);
        files::read(&dir.path.join(name))
            .ok()
            .and_then(|text| read_keyed(&text, key))
    }

    pub(super) fn dir_of(&self, controller: Controller) -> Option<&CgroupDir> {
        self.dirs
            .iter()
            .find(|dir| dir.controllers.contains(&controller))
    }
}

impl CgroupManager {
    /// OOM kills counted so far in sandbox `id`'s memory cgroup, read straight from the one
    /// file that holds them: this is read around every exec, so unlike
    /// [`CgroupManager::open`] it probes no other controller's directory. `None` when memory
    /// is not limited here or the cgroup is gone.
    pub fn oom_kills(&self, id: &str) -> Option<u64> {
        super::validate_id(id).ok()?;
        let place = self
            .places
            .iter()
            .find(|place| place.controller == Controller::Memory)?;
        let base = place.base.as_ref().ok()?;
        let (name, key) = oom_file(place.hierarchy);
        let path = base.join(&self.parent_name).join(id).join(name);
        files::read(&path)
            .ok()
            .and_then(|text| read_keyed(&text, key))
    }
}

/// The file counting OOM kills in a memory cgroup, and its key.
fn oom_file(hierarchy: Hierarchy) -> (&'static str, &'static str) {
    match hierarchy {
        Hierarchy::V1 => ("memory.oom_control", "oom_kill"),
        Hierarchy::V2 => ("memory.events", "oom_kill"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::create::tests::{fake_v2, read, report, write};
    use super::super::{CgroupManager, CgroupStats, Limits};
    use super::*;

    #[test]
    fn v2_joins_and_freezes_through_the_unified_files() {
        let own = fake_v2("cpu memory pids");
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [own.path(); 4]), "nexus", false);
        let cgroup = manager
            .create("sb-1", &Limits::default())
            .expect("create")
            .cgroup;
        let dir = own.path().join("nexus/sb-1");
        cgroup.add_pid(4242).expect("join");
        assert_eq!(read(dir.join("cgroup.procs")), "4242");
        assert_eq!(cgroup.pids().expect("pids"), vec![4242]);
        write(dir.join("cgroup.freeze"), "");
        assert!(cgroup.can_freeze());
        cgroup.set_frozen(true).expect("freeze");
        cgroup.set_frozen(false).expect("thaw");
        assert_eq!(read(dir.join("cgroup.freeze")), "10");
    }

    #[test]
    fn missing_counters_are_none() {
        let manager = CgroupManager::unavailable("nexus", "none");
        let cgroup = manager
            .create("sb-1", &Limits::default())
            .expect("create")
            .cgroup;
        assert_eq!(cgroup.stats(), CgroupStats::default());
        assert!(!cgroup.can_freeze());
        assert_eq!(cgroup.pids().expect("no directories"), Vec::<u32>::new());
    }
}
