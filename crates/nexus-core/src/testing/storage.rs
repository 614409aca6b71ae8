//! `FakeStorage`: workspace trees and snapshots as entries in memory, with the same
//! refusals as the real storage (no overwrite, not-found), and a switch to fail.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::storage::{
    KnownWorkspace, QuotaStatus, StorageBackend, StorageFault, StorageFaultKind, WorkspaceStorage,
};
use crate::workspace::{SnapshotId, WorkspaceId};

/// Storage whose trees are names in a set.
#[derive(Debug, Default)]
pub struct FakeStorage {
    trees: Mutex<BTreeSet<(String, u64)>>,
    snapshots: Mutex<BTreeSet<(String, String)>>,
    fail: AtomicBool,
}

impl FakeStorage {
    /// Makes every change fail with "no space" (or succeed again).
    pub fn set_full(&self, full: bool) {
        self.fail.store(full, Ordering::SeqCst);
    }

    /// Whether this tree exists.
    pub fn has_tree(&self, ws: &WorkspaceId, generation: u64) -> bool {
        self.trees
            .lock()
            .expect("fake lock")
            .contains(&(ws.to_string(), generation))
    }

    /// Whether this snapshot exists.
    pub fn has_snapshot(&self, ws: &WorkspaceId, snapshot: &SnapshotId) -> bool {
        self.snapshots
            .lock()
            .expect("fake lock")
            .contains(&(ws.to_string(), snapshot.to_string()))
    }

    /// How many trees exist, over all workspaces.
    pub fn tree_count(&self) -> usize {
        self.trees.lock().expect("fake lock").len()
    }

    fn check(&self) -> Result<(), StorageFault> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(fault(StorageFaultKind::NoSpace, "fake: no space left"));
        }
        Ok(())
    }
}

fn fault(kind: StorageFaultKind, message: &str) -> StorageFault {
    StorageFault {
        kind,
        message: message.into(),
    }
}

impl WorkspaceStorage for FakeStorage {
    fn backend(&self) -> StorageBackend {
        StorageBackend {
            name: "fake".into(),
            detail: "in memory".into(),
        }
    }

    fn create_tree(&self, ws: &WorkspaceId, generation: u64) -> Result<PathBuf, StorageFault> {
        self.check()?;
        if !self
            .trees
            .lock()
            .expect("fake lock")
            .insert((ws.to_string(), generation))
        {
            return Err(fault(StorageFaultKind::Other, "fake: tree exists"));
        }
        Ok(self.tree_path(ws, generation))
    }

    fn tree_path(&self, ws: &WorkspaceId, generation: u64) -> PathBuf {
        PathBuf::from(format!("/fake/{ws}/trees/{generation}"))
    }

    fn snapshot(
        &self,
        ws: &WorkspaceId,
        generation: u64,
        snapshot: &SnapshotId,
    ) -> Result<(), StorageFault> {
        self.check()?;
        if !self.has_tree(ws, generation) {
            return Err(fault(StorageFaultKind::NotFound, "fake: no such tree"));
        }
        if !self
            .snapshots
            .lock()
            .expect("fake lock")
            .insert((ws.to_string(), snapshot.to_string()))
        {
            return Err(fault(StorageFaultKind::Other, "fake: snapshot exists"));
        }
        Ok(())
    }

    fn clone_snapshot(
        &self,
        src: &WorkspaceId,
        snapshot: &SnapshotId,
        dst: &WorkspaceId,
        generation: u64,
    ) -> Result<PathBuf, StorageFault> {
        self.check()?;
        if !self.has_snapshot(src, snapshot) {
            return Err(fault(StorageFaultKind::NotFound, "fake: no such snapshot"));
        }
        self.create_tree(dst, generation)
    }

    fn delete_tree(&self, ws: &WorkspaceId, generation: u64) -> Result<(), StorageFault> {
        self.trees
            .lock()
            .expect("fake lock")
            .remove(&(ws.to_string(), generation));
        Ok(())
    }

    fn delete_snapshot(&self, ws: &WorkspaceId, snapshot: &SnapshotId) -> Result<(), StorageFault> {
        self.snapshots
            .lock()
            .expect("fake lock")
            .remove(&(ws.to_string(), snapshot.to_string()));
        Ok(())
    }

    fn delete_workspace(&self, ws: &WorkspaceId) -> Result<(), StorageFault> {
        let id = ws.to_string();
        self.trees
            .lock()
            .expect("fake lock")
            .retain(|(w, _)| *w != id);
        self.snapshots
            .lock()
            .expect("fake lock")
            .retain(|(w, _)| *w != id);
        Ok(())
    }

    fn size(&self, ws: &WorkspaceId, generation: u64) -> Result<u64, StorageFault> {
        if self.has_tree(ws, generation) {
            Ok(4096)
        } else {
            Err(fault(StorageFaultKind::NotFound, "fake: no such tree"))
        }
    }

    fn set_quota(
        &self,
        _ws: &WorkspaceId,
        _generation: u64,
        _bytes: u64,
    ) -> Result<QuotaStatus, StorageFault> {
        Ok(QuotaStatus::NotEnforced(
            "fake: quotas are not enforced".into(),
        ))
    }

    fn recover(&self, known: &[KnownWorkspace]) -> Result<Vec<PathBuf>, StorageFault> {
        let mut removed = Vec::new();
        self.trees.lock().expect("fake lock").retain(|(w, g)| {
            let keep = known
                .iter()
                .any(|k| k.id.as_str() == w && k.generation == *g);
            if !keep {
                removed.push(PathBuf::from(format!("/fake/{w}/trees/{g}")));
            }
            keep
        });
        self.snapshots.lock().expect("fake lock").retain(|(w, s)| {
            let keep = known
                .iter()
                .any(|k| k.id.as_str() == w && k.snapshots.iter().any(|x| x.as_str() == s));
            if !keep {
                removed.push(PathBuf::from(format!("/fake/{w}/snapshots/{s}")));
            }
            keep
        });
        Ok(removed)
    }
}
