//! The daemon's workspace storage: `nexus-storage` under `<data_dir>/workspaces`, behind
//! the domain's `WorkspaceStorage` trait.

use std::path::{Path, PathBuf};

use nexus_core::{
    KnownWorkspace, QuotaStatus, SnapshotId, StorageBackend, StorageFault, StorageFaultKind,
    WorkspaceId, WorkspaceStorage,
};
use nexus_storage::{QuotaOutcome, StorageError};

/// `nexus-storage` as the service sees it.
#[derive(Debug)]
pub struct DiskStorage {
    inner: nexus_storage::WorkspaceStorage,
}

impl DiskStorage {
    /// Opens (creating) the storage root `<data_dir>/workspaces` and picks its backend.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let root = data_dir.join("workspaces");
        let inner = nexus_storage::WorkspaceStorage::open(&root).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the workspace storage {}: {}",
                root.display(),
                chain(&e)
            )
        })?;
        tracing::info!(root = %root.display(), backend = %inner.backend(), detail = inner.describe(), "workspace storage");
        Ok(Self { inner })
    }
}

/// A storage error as the domain's fault, with its whole cause chain.
fn fault(err: StorageError) -> StorageFault {
    let kind = match &err {
        StorageError::NotFound { .. } => StorageFaultKind::NotFound,
        _ if matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
            StorageFaultKind::NoSpace
        }
        _ => StorageFaultKind::Other,
    };
    StorageFault {
        kind,
        message: chain(&err),
    }
}

/// An error and its causes on one line: `outer: inner`.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl WorkspaceStorage for DiskStorage {
    fn backend(&self) -> StorageBackend {
        StorageBackend {
            name: self.inner.backend().to_string(),
            detail: self.inner.describe().to_owned(),
        }
    }

    fn create_tree(&self, ws: &WorkspaceId, generation: u64) -> Result<PathBuf, StorageFault> {
        self.inner
            .create_tree(ws.as_str(), generation)
            .map_err(fault)
    }

    fn tree_path(&self, ws: &WorkspaceId, generation: u64) -> PathBuf {
        self.inner
            .tree_path(ws.as_str(), generation)
            .unwrap_or_else(|_| {
                self.inner
                    .root()
                    .join(ws.as_str())
                    .join("trees")
                    .join(generation.to_string())
            })
    }

    fn snapshot(
        &self,
        ws: &WorkspaceId,
        generation: u64,
        snapshot: &SnapshotId,
    ) -> Result<(), StorageFault> {
        self.inner
            .snapshot(ws.as_str(), generation, snapshot.as_str())
            .map(drop)
            .map_err(fault)
    }

    fn clone_snapshot(
        &self,
        src: &WorkspaceId,
        snapshot: &SnapshotId,
        dst: &WorkspaceId,
        generation: u64,
    ) -> Result<PathBuf, StorageFault> {
        self.inner
            .clone_snapshot(src.as_str(), snapshot.as_str(), dst.as_str(), generation)
            .map_err(fault)
    }

    fn delete_tree(&self, ws: &WorkspaceId, generation: u64) -> Result<(), StorageFault> {
        match self.inner.delete_tree(ws.as_str(), generation) {
            Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(fault(e)),
        }
    }

    fn delete_snapshot(&self, ws: &WorkspaceId, snapshot: &SnapshotId) -> Result<(), StorageFault> {
        match self.inner.delete_snapshot(ws.as_str(), snapshot.as_str()) {
            Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(fault(e)),
        }
    }

    fn delete_workspace(&self, ws: &WorkspaceId) -> Result<(), StorageFault> {
        match self.inner.delete_workspace(ws.as_str()) {
            Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(fault(e)),
        }
    }

    fn size(&self, ws: &WorkspaceId, generation: u64) -> Result<u64, StorageFault> {
        let path = self
            .inner
            .tree_path(ws.as_str(), generation)
            .map_err(fault)?;
        nexus_storage::size(&path).map_err(fault)
    }

    fn set_quota(
        &self,
        ws: &WorkspaceId,
        generation: u64,
        bytes: u64,
    ) -> Result<QuotaStatus, StorageFault> {
        match self.inner.set_quota(ws.as_str(), generation, bytes) {
            Ok(QuotaOutcome::Enforced) => Ok(QuotaStatus::Enforced),
            Ok(QuotaOutcome::NotEnforced { reason }) => Ok(QuotaStatus::NotEnforced(reason)),
            Err(e) => Err(fault(e)),
        }
    }

    fn recover(&self, known: &[KnownWorkspace]) -> Result<Vec<PathBuf>, StorageFault> {
        let mut removed = self.inner.collect_garbage().map_err(fault)?;
        for ws in self.inner.workspaces().map_err(fault)? {
            match known.iter().find(|k| k.id.as_str() == ws) {
                Some(k) => {
                    let snapshots: Vec<&str> = k.snapshots.iter().map(|s| s.as_str()).collect();
                    removed.extend(
                        self.inner
                            .prune(&ws, &[k.generation], &snapshots)
                            .map_err(fault)?,
                    );
                }
                None => {
                    let path = self.inner.workspace_path(&ws).map_err(fault)?;
                    self.inner.delete_workspace(&ws).map_err(fault)?;
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }
}

/// Image trees: `nexus-storage` under `<data_dir>/images`, one "workspace" per image id
/// whose only tree, generation 1, is the image's root. Build scratch directories are
/// `.tmp-build-*` entries of the root, swept with the other leftovers at startup.
#[derive(Debug)]
pub struct DiskImages {
    inner: nexus_storage::WorkspaceStorage,
}

/// The generation of an image's one tree.
const IMAGE_TREE: u64 = 1;

impl DiskImages {
    /// Opens (creating) `<data_dir>/images`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let root = data_dir.join("images");
        let inner = nexus_storage::WorkspaceStorage::open(&root).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the image storage {}: {}",
                root.display(),
                chain(&e)
            )
        })?;
        Ok(Self { inner })
    }
}

impl nexus_core::ImageStorage for DiskImages {
    fn import(&self, image: &nexus_core::ImageId, source: &Path) -> Result<u64, StorageFault> {
        let tree = self
            .inner
            .import_tree(source, image.as_str(), IMAGE_TREE)
            .map_err(fault)?;
        nexus_storage::size(&tree).map_err(fault)
    }

    fn scratch(&self, image: &nexus_core::ImageId) -> Result<PathBuf, StorageFault> {
        let path = self
            .inner
            .root()
            .join(format!(".tmp-build-{image}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&path).map_err(|e| StorageFault {
            kind: StorageFaultKind::Other,
            message: format!("cannot create {}: {e}", path.display()),
        })?;
        Ok(path)
    }

    fn root(&self, image: &nexus_core::ImageId) -> PathBuf {
        self.inner
            .tree_path(image.as_str(), IMAGE_TREE)
            .unwrap_or_else(|_| {
                self.inner
                    .root()
                    .join(image.as_str())
                    .join("trees")
                    .join(IMAGE_TREE.to_string())
            })
    }

    fn delete(&self, image: &nexus_core::ImageId) -> Result<(), StorageFault> {
        match self.inner.delete_workspace(image.as_str()) {
            Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(fault(e)),
        }
    }

    fn recover(&self, known: &[nexus_core::ImageId]) -> Result<Vec<PathBuf>, StorageFault> {
        let mut removed = self.inner.collect_garbage().map_err(fault)?;
        for image in self.inner.workspaces().map_err(fault)? {
            if !known.iter().any(|k| k.as_str() == image) {
                let path = self.inner.workspace_path(&image).map_err(fault)?;
                self.inner.delete_workspace(&image).map_err(fault)?;
                removed.push(path);
            }
        }
        Ok(removed)
    }
}
