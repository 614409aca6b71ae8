//! `FakeStorage`: workspace trees and snapshots as entries in memory, with the same
//! refusals as the real storage (no overwrite, not-found), and a switch to fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::image::ImageId;
use crate::storage::{
    ImageStorage, KnownWorkspace, QuotaStatus, StorageBackend, StorageFault, StorageFaultKind,
    WorkspaceStorage,
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

/// Image storage whose trees are names in a set; imports of a missing directory fail
/// as the real one does, and every import "measures" 4096 bytes.
#[derive(Debug, Default)]
pub struct FakeImageStorage {
    trees: Mutex<BTreeSet<String>>,
}

impl FakeImageStorage {
    /// How many image trees there are.
    pub fn tree_count(&self) -> usize {
        self.trees.lock().expect("fake lock").len()
    }

    /// Whether this image has a tree.
    pub fn has(&self, image: &ImageId) -> bool {
        self.trees
            .lock()
            .expect("fake lock")
            .contains(image.as_str())
    }
}

impl ImageStorage for FakeImageStorage {
    fn import(&self, image: &ImageId, source: &Path) -> Result<u64, StorageFault> {
        if !source.is_dir() {
            return Err(fault(
                StorageFaultKind::NotFound,
                &format!("cannot open {}: not a directory", source.display()),
            ));
        }
        if !self
            .trees
            .lock()
            .expect("fake lock")
            .insert(image.to_string())
        {
            return Err(fault(StorageFaultKind::Other, "fake: image tree exists"));
        }
        Ok(4096)
    }

    fn scratch(&self, image: &ImageId) -> Result<PathBuf, StorageFault> {
        let path = std::env::temp_dir().join(format!("fake-scratch-{image}"));
        std::fs::create_dir_all(&path)
            .map_err(|e| fault(StorageFaultKind::Other, &format!("fake: {e}")))?;
        Ok(path)
    }

    fn root(&self, image: &ImageId) -> PathBuf {
        PathBuf::from("/fake/images").join(image.as_str())
    }

    fn delete(&self, image: &ImageId) -> Result<(), StorageFault> {
        self.trees.lock().expect("fake lock").remove(image.as_str());
        Ok(())
    }

    fn recover(&self, known: &[ImageId]) -> Result<Vec<PathBuf>, StorageFault> {
        let mut trees = self.trees.lock().expect("fake lock");
        let gone: Vec<String> = trees
            .iter()
            .filter(|t| !known.iter().any(|k| k.as_str() == t.as_str()))
            .cloned()
            .collect();
        for t in &gone {
            trees.remove(t);
        }
        Ok(gone.iter().map(|t| self.root_of(t)).collect())
    }
}

impl FakeImageStorage {
    fn root_of(&self, id: &str) -> PathBuf {
        PathBuf::from("/fake/images").join(id)
    }
}

/// A builder that "installs" each package as one progress line (and writes a file into
/// its directory), fails on a package named `missing`, and on a package named `hang` waits
/// until its build is cancelled.
#[derive(Debug, Default)]
pub struct FakeImageBuilder {
    dests: Mutex<Vec<PathBuf>>,
    /// Interrupted builds "left running": each startup's `stop_leftovers` stops them.
    leftovers: Mutex<usize>,
}

impl FakeImageBuilder {
    /// The directories builds were asked to fill, oldest first.
    pub fn dests(&self) -> Vec<PathBuf> {
        self.dests.lock().expect("fake lock").clone()
    }

    /// Pretends a killed daemon left `builds` builds running.
    pub fn leave_running(&self, builds: usize) {
        *self.leftovers.lock().expect("fake lock") += builds;
    }

    /// How many builds are still "running" from an earlier daemon.
    pub fn left_running(&self) -> usize {
        *self.leftovers.lock().expect("fake lock")
    }
}

#[async_trait::async_trait]
impl crate::storage::ImageBuilder for FakeImageBuilder {
    async fn build(
        &self,
        suite: &str,
        packages: &[String],
        dest: &Path,
        progress: tokio::sync::mpsc::UnboundedSender<String>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<String, String> {
        self.dests
            .lock()
            .expect("fake lock")
            .push(dest.to_path_buf());
        let _ = progress.send(format!("fake: bootstrapping {suite}"));
        std::fs::write(dest.join("bootstrapped"), suite).map_err(|e| format!("fake: {e}"))?;
        for package in packages {
            if package == "missing" {
                return Err("E: Unable to locate package missing".into());
            }
            let _ = progress.send(format!("fake: installing {package}"));
            if package == "hang" {
                cancel.cancelled().await;
                return Err("fake: stopped".into());
            }
        }
        Ok("fake-builder 1.0".into())
    }

    async fn stop_leftovers(&self) -> Result<usize, String> {
        Ok(std::mem::take(
            &mut *self.leftovers.lock().expect("fake lock"),
        ))
    }
}
