//! Fakes of the outside-world traits, for unit tests of the layers above the domain.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use async_trait::async_trait;

pub mod contract;
mod driver;
mod storage;

pub use driver::{FakeDriver, FakeReplace};
pub use storage::{FakeImageBuilder, FakeImageStorage, FakeStorage};

use crate::clock::{Clock, Timestamp};
use crate::image::{Image, ImageId, ImageName};
use crate::sandbox::{Sandbox, SandboxId, SandboxName};
use crate::store::{DatabaseInfo, PoolClaim, Store, StoreError, Transition, apply_generation};
use crate::workspace::{Snapshot, SnapshotId, SnapshotName, Workspace, WorkspaceId, WorkspaceName};

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct FakeClock {
    millis: AtomicI64,
}

impl FakeClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: AtomicI64::new(start.0),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

/// An in-memory store that can be told to fail.
///
/// It keeps the same promises as the SQLite store: unique names, compare-and-set
/// changes, snapshots deleted with their workspace, workspaces kept while mounted.
#[derive(Debug)]
pub struct MemoryStore {
    failing: AtomicBool,
    failing_generations: AtomicBool,
    info: Mutex<DatabaseInfo>,
    tables: Mutex<Tables>,
}

/// Every record, behind one lock so that each method is one transaction.
#[derive(Debug, Default)]
struct Tables {
    sandboxes: Vec<Sandbox>,
    workspaces: Vec<Workspace>,
    snapshots: Vec<Snapshot>,
    images: Vec<Image>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            failing: AtomicBool::new(false),
            failing_generations: AtomicBool::new(false),
            info: Mutex::new(DatabaseInfo {
                backend: "memory",
                location: PathBuf::from(":memory:"),
                schema_version: 1,
                table_count: 0,
                size_bytes: 0,
            }),
            tables: Mutex::new(Tables::default()),
        }
    }
}

impl MemoryStore {
    /// Makes every later call fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes only `set_workspace_generation` fail (or succeed again): a restore whose
    /// commit fails.
    pub fn set_failing_generations(&self, failing: bool) {
        self.failing_generations.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("memory store told to fail".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }

    async fn info(&self) -> Result<DatabaseInfo, StoreError> {
        self.check()?;
        Ok(self
            .info
            .lock()
            .expect("memory store lock is never poisoned")
            .clone())
    }

    async fn insert_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError> {
        self.check()?;
        let mut t = self.tables();
        if t.sandboxes.iter().any(|s| s.spec.name == sandbox.spec.name) {
            return Err(StoreError::NameTaken {
                name: sandbox.spec.name.to_string(),
            });
        }
        let used = sandbox
            .spec
            .workspace
            .iter()
            .chain(sandbox.spec.mounts.iter().map(|m| &m.workspace));
        for id in used {
            if !t.workspaces.iter().any(|w| &w.id == id) {
                return Err(StoreError::WorkspaceNotFound { id: id.clone() });
            }
        }
        t.sandboxes.push(sandbox.clone());
        Ok(())
    }

    async fn sandbox(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        self.check()?;
        Ok(self
            .tables()
            .sandboxes
            .iter()
            .find(|s| &s.id == id)
            .cloned())
    }

    async fn sandbox_by_name(&self, name: &SandboxName) -> Result<Option<Sandbox>, StoreError> {
        self.check()?;
        Ok(self
            .tables()
            .sandboxes
            .iter()
            .find(|s| &s.spec.name == name)
            .cloned())
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError> {
        self.check()?;
        Ok(self.tables().sandboxes.clone())
    }

    async fn transition_sandbox(&self, transition: &Transition) -> Result<Sandbox, StoreError> {
        self.check()?;
        let mut t = self.tables();
        let Some(sandbox) = t.sandboxes.iter_mut().find(|s| s.id == transition.id) else {
            return Err(StoreError::StateChanged {
                id: transition.id.clone(),
                expected: transition.from,
                found: "deleted".into(),
            });
        };
        transition.apply_to(sandbox)?;
        Ok(sandbox.clone())
    }

    async fn delete_sandbox(&self, id: &SandboxId) -> Result<bool, StoreError> {
        self.check()?;
        let mut t = self.tables();
        let before = t.sandboxes.len();
        t.sandboxes.retain(|s| &s.id != id);
        Ok(t.sandboxes.len() != before)
    }

    async fn set_sandbox_network(
        &self,
        id: &SandboxId,
        network: &nexus_net::policy::PolicySpec,
    ) -> Result<Option<Sandbox>, StoreError> {
        self.check()?;
        let mut t = self.tables();
        Ok(t.sandboxes.iter_mut().find(|s| &s.id == id).map(|s| {
            s.spec.network = network.clone();
            s.clone()
        }))
    }

    async fn insert_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        self.check()?;
        let mut t = self.tables();
        if t.workspaces.iter().any(|w| w.name == workspace.name) {
            return Err(StoreError::WorkspaceNameTaken {
                name: workspace.name.to_string(),
            });
        }
        t.workspaces.push(workspace.clone());
        Ok(())
    }

    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        self.check()?;
        Ok(self
            .tables()
            .workspaces
            .iter()
            .find(|w| &w.id == id)
            .cloned())
    }

    async fn workspace_by_name(
        &self,
        name: &WorkspaceName,
    ) -> Result<Option<Workspace>, StoreError> {
        self.check()?;
        Ok(self
            .tables()
            .workspaces
            .iter()
            .find(|w| &w.name == name)
            .cloned())
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        self.check()?;
        let mut all = self.tables().workspaces.clone();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    async fn set_workspace_generation(
        &self,
        id: &WorkspaceId,
        expected: u64,
        new: u64,
        at: Timestamp,
    ) -> Result<Workspace, StoreError> {
        self.check()?;
        if self.failing_generations.load(Ordering::SeqCst) {
            return Err(StoreError::Backend(
                "memory store told to fail generation changes".into(),
            ));
        }
        let mut t = self.tables();
        let workspace = t.workspace_mut(id)?;
        apply_generation(workspace, expected, new, at)?;
        Ok(workspace.clone())
    }

    async fn set_workspace_quota(
        &self,
        id: &WorkspaceId,
        quota_mib: Option<u64>,
        at: Timestamp,
    ) -> Result<Workspace, StoreError> {
        self.check()?;
        let mut t = self.tables();
        let workspace = t.workspace_mut(id)?;
        workspace.quota_mib = quota_mib;
        workspace.updated_at = at;
        Ok(workspace.clone())
    }

    async fn disown_workspace(
        &self,
        id: &WorkspaceId,
        at: Timestamp,
    ) -> Result<Workspace, StoreError> {
        self.check()?;
        let mut t = self.tables();
        let workspace = t.workspace_mut(id)?;
        workspace.owner = None;
        workspace.updated_at = at;
        Ok(workspace.clone())
    }

    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool, StoreError> {
        self.check()?;
        let mut t = self.tables();
        let users = t.users_of(id);
        if !users.is_empty() {
            return Err(StoreError::WorkspaceInUse {
                id: id.clone(),
                sandboxes: users.into_iter().map(|(s, _)| s).collect(),
            });
        }
        let before = t.workspaces.len();
        t.workspaces.retain(|w| &w.id != id);
        t.snapshots.retain(|s| &s.workspace != id);
        Ok(t.workspaces.len() != before)
    }

    async fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.check()?;
        let mut t = self.tables();
        t.workspace_mut(&snapshot.workspace)?;
        if t.snapshots
            .iter()
            .any(|s| s.workspace == snapshot.workspace && s.name == snapshot.name)
        {
            return Err(StoreError::SnapshotNameTaken {
                workspace: snapshot.workspace.clone(),
                name: snapshot.name.to_string(),
            });
        }
        t.snapshots.push(snapshot.clone());
        Ok(())
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>, StoreError> {
        self.check()?;
        Ok(self
            .tables()
            .snapshots
            .iter()
            .find(|s| &s.id == id)
            .cloned())
    }

    async fn snapshot_by_name(
        &self,
        workspace: &WorkspaceId,
        name: &SnapshotName,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.check()?;
        Ok(self
            .tables()
            .snapshots
            .iter()
            .find(|s| &s.workspace == workspace && &s.name == name)
            .cloned())
    }

    async fn snapshots_of(&self, workspace: &WorkspaceId) -> Result<Vec<Snapshot>, StoreError> {
        self.check()?;
        let mut all: Vec<Snapshot> = self
            .tables()
            .snapshots
            .iter()
            .filter(|s| &s.workspace == workspace)
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError> {
        self.check()?;
        let mut t = self.tables();
        let before = t.snapshots.len();
        t.snapshots.retain(|s| &s.id != id);
        Ok(t.snapshots.len() != before)
    }

    async fn sandboxes_using(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<(SandboxId, bool)>, StoreError> {
        self.check()?;
        Ok(self.tables().users_of(workspace))
    }

    async fn insert_image(&self, image: &Image) -> Result<(), StoreError> {
        self.check()?;
        let mut t = self.tables();
        if t.images.iter().any(|i| i.name == image.name) {
            return Err(StoreError::ImageNameTaken {
                name: image.name.to_string(),
            });
        }
        t.images.push(image.clone());
        Ok(())
    }

    async fn image(&self, id: &ImageId) -> Result<Option<Image>, StoreError> {
        self.check()?;
        Ok(self.tables().images.iter().find(|i| &i.id == id).cloned())
    }

    async fn image_by_name(&self, name: &ImageName) -> Result<Option<Image>, StoreError> {
        self.check()?;
        Ok(self
            .tables()
            .images
            .iter()
            .find(|i| &i.name == name)
            .cloned())
    }

    async fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        self.check()?;
        let mut images = self.tables().images.clone();
        images.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(images)
    }

    async fn delete_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        self.check()?;
        let mut t = self.tables();
        let Some(index) = t.images.iter().position(|i| &i.id == id) else {
            return Ok(false);
        };
        let users = t.image_users(t.images[index].name.as_str());
        if !users.is_empty() {
            return Err(StoreError::ImageInUse {
                name: t.images[index].name.to_string(),
                sandboxes: users,
            });
        }
        t.images.remove(index);
        Ok(true)
    }

    async fn sandboxes_using_image(&self, name: &str) -> Result<Vec<SandboxId>, StoreError> {
        self.check()?;
        Ok(self.tables().image_users(name))
    }

    async fn claim_pooled_sandbox(&self, claim: &PoolClaim) -> Result<Sandbox, StoreError> {
        self.check()?;
        let mut t = self.tables();
        let not_pooled = || StoreError::NotPooled {
            id: claim.id.clone(),
        };
        let mut sandbox = t
            .sandboxes
            .iter()
            .find(|s| s.id == claim.id)
            .cloned()
            .ok_or_else(not_pooled)?;
        let ws_id = sandbox.spec.workspace.clone().ok_or_else(not_pooled)?;
        let mut workspace = t.workspace_mut(&ws_id)?.clone();
        claim.apply_to(&mut sandbox, &mut workspace)?;
        if t.sandboxes.iter().any(|s| s.spec.name == claim.name) {
            return Err(StoreError::NameTaken {
                name: claim.name.to_string(),
            });
        }
        if t.workspaces.iter().any(|w| w.name == claim.workspace_name) {
            return Err(StoreError::WorkspaceNameTaken {
                name: claim.workspace_name.to_string(),
            });
        }
        for stored in t.sandboxes.iter_mut().filter(|s| s.id == claim.id) {
            *stored = sandbox.clone();
        }
        *t.workspace_mut(&ws_id)? = workspace;
        Ok(sandbox)
    }
}

impl MemoryStore {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .expect("memory store lock is never poisoned")
    }
}

impl Tables {
    /// The sandboxes on an image, oldest first.
    fn image_users(&self, image: &str) -> Vec<SandboxId> {
        let mut sandboxes: Vec<&Sandbox> = self
            .sandboxes
            .iter()
            .filter(|s| s.spec.image == image)
            .collect();
        sandboxes.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        sandboxes.into_iter().map(|s| s.id.clone()).collect()
    }

    fn workspace_mut(&mut self, id: &WorkspaceId) -> Result<&mut Workspace, StoreError> {
        self.workspaces
            .iter_mut()
            .find(|w| &w.id == id)
            .ok_or_else(|| StoreError::WorkspaceNotFound { id: id.clone() })
    }

    /// The sandboxes mounting a workspace, oldest first, with whether only read-only.
    fn users_of(&self, workspace: &WorkspaceId) -> Vec<(SandboxId, bool)> {
        let mut sandboxes: Vec<&Sandbox> = self.sandboxes.iter().collect();
        sandboxes.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        sandboxes
            .into_iter()
            .filter_map(|s| {
                let rw = s.spec.workspace.as_ref() == Some(workspace)
                    || s.spec
                        .mounts
                        .iter()
                        .any(|m| &m.workspace == workspace && !m.read_only);
                let ro = s
                    .spec
                    .mounts
                    .iter()
                    .any(|m| &m.workspace == workspace && m.read_only);
                (rw || ro).then(|| (s.id.clone(), !rw))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test per [`contract`] scenario, each on a fresh store.
    macro_rules! contract_tests {
        ($($scenario:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $scenario() {
                contract::$scenario(&MemoryStore::default()).await;
            }
        )*};
    }

    contract_tests!(
        workspaces_round_trip,
        workspace_names_are_unique,
        generations_are_compare_and_set,
        quota_and_owner_change,
        snapshots_are_named_per_workspace,
        deleting_a_workspace_deletes_its_snapshots,
        workspaces_in_use_are_kept,
        sandboxes_need_recorded_workspaces,
        images_round_trip_and_are_kept_while_used,
        network_policies_round_trip_and_are_replaced,
        pooled_sandboxes_are_claimed_in_one_change,
    );

    #[tokio::test]
    async fn a_failing_store_fails_workspace_calls_too() {
        let store = MemoryStore::default();
        store.set_failing(true);
        let err = store.list_workspaces().await.expect_err("failing");
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    }
}
