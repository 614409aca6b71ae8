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
        step(op).map_err(|errno| (index, errno))?;
    }
    Ok(())
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
                // Made with mknod, never opened: a file open for writing sits in the daemon's
                // descriptor table, where a child that another thread starts at that moment
                // holds it until its exec, and the mount cannot be made read-only (EBUSY)
                // until then.
                if libc::mknod(file.as_ptr(), libc::S_IFREG | 0o644, 0) < 0 {
                    let err = Errno::last();
                    let mut stat: libc::stat = std::mem::zeroed();
                    let is_file = err == Errno::EEXIST
                        && libc::lstat(file.as_ptr(), &mut stat) == 0
                        && stat.st_mode & libc::S_IFMT == libc::S_IFREG;
                    if !is_file {
                        return Err(err);
                    }
                }
                0
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

    /// Assembles a `/dev` like the sandbox's (a tmpfs, files to bind devices on, sealed
    /// read-only) again and again on fresh threads while another thread keeps starting
    /// processes with a fork. A file that was opened to be created used to reach those
    /// children's descriptor tables and make the seal fail with EBUSY, a few times in a
    /// thousand.
    #[test]
    fn sealing_a_fresh_tree_is_not_disturbed_by_processes_starting_meanwhile() {
        use std::os::unix::process::CommandExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: assembling a tree needs root (mount namespaces and tmpfs)");
            return;
        }
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let spawner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut started = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let mut command = std::process::Command::new("/bin/true");
                    // SAFETY: an empty hook; it only makes std fork instead of spawn.
                    unsafe { command.pre_exec(|| Ok(())) };
                    command.status().expect("run /bin/true");
                    started += 1;
                }
                started
            })
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).expect("mkdir");
        let mut ops = vec![TreeOp::Tmpfs {
            target: dev.clone(),
            size: 65536,
            read_only: false,
        }];
        for name in ["null", "zero", "full", "random", "urandom", "tty"] {
            ops.push(TreeOp::File(dev.join(name)));
        }
        ops.push(TreeOp::ReadOnly(dev.clone()));
        let raw = prepare(&ops);
        let mut failures = Vec::new();
        for _ in 0..2000 {
            let result = std::thread::scope(|s| s.spawn(|| assemble(&raw)).join())
                .expect("the assembling thread panicked");
            if let Err((step, errno)) = result {
                failures.push(format!("{}: {errno}", describe(&ops, step)));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let started = spawner.join().expect("spawner");
        assert!(started > 0, "no process started meanwhile");
        assert!(
            failures.is_empty(),
            "{} of 2000 failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    }

    #[test]
    fn a_file_step_accepts_a_file_already_there_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        let raw = |path: &Path| RawTreeOp::File(path_c(path));
        assert_eq!(step(&raw(&file)), Ok(()));
        assert!(file.is_file());
        assert_eq!(step(&raw(&file)), Ok(()), "a second time");
        std::os::unix::fs::symlink(&file, dir.path().join("link")).expect("symlink");
        assert_eq!(step(&raw(&dir.path().join("link"))), Err(Errno::EEXIST));
        assert_eq!(step(&raw(dir.path())), Err(Errno::EEXIST));
    }

    fn path_c(p: &Path) -> CString {
        path(p)
    }
}
