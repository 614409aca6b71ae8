//! Host memory of sandboxes: which host processes belong to a sandbox (its cgroup
//! `.../nexus/<id>`, or its own host uid when no cgroup names it), and their
//! proportional set size (`Pss` of `/proc/<pid>/smaps_rollup`), which splits shared
//! pages (bwrap, the agent binary, libc) fairly between the processes that map them.
//! Beside it, what the kernel charges to the sandbox's memory cgroup (v1
//! `memory.usage_in_bytes`, v2 `memory.current`), which also counts kernel objects
//! (page tables, namespaces, sockets) and page cache the sandbox brought in.

use std::collections::{BTreeMap, BTreeSet};

use nexus_api::SandboxInfo;
use serde::Serialize;

/// The host memory one sandbox uses.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxMemory {
    /// Sandbox id.
    pub id: String,
    /// Host processes found for it.
    pub processes: usize,
    /// Sum of their `Pss`, in KiB.
    pub pss_kib: u64,
    /// Charged to its memory cgroup, in KiB, when it has one.
    pub cgroup_kib: Option<u64>,
    /// `cgroup` or `uid`: how its processes were found.
    pub found_by: &'static str,
}

/// Pss of every given sandbox's processes.
pub fn measure(sandboxes: &[SandboxInfo]) -> Vec<SandboxMemory> {
    let ids: BTreeSet<String> = sandboxes.iter().map(|s| s.id.clone()).collect();
    let by_cgroup = processes_by_sandbox(&ids);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    sandboxes
        .iter()
        .map(|sandbox| {
            let (pids, found_by) = match by_cgroup.get(&sandbox.id) {
                Some(pids) if !pids.is_empty() => (pids.clone(), "cgroup"),
                _ => (
                    sandbox
                        .isolation
                        .as_ref()
                        .and_then(|i| i.uid_host)
                        .map(processes_of_uid)
                        .unwrap_or_default(),
                    "uid",
                ),
            };
            SandboxMemory {
                id: sandbox.id.clone(),
                processes: pids.len(),
                pss_kib: pids.iter().filter_map(|&pid| pss_kib(pid)).sum(),
                cgroup_kib: pids
                    .first()
                    .and_then(|&pid| cgroup_memory_kib(pid, &mounts)),
                found_by,
            }
        })
        .collect()
}

/// Host pids of processes in the cgroups of the given sandboxes, by sandbox id.
pub fn processes_by_sandbox(ids: &BTreeSet<String>) -> BTreeMap<String, Vec<u32>> {
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for pid in all_pids() {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        if let Some(id) = sandbox_of_cgroup(&text).filter(|id| ids.contains(*id)) {
            found.entry(id.to_owned()).or_default().push(pid);
        }
    }
    found
}

/// Sandboxes (by their cgroup) with a process whose command line mentions `path`: a
/// daemon's sandboxes whatever it logged, since their bwrap names the daemon's data
/// directory in its binds.
pub fn sandboxes_mentioning(path: &std::path::Path) -> BTreeSet<String> {
    let needle = path.as_os_str().as_encoded_bytes();
    all_pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
        })
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            sandbox_of_cgroup(&text).map(str::to_owned)
        })
        .collect()
}

/// Resident set size of a process (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&text, "VmRSS:")
}

/// `Pss` of a process, in KiB; `None` when it is gone or unreadable.
fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&text, "Pss:")
}

/// Memory charged to the memory cgroup of `pid`, in KiB.
fn cgroup_memory_kib(pid: u32, mounts: &str) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let file = memory_cgroup_file(&cgroups, mounts)?;
    let bytes: u64 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    Some(bytes / 1024)
}

/// The file holding the memory charge of the cgroup a `/proc/<pid>/cgroup` text names:
/// the v1 memory hierarchy when one is mounted, else the unified hierarchy.
fn memory_cgroup_file(cgroups: &str, mounts: &str) -> Option<String> {
    let mut v1_mount = None;
    let mut v2_mount = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, target, "cgroup", options, ..] if options.split(',').any(|o| o == "memory") => {
                v1_mount = Some(*target);
            }
            [_, target, "cgroup2", ..] => v2_mount = Some(*target),
            _ => {}
        }
    }
    let path_of = |wanted: &dyn Fn(&str, &str) -> bool| {
        cgroups.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (wanted(id, controllers) && is_sandbox_path(path)).then_some(path)
        })
    };
    if let (Some(mount), Some(path)) = (
        v1_mount,
        path_of(&|_, controllers| controllers.split(',').any(|c| c == "memory")),
    ) {
        return Some(format!("{mount}{path}/memory.usage_in_bytes"));
    }
    let (mount, path) = (
        v2_mount?,
        path_of(&|id, controllers| id == "0" && controllers.is_empty())?,
    );
    Some(format!("{mount}{path}/memory.current"))
}

/// Pids whose real uid is `uid`.
fn processes_of_uid(uid: u32) -> Vec<u32> {
    all_pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|text| real_uid(&text))
                == Some(uid)
        })
        .collect()
}

fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// The sandbox id of a `/proc/<pid>/cgroup` text: the last component of any hierarchy's
/// path whose parent is `nexus`, e.g. `sb-1` in `7:memory:/user.slice/nexus/sb-1`.
fn sandbox_of_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        is_sandbox_path(path).then(|| path.rsplit_once('/').map(|(_, id)| id))?
    })
}

/// Whether a cgroup path is that of a sandbox: `.../nexus/<id>`.
fn is_sandbox_path(path: &str) -> bool {
    path.rsplit_once('/').is_some_and(|(parent, id)| {
        !id.is_empty() && (parent.ends_with("/nexus") || parent == "nexus")
    })
}

/// A `Name:   123 kB` field.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The real uid of a `/proc/<pid>/status` text.
fn real_uid(text: &str) -> Option<u32> {
    kib_field(text, "Uid:").and_then(|uid| u32::try_from(uid).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_id_comes_from_a_nexus_cgroup_on_v1_or_v2() {
        let v1 = "12:pids:/user.slice/nexus/sb-3f9a\n7:memory:/user.slice/nexus/sb-3f9a\n0::/\n";
        assert_eq!(sandbox_of_cgroup(v1), Some("sb-3f9a"));
        let v2 = "0::/system.slice/nexus.service/nexus/sb-77\n";
        assert_eq!(sandbox_of_cgroup(v2), Some("sb-77"));
        let daemon = "0::/system.slice/nexus.service/nexusd\n4:memory:/\n";
        assert_eq!(sandbox_of_cgroup(daemon), None);
        assert_eq!(sandbox_of_cgroup("1:name=systemd:/mynexus/x\n"), None);
    }

    #[test]
    fn memory_charge_is_read_from_v1_memory_or_else_v2() {
        let hybrid_mounts = "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                             cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        let cgroups = "7:memory:/svc/nexus/sb-1\n0::/svc/nexus/sb-1\n";
        assert_eq!(
            memory_cgroup_file(cgroups, hybrid_mounts).as_deref(),
            Some("/sys/fs/cgroup/memory/svc/nexus/sb-1/memory.usage_in_bytes")
        );
        let v2_mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            memory_cgroup_file("0::/svc/nexus/sb-2\n", v2_mounts).as_deref(),
            Some("/sys/fs/cgroup/svc/nexus/sb-2/memory.current")
        );
        assert_eq!(memory_cgroup_file("0::/x\n", ""), None);
        // A process outside any sandbox cgroup must not be charged the whole hierarchy.
        assert_eq!(
            memory_cgroup_file("7:memory:/\n0::/\n", hybrid_mounts),
            None
        );
    }

    #[test]
    fn kib_fields_and_uids_are_parsed() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  2048 kB\nPss:  1234 kB\n";
        assert_eq!(kib_field(rollup, "Pss:"), Some(1234));
        let status = "Name:\tnexus-agent\nUid:\t200001\t200001\t200001\t200001\nVmRSS:\t 900 kB\n";
        assert_eq!(real_uid(status), Some(200_001));
        assert_eq!(kib_field(status, "VmRSS:"), Some(900));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }
}
