//! Storage of persistent workspaces: directory trees on disk that outlive sandboxes,
//! with read-only snapshots, restore and fork.
//!
//! The daemon keeps the metadata (which workspaces, generations and snapshots exist)
//! in its database; this crate only manages the trees. [`WorkspaceStorage`] is the
//! whole interface.
//!
//! # Backends
//!
//! Chosen at [`WorkspaceStorage::open`] from the filesystem of the root (a caller may
//! force one with [`WorkspaceStorage::open_with`]; [`WorkspaceStorage::describe`] says
//! which and why):
//!
//! - [`Backend::Btrfs`] (statfs magic `BTRFS_SUPER_MAGIC`): trees are subvolumes,
//!   snapshots read-only subvolume snapshots, clones writable snapshots of those. O(1)
//!   in the size of the tree. Done with the kernel's ioctls (see the `btrfs` module),
//!   no process spawned.
//! - [`Backend::Reflink`] (the filesystem accepts `ioctl(FICLONE)`, probed by cloning a
//!   small file inside the root: xfs with reflink, bcachefs, ...): directories, symlinks
//!   and metadata are recreated, every regular file is cloned. O(number of files).
//! - [`Backend::Copy`] (anything else: ext4, tmpfs, overlay): plain recursive copy
//!   keeping modes, times, symlinks (never followed), hard links, holes, and owners
//!   when running as root. O(size).
//!
//! # Layout
//!
//! ```text
//! <root>/                                   mode 0711 when created here
//!   <workspace-id>/                         0711
//!     trees/                                0711
//!       <generation>/                       a tree (subvolume on btrfs), decimal u64
//!     snapshots/                            0711
//!       <snapshot-id>/                      a read-only snapshot (subvolume on btrfs)
//!   .tmp-<name>-<16 hex digits>             leftovers of interrupted operations, at
//!                                           any of the levels above
//! ```
//!
//! Ids become directory names, so they are checked: empty ids, ids with `/`, NUL or
//! `..`, ids starting with `.` (reserved for temporaries) and ids over 200 bytes are
//! refused with [`StorageError::InvalidId`].
//!
//! # Crash safety
//!
//! Every operation that makes something (create, snapshot, clone) builds it under a
//! temporary name (`.tmp-<name>-<random>`) in the same parent directory, makes its
//! content durable (btrfs commits the snapshot itself; the copy backends `syncfs`),
//! renames it to its final name with `RENAME_NOREPLACE` (an existing destination is
//! [`StorageError::AlreadyExists`], never overwritten) and fsyncs the parent. Deletion
//! first renames the victim to a temporary name, fsyncs, then removes it. So a
//! `kill -9` (or power loss) at any moment leaves, at the final path, either nothing
//! or the complete result (for a deletion: either the complete tree or nothing), plus
//! `.tmp-*` garbage.
//!
//! The daemon's side of the contract:
//!
//! 1. commit its metadata only after the storage step returned `Ok`;
//! 2. at startup, before any storage operation, call
//!    [`WorkspaceStorage::collect_garbage`] (removes the temporaries) and, for each
//!    workspace, [`WorkspaceStorage::prune`] with the generations and snapshots its
//!    metadata knows (removes results whose metadata commit never happened), and
//!    [`WorkspaceStorage::delete_workspace`] for workspaces it does not know.
//!
//! All functions block; call them from a blocking thread pool.

mod backend;
mod btrfs;
mod copy;
mod error;
mod id;
mod remove;
mod storage;
mod usage;

pub use backend::Backend;
pub use error::{Result, StorageError};
pub use id::{IdKind, IdProblem, MAX_ID_LEN};
pub use storage::{QuotaOutcome, WorkspaceStorage};
pub use usage::size;
