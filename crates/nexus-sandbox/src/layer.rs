//! The per-sandbox writable layer over a read-only image: an overlayfs mounted on the
//! host by a root daemon, whose merged directory bwrap binds as the sandbox's `/`.
//!
//! ```text
//! <data_dir>/sandboxes/<id>/layer/      0711, root
//!   upper/                              the sandbox's changes; owned by its host uid
//!   work/                               overlayfs' work directory, 0700 root
//!   lower/                              transient: the idmapped view of the image
//!   root/                               the merged tree (mount point)
//! ```
//!
//! The image tree is owned by host root, and a sandbox runs as an unprivileged host uid,
//! so it could write nothing in a plain overlay. The lower layer is therefore an
//! *idmapped* bind of the image (`mount_setattr(MOUNT_ATTR_IDMAP)`, Linux ≥ 5.19 under
//! overlayfs) that shows host uid/gid 0 as the sandbox's uid/gid: the sandbox owns its
//! root and can write anywhere in it, copy-ups land in `upper/` owned by it, and the
//! image itself is never written (the bind is only reachable through the overlay, which
//! never writes its lower layers). The idmapped bind is detached once the overlay holds
//! it. Ownership other than root's shows as the overflow id inside.
//!
//! The layer survives stop and start (the merged tree is unmounted on stop and mounted
//! again on start over the same `upper/`); it is discarded with the sandbox's data
//! directory on delete.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// The layer directory of a sandbox whose data directory is `sandbox_data`.
pub fn layer_dir(sandbox_data: &Path) -> PathBuf {
    sandbox_data.join("layer")
}

/// The merged tree of a layer: what the sandbox sees as `/`.
pub fn merged_dir(layer: &Path) -> PathBuf {
    layer.join("root")
}

/// Mounts `image` under a writable layer owned by `uid` (and gid `uid`) at
/// [`merged_dir`]`(layer)`, creating the layer if it is new and keeping its changes if
/// not. Needs root. Returns the merged directory.
pub fn mount(image: &Path, layer: &Path, uid: u32) -> Result<PathBuf, String> {
    for path in [image, layer] {
        let text = path.to_string_lossy();
        if text.contains([',', ':', '\\']) || !path.is_absolute() {
            return Err(format!(
                "cannot use {} in an overlay mount: it must be absolute, without ',', ':' or '\\'",
                path.display()
            ));
        }
    }
    let upper = layer.join("upper");
    let work = layer.join("work");
    let lower = layer.join("lower");
    let merged = merged_dir(layer);
    // A leftover mount (a crash between mount and stop) is replaced.
    unmount(layer);
    let dir = |path: &Path, mode: u32| -> Result<(), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
    };
    dir(layer, 0o711)?;
    dir(&work, 0o700)?;
    dir(&lower, 0o700)?;
    dir(&merged, 0o755)?;
    if upper.exists() {
        // A sandbox may get another host uid when it starts again: its changes follow it.
        adopt(&upper, uid)?;
    } else {
        dir(&upper, 0o755)?;
        nix::unistd::chown(
            &upper,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .map_err(|e| format!("cannot chown {}: {e}", upper.display()))?;
    }
    idmapped_bind(image, &lower, uid)?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let mounted = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| format!("cannot mount the overlay at {}: {e}", merged.display()));
    // The overlay holds its own reference to the lower layer; the bind is not needed.
    let _ = nix::mount::umount2(&lower, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&lower);
    mounted?;
    tracing::debug!(image = %image.display(), merged = %merged.display(), uid, "mounted writable layer");
    Ok(merged)
}

/// Unmounts a layer's merged tree (and a leftover idmapped bind); what is not mounted
/// is fine. The layer's changes stay in `upper/`.
pub fn unmount(layer: &Path) {
    for path in [merged_dir(layer), layer.join("lower")] {
        // Lazily: a process of the host that happens to be inside must not block a stop.
        // The sandbox's own mount namespace is gone or going with its processes.
        while nix::mount::umount2(&path, MntFlags::MNT_DETACH).is_ok() {}
    }
}

/// Gives every entry of `upper` owned by another uid to `uid` (and gid `uid`), when the
/// layer's root is not `uid`'s already. Entries are never followed.
fn adopt(upper: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(upper)
        .map_err(|e| format!("cannot stat {}: {e}", upper.display()))?;
    if meta.uid() == uid {
        return Ok(());
    }
    let mut stack = vec![upper.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if meta.file_type().is_dir() {
            for entry in std::fs::read_dir(&path)
                .map_err(|e| format!("cannot list {}: {e}", path.display()))?
            {
                stack.push(
                    entry
                        .map_err(|e| format!("cannot list {}: {e}", path.display()))?
                        .path(),
                );
            }
        }
        // Whiteouts (0/0 character devices) belong to root and stay so.
        if meta.uid() != 0 {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))
                .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Binds `source` at `target` with host uid and gid 0 shown as `uid`.
fn idmapped_bind(source: &Path, target: &Path, uid: u32) -> Result<(), String> {
    let userns = user_namespace(uid)?;
    let source_c = cstring(source)?;
    let target_c = cstring(target)?;
    // SAFETY: open_tree takes a directory fd, a NUL-terminated path and flags; it
    // returns a new descriptor we own, or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(format!(
            "cannot clone the mount of {}: {}",
            source.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `tree` is a fresh descriptor nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `size` bytes of a valid `mount_attr` we own; the path
    // is an empty NUL-terminated string with AT_EMPTY_PATH.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if set < 0 {
        return Err(format!(
            "cannot idmap the mount of {} (the image's filesystem must support idmapped mounts): {}",
            source.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: move_mount takes the detached tree's fd with an empty path, and a
    // NUL-terminated target path.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(format!(
            "cannot attach the idmapped image at {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A user namespace mapping id 0 to host `uid` (uids and gids), as a descriptor: made
/// by a child that unshares and waits until its maps are written and the namespace is
/// opened.
fn user_namespace(uid: u32) -> Result<OwnedFd, String> {
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (go_r, go_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child only calls async-signal-safe functions (unshare, write, read,
    // _exit) before it exits; it allocates nothing and takes no lock.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(go_w);
            drop(ready_r);
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, &[u8::from(ok)]);
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(&go_r, &mut byte);
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let result = (|| {
                let mut byte = [0u8; 1];
                let n = nix::unistd::read(&ready_r, &mut byte).map_err(|e| format!("read: {e}"))?;
                if n != 1 || byte[0] != 1 {
                    return Err("cannot create a user namespace for the idmapped image".to_owned());
                }
                let proc = PathBuf::from(format!("/proc/{child}"));
                let write = |name: &str, text: &str| {
                    std::fs::write(proc.join(name), text)
                        .map_err(|e| format!("cannot write {}/{name}: {e}", proc.display()))
                };
                write("uid_map", &format!("0 {uid} 1\n"))?;
                write("setgroups", "deny")?;
                write("gid_map", &format!("0 {uid} 1\n"))?;
                std::fs::File::open(proc.join("ns/user"))
                    .map(OwnedFd::from)
                    .map_err(|e| format!("cannot open {}/ns/user: {e}", proc.display()))
            })();
            drop(go_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

fn cstring(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;
