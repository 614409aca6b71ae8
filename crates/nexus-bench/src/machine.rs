//! The machine a run measured: cores, memory, kernel and cgroup layout, for the report's header.

use serde::Serialize;

/// What the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may run on (what `nproc` prints).
    pub cores: usize,
    /// `MemTotal` of `/proc/meminfo`, in MiB.
    pub memory_mib: Option<u64>,
    /// `uname -r`.
    pub kernel: String,
    /// cgroup layout from `/proc/mounts`.
    pub cgroup: CgroupLayout,
    /// Whether the benchmark ran as root (sandboxes then get their own host uids).
    pub root: bool,
    /// 1-minute load average when the run started: other work skews the figures.
    pub load_1m: Option<f64>,
}

impl Machine {
    /// Reads the running machine; what cannot be read is left empty rather than failing.
    pub fn probe() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| meminfo_total_kib(&text))
            .map(|kib| kib / 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let cgroup = std::fs::read_to_string("/proc/mounts")
            .map(|text| CgroupLayout::from_mounts(&text))
            .unwrap_or(CgroupLayout::None);
        Self {
            cores,
            memory_mib,
            kernel,
            cgroup,
            root: nix::unistd::geteuid().is_root(),
            load_1m: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse().ok()),
        }
    }
}

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// Only the unified hierarchy, at `/sys/fs/cgroup`.
    V2,
    /// Only v1 controller hierarchies.
    V1,
    /// v1 controller hierarchies plus the unified hierarchy elsewhere
    /// (typically `/sys/fs/cgroup/unified`).
    Hybrid,
    /// No cgroup filesystem mounted.
    None,
}

impl CgroupLayout {
    /// Classifies the text of `/proc/mounts`.
    pub fn from_mounts(mounts: &str) -> Self {
        let mut v1 = false;
        let mut v2_at_root = false;
        let mut v2_elsewhere = false;
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            let (Some(_source), Some(target), Some(fstype)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            match fstype {
                "cgroup" => v1 = true,
                "cgroup2" if target == "/sys/fs/cgroup" => v2_at_root = true,
                "cgroup2" => v2_elsewhere = true,
                _ => {}
            }
        }
        match (v1, v2_at_root || v2_elsewhere) {
            (true, true) => Self::Hybrid,
            (true, false) => Self::V1,
            (false, true) => Self::V2,
            (false, false) => Self::None,
        }
    }

    /// As the header shows it.
    pub fn label(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V1 => "v1",
            Self::Hybrid => "hybrid (v1 controllers + v2 unified)",
            Self::None => "none mounted",
        }
    }
}

/// `MemTotal` in KiB from the text of `/proc/meminfo`.
fn meminfo_total_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    const V2: &str = "\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
/dev/sda1 / ext4 rw,relatime 0 0
";

    const V1: &str = "\
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
";

    #[test]
    fn hybrid_is_v1_controllers_plus_unified_elsewhere() {
        assert_eq!(CgroupLayout::from_mounts(HYBRID), CgroupLayout::Hybrid);
    }

    #[test]
    fn unified_at_sys_fs_cgroup_alone_is_v2() {
        assert_eq!(CgroupLayout::from_mounts(V2), CgroupLayout::V2);
    }

    #[test]
    fn controllers_without_unified_are_v1() {
        assert_eq!(CgroupLayout::from_mounts(V1), CgroupLayout::V1);
    }

    #[test]
    fn no_cgroup_mounts_and_garbage_lines_are_none() {
        assert_eq!(CgroupLayout::from_mounts(""), CgroupLayout::None);
        assert_eq!(
            CgroupLayout::from_mounts("garbage\n\nproc /proc proc rw 0 0\n"),
            CgroupLayout::None
        );
    }

    #[test]
    fn a_device_named_cgroup2_is_not_a_cgroup_mount() {
        // Only the filesystem type counts, not the source or the mount point's name.
        let text = "cgroup2 /mnt/cgroup2 ext4 rw 0 0\n";
        assert_eq!(CgroupLayout::from_mounts(text), CgroupLayout::None);
    }

    #[test]
    fn memtotal_is_read_in_kib() {
        let text = "MemTotal:        8138048 kB\nMemFree:         1234 kB\n";
        assert_eq!(meminfo_total_kib(text), Some(8_138_048));
        assert_eq!(meminfo_total_kib("MemFree: 1 kB\n"), None);
    }
}
