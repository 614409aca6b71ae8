//! Assembling the sandbox's root tree (see `crate::bwrap::tree` for what and why, and
//! [`super::template`] for where): the plan turned into C paths and mount options, and
//! the raw mount calls that carry it out.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use crate::bwrap::TreeOp;

/// A [`TreeOp`] with its paths and mount options ready for the mount calls.
#[derive(Debug)]
pub(super) enum RawTreeOp {
    Tmpfs {
        target: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    Propagation {
        target: CString,
        flags: libc::c_ulong,
    },
    Dir(CString),
    File(CString),
    Symlink {
        target: CString,
        path: CString,
    },
    Bind {
        source: CString,
        target: CString,
    },
    ReadOnly(CString),
    /// `mount_setattr` of `attr_set` on `target`, recursively or not.
    Attributes {
        target: CString,
        recursive: bool,
        attr_set: u64,
    },
}

/// Prepares `ops` for [`assemble`].
pub(super) fn prepare(ops: &[TreeOp]) -> Vec<RawTreeOp> {
    ops.iter()
        .map(|op| match op {
            TreeOp::Tmpfs {
                target,
                size,
                read_only,
            } => RawTreeOp::Tmpfs {
                target: path(target),
                flags: libc::MS_NOSUID
                    | libc::MS_NODEV
                    | if *read_only { libc::MS_RDONLY } else { 0 },
                data: super::cstring(format!("mode=0755,size={size}").as_bytes()),
            },
            TreeOp::Unbindable(target) => RawTreeOp::Propagation {
                target: path(target),
                flags: libc::MS_UNBINDABLE,
            },
            TreeOp::Private(target) => RawTreeOp::Propagation {
                target: path(target),
                flags: libc::MS_PRIVATE,
            },
            TreeOp::Dir(dir) => RawTreeOp::Dir(path(dir)),
            TreeOp::File(file) => RawTreeOp::File(path(file)),
            TreeOp::Symlink { target, path: at } => RawTreeOp::Symlink {
                target: path(target),
                path: path(at),
            },
            TreeOp::Bind { source, target } => RawTreeOp::Bind {
                source: path(source),
                target: path(target),
            },
            TreeOp::ReadOnly(target) => RawTreeOp::ReadOnly(path(target)),
            TreeOp::Seal(target) => RawTreeOp::Attributes {
                target: path(target),
                recursive: true,
                attr_set: libc::MOUNT_ATTR_RDONLY
                    | libc::MOUNT_ATTR_NOSUID
                    | libc::MOUNT_ATTR_NODEV,
            },
            TreeOp::SealDevice(target) => RawTreeOp::Attributes {
                target: path(target),
                recursive: false,
                attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID,
            },
        })
        .collect()
}

/// Describes step `index` of `ops` for an error message.
pub(super) fn describe(ops: &[TreeOp], index: usize) -> String {
    match ops.get(index) {
        Some(TreeOp::Tmpfs { target, .. }) => format!("mount a tmpfs at {}", target.display()),
        Some(TreeOp::Unbindable(target) | TreeOp::Private(target)) => {
            format!("set the propagation of {}", target.display())
        }
        Some(TreeOp::Dir(dir)) => format!("create the directory {}", dir.display()),
        Some(TreeOp::File(file)) => format!("create the mount point {}", file.display()),
        Some(TreeOp::Symlink { path, .. }) => format!("create the symlink {}", path.display()),
        Some(TreeOp::Bind { source, target }) => {
            format!("bind {} at {}", source.display(), target.display())
        }
        Some(TreeOp::ReadOnly(target)) => format!("make {} read-only", target.display()),
        Some(TreeOp::Seal(target)) => format!(
            "make {} and every mount under it read-only, nosuid and nodev (needs Linux 5.12 or later)",
            target.display()
        ),
        Some(TreeOp::SealDevice(target)) => format!("make {} read-only", target.display()),
        None => "assemble the sandbox's root".to_owned(),
    }
}

/// Runs on a thread of its own, as root: a private mount namespace for the thread
/// (receiving the host's mount events, sending none back), then each step, as raw
/// syscalls. On failure, the index of the step and `errno` (`ops.len()` for the
/// namespace itself).
pub(super) fn assemble(ops: &[RawTreeOp]) -> Result<(), (usize, Errno)> {
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: plain syscalls on NUL-terminated strings the parent prepared.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) < 0
            || libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_SLAVE,
                null.cast(),
            ) < 0
        {
            return Err((ops.len(), Errno::last()));
        }
    }
    for (index, op) in ops.iter().enumerate() {
        step_while_busy(op).map_err(|errno| (index, errno))?;
    }
    Ok(())
}

/// Attempts, 1 ms apart, of a step that makes a mount read-only and fails with `EBUSY`.
/// The kernel refuses that while a write on the mount is being finished; once in a few
/// hundred assemblies under the full test suite's load, making a fresh `/dev` tmpfs
/// read-only failed so, and the cause is not yet understood. The state is transient: a
/// real writer would keep the whole tree from being sealed anyway.
const BUSY_ATTEMPTS: u32 = 50;

fn step_while_busy(op: &RawTreeOp) -> Result<(), Errno> {
    let makes_read_only = matches!(op, RawTreeOp::ReadOnly(_) | RawTreeOp::Attributes { .. });
    let mut attempt = 1;
    loop {
        match step(op) {
            Err(Errno::EBUSY) if makes_read_only && attempt < BUSY_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            done => return done,
        }
    }
}

fn step(op: &RawTreeOp) -> Result<(), Errno> {
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: as in `assemble`; `statfs` fills a plain-data struct we own.
    let result = unsafe {
        match op {
            RawTreeOp::Tmpfs {
                target,
                flags,
                data,
            } => libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                *flags,
                data.as_ptr().cast(),
            ),
            RawTreeOp::Propagation { target, flags } => {
                libc::mount(null, target.as_ptr(), null, *flags, null.cast())
            }
            RawTreeOp::Dir(dir) => {
                if libc::mkdir(dir.as_ptr(), 0o755) < 0 && Errno::last() != Errno::EEXIST {
                    return Err(Errno::last());
                }
                0
            }
            RawTreeOp::File(file) => {
                let fd = libc::open(
                    file.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    return Err(Errno::last());
                }
                libc::close(fd)
            }
            RawTreeOp::Symlink { target, path } => libc::symlink(target.as_ptr(), path.as_ptr()),
            RawTreeOp::Bind { source, target } => libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                null.cast(),
            ),
            RawTreeOp::Attributes {
                target,
                recursive,
                attr_set,
            } => {
                let attr = libc::mount_attr {
                    attr_set: *attr_set,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                let flags = if *recursive { libc::AT_RECURSIVE } else { 0 };
                // The syscall's result is an int; `syscall` widens it.
                libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    flags as libc::c_uint,
                    &attr as *const libc::mount_attr,
                    std::mem::size_of::<libc::mount_attr>(),
                ) as libc::c_int
            }
            RawTreeOp::ReadOnly(target) => {
                // A bind remount replaces the mount's flags: keep the ones it has. glibc's
                // statvfs is the statfs syscall when the kernel reports the flags
                // (`ST_VALID`, Linux 2.6.36+); it reads no file then.
                let mut stat: libc::statvfs = std::mem::zeroed();
                if libc::statvfs(target.as_ptr(), &mut stat) < 0 {
                    return Err(Errno::last());
                }
                libc::mount(
                    null,
                    target.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | kept_flags(stat.f_flag),
                    null.cast(),
                )
            }
        }
    };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// The mount flags of `statvfs`'s `f_flag` (`ST_*`) that a bind remount must repeat.
fn kept_flags(st: libc::c_ulong) -> libc::c_ulong {
    const MAP: [(libc::c_ulong, libc::c_ulong); 6] = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    MAP.iter()
        .filter(|(st_flag, _)| st & st_flag != 0)
        .fold(0, |flags, (_, ms_flag)| flags | ms_flag)
}

fn path(path: &Path) -> CString {
    super::cstring(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_remounts_keep_the_flags_a_mount_has() {
        let st = libc::ST_NOSUID | libc::ST_NOEXEC | libc::ST_RELATIME | libc::ST_RDONLY;
        assert_eq!(
            kept_flags(st),
            libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_RELATIME
        );
    }

    #[test]
    fn failures_name_the_step() {
        let ops = [TreeOp::Bind {
            source: "/etc".into(),
            target: "/t/etc".into(),
        }];
        assert_eq!(describe(&ops, 0), "bind /etc at /t/etc");
        assert_eq!(describe(&ops, 1), "assemble the sandbox's root");
    }
}
