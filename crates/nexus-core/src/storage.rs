//! The `WorkspaceStorage` trait: where workspace trees and snapshots live on disk. The
//! daemon implements it over `nexus-storage` (btrfs subvolumes, reflinks or copies); unit
//! tests use [`crate::testing::FakeStorage`].
//!
//! Contract the service relies on for crash safety: every call either completes or
//! leaves its result absent (plus garbage that [`WorkspaceStorage::recover`] sweeps), and
//! never overwrites an existing tree or snapshot. The service records metadata only after
//! the storage call succeeded, so the store is the truth and storage follows it.

use std::path::{Path, PathBuf};

use crate::image::ImageId;
use crate::workspace::{SnapshotId, WorkspaceId};

/// What kind of storage failure happened, for the caller's mapping to API errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFaultKind {
    /// The disk or the quota is full.
    NoSpace,
    /// The tree or snapshot does not exist on disk.
    NotFound,
    /// Anything else.
    Other,
}

/// A storage failure, with a message naming the path and the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StorageFault {
    /// What kind.
    pub kind: StorageFaultKind,
    /// For people: the operation, the path and the cause.
    pub message: String,
}

/// Whether a workspace's quota is enforced here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaStatus {
    /// The filesystem enforces it.
    Enforced,
    /// Recorded but not enforced, and why.
    NotEnforced(String),
}

/// What the storage does with trees, for `inspect` and the doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageBackend {
    /// `btrfs`, `reflink` or `copy`.
    pub name: String,
    /// What that means for snapshots and forks.
    pub detail: String,
}

/// A workspace as storage recovery must keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownWorkspace {
    /// The workspace.
    pub id: WorkspaceId,
    /// Its current tree generation.
    pub generation: u64,
    /// Its recorded snapshots.
    pub snapshots: Vec<SnapshotId>,
}

/// Trees and snapshots of workspaces on disk. Calls block; the service runs them on
/// the blocking pool.
pub trait WorkspaceStorage: Send + Sync + std::fmt::Debug {
    /// The backend in use.
    fn backend(&self) -> StorageBackend;

    /// Makes the empty first tree of a new workspace.
    fn create_tree(&self, ws: &WorkspaceId, generation: u64) -> Result<PathBuf, StorageFault>;

    /// Where a tree is (whether or not it exists).
    fn tree_path(&self, ws: &WorkspaceId, generation: u64) -> PathBuf;

    /// A read-only snapshot of a tree.
    fn snapshot(
        &self,
        ws: &WorkspaceId,
        generation: u64,
        snapshot: &SnapshotId,
    ) -> Result<(), StorageFault>;

    /// A new writable tree `dst`/`generation` made from a snapshot of `src`.
    fn clone_snapshot(
        &self,
        src: &WorkspaceId,
        snapshot: &SnapshotId,
        dst: &WorkspaceId,
        generation: u64,
    ) -> Result<PathBuf, StorageFault>;

    /// Removes one tree.
    fn delete_tree(&self, ws: &WorkspaceId, generation: u64) -> Result<(), StorageFault>;

    /// Removes one snapshot.
    fn delete_snapshot(&self, ws: &WorkspaceId, snapshot: &SnapshotId) -> Result<(), StorageFault>;

    /// Removes everything of a workspace. A workspace that has nothing on disk is fine.
    fn delete_workspace(&self, ws: &WorkspaceId) -> Result<(), StorageFault>;

    /// Bytes a tree uses on disk.
    fn size(&self, ws: &WorkspaceId, generation: u64) -> Result<u64, StorageFault>;

    /// Limits a tree to `bytes`, where the filesystem can.
    fn set_quota(
        &self,
        ws: &WorkspaceId,
        generation: u64,
        bytes: u64,
    ) -> Result<QuotaStatus, StorageFault>;

    /// After a restart, before anything else runs: removes leftovers of interrupted
    /// operations and every tree, snapshot or workspace on disk that `known` does not
    /// list. Returns what was removed.
    fn recover(&self, known: &[KnownWorkspace]) -> Result<Vec<PathBuf>, StorageFault>;
}

/// The trees of images on disk. An image tree is made once and never changed: sandboxes
/// mount it read-only, under a writable layer of their own. Calls block; the service
/// runs them on the blocking pool. Same crash-safety contract as [`WorkspaceStorage`].
pub trait ImageStorage: Send + Sync + std::fmt::Debug {
    /// Copies the directory `source` (modes, symlinks, hard links, and owners when the
    /// daemon is root) into the new tree of `image`. Returns its size in bytes.
    fn import(&self, image: &ImageId, source: &Path) -> Result<u64, StorageFault>;

    /// A fresh empty directory next to the trees, for a build to fill before
    /// [`ImageStorage::import`]ing it. Removed by [`ImageStorage::recover`] if left over.
    fn scratch(&self, image: &ImageId) -> Result<PathBuf, StorageFault>;

    /// Where an image's tree is (whether or not it exists).
    fn root(&self, image: &ImageId) -> PathBuf;

    /// Removes an image's tree; an image with nothing on disk is fine.
    fn delete(&self, image: &ImageId) -> Result<(), StorageFault>;

    /// After a restart: removes leftovers of interrupted imports and builds, and every
    /// tree that `known` does not list. Returns what was removed.
    fn recover(&self, known: &[ImageId]) -> Result<Vec<PathBuf>, StorageFault>;
}

/// Builds image trees from a distribution's packages (mmdebstrap in the daemon; faked in
/// tests).
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync + std::fmt::Debug {
    /// Fills the empty directory `dest` with a Debian `suite` plus `packages`, sending each
    /// line of the tool's output to `progress`. Returns the tool and its version (e.g.
    /// `mmdebstrap 1.3.5`); on failure, what went wrong with the output's last lines.
    ///
    /// When `cancel` fires, the build stops: every process it started is gone by the time
    /// this returns (soon: a short grace, then SIGKILL), and what it returns is ignored.
    /// Every process it started is gone when it returns in any case, and dropping the
    /// future kills them too.
    async fn build(
        &self,
        suite: &str,
        packages: &[String],
        dest: &Path,
        progress: tokio::sync::mpsc::UnboundedSender<String>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<String, String>;

    /// At startup, before the scratch directories of interrupted builds are swept: stops
    /// every process that builds of an earlier run of this daemon left running (a daemon
    /// killed with SIGKILL cannot stop them itself), logging what it stopped. Returns
    /// how many interrupted builds it found; an error says what could not be stopped.
    async fn stop_leftovers(&self) -> Result<usize, String> {
        Ok(0)
    }
}
