//! Root trees assembled once and shared: a mount namespace per distinct tree plan, kept
//! while the host's mount table stays the same.
//!
//! Assembling a sandbox's root (see `crate::bwrap::tree`) is some forty mount calls and
//! took about 3 ms of every start when each launcher child did it in a private namespace
//! of its own. The tree depends only on its plan (the image's top-level entries, the
//! masks, the agent, the mount points of read-only workspaces), which is the same for
//! every sandbox of an image. So it is assembled once, by a short-lived thread that
//! unshares its mount namespace (a thread may: `CLONE_NEWNS` implies `CLONE_FS`), and
//! the namespace is kept through a descriptor of its `nsfs` file. Each launcher child
//! then joins it with one `setns` before it becomes bwrap, which unshares its own copy
//! as before: nothing a sandbox does reaches the shared namespace.
//!
//! The shared namespace is a copy of the host's mount table at assembly time. A mount
//! made or removed on the host afterwards (an admin mounting a disk under `/mnt`, an
//! image sandbox's overlay) would be missing from it, so a change is watched: the
//! kernel marks `/proc/self/mountinfo` with `POLLPRI` when the mount table changes, and
//! the next launch then assembles afresh. Hosts that mount things between every start
//! pay the old price; the common case (the host image, a quiet mount table) pays one
//! `poll` and one `setns`.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::LaunchError;
use crate::bwrap::TreeOp;

/// How many distinct plans keep a namespace (the host image, an image or two, a few
/// sets of read-only mount points); the oldest is dropped beyond that.
const CAPACITY: usize = 8;

/// The shared namespaces of this process, for every driver in it.
static TEMPLATES: Templates = Templates {
    state: Mutex::new(State {
        watch: None,
        entries: Vec::new(),
    }),
};

/// A mount namespace holding the tree of one plan.
pub(super) type RootNamespace = Arc<OwnedFd>;

struct Templates {
    state: Mutex<State>,
}

struct State {
    /// `/proc/self/mountinfo`, opened before the entries were assembled.
    watch: Option<File>,
    /// Plan and namespace, oldest first.
    entries: Vec<(Vec<TreeOp>, RootNamespace)>,
}

/// The mount namespace in which the tree of `ops` is assembled: the shared one when the
/// host's mount table has not changed since it was made, else a new one.
pub(super) fn namespace(ops: &[TreeOp]) -> Result<RootNamespace, LaunchError> {
    let mut state = TEMPLATES
        .state
        .lock()
        .expect("root template lock is never poisoned");
    if state.watch.as_ref().is_none_or(mounts_changed) {
        // Opened first: a change during the assembly below is seen by the next launch.
        state.watch = File::open("/proc/self/mountinfo").ok();
        state.entries.clear();
    }
    if let Some((_, ns)) = state.entries.iter().find(|(plan, _)| plan == ops) {
        return Ok(Arc::clone(ns));
    }
    let ns = Arc::new(assemble(ops)?);
    if state.entries.len() >= CAPACITY {
        state.entries.remove(0);
    }
    state.entries.push((ops.to_vec(), Arc::clone(&ns)));
    Ok(ns)
}

/// Whether the mount table changed since `watch` was opened (or cannot be watched).
fn mounts_changed(watch: &File) -> bool {
    let mut fds = [PollFd::new(watch.as_fd(), PollFlags::POLLPRI)];
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => true,
        Err(_) => true,
    }
}

/// Assembles `ops` in a new mount namespace, on a thread of its own, and returns the
/// namespace.
fn assemble(ops: &[TreeOp]) -> Result<OwnedFd, LaunchError> {
    let raw = super::tree::prepare(ops);
    let joined = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<OwnedFd, (usize, Errno)> {
                super::tree::assemble(&raw)?;
                File::open("/proc/thread-self/ns/mnt")
                    .map(OwnedFd::from)
                    .map_err(|e| (ops.len(), Errno::from_raw(e.raw_os_error().unwrap_or(0))))
            })
            .join()
    });
    match joined {
        Ok(Ok(ns)) => Ok(ns),
        Ok(Err((step, errno))) => Err(LaunchError::Root {
            step: super::tree::describe(ops, step),
            source: std::io::Error::from_raw_os_error(errno as i32),
        }),
        Err(_) => Err(LaunchError::Root {
            step: "assemble the sandbox's root".to_owned(),
            source: std::io::Error::other("the assembling thread panicked"),
        }),
    }
}
