//! Reading a sandbox cgroup's usage counters: CPU time, memory, processes, block I/O and
//! OOM kills, from the v1 or v2 files this host has.
//!
//! Where each counter comes from:
//!
//! | counter | cgroup v2 | cgroup v1 |
//! |---|---|---|
//! | CPU time, user, system | `cpu.stat` (`usage_usec`, `user_usec`, `system_usec`) | `cpuacct.usage`, `cpuacct.usage_user`, `cpuacct.usage_sys` (ns) |
//! | memory, peak, limit | `memory.current`, `memory.peak`, `memory.max` | `memory.usage_in_bytes`, `memory.max_usage_in_bytes`, `memory.limit_in_bytes` |
//! | OOM kills | `memory.events` `oom_kill` | `memory.oom_control` `oom_kill` |
//! | processes, limit | `pids.current`, `pids.max` | the same |
//! | block I/O | `io.stat` (`rbytes`, `wbytes`, `rios`, `wios`) | `blkio.throttle.io_service_bytes_recursive`, `blkio.throttle.io_serviced_recursive` |
//!
//! The v1 block I/O files list a device only once blk-throttle is active on its queue
//! (some cgroup has a throttle rule there); before that the kernel counts nothing, so a
//! file without device lines means "not measured", not zero. On v2 an `io.stat` that
//! exists is authoritative: no line means no I/O yet.

use super::files::{self, read_keyed};
use super::{Accounting, CgroupDir, CgroupStats, Controller, Hierarchy, SandboxCgroup};

/// cgroup v1 reports "no memory limit" as the largest page-aligned `i64`; anything this
/// large is no limit at all.
const V1_UNLIMITED: u64 = 1 << 62;

impl SandboxCgroup {
    /// The usage counters this host provides; a counter it cannot read is `None`.
    pub fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        for dir in &self.dirs {
            match dir.hierarchy {
                Hierarchy::V1 => read_v1(dir, &mut stats),
                Hierarchy::V2 => read_v2(dir, &mut stats),
            }
        }
        stats
    }
}

/// Block I/O totals over every device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IoTotals {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

fn read_v2(dir: &CgroupDir, stats: &mut CgroupStats) {
    let read = |name: &str| files::read(&dir.path.join(name)).ok();
    let num = |name: &str| files::read_u64(&dir.path.join(name));
    let has = |controller| dir.controllers.contains(&controller);
    if has(Controller::Memory) {
        stats.memory_current = num("memory.current");
        stats.memory_peak = num("memory.peak");
        stats.memory_limit = read("memory.max").and_then(|t| parse_limit(&t));
        stats.oom_kills = read("memory.events").and_then(|t| read_keyed(&t, "oom_kill"));
    }
    if has(Controller::Pids) {
        stats.pids_current = num("pids.current");
        stats.pids_limit = read("pids.max").and_then(|t| parse_limit(&t));
    }
    // cpu.stat exists in every v2 cgroup, with or without the cpu controller.
    if let Some(text) = read("cpu.stat") {
        stats.cpu_usage_usec = read_keyed(&text, "usage_usec");
        stats.cpu_user_usec = read_keyed(&text, "user_usec");
        stats.cpu_system_usec = read_keyed(&text, "system_usec");
    }
    // io.stat exists once the io controller is enabled for the sandbox cgroups.
    if let Some(text) = read("io.stat") {
        set_io(stats, parse_io_stat(&text));
    }
}

fn read_v1(dir: &CgroupDir, stats: &mut CgroupStats) {
    let read = |name: &str| files::read(&dir.path.join(name)).ok();
    let num = |name: &str| files::read_u64(&dir.path.join(name));
    let has = |controller| dir.controllers.contains(&controller);
    if has(Controller::Memory) {
        stats.memory_current = num("memory.usage_in_bytes");
        stats.memory_peak = num("memory.max_usage_in_bytes");
        stats.memory_limit = read("memory.limit_in_bytes").and_then(|t| parse_limit(&t));
        stats.oom_kills = read("memory.oom_control").and_then(|t| read_keyed(&t, "oom_kill"));
    }
    if has(Controller::Pids) {
        stats.pids_current = num("pids.current");
        stats.pids_limit = read("pids.max").and_then(|t| parse_limit(&t));
    }
    // cpuacct shares the cpu hierarchy on most hosts (`cpu,cpuacct`); where it is
    // mounted apart, the sandbox joined it for accounting.
    if has(Controller::Cpu) || dir.accounting.contains(&Accounting::Cpuacct) {
        let nanos = |name: &str| num(name).map(|ns| ns / 1000);
        if let Some(usage) = nanos("cpuacct.usage") {
            stats.cpu_usage_usec = Some(usage);
            stats.cpu_user_usec = nanos("cpuacct.usage_user");
            stats.cpu_system_usec = nanos("cpuacct.usage_sys");
        }
    }
    if dir.accounting.contains(&Accounting::Blkio) {
        let bytes = read("blkio.throttle.io_service_bytes_recursive");
        let ops = read("blkio.throttle.io_serviced_recursive");
        if let Some(io) = bytes.zip(ops).and_then(|(b, o)| parse_blkio(&b, &o)) {
            set_io(stats, io);
        }
    }
}

fn set_io(stats: &mut CgroupStats, io: IoTotals) {
    stats.io_read_bytes = Some(io.read_bytes);
    stats.io_write_bytes = Some(io.write_bytes);
    stats.io_read_ops = Some(io.read_ops);
    stats.io_write_ops = Some(io.write_ops);
}

/// A file holding one number.
fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A limit file: a number, or `max` (v2, and v1 `pids.max`) for none; v1's huge
/// "unlimited" memory value is none too.
pub(crate) fn parse_limit(text: &str) -> Option<u64> {
    parse_u64(text).filter(|&value| value < V1_UNLIMITED)
}

/// v2 `io.stat`: one line per device, `MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...`.
pub(crate) fn parse_io_stat(text: &str) -> IoTotals {
    let mut totals = IoTotals::default();
    for line in text.lines() {
        for field in line.split_whitespace().skip(1) {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let slot = match key {
                "rbytes" => &mut totals.read_bytes,
                "wbytes" => &mut totals.write_bytes,
                "rios" => &mut totals.read_ops,
                "wios" => &mut totals.write_ops,
                _ => continue,
            };
            *slot = slot.saturating_add(value);
        }
    }
    totals
}

/// v1 `blkio.throttle.io_service_bytes*` and `io_serviced*`: per device `MAJ:MIN Read N`,
/// `Write`, `Sync`, `Async`, `Discard`, `Total`, then a last `Total N`. `None` when
/// neither lists a device: the kernel is not counting (see the module docs).
pub(crate) fn parse_blkio(bytes: &str, ops: &str) -> Option<IoTotals> {
    let (read_bytes, write_bytes, bytes_listed) = blkio_read_write(bytes);
    let (read_ops, write_ops, ops_listed) = blkio_read_write(ops);
    (bytes_listed || ops_listed).then_some(IoTotals {
        read_bytes,
        write_bytes,
        read_ops,
        write_ops,
    })
}

/// Sums of the `Read` and `Write` lines of a v1 blkio file, and whether it listed any
/// device.
fn blkio_read_write(text: &str) -> (u64, u64, bool) {
    let (mut read, mut write, mut listed) = (0u64, 0u64, false);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(op), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !device.contains(':') {
            continue;
        }
        listed = true;
        let value: u64 = value.parse().unwrap_or(0);
        match op {
            "Read" => read = read.saturating_add(value),
            "Write" => write = write.saturating_add(value),
            _ => {}
        }
    }
    (read, write, listed)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::create::tests::{fake_v2, report, write};
    use super::super::{CgroupManager, Limits};
    use super::*;

    /// `io.stat` as Linux 6.x writes it, two devices.
    const IO_STAT: &str = "\
8:0 rbytes=90112 wbytes=1048576 rios=5 wios=16 dbytes=0 dios=0
253:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0
";

    /// `blkio.throttle.io_service_bytes_recursive` once blk-throttle counts on `8:0`.
    const BLKIO_BYTES: &str = "\
8:0 Read 8192
8:0 Write 1048576
8:0 Sync 1048576
8:0 Async 8192
8:0 Discard 0
8:0 Total 1056768
Total 1056768
";

    /// `blkio.throttle.io_serviced_recursive`, same device.
    const BLKIO_OPS: &str = "\
8:0 Read 2
8:0 Write 16
8:0 Sync 16
8:0 Async 2
8:0 Discard 0
8:0 Total 18
Total 18
";

    const CPU_STAT_V2: &str = "\
usage_usec 1234
user_usec 1000
system_usec 234
nr_periods 0
nr_throttled 0
throttled_usec 0
nr_bursts 0
burst_usec 0
";

    #[test]
    fn io_stat_sums_every_device() {
        assert_eq!(
            parse_io_stat(IO_STAT),
            IoTotals {
                read_bytes: 94208,
                write_bytes: 1_048_576,
                read_ops: 6,
                write_ops: 16,
            }
        );
        assert_eq!(parse_io_stat(""), IoTotals::default(), "no I/O yet");
    }

    #[test]
    fn blkio_files_count_reads_and_writes_and_without_devices_measure_nothing() {
        assert_eq!(
            parse_blkio(BLKIO_BYTES, BLKIO_OPS),
            Some(IoTotals {
                read_bytes: 8192,
                write_bytes: 1_048_576,
                read_ops: 2,
                write_ops: 16,
            })
        );
        assert_eq!(parse_blkio("Total 0\n", "Total 0\n"), None);
    }

    #[test]
    fn limits_read_max_and_v1_unlimited_as_none() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(parse_limit("50\n"), Some(50));
    }

    #[test]
    fn v2_stats_come_from_the_unified_directory() {
        let own = fake_v2("cpu io memory pids");
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [own.path(); 4]), "nexus", false);
        let cgroup = manager
            .create("sb-1", &Limits::default())
            .expect("create")
            .cgroup;
        let dir = own.path().join("nexus/sb-1");
        write(dir.join("memory.current"), "4096\n");
        write(dir.join("memory.peak"), "8192\n");
        write(dir.join("memory.max"), "max\n");
        write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        write(dir.join("pids.current"), "7\n");
        write(dir.join("pids.max"), "64\n");
        write(dir.join("cpu.stat"), CPU_STAT_V2);
        write(dir.join("io.stat"), IO_STAT);
        assert_eq!(
            cgroup.stats(),
            CgroupStats {
                memory_current: Some(4096),
                memory_peak: Some(8192),
                memory_limit: None,
                oom_kills: Some(1),
                pids_current: Some(7),
                pids_limit: Some(64),
                cpu_usage_usec: Some(1234),
                cpu_user_usec: Some(1000),
                cpu_system_usec: Some(234),
                io_read_bytes: Some(94208),
                io_write_bytes: Some(1_048_576),
                io_read_ops: Some(6),
                io_write_ops: Some(16),
            }
        );
        assert_eq!(cgroup.oom_kills(), Some(1));
        assert_eq!(manager.oom_kills("sb-1"), Some(1), "the direct read agrees");
        assert_eq!(manager.oom_kills("sb-2"), None, "no such cgroup");

        // Without the io controller there is no io.stat: I/O is not measured.
        std::fs::remove_file(dir.join("io.stat")).expect("rm");
        let stats = cgroup.stats();
        assert_eq!(stats.io_read_bytes, None);
        assert_eq!(stats.io_write_ops, None);
    }

    #[test]
    fn v2_enables_the_io_controller_when_it_is_delegated() {
        let own = fake_v2("cpu io memory pids");
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [own.path(); 4]), "nexus", false);
        manager.create("sb-1", &Limits::default()).expect("create");
        let enabled =
            std::fs::read_to_string(own.path().join("nexus/cgroup.subtree_control")).expect("read");
        assert!(enabled.contains("+io"), "{enabled}");

        let own = fake_v2("cpu memory pids");
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [own.path(); 4]), "nexus", false);
        manager.create("sb-1", &Limits::default()).expect("create");
        let enabled =
            std::fs::read_to_string(own.path().join("nexus/cgroup.subtree_control")).expect("read");
        assert!(!enabled.contains("io"), "not delegated: {enabled}");
    }

    /// A hybrid host like the one the daemon is developed on: memory, pids, cpu and
    /// freezer on v1 hierarchies of their own, `cpuacct` and `blkio` apart.
    fn fake_v1_with_accounting() -> (tempfile::TempDir, [PathBuf; 4], [PathBuf; 2]) {
        let root = tempfile::tempdir().expect("tempdir");
        let dirs = ["memory", "pids", "cpu", "freezer"].map(|name| root.path().join(name));
        let accounting = ["cpuacct", "blkio"].map(|name| root.path().join(name));
        for dir in dirs.iter().chain(&accounting) {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        (root, dirs, accounting)
    }

    #[test]
    fn v1_stats_come_from_each_hierarchy_and_the_accounting_ones() {
        let (_root, dirs, accounting) = fake_v1_with_accounting();
        let report = report(
            Hierarchy::V1,
            [&dirs[0], &dirs[1], &dirs[2], &dirs[3]].map(|d| d.as_path()),
        );
        let manager = CgroupManager::from_report(&report, "nexus", false).with_accounting(vec![
            (Accounting::Cpuacct, accounting[0].clone()),
            (Accounting::Blkio, accounting[1].clone()),
        ]);
        let cgroup = manager
            .create("sb-1", &Limits::default())
            .expect("create")
            .cgroup;
        let [cpuacct, blkio] = accounting.map(|d| d.join("nexus/sb-1"));
        assert!(
            cpuacct.is_dir() && blkio.is_dir(),
            "accounting cgroups made"
        );
        assert_eq!(cgroup.procs_paths().len(), 6, "the sandbox joins all six");

        let memory = dirs[0].join("nexus/sb-1");
        write(memory.join("memory.usage_in_bytes"), "1048576\n");
        write(memory.join("memory.max_usage_in_bytes"), "2097152\n");
        write(
            memory.join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        let pids = dirs[1].join("nexus/sb-1");
        write(pids.join("pids.current"), "3\n");
        write(pids.join("pids.max"), "max\n");
        write(cpuacct.join("cpuacct.usage"), "5000000\n");
        write(cpuacct.join("cpuacct.usage_user"), "4000000\n");
        write(cpuacct.join("cpuacct.usage_sys"), "1000000\n");
        write(
            blkio.join("blkio.throttle.io_service_bytes_recursive"),
            "Total 0\n",
        );
        write(
            blkio.join("blkio.throttle.io_serviced_recursive"),
            "Total 0\n",
        );

        let stats = cgroup.stats();
        assert_eq!(
            stats,
            CgroupStats {
                memory_current: Some(1_048_576),
                memory_peak: Some(2_097_152),
                memory_limit: None,
                oom_kills: Some(2),
                pids_current: Some(3),
                pids_limit: None,
                cpu_usage_usec: Some(5000),
                cpu_user_usec: Some(4000),
                cpu_system_usec: Some(1000),
                io_read_bytes: None,
                io_write_bytes: None,
                io_read_ops: None,
                io_write_ops: None,
            },
            "blk-throttle is not counting: I/O is unmeasured, not zero"
        );
        assert_eq!(manager.oom_kills("sb-1"), Some(2), "the direct read agrees");

        write(
            blkio.join("blkio.throttle.io_service_bytes_recursive"),
            BLKIO_BYTES,
        );
        write(
            blkio.join("blkio.throttle.io_serviced_recursive"),
            BLKIO_OPS,
        );
        let stats = cgroup.stats();
        assert_eq!(
            (stats.io_read_bytes, stats.io_write_bytes),
            (Some(8192), Some(1_048_576))
        );
        assert_eq!((stats.io_read_ops, stats.io_write_ops), (Some(2), Some(16)));

        // A restarted daemon finds the accounting cgroups again.
        assert_eq!(manager.open("sb-1").expect("open"), cgroup);
    }

    #[test]
    fn cpuacct_co_mounted_with_cpu_shares_its_directory() {
        let (_root, dirs, _) = fake_v1_with_accounting();
        let report = report(
            Hierarchy::V1,
            [&dirs[0], &dirs[1], &dirs[2], &dirs[3]].map(|d| d.as_path()),
        );
        let manager = CgroupManager::from_report(&report, "nexus", false)
            .with_accounting(vec![(Accounting::Cpuacct, dirs[2].clone())]);
        let cgroup = manager
            .create("sb-1", &Limits::default())
            .expect("create")
            .cgroup;
        assert_eq!(cgroup.dirs().len(), 4, "no directory of its own");
        write(dirs[2].join("nexus/sb-1/cpuacct.usage"), "2000\n");
        assert_eq!(cgroup.stats().cpu_usage_usec, Some(2));
        assert_eq!(
            cgroup.stats().cpu_user_usec,
            None,
            "no cpuacct.usage_user file"
        );
    }
}
