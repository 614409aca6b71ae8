//! Workspaces through the service: the trees sandboxes work in, which outlive them, and
//! their snapshots, restores and forks.
//!
//! Order of every change, for crash safety: the storage step first (it either completes
//! or leaves garbage, see `crate::storage`), then the store records it. A crash between
//! the two leaves a tree or snapshot the store does not know, which
//! [`SandboxService::recover_storage`] removes at the next start. So the store is the
//! truth, and a workspace is always at either its old generation or its new one.
//!
//! A workspace is mounted read-write by at most one sandbox (any state: a stopped
//! sandbox starts again on it), and read-only by any number. Restoring a workspace
//! (`super::restore`) swaps the restored tree in under its running sandbox, whose
//! processes keep running, or restarts the sandbox on it where that cannot be done.

use std::collections::HashMap;
use std::sync::Arc;

use super::{CreateSandbox, MountRequest, SandboxService, SandboxView, ServiceError};
use crate::driver::{ReadOnlyMount, SandboxMounts};
use crate::sandbox::{Sandbox, SandboxId, SandboxName, SandboxState};
use crate::storage::{KnownWorkspace, QuotaStatus, StorageBackend, WorkspaceStorage};
use crate::workspace::{
    Snapshot, SnapshotId, SnapshotName, Workspace, WorkspaceId, WorkspaceMount, WorkspaceName,
};

/// A request to create a workspace on its own.
#[derive(Debug, Clone, Default)]
pub struct CreateWorkspace {
    /// Its name, or generated.
    pub name: Option<String>,
    /// Disk quota in MiB.
    pub quota_mib: Option<u64>,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A workspace with what only the disk and the sandboxes know.
#[derive(Debug, Clone)]
pub struct WorkspaceView {
    /// The record.
    pub workspace: Workspace,
    /// Bytes its current tree uses, when it could be measured.
    pub size_bytes: Option<u64>,
    /// Sandboxes that mount it, and whether read-only.
    pub used_by: Vec<(SandboxId, bool)>,
    /// How many snapshots it has.
    pub snapshots: usize,
    /// Whether its quota is enforced, when it has one.
    pub quota: Option<QuotaStatus>,
    /// The storage backend.
    pub backend: StorageBackend,
}

impl SandboxService {
    /// Creates a workspace with an empty tree.
    pub async fn create_workspace(
        &self,
        request: CreateWorkspace,
    ) -> Result<WorkspaceView, ServiceError> {
        let name = match request.name {
            Some(name) => WorkspaceName::parse(&name).map_err(ServiceError::Invalid)?,
            None => WorkspaceName::generate(),
        };
        if let Some(quota) = request.quota_mib {
            Workspace::validate_quota_mib(quota).map_err(ServiceError::Invalid)?;
        }
        if self.store.workspace_by_name(&name).await?.is_some() {
            return Err(ServiceError::WorkspaceNameTaken(name.to_string()));
        }
        let mut workspace = Workspace::new(name, self.clock.now());
        workspace.quota_mib = request.quota_mib;
        workspace.labels = request.labels;
        self.make_workspace(&workspace).await?;
        self.workspace_view(workspace).await
    }

    /// Every workspace, oldest first, with sizes (not those of warm-pool sandboxes,
    /// which are nobody's yet).
    pub async fn list_workspaces(&self) -> Result<Vec<WorkspaceView>, ServiceError> {
        let mut views = Vec::new();
        for workspace in self.store.list_workspaces().await? {
            if workspace.name.is_placeholder() {
                continue;
            }
            views.push(self.workspace_view(workspace).await?);
        }
        Ok(views)
    }

    /// One workspace, by id or name.
    pub async fn workspace(&self, id_or_name: &str) -> Result<WorkspaceView, ServiceError> {
        let workspace = self.find_workspace(id_or_name).await?;
        self.workspace_view(workspace).await
    }

    /// Deletes a workspace, its snapshots and its trees. Refused while a sandbox mounts it.
    pub async fn delete_workspace(&self, id_or_name: &str) -> Result<(), ServiceError> {
        let workspace = self.find_workspace(id_or_name).await?;
        let users = self.store.sandboxes_using(&workspace.id).await?;
        if !users.is_empty() {
            return Err(ServiceError::WorkspaceInUse(format!(
                "workspace {} is used by sandbox(es) {}; delete them first",
                workspace.name,
                self.sandbox_names(users.iter().map(|(id, _)| id)).await
            )));
        }
        self.store.delete_workspace(&workspace.id).await?;
        let id = workspace.id.clone();
        if let Err(e) = self.blocking(move |s| s.delete_workspace(&id)).await {
            tracing::warn!(workspace = %workspace.name, error = %e, "removing a deleted workspace's files failed; the next start sweeps them");
        }
        self.quotas().remove(&workspace.id);
        tracing::info!(workspace = %workspace.name, "workspace deleted");
        Ok(())
    }

    /// Takes a read-only snapshot of a workspace's current tree. A running sandbox that
    /// writes the workspace is paused for the moment of the snapshot, so the snapshot is
    /// consistent, and resumed right after.
    pub async fn snapshot_workspace(
        &self,
        id_or_name: &str,
        name: Option<String>,
    ) -> Result<Snapshot, ServiceError> {
        let workspace = self.find_workspace(id_or_name).await?;
        let name = match name {
            Some(name) => SnapshotName::parse(&name).map_err(ServiceError::Invalid)?,
            None => self.free_snapshot_name(&workspace).await?,
        };
        if self
            .store
            .snapshot_by_name(&workspace.id, &name)
            .await?
            .is_some()
        {
            return Err(ServiceError::Conflict(format!(
                "workspace {} already has a snapshot named {name}; choose another name or delete that snapshot",
                workspace.name
            )));
        }
        let snapshot = Snapshot::new(&workspace, name, self.clock.now());
        let writer = self.writer_to_freeze(&workspace).await?;
        let (ws, generation, snap) = (
            workspace.id.clone(),
            workspace.generation,
            snapshot.id.clone(),
        );
        let taken = self
            .blocking(move |s| s.snapshot(&ws, generation, &snap))
            .await;
        if let Some(writer) = writer {
            self.thaw_writer(&writer).await;
        }
        taken?;
        if let Err(err) = self.store.insert_snapshot(&snapshot).await {
            let (ws, snap) = (workspace.id.clone(), snapshot.id.clone());
            let _ = self.blocking(move |s| s.delete_snapshot(&ws, &snap)).await;
            return Err(err.into());
        }
        tracing::info!(workspace = %workspace.name, snapshot = %snapshot.name, "snapshot taken");
        Ok(snapshot)
    }

    /// A workspace's snapshots, oldest first.
    pub async fn snapshots(&self, id_or_name: &str) -> Result<Vec<Snapshot>, ServiceError> {
        let workspace = self.find_workspace(id_or_name).await?;
        Ok(self.store.snapshots_of(&workspace.id).await?)
    }

    /// Deletes one snapshot.
    pub async fn delete_snapshot(
        &self,
        workspace: &str,
        snapshot: &str,
    ) -> Result<(), ServiceError> {
        let workspace = self.find_workspace(workspace).await?;
        let snapshot = self.find_snapshot(&workspace, snapshot).await?;
        self.store.delete_snapshot(&snapshot.id).await?;
        let (ws, snap) = (workspace.id.clone(), snapshot.id.clone());
        if let Err(e) = self.blocking(move |s| s.delete_snapshot(&ws, &snap)).await {
            tracing::warn!(workspace = %workspace.name, error = %e, "removing a deleted snapshot's files failed; the next start sweeps them");
        }
        Ok(())
    }

    /// A new, independent workspace made from a snapshot.
    pub async fn fork_workspace(
        &self,
        workspace: &str,
        snapshot: &str,
        new_name: &str,
    ) -> Result<WorkspaceView, ServiceError> {
        let source = self.find_workspace(workspace).await?;
        let snapshot = self.find_snapshot(&source, snapshot).await?;
        let name = WorkspaceName::parse(new_name).map_err(ServiceError::Invalid)?;
        if self.store.workspace_by_name(&name).await?.is_some() {
            return Err(ServiceError::WorkspaceNameTaken(name.to_string()));
        }
        let mut fork = Workspace::new(name, self.clock.now());
        fork.quota_mib = source.quota_mib;
        fork.labels = source.labels.clone();
        self.clone_into(&source, &snapshot, &fork).await?;
        tracing::info!(from = %source.name, snapshot = %snapshot.name, workspace = %fork.name, "workspace forked");
        // Measuring the new tree would walk every file of it (about 100 ms for 10,000
        // files), which would make an O(1) btrfs fork cost as much as the walk: the answer
        // leaves the size out, and `inspect` or `list` measure it.
        self.workspace_view_sized(fork, false).await
    }

    /// Snapshots a sandbox's workspace and starts a new sandbox like it on a copy: same
    /// image, driver, environment, labels, limits and read-only mounts; its own
    /// workspace (owned by it), its own name.
    pub async fn fork_sandbox(
        &self,
        id_or_name: &str,
        new_name: &str,
    ) -> Result<SandboxView, ServiceError> {
        let original = self.find(id_or_name).await?;
        let name = SandboxName::parse(new_name).map_err(ServiceError::Invalid)?;
        if self.store.sandbox_by_name(&name).await?.is_some() {
            return Err(ServiceError::NameTaken(name.to_string()));
        }
        let Some(ws_id) = original.spec.workspace.clone() else {
            return Err(ServiceError::Conflict(format!(
                "sandbox {} predates workspaces and cannot be forked; copy its files into a new sandbox instead",
                original.spec.name
            )));
        };
        let source = self.workspace_by_id(&ws_id).await?;
        let snapshot = self
            .snapshot_workspace(ws_id.as_str(), Some(format!("fork-{name}")))
            .await?;
        let ws_name = self.free_workspace_name(name.as_str()).await?;
        let id = SandboxId::generate();
        let mut fork = Workspace::new(ws_name, self.clock.now());
        fork.owner = Some(id.clone());
        fork.quota_mib = source.quota_mib;
        let cloned = self.clone_into(&source, &snapshot, &fork).await;
        // The snapshot only carried the files over.
        if let Err(e) = self
            .delete_snapshot(ws_id.as_str(), snapshot.id.as_str())
            .await
        {
            tracing::warn!(error = %e, "removing a fork's intermediate snapshot failed");
        }
        cloned?;
        let mounts = original
            .spec
            .mounts
            .iter()
            .map(|mount| MountRequest {
                workspace: mount.workspace.to_string(),
                path: mount.path.clone(),
            })
            .collect();
        let request = CreateSandbox {
            name: Some(name.to_string()),
            image: Some(original.spec.image.clone()),
            driver: Some(original.spec.driver.as_str().to_owned()),
            env: original.spec.env.clone(),
            labels: original.spec.labels.clone(),
            limits: original.spec.limits,
            ttl_seconds: original.spec.ttl_seconds,
            start: true,
            workspace: None,
            mounts,
            // A fork may reach what its original may.
            network: Some(original.spec.network.clone()),
        };
        let view = self.create_with(request, id, Some(fork)).await?;
        tracing::info!(from = %original.spec.name, sandbox = %view.sandbox.spec.name, "sandbox forked");
        Ok(view)
    }

    /// At startup, before anything else: sweeps what interrupted operations left on
    /// disk and whatever the store does not know, and applies quotas again.
    pub async fn recover_storage(&self) -> Result<usize, ServiceError> {
        let mut known = Vec::new();
        let workspaces = self.store.list_workspaces().await?;
        for workspace in &workspaces {
            let snapshots = self.store.snapshots_of(&workspace.id).await?;
            known.push(KnownWorkspace {
                id: workspace.id.clone(),
                generation: workspace.generation,
                snapshots: snapshots.into_iter().map(|s| s.id).collect(),
            });
        }
        let removed = self.blocking(move |s| s.recover(&known)).await?;
        for path in &removed {
            tracing::info!(path = %path.display(), "removed workspace storage nobody records");
        }
        for workspace in &workspaces {
            self.apply_quota(workspace).await;
        }
        Ok(removed.len())
    }

    /// The host directories a sandbox mounts.
    pub(super) async fn mounts(&self, sandbox: &Sandbox) -> Result<SandboxMounts, ServiceError> {
        let workspace = match &sandbox.spec.workspace {
            Some(id) => {
                let workspace = self.workspace_by_id(id).await?;
                Some(self.storage.tree_path(&workspace.id, workspace.generation))
            }
            None => None,
        };
        let mut read_only = Vec::new();
        for mount in &sandbox.spec.mounts {
            let workspace = self.workspace_by_id(&mount.workspace).await?;
            read_only.push(ReadOnlyMount {
                source: self.storage.tree_path(&workspace.id, workspace.generation),
                target: mount.path.clone(),
            });
        }
        let image_root = self.image_root(&sandbox.spec.image).await?;
        Ok(SandboxMounts {
            workspace,
            read_only,
            image_root,
        })
    }

    /// The workspace a new sandbox writes: the named one (made if missing), or a fresh one
    /// it owns. Returns it and whether this call made it.
    pub(super) async fn attach_workspace(
        &self,
        requested: Option<&str>,
        sandbox: &SandboxId,
        sandbox_name: &SandboxName,
    ) -> Result<(Workspace, bool), ServiceError> {
        let Some(requested) = requested else {
            let name = self.free_workspace_name(sandbox_name.as_str()).await?;
            let mut workspace = Workspace::new(name, self.clock.now());
            workspace.owner = Some(sandbox.clone());
            self.make_workspace(&workspace).await?;
            return Ok((workspace, true));
        };
        match self.find_workspace(requested).await {
            Ok(workspace) => {
                let writers: Vec<SandboxId> = self
                    .store
                    .sandboxes_using(&workspace.id)
                    .await?
                    .into_iter()
                    .filter(|(_, read_only)| !read_only)
                    .map(|(id, _)| id)
                    .collect();
                if !writers.is_empty() {
                    return Err(ServiceError::WorkspaceInUse(format!(
                        "workspace {} is the workspace of sandbox {}; only one sandbox writes a workspace: delete that sandbox first, or mount the workspace read-only with `--mount {}:/mnt/{}`",
                        workspace.name,
                        self.sandbox_names(writers.iter()).await,
                        workspace.name,
                        workspace.name
                    )));
                }
                Ok((workspace, false))
            }
            Err(ServiceError::WorkspaceNotFound(_)) => {
                let name = WorkspaceName::parse(requested)
                    .map_err(|e| ServiceError::Invalid(format!("workspace: {e}")))?;
                let workspace = Workspace::new(name, self.clock.now());
                self.make_workspace(&workspace).await?;
                Ok((workspace, true))
            }
            Err(err) => Err(err),
        }
    }

    /// The requested read-only mounts, validated and resolved to workspace ids.
    pub(super) async fn resolve_mounts(
        &self,
        requests: &[MountRequest],
    ) -> Result<Vec<WorkspaceMount>, ServiceError> {
        let mut mounts = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            let workspace = match self.find_workspace(&request.workspace).await {
                Ok(workspace) => workspace,
                Err(ServiceError::WorkspaceNotFound(_)) => {
                    return Err(ServiceError::WorkspaceNotFound(format!(
                        "{} (mounts[{i}].workspace)",
                        request.workspace
                    )));
                }
                Err(err) => return Err(err),
            };
            mounts.push(WorkspaceMount {
                workspace: workspace.id,
                path: request.path.clone(),
                read_only: true,
            });
        }
        WorkspaceMount::validate_all(&mounts).map_err(ServiceError::Invalid)?;
        Ok(mounts)
    }

    /// After a sandbox's record is gone: deletes the workspace it owned, or keeps it as a
    /// workspace of its own.
    pub(super) async fn release_workspace(&self, sandbox: &Sandbox, keep: bool) {
        let Some(id) = &sandbox.spec.workspace else {
            return;
        };
        let Ok(Some(workspace)) = self.store.workspace(id).await else {
            return;
        };
        if workspace.owner.as_ref() != Some(&sandbox.id) {
            return;
        }
        if keep {
            if let Err(e) = self.store.disown_workspace(id, self.clock.now()).await {
                tracing::warn!(workspace = %workspace.name, error = %e, "cannot keep the workspace of a deleted sandbox");
            }
            return;
        }
        self.discard_workspace(&workspace).await;
    }

    /// Removes a workspace's record and files, logging what could not be removed.
    pub(super) async fn discard_workspace(&self, workspace: &Workspace) {
        if let Err(e) = self.store.delete_workspace(&workspace.id).await {
            tracing::warn!(workspace = %workspace.name, error = %e, "cannot remove a workspace record");
            return;
        }
        let id = workspace.id.clone();
        if let Err(e) = self.blocking(move |s| s.delete_workspace(&id)).await {
            tracing::warn!(workspace = %workspace.name, error = %e, "removing a workspace's files failed; the next start sweeps them");
        }
        self.quotas().remove(&workspace.id);
    }

    pub(super) async fn make_workspace(&self, workspace: &Workspace) -> Result<(), ServiceError> {
        let id = workspace.id.clone();
        let generation = workspace.generation;
        self.blocking(move |s| s.create_tree(&id, generation))
            .await?;
        if let Err(err) = self.store.insert_workspace(workspace).await {
            let id = workspace.id.clone();
            let _ = self.blocking(move |s| s.delete_workspace(&id)).await;
            return Err(err.into());
        }
        self.apply_quota(workspace).await;
        if workspace.name.is_placeholder() {
            tracing::debug!(workspace = %workspace.name, workspace_id = %workspace.id, "warm pool workspace created");
        } else {
            tracing::info!(workspace = %workspace.name, workspace_id = %workspace.id, "workspace created");
        }
        Ok(())
    }

    async fn clone_into(
        &self,
        source: &Workspace,
        snapshot: &Snapshot,
        fork: &Workspace,
    ) -> Result<(), ServiceError> {
        let (src, snap, dst, generation) = (
            source.id.clone(),
            snapshot.id.clone(),
            fork.id.clone(),
            fork.generation,
        );
        self.blocking(move |s| s.clone_snapshot(&src, &snap, &dst, generation))
            .await?;
        if let Err(err) = self.store.insert_workspace(fork).await {
            let id = fork.id.clone();
            let _ = self.blocking(move |s| s.delete_workspace(&id)).await;
            return Err(err.into());
        }
        self.apply_quota(fork).await;
        Ok(())
    }

    pub(super) async fn apply_quota(&self, workspace: &Workspace) {
        let Some(mib) = workspace.quota_mib else {
            return;
        };
        let (id, generation) = (workspace.id.clone(), workspace.generation);
        let status = match self
            .blocking(move |s| s.set_quota(&id, generation, mib * 1024 * 1024))
            .await
        {
            Ok(status) => status,
            Err(e) => QuotaStatus::NotEnforced(format!("setting the quota failed: {e}")),
        };
        self.quotas().insert(workspace.id.clone(), status);
    }

    pub(super) async fn workspace_view(
        &self,
        workspace: Workspace,
    ) -> Result<WorkspaceView, ServiceError> {
        self.workspace_view_sized(workspace, true).await
    }

    /// The view of `workspace`, with its tree's size when `measure` (a walk of the tree).
    async fn workspace_view_sized(
        &self,
        workspace: Workspace,
        measure: bool,
    ) -> Result<WorkspaceView, ServiceError> {
        let (id, generation) = (workspace.id.clone(), workspace.generation);
        let size_bytes = if measure {
            self.blocking(move |s| s.size(&id, generation)).await.ok()
        } else {
            None
        };
        let used_by = self.store.sandboxes_using(&workspace.id).await?;
        let snapshots = self.store.snapshots_of(&workspace.id).await?.len();
        let quota = workspace
            .quota_mib
            .and_then(|_| self.quotas().get(&workspace.id).cloned());
        Ok(WorkspaceView {
            workspace,
            size_bytes,
            used_by,
            snapshots,
            quota,
            backend: self.storage.backend(),
        })
    }

    /// The sandbox that writes a workspace, if it is running: paused for a snapshot
    /// (where its driver can), so the snapshot sees no half-written state.
    async fn writer_to_freeze(
        &self,
        workspace: &Workspace,
    ) -> Result<Option<Sandbox>, ServiceError> {
        let Some(writer) = self.writer(workspace).await? else {
            return Ok(None);
        };
        if writer.state != SandboxState::Running {
            return Ok(None);
        }
        let runtime = writer.runtime.clone().unwrap_or_default();
        let driver = self.driver(writer.spec.driver)?;
        match driver.set_paused(&writer, &runtime, true).await {
            Ok(()) => Ok(Some(writer)),
            Err(e) => {
                tracing::debug!(sandbox_id = %writer.id, error = %e, "cannot pause the writer for a snapshot; taking it live");
                Ok(None)
            }
        }
    }

    async fn thaw_writer(&self, writer: &Sandbox) {
        let runtime = writer.runtime.clone().unwrap_or_default();
        if let Ok(driver) = self.driver(writer.spec.driver)
            && let Err(e) = driver.set_paused(writer, &runtime, false).await
        {
            tracing::warn!(sandbox_id = %writer.id, error = %e, "resuming a sandbox after a snapshot failed");
        }
    }

    /// The sandbox that mounts a workspace read-write, if any.
    pub(super) async fn writer(
        &self,
        workspace: &Workspace,
    ) -> Result<Option<Sandbox>, ServiceError> {
        let writer = self
            .store
            .sandboxes_using(&workspace.id)
            .await?
            .into_iter()
            .find(|(_, read_only)| !read_only);
        match writer {
            Some((id, _)) => Ok(self.store.sandbox(&id).await?),
            None => Ok(None),
        }
    }

    pub(super) async fn find_workspace(&self, id_or_name: &str) -> Result<Workspace, ServiceError> {
        let found = match WorkspaceId::parse(id_or_name) {
            Some(id) => self.store.workspace(&id).await?,
            None => match WorkspaceName::parse(id_or_name) {
                Ok(name) => self.store.workspace_by_name(&name).await?,
                Err(_) => None,
            },
        };
        found
            .filter(|w| !w.name.is_placeholder())
            .ok_or_else(|| ServiceError::WorkspaceNotFound(id_or_name.to_owned()))
    }

    async fn workspace_by_id(&self, id: &WorkspaceId) -> Result<Workspace, ServiceError> {
        self.store
            .workspace(id)
            .await?
            .ok_or_else(|| ServiceError::WorkspaceNotFound(id.to_string()))
    }

    pub(super) async fn find_snapshot(
        &self,
        workspace: &Workspace,
        id_or_name: &str,
    ) -> Result<Snapshot, ServiceError> {
        let found = match SnapshotId::parse(id_or_name) {
            Some(id) => self.store.snapshot(&id).await?,
            None => match SnapshotName::parse(id_or_name) {
                Ok(name) => self.store.snapshot_by_name(&workspace.id, &name).await?,
                Err(_) => None,
            },
        };
        match found {
            Some(snapshot) if snapshot.workspace == workspace.id => Ok(snapshot),
            Some(snapshot) => Err(ServiceError::SnapshotNotFound(format!(
                "snapshot {} belongs to another workspace ({}), not to {}; restore it there, or fork it with `nexusctl workspace fork`",
                snapshot.name, snapshot.workspace, workspace.name
            ))),
            None => Err(ServiceError::SnapshotNotFound(format!(
                "workspace {} has no snapshot {id_or_name:?}; `nexusctl workspace snapshots {}` lists them",
                workspace.name, workspace.name
            ))),
        }
    }

    async fn free_snapshot_name(
        &self,
        workspace: &Workspace,
    ) -> Result<SnapshotName, ServiceError> {
        let now = self.clock.now();
        let mut name = SnapshotName::generate(now);
        let mut n = 2;
        while self
            .store
            .snapshot_by_name(&workspace.id, &name)
            .await?
            .is_some()
        {
            name = SnapshotName::generate_nth(now, n);
            n += 1;
        }
        Ok(name)
    }

    /// `base` as a workspace name, or `base-2`, `base-3`… when taken.
    pub(super) async fn free_workspace_name(
        &self,
        base: &str,
    ) -> Result<WorkspaceName, ServiceError> {
        let mut candidate = base.to_owned();
        let mut n = 2;
        loop {
            let name = match WorkspaceName::parse(&candidate) {
                Ok(name) => name,
                Err(_) => return Ok(WorkspaceName::generate()),
            };
            if self.store.workspace_by_name(&name).await?.is_none() {
                return Ok(name);
            }
            candidate = format!("{base}-{n}");
            n += 1;
        }
    }

    pub(super) async fn sandbox_names(&self, ids: impl Iterator<Item = &SandboxId>) -> String {
        let mut names = Vec::new();
        for id in ids {
            match self.store.sandbox(id).await {
                Ok(Some(sandbox)) => names.push(sandbox.spec.name.to_string()),
                _ => names.push(id.to_string()),
            }
        }
        names.join(", ")
    }

    fn quotas(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, QuotaStatus>> {
        self.quotas.lock().expect("quota map is never poisoned")
    }

    /// Runs a storage call on the blocking pool.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn WorkspaceStorage) -> Result<T, crate::storage::StorageFault>
        + Send
        + 'static,
    ) -> Result<T, ServiceError> {
        let storage: Arc<dyn WorkspaceStorage> = self.storage.clone();
        tokio::task::spawn_blocking(move || call(storage.as_ref()))
            .await
            .map_err(|e| {
                ServiceError::Storage(crate::storage::StorageFault {
                    kind: crate::storage::StorageFaultKind::Other,
                    message: format!("a storage task failed: {e}"),
                })
            })?
            .map_err(ServiceError::Storage)
    }
}
