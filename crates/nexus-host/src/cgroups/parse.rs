//! Parsers for `/proc/self/mountinfo` (cgroup mounts only) and `/proc/self/cgroup`.

use std::path::PathBuf;

/// Controllers a cgroup v1 hierarchy can carry; other super options (`rw`, `name=systemd`,
/// `clone_children`, ...) are not controllers.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// The cgroup of the hierarchy mounted there (`/` unless a subtree is bind-mounted).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// cgroup v1 with its controllers, or cgroup2.
    pub kind: MountKind,
}

/// The filesystem type of a cgroup mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountKind {
    /// `cgroup`, with the controllers bound to it (empty for `name=systemd`).
    V1(Vec<String>),
    /// `cgroup2`.
    V2,
}

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    /// `0` for cgroup2.
    pub hierarchy_id: u32,
    /// The v1 controllers of that hierarchy; empty for cgroup2 and named hierarchies.
    pub controllers: Vec<String>,
    /// This process's cgroup, relative to the hierarchy (or cgroup namespace) root.
    pub path: String,
}

impl MountKind {
    /// Whether this is a v1 hierarchy carrying `controller`.
    pub fn has_v1_controller(&self, controller: &str) -> bool {
        matches!(self, MountKind::V1(list) if list.iter().any(|c| c == controller))
    }
}

impl Membership {
    /// Whether this is the cgroup2 line (`0::/path`).
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }
}

/// The cgroup and cgroup2 mounts listed in a mountinfo text, in order.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// The memberships listed in a `/proc/<pid>/cgroup` text.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let hierarchy_id = fields.next()?.parse().ok()?;
            let controllers = fields
                .next()?
                .split(',')
                .filter(|c| !c.is_empty() && !c.contains('='))
                .map(str::to_owned)
                .collect();
            let path = fields.next()?.to_owned();
            Some(Membership {
                hierarchy_id,
                controllers,
                path,
            })
        })
        .collect()
}

/// `36 35 98:0 /root /mnt/point rw,noatime master:1 - cgroup cgroup rw,memory`
/// fields before ` - `: id, parent, dev, root, mount point, options, optional tags;
/// after it: fs type, source, super options.
fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    let (before, after) = line.split_once(" - ")?;
    let mut before = before.split(' ');
    let root = unescape(before.nth(3)?);
    let mount_point = PathBuf::from(unescape(before.next()?));
    let mut after = after.split(' ');
    let fs_type = after.next()?;
    let _source = after.next()?;
    let super_options = after.next()?;
    let kind = match fs_type {
        "cgroup2" => MountKind::V2,
        "cgroup" => MountKind::V1(
            super_options
                .split(',')
                .filter(|option| V1_CONTROLLERS.contains(option))
                .map(str::to_owned)
                .collect(),
        ),
        _ => return None,
    };
    Some(CgroupMount {
        root,
        mount_point,
        kind,
    })
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pure cgroup v2 host (Debian 12, Fedora, Ubuntu 22.04+ defaults).
    pub const MOUNTINFO_V2: &str = "\
22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// systemd's hybrid layout: v1 controllers, cgroup2 (without controllers) at `unified`.
    pub const MOUNTINFO_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";

    /// Legacy v1 only, as inside an older Docker container (subtrees bind-mounted).
    pub const MOUNTINFO_V1: &str = "\
600 599 0:52 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs rw,mode=755
601 600 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cpu rw,cpu,cpuacct
602 600 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup memory rw,memory
603 600 0:37 /docker/abc /sys/fs/cgroup/systemd ro,nosuid - cgroup systemd rw,xattr,name=systemd
";

    #[test]
    fn parses_v2_mounts() {
        assert_eq!(
            parse_mountinfo(MOUNTINFO_V2),
            vec![CgroupMount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup".into(),
                kind: MountKind::V2,
            }]
        );
    }

    #[test]
    fn parses_hybrid_mounts_with_their_controllers() {
        let mounts = parse_mountinfo(MOUNTINFO_HYBRID);
        assert_eq!(mounts.len(), 6, "the tmpfs is not a cgroup mount");
        assert_eq!(
            mounts[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            mounts[0].kind,
            MountKind::V1(vec!["cpu".into(), "cpuacct".into()])
        );
        assert!(mounts[1].kind.has_v1_controller("memory"));
        assert_eq!(mounts[4].kind, MountKind::V1(vec![]), "name=systemd");
        assert_eq!(mounts[5].kind, MountKind::V2);
        assert_eq!(
            mounts[5].mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn parses_v1_subtree_roots() {
        let mounts = parse_mountinfo(MOUNTINFO_V1);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1].root, "/docker/abc");
        assert!(mounts[1].kind.has_v1_controller("memory"));
        assert!(!mounts[1].kind.has_v1_controller("pids"));
    }

    #[test]
    fn unescapes_octal_sequences_in_paths() {
        let line = "41 31 0:38 /a\\040b /mnt/my\\040cgroups\\134x rw - cgroup2 cgroup2 rw";
        let mounts = parse_mountinfo(line);
        assert_eq!(mounts[0].root, "/a b");
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/my cgroups\\x"));
        assert_eq!(unescape("no\\escape\\9"), "no\\escape\\9");
    }

    #[test]
    fn skips_malformed_lines() {
        assert!(parse_mountinfo("garbage\n\n1 2 3 - cgroup2").is_empty());
    }

    #[test]
    fn parses_proc_self_cgroup() {
        let text =
            "9:name=systemd:/\n4:memory:/process_api/x\n2:cpu,cpuacct:/\n0::/user.slice/a:b\n";
        let memberships = parse_proc_cgroup(text);
        assert_eq!(memberships.len(), 4);
        assert!(memberships[0].controllers.is_empty());
        assert!(
            !memberships[0].is_v2(),
            "a named v1 hierarchy is not cgroup2"
        );
        assert_eq!(memberships[1].controllers, vec!["memory"]);
        assert_eq!(memberships[1].path, "/process_api/x");
        assert_eq!(memberships[2].controllers, vec!["cpu", "cpuacct"]);
        assert!(memberships[3].is_v2());
        assert_eq!(
            memberships[3].path, "/user.slice/a:b",
            "colons in paths survive"
        );
    }
}
