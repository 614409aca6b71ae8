//! The listening socket: inherited from the host as a descriptor (`--listen-fd N`, the
//! production way: its path exists only on the host side) or bound here (`--listen PATH`,
//! for development and tests).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context as _, bail};
use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::UnixListener;

use crate::init::set_cloexec;

/// Takes over the inherited listening socket `fd`.
pub fn from_fd(fd: RawFd) -> anyhow::Result<UnixListener> {
    if fd <= 2 {
        bail!("--listen-fd {fd}: descriptors 0-2 are stdio, not a listening socket");
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; an unknown fd yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("--listen-fd {fd} is not an open descriptor"));
    }
    set_cloexec(fd);
    // SAFETY: the descriptor is open (checked above) and the command line hands it to the
    // agent; nothing else in this process refers to it, so the OwnedFd is its only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listening = getsockopt(&owned, sockopt::AcceptConn)
        .with_context(|| format!("--listen-fd {fd} is not a socket"))?;
    if !listening {
        bail!("--listen-fd {fd} is a socket but not listening (call listen() before passing it)");
    }
    let listener = std::os::unix::net::UnixListener::from(owned);
    listener
        .set_nonblocking(true)
        .context("making the listening socket non-blocking")?;
    UnixListener::from_std(listener).context("registering the listening socket")
}

/// Binds `path` (replacing a stale socket file), readable by our uid only.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}
