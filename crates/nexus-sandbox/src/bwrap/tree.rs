//! The sandbox's root assembled by the launcher, as root, before bwrap runs: the plan.
//!
//! bwrap re-reads the whole mount table (`/proc/self/mountinfo`) after every bind and
//! read-only remount it makes, to find the submounts it must remount too. With one
//! mount per top-level entry of the image, the masks, `/run` and the agent, that is
//! some thirty reads of a table that grows with each mount: about 40% of bwrap's time
//! (measured with `perf` here, bwrap 0.8). A daemon running as root does not need bwrap
//! for that part: the launcher (see `crate::launch`) assembles the same root in a
//! private mount namespace, on a small tmpfs at [`BwrapSpec::tree`], with plain mount
//! calls, which read nothing back, once per plan (shared by every launch while the host's
//! mount table stays the same: `crate::launch::template`); bwrap then binds that
//! one tree read-only as `/` (one recursive bind, one read of the table) and adds only
//! what must be the sandbox's own: `/proc`, `/dev`, `/tmp`, the workspace and the
//! read-only workspace binds. bwrap alone went from 15.3 to 10.0 ms p50 with this.
//!
//! The tree holds exactly what [`super::build_args`] would otherwise make: each top-level
//! entry of the image bound (symlinks recreated, masked entries empty), the masks, a
//! read-only `/run` holding only the agent, and the mount points of the sandbox's own
//! mounts. Mounts made by root in the launcher's namespace arrive in the sandbox's
//! namespace (owned by its unprivileged user namespace) *locked*: nothing inside can
//! unmount a mask to see what it covers, even with every syscall allowed.
//!
//! The tree's own tmpfs is unbindable while it is built, so that binding an image entry
//! that contains [`BwrapSpec::tree`] (the data directory under `/var`) does not copy the
//! half-built tree into itself; it is made private again before bwrap binds it.

use std::path::{Path, PathBuf};

use super::{AGENT_PATH, BwrapSpec, EntryKind, Mask, RESERVED_TOP, effective_masks};

/// One step of assembling the tree; paths are absolute in the launcher's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeOp {
    /// Mount a tmpfs (mode 0755, `nosuid,nodev`) at `target`, read-only if asked.
    Tmpfs {
        /// The mount point.
        target: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// Mounted read-only from the start (a mask).
        read_only: bool,
    },
    /// Make the tmpfs at `target` unbindable (see the module docs).
    Unbindable(PathBuf),
    /// Make the mount at `target` private.
    Private(PathBuf),
    /// Create a directory, mode 0755; one that exists is fine.
    Dir(PathBuf),
    /// Create an empty file, mode 0644, as a mount point.
    File(PathBuf),
    /// Create a symlink at `path` pointing to `target`.
    Symlink {
        /// What the link says.
        target: PathBuf,
        /// Where it is made.
        path: PathBuf,
    },
    /// Bind `source` (with everything mounted under it) at `target`.
    Bind {
        /// The host path.
        source: PathBuf,
        /// The mount point in the tree.
        target: PathBuf,
    },
    /// Remount the mount at `target` read-only (itself, not its submounts).
    ReadOnly(PathBuf),
    /// Make the mount at `target` and every mount under it read-only, `nosuid` and
    /// `nodev`, in one `mount_setattr` (Linux 5.12+).
    Seal(PathBuf),
    /// Make the bind of a device node at `target` read-only and `nosuid` (writing to a
    /// device goes on: a read-only mount only stops changes to the filesystem).
    SealDevice(PathBuf),
}

/// Size of the tree's tmpfs: it holds directories, symlinks and empty files only.
const TREE_SIZE: u64 = 1 << 20;
/// Size of a mask's tmpfs: empty and read-only.
const MASK_SIZE: u64 = 4096;
/// The device nodes of `/dev`, as bwrap's `--dev` binds them.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Where each sandbox's own `devpts` goes, relative to the tree.
pub const DEVPTS: &str = "dev/pts";

/// The steps that assemble `spec`'s root at `tree`. The spec must be valid, for the host
/// image or a read-only image (not [`BwrapSpec::writable_root`]).
pub fn plan_tree(spec: &BwrapSpec, tree: &Path) -> Vec<TreeOp> {
    let inside = |path: &Path| tree.join(path.strip_prefix("/").unwrap_or(path));
    let mut ops = vec![
        TreeOp::Tmpfs {
            target: tree.to_path_buf(),
            size: TREE_SIZE,
            read_only: false,
        },
        TreeOp::Unbindable(tree.to_path_buf()),
    ];
    let masks = effective_masks(&spec.masks);
    for entry in &spec.root.entries {
        let Some(name) = entry.name.to_str() else {
            continue; // as in `build_args`: such names do not occur in images
        };
        if RESERVED_TOP.contains(&name) {
            continue;
        }
        let top = Path::new("/").join(name);
        let target = inside(&top);
        let masked = masks.iter().any(|mask| mask.path() == top);
        match (&entry.kind, masked) {
            (EntryKind::Dir, true) => ops.push(TreeOp::Dir(target)),
            (EntryKind::File, true) => {
                ops.push(TreeOp::File(target.clone()));
                ops.push(TreeOp::Bind {
                    source: "/dev/null".into(),
                    target,
                });
            }
            (EntryKind::Symlink(_), true) => {}
            (EntryKind::Dir, false) => {
                ops.push(TreeOp::Dir(target.clone()));
                ops.push(TreeOp::Bind {
                    source: spec.root.path.join(name),
                    target,
                });
            }
            (EntryKind::File, false) => {
                ops.push(TreeOp::File(target.clone()));
                ops.push(TreeOp::Bind {
                    source: spec.root.path.join(name),
                    target,
                });
            }
            (EntryKind::Symlink(link), false) => ops.push(TreeOp::Symlink {
                target: link.clone(),
                path: target,
            }),
        }
    }
    for name in RESERVED_TOP.iter().filter(|name| **name != "lost+found") {
        ops.push(TreeOp::Dir(tree.join(name)));
    }

    // Masks below the top level (those were handled with the entries).
    for mask in masks
        .iter()
        .filter(|mask| mask.path().components().count() > 2)
    {
        match mask {
            Mask::EmptyDir(path) => ops.push(TreeOp::Tmpfs {
                target: inside(path),
                size: MASK_SIZE,
                read_only: true,
            }),
            Mask::EmptyFile(path) => {
                ops.push(TreeOp::Bind {
                    source: "/dev/null".into(),
                    target: inside(path),
                });
                ops.push(TreeOp::ReadOnly(inside(path)));
            }
        }
    }

    // `/run`: an empty read-only tmpfs with the agent in it.
    let run = tree.join("run");
    ops.push(TreeOp::Tmpfs {
        target: run.clone(),
        size: TREE_SIZE,
        read_only: false,
    });
    if let Some(agent) = &spec.agent {
        let target = inside(Path::new(AGENT_PATH));
        if let Some(parent) = target.parent() {
            ops.push(TreeOp::Dir(parent.to_path_buf()));
        }
        ops.push(TreeOp::File(target.clone()));
        ops.push(TreeOp::Bind {
            source: agent.clone(),
            target: target.clone(),
        });
        ops.push(TreeOp::ReadOnly(target));
    }
    // Mount points of read-only binds that bwrap would have made on writable ground
    // which is now part of the read-only tree.
    for bind in &spec.read_only {
        if needs_mount_point(spec, &masks, &bind.target) {
            let mut path = tree.to_path_buf();
            for name in bind.target.components().skip(1) {
                path.push(name);
                ops.push(TreeOp::Dir(path.clone()));
            }
        }
    }
    ops.push(TreeOp::ReadOnly(run));
    // Everything so far, submounts of the image's entries included, is sealed before
    // `/dev` is made: bwrap binds the tree as it is (`--dev-bind`, so that the device
    // nodes work), and the sandbox cannot undo flags set here (they arrive locked).
    ops.push(TreeOp::Seal(tree.to_path_buf()));
    plan_dev(&tree.join("dev"), &mut ops);
    ops.push(TreeOp::Private(tree.to_path_buf()));
    ops
}

/// `/dev` as bwrap's `--dev` makes it, minus the one part that must be each sandbox's own:
/// the `devpts` instance at [`DEVPTS`], which the launcher child mounts (a shared one
/// would show every sandbox's terminals to every other). The device nodes are binds of
/// the host's, the only way an unprivileged user namespace gets them.
fn plan_dev(dev: &Path, ops: &mut Vec<TreeOp>) {
    ops.push(TreeOp::Tmpfs {
        target: dev.to_path_buf(),
        size: TREE_SIZE,
        read_only: false,
    });
    for device in DEVICES {
        let target = dev.join(device);
        ops.push(TreeOp::File(target.clone()));
        ops.push(TreeOp::Bind {
            source: Path::new("/dev").join(device),
            target: target.clone(),
        });
        ops.push(TreeOp::SealDevice(target));
    }
    for (name, link) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        ops.push(TreeOp::Symlink {
            target: link.into(),
            path: dev.join(name),
        });
    }
    ops.push(TreeOp::Dir(dev.join("shm")));
    ops.push(TreeOp::Dir(dev.join("pts")));
    ops.push(TreeOp::ReadOnly(dev.to_path_buf()));
}

/// Whether `target`'s mount point lies on ground the tree itself provides (its root
/// tmpfs, an empty masked directory or `/run`) rather than in the workspace, `/tmp`, an
/// image directory (shadowed, see `super::mounts`) or the image itself.
fn needs_mount_point(spec: &BwrapSpec, masks: &[Mask], target: &Path) -> bool {
    let Some(top) = target.components().nth(1).map(|c| c.as_os_str()) else {
        return false;
    };
    if top == "workspace" || top == "tmp" {
        return false;
    }
    if top == "run" {
        return true;
    }
    let top_path = Path::new("/").join(top);
    let masked = masks.iter().any(|mask| mask.path() == top_path);
    match spec.root.entries.iter().find(|e| e.name == top) {
        None => true,
        Some(entry) => match entry.kind {
            EntryKind::Dir | EntryKind::Symlink(_) => masked,
            EntryKind::File => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::ReadOnlyBind;
    use super::super::tests::spec;
    use super::*;

    fn render(ops: &[TreeOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                TreeOp::Tmpfs {
                    target,
                    size,
                    read_only,
                } => format!(
                    "tmpfs {} {size}{}",
                    target.display(),
                    if *read_only { " ro" } else { "" }
                ),
                TreeOp::Unbindable(p) => format!("unbindable {}", p.display()),
                TreeOp::Private(p) => format!("private {}", p.display()),
                TreeOp::Dir(p) => format!("dir {}", p.display()),
                TreeOp::File(p) => format!("file {}", p.display()),
                TreeOp::Symlink { target, path } => {
                    format!("symlink {} {}", target.display(), path.display())
                }
                TreeOp::Bind { source, target } => {
                    format!("bind {} {}", source.display(), target.display())
                }
                TreeOp::ReadOnly(p) => format!("ro {}", p.display()),
                TreeOp::Seal(p) => format!("seal {}", p.display()),
                TreeOp::SealDevice(p) => format!("seal-device {}", p.display()),
            })
            .collect()
    }

    #[test]
    fn host_image_tree() {
        let ops = plan_tree(&spec(), Path::new("/t"));
        let expected = [
            "tmpfs /t 1048576",
            "unbindable /t",
            "symlink usr/bin /t/bin",
            "dir /t/etc",
            "bind /etc /t/etc",
            // Masked top-level directories are empty; reserved ones come below.
            "dir /t/home",
            "dir /t/root",
            "dir /t/sys",
            "bind /sys /t/sys",
            "dir /t/usr",
            "bind /usr /t/usr",
            "dir /t/var",
            "bind /var /t/var",
            "file /t/vmlinuz",
            "bind /vmlinuz /t/vmlinuz",
            "dir /t/proc",
            "dir /t/dev",
            "dir /t/tmp",
            "dir /t/run",
            "dir /t/workspace",
            "bind /dev/null /t/etc/shadow",
            "ro /t/etc/shadow",
            "tmpfs /t/etc/ssh 4096 ro",
            // The data directory hides the workspaces under it; `/run`'s mask is moot.
            "tmpfs /t/var/lib/nexus 4096 ro",
            "tmpfs /t/run 1048576",
            "dir /t/run/nexus",
            "file /t/run/nexus/agent",
            "bind /usr/lib/nexus/nexus-agent /t/run/nexus/agent",
            "ro /t/run/nexus/agent",
            "ro /t/run",
            "seal /t",
            "tmpfs /t/dev 1048576",
            "file /t/dev/null",
            "bind /dev/null /t/dev/null",
            "seal-device /t/dev/null",
            "file /t/dev/zero",
            "bind /dev/zero /t/dev/zero",
            "seal-device /t/dev/zero",
            "file /t/dev/full",
            "bind /dev/full /t/dev/full",
            "seal-device /t/dev/full",
            "file /t/dev/random",
            "bind /dev/random /t/dev/random",
            "seal-device /t/dev/random",
            "file /t/dev/urandom",
            "bind /dev/urandom /t/dev/urandom",
            "seal-device /t/dev/urandom",
            "file /t/dev/tty",
            "bind /dev/tty /t/dev/tty",
            "seal-device /t/dev/tty",
            "symlink /proc/self/fd /t/dev/fd",
            "symlink /proc/self/fd/0 /t/dev/stdin",
            "symlink /proc/self/fd/1 /t/dev/stdout",
            "symlink /proc/self/fd/2 /t/dev/stderr",
            "symlink /proc/kcore /t/dev/core",
            "symlink pts/ptmx /t/dev/ptmx",
            "dir /t/dev/shm",
            "dir /t/dev/pts",
            "ro /t/dev",
            "private /t",
        ];
        assert_eq!(render(&ops), expected);
    }

    #[test]
    fn mount_points_on_the_trees_own_ground_are_made() {
        let mut spec = spec();
        spec.read_only = ["/data/ref", "/home/me/ref", "/workspace/ref", "/usr/ref"]
            .into_iter()
            .map(|target| ReadOnlyBind {
                source: "/src".into(),
                target: target.into(),
            })
            .collect();
        let dirs: Vec<String> = render(&plan_tree(&spec, Path::new("/t")))
            .into_iter()
            .skip_while(|op| op != "ro /t/run/nexus/agent")
            .take_while(|op| op != "ro /t/run")
            .filter(|op| op.starts_with("dir "))
            .collect();
        // Not in the workspace (bwrap makes it there) nor in /usr (a shadow's job).
        assert_eq!(
            dirs,
            [
                "dir /t/data",
                "dir /t/data/ref",
                "dir /t/home",
                "dir /t/home/me",
                "dir /t/home/me/ref",
            ]
        );
    }
}
