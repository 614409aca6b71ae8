//! Filesystem probe: which filesystems the kernel knows (`/proc/filesystems`).
//!
//! A filesystem built as a module is listed only once loaded; the kernel loads it on the
//! first mount that asks for it, so "absent" means "not loaded yet", and the remedy is
//! `modprobe <name>`.

use serde::Serialize;

use crate::{ProbeError, read_file};

/// The filesystems the kernel currently knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filesystems {
    names: Vec<String>,
}

impl Filesystems {
    /// Reads `/proc/filesystems`.
    pub fn read() -> Result<Self, ProbeError> {
        read_file("/proc/filesystems").map(|text| Self::parse(&text))
    }

    /// Parses `/proc/filesystems` text: one filesystem a line, `nodev` first when it needs
    /// no block device.
    pub fn parse(text: &str) -> Self {
        let names = text
            .lines()
            .filter_map(|line| line.split_whitespace().last())
            .filter(|name| *name != "nodev")
            .map(str::to_owned)
            .collect();
        Filesystems { names }
    }

    /// Whether `name` (e.g. `overlay`, `btrfs`) is listed.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|listed| listed == name)
    }

    /// Every listed name, in kernel order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Whether the running kernel has `name` as a loadable module (listed in
/// `/lib/modules/$(uname -r)/modules.dep`), so a mount or `modprobe` would load it.
pub fn module_available(name: &str) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dep = format!("/lib/modules/{}/modules.dep", release.trim());
    std::fs::read_to_string(dep).is_ok_and(|text| module_listed(&text, name))
}

/// Whether a `modules.dep` text lists module `name` (`kernel/fs/overlayfs/overlay.ko.zst: ...`).
fn module_listed(text: &str, name: &str) -> bool {
    text.lines()
        .filter_map(|line| line.split(':').next())
        .filter_map(|path| path.rsplit('/').next())
        .any(|file| {
            file.strip_prefix(name)
                .is_some_and(|rest| rest == ".ko" || rest.starts_with(".ko."))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n\tbtrfs\n\n";

    #[test]
    fn parses_block_and_nodev_entries() {
        let filesystems = Filesystems::parse(SAMPLE);
        assert_eq!(
            filesystems.names(),
            ["sysfs", "tmpfs", "ext4", "overlay", "btrfs"]
        );
        assert!(filesystems.contains("overlay"));
        assert!(filesystems.contains("btrfs"));
        assert!(!filesystems.contains("nodev"));
        assert!(!filesystems.contains("zfs"));
    }

    #[test]
    fn finds_modules_in_modules_dep() {
        let dep = "kernel/fs/overlayfs/overlay.ko.zst:\n\
                   kernel/fs/btrfs/btrfs.ko: kernel/lib/raid6/raid6_pq.ko kernel/crypto/xor.ko\n\
                   kernel/fs/overlayfs2/overlayfs2.ko:\n";
        assert!(module_listed(dep, "overlay"));
        assert!(module_listed(dep, "btrfs"));
        assert!(
            !module_listed(dep, "xor_not"),
            "dependencies after the colon do not count"
        );
        assert!(!module_listed(dep, "raid6_pq"));
        assert!(
            !module_listed(dep, "overlayfs"),
            "a longer name is another module"
        );
    }

    #[test]
    fn the_running_kernel_lists_proc() {
        let filesystems = Filesystems::read().expect("/proc/filesystems is readable");
        assert!(filesystems.contains("proc"), "{filesystems:?}");
    }
}
