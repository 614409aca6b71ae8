//! The last line of cleanup, after the daemon has stopped: processes and cgroups left by
//! sandboxes of this run (a daemon that died, a delete that left traces) are killed and
//! removed, and each such trace becomes a note in the report. Only sandboxes whose ids
//! this run's daemon logged are touched: other daemons on the host share `nexus/`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::memory;

/// Kills what is left of the given sandboxes and removes their cgroups; returns notes.
pub async fn reap(ids: &BTreeSet<String>) -> Vec<String> {
    let mut notes = Vec::new();
    let leftovers = memory::processes_by_sandbox(ids);
    for (id, pids) in &leftovers {
        for &pid in pids {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        notes.push(format!(
            "sandbox {id} still had {} process(es) after cleanup; killed them",
            pids.len()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leftovers.is_empty()
        && !memory::processes_by_sandbox(ids).is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let roots = own_hierarchy_dirs();
    let mut removed = 0;
    let mut stuck = Vec::new();
    for id in ids {
        for dir in roots.iter().map(|root| root.join("nexus").join(id)) {
            if !dir.is_dir() {
                continue;
            }
            // A cgroup whose last process just died can stay busy for a moment.
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => {
                        removed += 1;
                        break;
                    }
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        stuck.push(format!("{}: {e}", dir.display()));
                        break;
                    }
                }
            }
        }
    }
    if removed > 0 {
        notes.push(format!(
            "{removed} cgroup director(ies) of this run's sandboxes were left after cleanup; removed them"
        ));
    }
    notes.extend(
        stuck
            .into_iter()
            .map(|s| format!("cannot remove cgroup {s}")),
    );
    notes
}

/// This process's cgroup directory in every mounted hierarchy: the daemon inherited
/// them and keeps its sandboxes in `<dir>/nexus/<id>`.
fn own_hierarchy_dirs() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    hierarchy_dirs(&own, &mounts)
}

/// For each line of a `/proc/<pid>/cgroup` text, the directory it names under the
/// mount point of its hierarchy.
fn hierarchy_dirs(own: &str, mounts: &str) -> Vec<PathBuf> {
    let mounts: Vec<(&str, &str, &str)> = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, target, fstype @ ("cgroup" | "cgroup2"), options, ..] => {
                    Some((*target, *fstype, *options))
                }
                _ => None,
            }
        })
        .collect();
    own.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let (mount, _, _) = mounts.iter().find(|(_, fstype, options)| {
                if id == "0" && controllers.is_empty() {
                    *fstype == "cgroup2"
                } else {
                    *fstype == "cgroup"
                        && controllers
                            .split(',')
                            .all(|c| options.split(',').any(|o| o == c))
                }
            })?;
            // On v2 the daemon may move the processes of its cgroup (this one among them)
            // into a leaf `nexusd`; its sandboxes are then beside that leaf.
            let path = path.strip_suffix("/nexusd").unwrap_or(path);
            Some(PathBuf::from(format!(
                "{mount}{}",
                path.trim_end_matches('/')
            )))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hierarchy_maps_to_its_mount() {
        let mounts = "\
tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,xattr,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
        let own = "3:name=systemd:/\n2:memory:/svc/a\n1:cpu,cpuacct:/\n0::/user.slice\n";
        let dirs: Vec<String> = hierarchy_dirs(own, mounts)
            .into_iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/memory/svc/a",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/unified/user.slice",
            ]
        );
    }

    #[test]
    fn a_hierarchy_that_is_not_mounted_is_skipped() {
        let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        let own = "5:pids:/\n0::/svc/nexusd\n";
        assert_eq!(
            hierarchy_dirs(own, mounts),
            [PathBuf::from("/sys/fs/cgroup/svc")]
        );
    }
}
