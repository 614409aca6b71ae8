//! Swapping the workspace of a running sandbox: another tree takes the old one's place at
//! `/workspace` while the sandbox's processes keep running (a workspace restore).
//!
//! bwrap binds the workspace tree at `/workspace` in the sandbox's own mount namespace
//! (`rw,nosuid,nodev`, the rest inherited from the host's mount), on top of the sandbox's
//! root: the root tmpfs, the assembled tree or the image's layer, which makes no
//! difference here. From a root daemon:
//! 1. `open_tree(OPEN_TREE_CLONE)` of the new tree, in the host's namespace, gives a
//!    detached bind mount, which `mount_setattr` makes `nosuid,nodev` like bwrap's;
//! 2. a short-lived thread unshares its filesystem attributes (`setns` into a mount
//!    namespace refuses a thread that shares them, `CLONE_FS`) and joins the sandbox's
//!    mount namespace. Only `/proc/<pid>/ns/mnt` is read, so a paused (frozen) sandbox
//!    is swapped the same way;
//! 3. there it keeps a clone of the mount at `/workspace` (to put back if the next step
//!    fails), detaches that mount (`umount2(MNT_DETACH)`: whatever still uses it, an open
//!    file or a working directory, keeps the old files until it lets go) and attaches the
//!    new tree in its place (`move_mount`).
//!
//! Paths in the sandbox are resolved from a descriptor of its root (`/proc/<pid>/root`,
//! opened before joining), never through the thread's root after `setns`. The bind bwrap
//! made was made inside the sandbox's user namespace, so it is not locked and the host's
//! root may remove it; the new mount comes from the host, and the sandbox, which holds no
//! capabilities, can no more remove it than it could the old one.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nexus_core::WorkspaceSwap;
use nix::fcntl::{AtFlags, OFlag};
use nix::mount::MntFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::SandboxProcess;

/// Why a sandbox's workspace could not be swapped.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// Only a root daemon may enter a sandbox's mount namespace.
    #[error("swapping the workspace of a running sandbox needs nexusd running as root")]
    NotRoot,
    /// The sandbox's PID 1 is gone.
    #[error("the sandbox is not running")]
    NotRunning,
    /// A step failed; the sandbox still shows its old tree.
    #[error("cannot {step}")]
    Failed {
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The new tree could not be attached, nor the old one put back: the sandbox shows
    /// no workspace until it is restarted.
    #[error("cannot attach the new tree ({attach}), nor put the old one back")]
    Lost {
        /// Why the new tree could not be attached.
        attach: std::io::Error,
        /// Why the old one could not be put back.
        #[source]
        source: std::io::Error,
    },
}

/// Puts `tree` at `/workspace` of the sandbox whose PID 1 is `process`'s, in place of the
/// tree there; [`WorkspaceSwap::AlreadyThere`] when `tree` is what it shows already.
pub fn replace_workspace(
    process: &SandboxProcess,
    tree: &Path,
) -> Result<WorkspaceSwap, SwapError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(SwapError::NotRoot);
    }
    let proc = format!("/proc/{}", process.init_pid);
    let root = nix::fcntl::open(
        format!("{proc}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| SwapError::NotRunning)?;
    let namespace = File::open(format!("{proc}/ns/mnt")).map_err(|_| SwapError::NotRunning)?;
    // Checked after the opens: a pid reused in between has another start time.
    if !process.is_alive() {
        return Err(SwapError::NotRunning);
    }
    let shown = nix::sys::stat::fstatat(&root, WORKSPACE, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|errno| failed("find /workspace in the sandbox", errno))?;
    let wanted = std::fs::metadata(tree).map_err(|source| SwapError::Failed {
        step: "read the new tree",
        source,
    })?;
    if shown.st_dev == wanted.dev() && shown.st_ino == wanted.ino() {
        return Ok(WorkspaceSwap::AlreadyThere);
    }
    let new = detached_bind(tree)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| swap_in(&namespace, root.as_fd(), &new))
            .join()
            .unwrap_or_else(|_| {
                Err(SwapError::Failed {
                    step: "swap the workspace",
                    source: std::io::Error::other("the swapping thread panicked"),
                })
            })
    })?;
    Ok(WorkspaceSwap::Replaced)
}

/// The workspace's name under the sandbox's root.
const WORKSPACE: &str = "workspace";

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// A detached bind mount of `tree`, `nosuid,nodev` like bwrap's `--bind`.
fn detached_bind(tree: &Path) -> Result<OwnedFd, SwapError> {
    let path = CString::new(tree.as_os_str().as_bytes()).map_err(|_| SwapError::Failed {
        step: "clone the mount of the new tree",
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let new = open_tree(libc::AT_FDCWD, &path, 0).map_err(|source| SwapError::Failed {
        step: "clone the mount of the new tree",
        source,
    })?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size` bytes of a valid `mount_attr` we own; the path
    // is an empty NUL-terminated string with AT_EMPTY_PATH, naming the descriptor.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            new.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if set < 0 {
        return Err(SwapError::Failed {
            step: "make the new tree's mount nosuid and nodev",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(new)
}

/// On a thread of its own: joins the sandbox's mount namespace and puts `new` at
/// `/workspace` (resolved from `root`, the sandbox's root) instead of what is there.
fn swap_in(namespace: &File, root: BorrowedFd<'_>, new: &OwnedFd) -> Result<(), SwapError> {
    // The thread's filesystem attributes are its own from here, and go with it.
    nix::sched::unshare(CloneFlags::CLONE_FS)
        .map_err(|errno| failed("unshare the swapping thread's filesystem attributes", errno))?;
    nix::sched::setns(namespace, CloneFlags::CLONE_NEWNS)
        .map_err(|errno| failed("enter the sandbox's mount namespace", errno))?;
    let workspace = c"workspace";
    let old = open_tree(
        root.as_raw_fd(),
        workspace,
        libc::AT_RECURSIVE as libc::c_uint,
    )
    .map_err(|source| SwapError::Failed {
        step: "keep a copy of the mount at /workspace",
        source,
    })?;
    // umount2 takes a path: the working directory (the thread's own) is the sandbox's root.
    nix::unistd::fchdir(root).map_err(|errno| failed("enter the sandbox's root", errno))?;
    nix::mount::umount2(
        Path::new(WORKSPACE),
        MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
    )
    .map_err(|errno| failed("detach the mount at /workspace", errno))?;
    if let Err(attach) = move_mount(new, root, workspace) {
        return match move_mount(&old, root, workspace) {
            Ok(()) => Err(SwapError::Failed {
                step: "attach the new tree at /workspace",
                source: attach,
            }),
            Err(source) => Err(SwapError::Lost { attach, source }),
        };
    }
    // `old` is dropped unattached, which dissolves the copy.
    Ok(())
}

/// `open_tree(dir, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | flags)`: a detached copy
/// of the mount at `path`.
fn open_tree(
    dir: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
) -> std::io::Result<OwnedFd> {
    // SAFETY: open_tree takes a directory descriptor, a NUL-terminated path and flags; it
    // returns a new descriptor we own, or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | flags,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd =
        i32::try_from(fd).map_err(|_| std::io::Error::other("open_tree returned no descriptor"))?;
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `move_mount` of the detached mount `tree` onto `name` under `dir`.
fn move_mount(tree: &OwnedFd, dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: move_mount takes the detached tree's descriptor with an empty path, and a
    // directory descriptor with a NUL-terminated name under it.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn failed(step: &'static str, errno: nix::errno::Errno) -> SwapError {
    SwapError::Failed {
        step,
        source: errno.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_that_is_gone_is_not_running() {
        if !nix::unistd::Uid::effective().is_root() {
            return; // the root check comes first; the integration tests cover a real swap
        }
        let gone = SandboxProcess {
            bwrap_pid: 0,
            bwrap_start: 0,
            init_pid: u32::MAX,
            init_start: 0,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            replace_workspace(&gone, dir.path()),
            Err(SwapError::NotRunning)
        ));
    }
}
