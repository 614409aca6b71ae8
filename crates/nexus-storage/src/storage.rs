//! [`WorkspaceStorage`]: the trees and snapshots of workspaces under one root.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, mkdirat};

use crate::backend::{Backend, Capabilities};
use crate::copy::{FileData, copy_tree};
use crate::error::{Result, StorageError, sys};
use crate::id::{IdKind, validate};
use crate::{btrfs, remove};

/// Name of the directory of a workspace's trees.
const TREES: &str = "trees";
/// Name of the directory of a workspace's snapshots.
const SNAPSHOTS: &str = "snapshots";
/// Prefix of every temporary entry; ids cannot start with `.`, so no final name has it.
const TEMP_PREFIX: &str = ".tmp-";
/// Mode of the directories this crate creates above the trees: traversable, not
/// listable, by others (sandboxes reach their own tree, never list the others).
const DIR_MODE: u32 = 0o711;

/// Whether a quota could be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaOutcome {
    /// The kernel enforces the limit.
    Enforced,
    /// Nothing enforces the limit.
    NotEnforced {
        /// Why, and what would enable it.
        reason: String,
    },
}

/// The workspaces stored under one root directory, with the backend chosen for its
/// filesystem. All methods block (run them on a blocking thread pool).
#[derive(Debug, Clone)]
pub struct WorkspaceStorage {
    root: PathBuf,
    backend: Backend,
    description: String,
    capabilities: Capabilities,
}

impl WorkspaceStorage {
    /// Opens (creating it, mode 0711, if missing) the storage root and picks the best
    /// backend for its filesystem.
    pub fn open(root: &Path) -> Result<Self> {
        let capabilities = Self::probe(root)?;
        let (backend, description) = capabilities.best();
        Ok(Self::with(root, backend, description, capabilities))
    }

    /// Like [`open`](Self::open) but with the backend forced; fails with
    /// [`StorageError::BackendUnsupported`] when the filesystem cannot support it.
    pub fn open_with(root: &Path, backend: Backend) -> Result<Self> {
        let capabilities = Self::probe(root)?;
        let description = capabilities.check(backend, root)?;
        Ok(Self::with(root, backend, description, capabilities))
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why this backend, for people: e.g. `btrfs: trees are subvolumes, snapshots are
    /// O(1)` or `ext4: plain copy, cost grows with size`.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// `<root>/<workspace>`.
    pub fn workspace_path(&self, workspace: &str) -> Result<PathBuf> {
        validate(IdKind::Workspace, workspace)?;
        Ok(self.root.join(workspace))
    }

    /// `<root>/<workspace>/trees/<generation>`.
    pub fn tree_path(&self, workspace: &str, generation: u64) -> Result<PathBuf> {
        Ok(self
            .workspace_path(workspace)?
            .join(TREES)
            .join(generation.to_string()))
    }

    /// `<root>/<workspace>/snapshots/<snapshot>`.
    pub fn snapshot_path(&self, workspace: &str, snapshot: &str) -> Result<PathBuf> {
        validate(IdKind::Snapshot, snapshot)?;
        Ok(self
            .workspace_path(workspace)?
            .join(SNAPSHOTS)
            .join(snapshot))
    }

    /// Creates the empty tree `generation` of `workspace` (a subvolume on btrfs), mode
    /// 0755, owned by the caller; giving it to the sandbox's user is the caller's job.
    ///
    /// The first tree of a new workspace is built with the workspace around it under a
    /// temporary name and published by one rename and one `fsync` of the workspaces
    /// directory, instead of one `fsync` per directory level (three, each a journal
    /// commit: 0.3 ms on a quiet disk here, over 3 ms while other writes are pending).
    /// That one `fsync` covers the directories made inside before it on the filesystems
    /// the backends run on: ext4 and XFS commit their journals in order, and btrfs logs a
    /// new directory's new subdirectories with it.
    pub fn create_tree(&self, workspace: &str, generation: u64) -> Result<PathBuf> {
        let path = self.tree_path(workspace, generation)?;
        let root = open_existing(&self.root)?;
        let workspace_path = self.root.join(workspace);
        let backend = self.backend;
        let name = generation.to_string();
        if !exists(root.as_fd(), OsStr::new(workspace), &workspace_path)? {
            publish(
                root.as_fd(),
                &workspace_path,
                workspace,
                self.on_btrfs(),
                |parent, temp, temp_path| {
                    mkdirat(parent, temp, Mode::from_bits_truncate(DIR_MODE))
                        .map_err(sys("create", temp_path))?;
                    let dir = remove::open_dir(parent, temp, temp_path)?;
                    let trees_path = temp_path.join(TREES);
                    mkdirat(&dir, TREES, Mode::from_bits_truncate(DIR_MODE))
                        .map_err(sys("create", &trees_path))?;
                    let trees = remove::open_dir(dir.as_fd(), OsStr::new(TREES), &trees_path)?;
                    make_tree(
                        backend,
                        trees.as_fd(),
                        OsStr::new(&name),
                        &trees_path.join(&name),
                    )
                },
            )?;
        } else {
            let parent = ensure_dir(
                open_existing(&workspace_path)?.as_fd(),
                OsStr::new(TREES),
                &workspace_path.join(TREES),
            )?;
            publish(
                parent.as_fd(),
                &path,
                &name,
                self.on_btrfs(),
                |parent, temp, temp_path| make_tree(backend, parent, temp, temp_path),
            )?;
        }
        tracing::info!(workspace, generation, backend = %self.backend, "created workspace tree");
        Ok(path)
    }

    /// Takes the read-only snapshot `snapshot` of tree `generation` of `workspace`.
    ///
    /// On btrfs it is a read-only subvolume snapshot; with the copy backends it is a copy
    /// that nothing writes to (read-only by contract: mount it read-only).
    pub fn snapshot(&self, workspace: &str, generation: u64, snapshot: &str) -> Result<PathBuf> {
        let source_path = self.tree_path(workspace, generation)?;
        let path = self.snapshot_path(workspace, snapshot)?;
        let source = open_existing(&source_path)?;
        let parent = self.ensure_parent(workspace, SNAPSHOTS)?;
        publish(
            parent.as_fd(),
            &path,
            OsStr::new(snapshot),
            self.on_btrfs(),
            |parent, temp, temp_path| {
                self.copy(source.as_fd(), &source_path, parent, temp, temp_path, true)
            },
        )?;
        tracing::info!(workspace, generation, snapshot, backend = %self.backend, "took snapshot");
        Ok(path)
    }

    /// Makes tree `generation` of `workspace` a writable copy of snapshot `snapshot` of
    /// `source_workspace`. Restore is `clone_snapshot(ws, snap, ws, current + 1)`; fork is
    /// `clone_snapshot(ws, snap, new_ws, 1)`.
    pub fn clone_snapshot(
        &self,
        source_workspace: &str,
        snapshot: &str,
        workspace: &str,
        generation: u64,
    ) -> Result<PathBuf> {
        let source_path = self.snapshot_path(source_workspace, snapshot)?;
        let path = self.tree_path(workspace, generation)?;
        let source = open_existing(&source_path)?;
        let parent = self.ensure_parent(workspace, TREES)?;
        let name = generation.to_string();
        publish(
            parent.as_fd(),
            &path,
            &name,
            self.on_btrfs(),
            |parent, temp, temp_path| {
                self.copy(source.as_fd(), &source_path, parent, temp, temp_path, false)
            },
        )?;
        tracing::info!(
            source_workspace, snapshot, workspace, generation, backend = %self.backend,
            "cloned snapshot"
        );
        Ok(path)
    }

    /// Makes tree `generation` of `workspace` a copy of the directory `source_path`,
    /// which may be anywhere (another filesystem too): modes, times, symlinks (never
    /// followed), hard links, holes, and owners when running as root. Files are cloned
    /// where the filesystem allows it, copied otherwise. Built under a temporary name and
    /// renamed, like every other result. Images are made this way.
    pub fn import_tree(
        &self,
        source_path: &Path,
        workspace: &str,
        generation: u64,
    ) -> Result<PathBuf> {
        let path = self.tree_path(workspace, generation)?;
        let source = open_existing(source_path)?;
        let parent = self.ensure_parent(workspace, TREES)?;
        let name = generation.to_string();
        let data = match self.backend {
            Backend::Btrfs | Backend::Reflink => FileData::Reflink,
            Backend::Copy => FileData::Copy,
        };
        publish(
            parent.as_fd(),
            &path,
            &name,
            self.on_btrfs(),
            |parent, temp, temp_path| {
                mkdirat(parent, temp, Mode::from_bits_truncate(0o700))
                    .map_err(sys("create", temp_path))?;
                let dest = remove::open_dir(parent, temp, temp_path)?;
                copy_tree(source.as_fd(), source_path, dest.as_fd(), temp_path, data)?;
                nix::unistd::syncfs(&dest).map_err(sys("sync", temp_path))
            },
        )?;
        tracing::info!(source = %source_path.display(), workspace, generation, backend = %self.backend, "imported tree");
        Ok(path)
    }

    /// Deletes tree `generation` of `workspace`.
    pub fn delete_tree(&self, workspace: &str, generation: u64) -> Result<()> {
        let path = self.tree_path(workspace, generation)?;
        self.discard(&path)?;
        tracing::info!(workspace, generation, "deleted workspace tree");
        Ok(())
    }

    /// Deletes snapshot `snapshot` of `workspace`.
    pub fn delete_snapshot(&self, workspace: &str, snapshot: &str) -> Result<()> {
        let path = self.snapshot_path(workspace, snapshot)?;
        self.discard(&path)?;
        tracing::info!(workspace, snapshot, "deleted snapshot");
        Ok(())
    }

    /// Deletes `workspace` with all its trees and snapshots.
    pub fn delete_workspace(&self, workspace: &str) -> Result<()> {
        let path = self.workspace_path(workspace)?;
        self.discard(&path)?;
        tracing::info!(workspace, "deleted workspace storage");
        Ok(())
    }

    /// The workspaces present under the root, sorted.
    pub fn workspaces(&self) -> Result<Vec<String>> {
        let root = open_existing(&self.root)?;
        let mut names = final_names(root.as_fd(), &self.root, true)?;
        names.sort();
        Ok(names)
    }

    /// The tree generations present for `workspace`, ascending (none if the workspace
    /// has no storage).
    pub fn trees(&self, workspace: &str) -> Result<Vec<u64>> {
        let dir = self.workspace_path(workspace)?.join(TREES);
        let Some(fd) = open_if_exists(&dir)? else {
            return Ok(Vec::new());
        };
        let mut generations: Vec<u64> = final_names(fd.as_fd(), &dir, false)?
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        generations.sort_unstable();
        Ok(generations)
    }

    /// The snapshots present for `workspace`, sorted (none if the workspace has no
    /// storage).
    pub fn snapshots(&self, workspace: &str) -> Result<Vec<String>> {
        let dir = self.workspace_path(workspace)?.join(SNAPSHOTS);
        let Some(fd) = open_if_exists(&dir)? else {
            return Ok(Vec::new());
        };
        let mut names = final_names(fd.as_fd(), &dir, false)?;
        names.sort();
        Ok(names)
    }

    /// Limits the bytes tree `generation` of `workspace` may reference.
    ///
    /// Enforced only on btrfs with quotas enabled on the filesystem (a qgroup limit on
    /// the tree's subvolume, counting shared extents too); a new generation made by a
    /// restore needs its own call. Quotas are never enabled behind the caller's back:
    /// see [`enable_quotas`](Self::enable_quotas).
    pub fn set_quota(&self, workspace: &str, generation: u64, bytes: u64) -> Result<QuotaOutcome> {
        let path = self.tree_path(workspace, generation)?;
        let tree = open_existing(&path)?;
        if !self.on_btrfs() {
            return Ok(QuotaOutcome::NotEnforced {
                reason: format!(
                    "{}: per-tree limits need btrfs qgroups, so the storage root must be on \
                     btrfs (ext4/xfs project quotas are not implemented)",
                    self.capabilities.filesystem
                ),
            });
        }
        let stat = fstat(&tree).map_err(sys("stat", &path))?;
        if !btrfs::is_subvolume(&stat) {
            return Ok(QuotaOutcome::NotEnforced {
                reason: format!(
                    "the tree is a plain directory (backend {}), and btrfs qgroups limit \
                     subvolumes only",
                    self.backend
                ),
            });
        }
        match btrfs::limit_referenced(tree.as_fd(), bytes) {
            Ok(()) => {
                tracing::info!(workspace, generation, bytes, "set workspace quota");
                Ok(QuotaOutcome::Enforced)
            }
            Err(Errno::ENOTCONN) => Ok(QuotaOutcome::NotEnforced {
                reason: "quotas are not enabled on this btrfs filesystem; enable them with \
                         `btrfs quota enable <mount point>` or `enable_quotas` (qgroups cost \
                         some performance on snapshot deletion and writes)"
                    .to_owned(),
            }),
            Err(Errno::EPERM) => Ok(QuotaOutcome::NotEnforced {
                reason: "setting a btrfs qgroup limit needs CAP_SYS_ADMIN".to_owned(),
            }),
            Err(errno) => Err(StorageError::io("set qgroup limit of", path, errno)),
        }
    }

    /// Enables btrfs quotas on the whole filesystem of the root (what
    /// `btrfs quota enable` does), so that [`set_quota`](Self::set_quota) is enforced.
    /// Call it only when the operator asked for it: it affects every subvolume of that
    /// filesystem.
    pub fn enable_quotas(&self) -> Result<QuotaOutcome> {
        if !self.on_btrfs() {
            return Ok(QuotaOutcome::NotEnforced {
                reason: format!("{} has no btrfs quotas", self.capabilities.filesystem),
            });
        }
        let root = open_existing(&self.root)?;
        match btrfs::enable_quotas(root.as_fd()) {
            Ok(()) => {
                tracing::info!(root = %self.root.display(), "enabled btrfs quotas");
                Ok(QuotaOutcome::Enforced)
            }
            Err(Errno::EPERM) => Ok(QuotaOutcome::NotEnforced {
                reason: "enabling btrfs quotas needs CAP_SYS_ADMIN".to_owned(),
            }),
            Err(errno) => Err(StorageError::io("enable quotas on", &self.root, errno)),
        }
    }

    /// Removes the leftovers of interrupted operations: every `.tmp-*` entry in the
    /// root, in workspace directories and in their `trees/` and `snapshots/`. Returns
    /// what was removed.
    ///
    /// Run it when no storage operation is in flight (at daemon startup): it cannot tell
    /// a leftover from the temporary of a running operation.
    pub fn collect_garbage(&self) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let root = open_existing(&self.root)?;
        self.sweep(root.as_fd(), &self.root, &mut removed)?;
        for workspace in final_names(root.as_fd(), &self.root, true)? {
            let path = self.root.join(&workspace);
            let dir = remove::open_dir(root.as_fd(), OsStr::new(&workspace), &path)?;
            self.sweep(dir.as_fd(), &path, &mut removed)?;
            for kind in [TREES, SNAPSHOTS] {
                let sub_path = path.join(kind);
                if let Some(sub) = open_if_exists(&sub_path)? {
                    self.sweep(sub.as_fd(), &sub_path, &mut removed)?;
                }
            }
        }
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), "removed storage garbage");
        }
        Ok(removed)
    }

    /// Deletes the trees and snapshots of `workspace` that are not listed: the results
    /// of operations whose metadata was never committed. Returns what was removed.
    pub fn prune(
        &self,
        workspace: &str,
        keep_generations: &[u64],
        keep_snapshots: &[&str],
    ) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for generation in self.trees(workspace)? {
            if !keep_generations.contains(&generation) {
                self.delete_tree(workspace, generation)?;
                removed.push(self.tree_path(workspace, generation)?);
            }
        }
        for snapshot in self.snapshots(workspace)? {
            if !keep_snapshots.contains(&snapshot.as_str()) {
                self.delete_snapshot(workspace, &snapshot)?;
                removed.push(self.snapshot_path(workspace, &snapshot)?);
            }
        }
        Ok(removed)
    }
}

// Helpers.
impl WorkspaceStorage {
    /// Creates the root if needed and probes its filesystem.
    fn probe(root: &Path) -> Result<Capabilities> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(root)
            .map_err(|source| StorageError::io("create", root, source))?;
        let fd = open_existing(root)?;
        Capabilities::probe(fd.as_fd(), root)
    }

    fn with(
        root: &Path,
        backend: Backend,
        description: String,
        capabilities: Capabilities,
    ) -> Self {
        WorkspaceStorage {
            root: root.to_owned(),
            backend,
            description,
            capabilities,
        }
    }

    /// Whether subvolumes may be met when removing (the root is on btrfs, whatever the
    /// backend).
    fn on_btrfs(&self) -> bool {
        self.capabilities.btrfs
    }

    /// Opens `<root>/<workspace>/<kind>`, creating the missing directories.
    fn ensure_parent(&self, workspace: &str, kind: &str) -> Result<OwnedFd> {
        let root = open_existing(&self.root)?;
        let workspace_path = self.root.join(workspace);
        let dir = ensure_dir(root.as_fd(), OsStr::new(workspace), &workspace_path)?;
        ensure_dir(dir.as_fd(), OsStr::new(kind), &workspace_path.join(kind))
    }

    /// Builds the copy of `source` named `temp` in `parent` for a snapshot (`read_only`)
    /// or a clone.
    fn copy(
        &self,
        source: BorrowedFd<'_>,
        source_path: &Path,
        parent: BorrowedFd<'_>,
        temp: &OsStr,
        temp_path: &Path,
        read_only: bool,
    ) -> Result<()> {
        let data = match self.backend {
            Backend::Btrfs => {
                let stat = fstat(source).map_err(sys("stat", source_path))?;
                if btrfs::is_subvolume(&stat) {
                    return btrfs::snapshot(source, parent, temp, read_only)
                        .map_err(sys("snapshot", source_path));
                }
                // A plain directory (made by another backend): clone its files.
                FileData::Reflink
            }
            Backend::Reflink => FileData::Reflink,
            Backend::Copy => FileData::Copy,
        };
        mkdirat(parent, temp, Mode::from_bits_truncate(0o700)).map_err(sys("create", temp_path))?;
        let dest = remove::open_dir(parent, temp, temp_path)?;
        copy_tree(source, source_path, dest.as_fd(), temp_path, data)?;
        // Data and names must be on disk before the final name appears: one syncfs is
        // much cheaper than an fsync per file.
        nix::unistd::syncfs(&dest).map_err(sys("sync", temp_path))
    }

    /// Removes `path` crash-safely: renamed to a temporary name first, so an
    /// interrupted removal leaves garbage, never a half-deleted tree at `path`.
    fn discard(&self, path: &Path) -> Result<()> {
        let (parent_path, name) = split(path);
        let parent = match open_if_exists(parent_path)? {
            Some(parent) => parent,
            None => {
                return Err(StorageError::NotFound {
                    path: path.to_owned(),
                });
            }
        };
        let temp = temp_name(name);
        match rename_noreplace(parent.as_fd(), name, &temp) {
            Ok(()) => {}
            Err(Errno::ENOENT) => {
                return Err(StorageError::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(errno) => return Err(StorageError::io("rename", path, errno)),
        }
        nix::unistd::fsync(&parent).map_err(sys("sync", parent_path))?;
        remove::remove_entry(
            parent.as_fd(),
            &temp,
            &parent_path.join(&temp),
            self.on_btrfs(),
        )
    }

    /// Removes the `.tmp-*` entries of `dir` (shown as `path`).
    fn sweep(&self, dir: BorrowedFd<'_>, path: &Path, removed: &mut Vec<PathBuf>) -> Result<()> {
        for name in remove::entry_names(dir, path)? {
            if name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                let child = path.join(&name);
                remove::remove_entry(dir, &name, &child, self.on_btrfs())?;
                removed.push(child);
            }
        }
        Ok(())
    }
}

/// Builds an entry under a temporary name in `parent` with `build`, then renames it to
/// `name` (shown as `path`) without replacing anything, and syncs `parent`. If `build`
/// fails, its partial result is removed.
fn publish(
    parent: BorrowedFd<'_>,
    path: &Path,
    name: impl AsRef<OsStr>,
    on_btrfs: bool,
    build: impl FnOnce(BorrowedFd<'_>, &OsStr, &Path) -> Result<()>,
) -> Result<()> {
    let name = name.as_ref();
    if exists(parent, name, path)? {
        return Err(StorageError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let temp = temp_name(name);
    let temp_path = path.with_file_name(&temp);
    let built = build(parent, &temp, &temp_path).and_then(|()| {
        match rename_noreplace(parent, &temp, name) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST | Errno::ENOTEMPTY) => Err(StorageError::AlreadyExists {
                path: path.to_owned(),
            }),
            Err(errno) => Err(StorageError::io("rename", &temp_path, errno)),
        }
    });
    if let Err(error) = built {
        if exists(parent, &temp, &temp_path).unwrap_or(false)
            && let Err(cleanup) = remove::remove_entry(parent, &temp, &temp_path, on_btrfs)
        {
            tracing::warn!(
                path = %temp_path.display(), error = %cleanup,
                "cannot remove a failed operation's temporary; collect_garbage will"
            );
        }
        return Err(error);
    }
    nix::unistd::fsync(parent).map_err(sys("sync", path.parent().unwrap_or(path)))
}

/// Makes the empty tree `name` in `parent` (shown as `path`): a subvolume on btrfs, else
/// a directory; mode 0755 whatever the umask.
fn make_tree(backend: Backend, parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<()> {
    if backend == Backend::Btrfs {
        btrfs::create_subvolume(parent, name).map_err(sys("create subvolume", path))?;
    } else {
        mkdirat(parent, name, Mode::from_bits_truncate(0o755)).map_err(sys("create", path))?;
    }
    let dir = remove::open_dir(parent, name, path)?;
    fchmod(&dir, Mode::from_bits_truncate(0o755)).map_err(sys("chmod", path))
}

/// A fresh temporary name for `name`: `.tmp-<name>-<16 hex digits>`.
fn temp_name(name: &OsStr) -> OsString {
    let mut temp = OsString::from(TEMP_PREFIX);
    temp.push(name);
    temp.push(format!("-{:016x}", rand::random::<u64>()));
    temp
}

/// `renameat2(RENAME_NOREPLACE)` within `dir`, with a check-then-rename fallback for
/// filesystems without the flag.
fn rename_noreplace(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> nix::Result<()> {
    match nix::fcntl::renameat2(dir, from, dir, to, RenameFlags::RENAME_NOREPLACE) {
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            match fstatat(dir, to, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(_) => Err(Errno::EEXIST),
                Err(Errno::ENOENT) => nix::fcntl::renameat(dir, from, dir, to),
                Err(errno) => Err(errno),
            }
        }
        other => other,
    }
}

/// Creates the directory `name` in `parent` (mode 0711) unless it exists, syncing
/// `parent` when it was created, and opens it.
fn ensure_dir(parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd> {
    match mkdirat(parent, name, Mode::from_bits_truncate(DIR_MODE)) {
        Ok(()) => nix::unistd::fsync(parent).map_err(sys("sync", path))?,
        Err(Errno::EEXIST) => {}
        Err(errno) => return Err(StorageError::io("create", path, errno)),
    }
    remove::open_dir(parent, name, path)
}

/// Opens the directory `path`, never following a final symlink; a missing one is
/// [`StorageError::NotFound`].
fn open_existing(path: &Path) -> Result<OwnedFd> {
    open_if_exists(path)?.ok_or_else(|| StorageError::NotFound {
        path: path.to_owned(),
    })
}

/// Opens the directory `path` if it exists.
fn open_if_exists(path: &Path) -> Result<Option<OwnedFd>> {
    match nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(StorageError::io("open", path, errno)),
    }
}

/// Whether `name` exists in `dir`.
fn exists(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<bool> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(errno) => Err(StorageError::io("stat", path, errno)),
    }
}

/// The directories among the entries of `dir` that are not temporaries, as UTF-8 names
/// (`only_dirs`: skip other kinds of entries).
fn final_names(dir: BorrowedFd<'_>, path: &Path, only_dirs: bool) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for name in remove::entry_names(dir, path)? {
        let Some(text) = name.to_str() else { continue };
        if text.starts_with('.') {
            continue;
        }
        if only_dirs {
            let stat = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(sys("stat", &path.join(&name)))?;
            if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                continue;
            }
        }
        names.push(text.to_owned());
    }
    Ok(names)
}

/// The parent and last component of a path built by this crate.
fn split(path: &Path) -> (&Path, &OsStr) {
    (
        path.parent().unwrap_or(Path::new("/")),
        path.file_name().unwrap_or(OsStr::new(".")),
    )
}
