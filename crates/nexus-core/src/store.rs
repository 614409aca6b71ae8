//! The `Store` trait: durable state behind an interface that SQLite implements now
//! and PostgreSQL can implement later.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::image::{Image, ImageId, ImageName};
use crate::sandbox::{Sandbox, SandboxId, SandboxName, SandboxState};
use crate::workspace::{Snapshot, SnapshotId, SnapshotName, Workspace, WorkspaceId, WorkspaceName};

/// What a store reports about itself, for health checks and `nexusctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// Backend name, e.g. `sqlite`.
    pub backend: &'static str,
    /// Where the data lives: a file path for SQLite.
    pub location: PathBuf,
    /// Schema version the database is at (number of migrations applied).
    pub schema_version: u32,
    /// Number of tables of the schema, excluding the backend's internal ones.
    pub table_count: u32,
    /// Bytes on disk, write-ahead log included.
    pub size_bytes: u64,
}

/// Errors of any store implementation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database for writing.
    #[error(
        "database {path} is in use by another nexusd{holder}; stop it, or give this one its own state directory (--state-dir or XDG_STATE_HOME)"
    )]
    Locked {
        /// The database that is locked.
        path: PathBuf,
        /// Who holds it, e.g. ` (pid 1234)`, or empty when unknown.
        holder: String,
    },
    /// The database was written by a newer build whose schema this build does not know.
    #[error(
        "database {path} has schema version {found}, newer than this build of nexus knows ({supported}); upgrade nexus, or point it at another state directory. The file was left untouched"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Highest version this build knows.
        supported: u32,
    },
    /// A migration failed; the database stays at the version before it.
    #[error(
        "migration {version} ({name}) of database {path} failed; the database was left at version {previous}"
    )]
    Migration {
        /// The database file.
        path: PathBuf,
        /// Version of the failing migration.
        version: u32,
        /// Its name.
        name: &'static str,
        /// Version the database stays at.
        previous: u32,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file-system operation around the database failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done, e.g. `create directory`.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Another sandbox already has this name.
    #[error("a sandbox named {name:?} already exists; choose another name or delete that one")]
    NameTaken {
        /// The name asked for.
        name: String,
    },
    /// A state change lost a race: the sandbox was no longer in the expected state.
    #[error("sandbox {id} is {found}, not {expected}")]
    StateChanged {
        /// The sandbox.
        id: SandboxId,
        /// The state the change expected.
        expected: SandboxState,
        /// The state found, or `deleted`.
        found: String,
    },
    /// The state machine does not allow this change (a bug in the caller).
    #[error("sandbox {id} cannot go from {from} to {to}")]
    IllegalTransition {
        /// The sandbox.
        id: SandboxId,
        /// Its state.
        from: SandboxState,
        /// The state asked for.
        to: SandboxState,
    },
    /// Another workspace already has this name.
    #[error("a workspace named {name:?} already exists; choose another name or delete that one")]
    WorkspaceNameTaken {
        /// The name asked for.
        name: String,
    },
    /// The workspace already has a snapshot of this name.
    #[error(
        "workspace {workspace} already has a snapshot named {name:?}; choose another name or delete that snapshot"
    )]
    SnapshotNameTaken {
        /// The workspace.
        workspace: WorkspaceId,
        /// The name asked for.
        name: String,
    },
    /// A workspace named by a change (or by a sandbox being recorded) is not recorded.
    #[error("workspace {id} does not exist")]
    WorkspaceNotFound {
        /// The workspace.
        id: WorkspaceId,
    },
    /// A generation change lost a race: the workspace's tree was replaced meanwhile.
    #[error("workspace {id} is at generation {found}, not {expected}")]
    GenerationChanged {
        /// The workspace.
        id: WorkspaceId,
        /// The generation the change expected.
        expected: u64,
        /// The generation found.
        found: u64,
    },
    /// Generations only grow (a bug in the caller).
    #[error("workspace {id} cannot go from generation {from} to {to}: generations only grow")]
    IllegalGeneration {
        /// The workspace.
        id: WorkspaceId,
        /// Its generation.
        from: u64,
        /// The generation asked for.
        to: u64,
    },
    /// A workspace cannot be deleted while sandboxes mount it.
    #[error(
        "workspace {id} is used by sandbox(es) {}; delete them first",
        join_ids(.sandboxes)
    )]
    WorkspaceInUse {
        /// The workspace.
        id: WorkspaceId,
        /// Every sandbox that mounts it, as `/workspace` or elsewhere, oldest first.
        sandboxes: Vec<SandboxId>,
    },
    /// Another image already has this name.
    #[error("an image named {name:?} already exists; choose another name or delete that one")]
    ImageNameTaken {
        /// The name asked for.
        name: String,
    },
    /// An image cannot be deleted while sandboxes record it.
    #[error("image {name} is used by sandbox(es) {}; delete them first", join_ids(.sandboxes))]
    ImageInUse {
        /// The image.
        name: String,
        /// Every sandbox on it, oldest first.
        sandboxes: Vec<SandboxId>,
    },
    /// A claim named a sandbox that is not (or no longer) waiting in the warm pool.
    #[error("sandbox {id} is not a warm-pool sandbox waiting to be claimed")]
    NotPooled {
        /// The sandbox.
        id: SandboxId,
    },
    /// The backend failed.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Durable state of one Nexus node (or, later, one cluster).
///
/// Every method is a transaction of its own: it either happens entirely or not at all.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Checks that the store answers queries right now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Facts about the database: location, schema version, size.
    async fn info(&self) -> Result<DatabaseInfo, StoreError>;

    /// Records a new sandbox. Fails with [`StoreError::NameTaken`] when its name is in use,
    /// and with [`StoreError::WorkspaceNotFound`] when its workspace or one of its mounts'
    /// is not recorded.
    async fn insert_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError>;

    /// The sandbox with this id, if any.
    async fn sandbox(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError>;

    /// The sandbox with this name, if any.
    async fn sandbox_by_name(&self, name: &SandboxName) -> Result<Option<Sandbox>, StoreError>;

    /// Every sandbox, oldest first.
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError>;

    /// Moves a sandbox from one state to another, atomically: fails with
    /// [`StoreError::StateChanged`] when it is no longer in `transition.from`.
    /// Returns the sandbox as stored afterwards.
    async fn transition_sandbox(&self, transition: &Transition) -> Result<Sandbox, StoreError>;

    /// Removes a sandbox's record; `false` when there was none.
    async fn delete_sandbox(&self, id: &SandboxId) -> Result<bool, StoreError>;

    /// Replaces a sandbox's network policy; returns the sandbox as stored, `None` when
    /// there is no such sandbox.
    async fn set_sandbox_network(
        &self,
        id: &SandboxId,
        network: &nexus_net::policy::PolicySpec,
    ) -> Result<Option<Sandbox>, StoreError>;

    /// Records a new workspace. Fails with [`StoreError::WorkspaceNameTaken`] when its
    /// name is in use.
    async fn insert_workspace(&self, workspace: &Workspace) -> Result<(), StoreError>;

    /// The workspace with this id, if any.
    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError>;

    /// The workspace with this name, if any.
    async fn workspace_by_name(
        &self,
        name: &WorkspaceName,
    ) -> Result<Option<Workspace>, StoreError>;

    /// Every workspace, oldest first.
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, StoreError>;

    /// Moves a workspace to a new tree generation, atomically: fails with
    /// [`StoreError::GenerationChanged`] when it is no longer at `expected`, and with
    /// [`StoreError::IllegalGeneration`] unless `new > expected`. Returns the workspace as
    /// stored afterwards.
    async fn set_workspace_generation(
        &self,
        id: &WorkspaceId,
        expected: u64,
        new: u64,
        at: Timestamp,
    ) -> Result<Workspace, StoreError>;

    /// Sets (or, with `None`, removes) a workspace's quota. Returns the workspace as
    /// stored afterwards.
    async fn set_workspace_quota(
        &self,
        id: &WorkspaceId,
        quota_mib: Option<u64>,
        at: Timestamp,
    ) -> Result<Workspace, StoreError>;

    /// Clears a workspace's owner, so that deleting the sandbox it was made for keeps it.
    /// Returns the workspace as stored afterwards.
    async fn disown_workspace(
        &self,
        id: &WorkspaceId,
        at: Timestamp,
    ) -> Result<Workspace, StoreError>;

    /// Removes a workspace's record and those of its snapshots; `false` when there was
    /// none. Fails with [`StoreError::WorkspaceInUse`] while any sandbox record mounts it,
    /// as its `/workspace` or elsewhere.
    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool, StoreError>;

    /// Records a new snapshot. Fails with [`StoreError::WorkspaceNotFound`] when its
    /// workspace is not recorded, and with [`StoreError::SnapshotNameTaken`] when the
    /// workspace already has a snapshot of that name.
    async fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// The snapshot with this id, if any.
    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>, StoreError>;

    /// The snapshot of `workspace` with this name, if any.
    async fn snapshot_by_name(
        &self,
        workspace: &WorkspaceId,
        name: &SnapshotName,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Every snapshot of a workspace, oldest first.
    async fn snapshots_of(&self, workspace: &WorkspaceId) -> Result<Vec<Snapshot>, StoreError>;

    /// Removes a snapshot's record; `false` when there was none.
    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError>;

    /// Every sandbox that mounts a workspace, oldest first, once each, with whether it may
    /// only read it (`false` when it has the workspace read-write anywhere).
    async fn sandboxes_using(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<(SandboxId, bool)>, StoreError>;

    /// Records a new image. Fails with [`StoreError::ImageNameTaken`] when its name is
    /// in use.
    async fn insert_image(&self, image: &Image) -> Result<(), StoreError>;

    /// The image with this id, if any.
    async fn image(&self, id: &ImageId) -> Result<Option<Image>, StoreError>;

    /// The image with this name, if any.
    async fn image_by_name(&self, name: &ImageName) -> Result<Option<Image>, StoreError>;

    /// Every image, oldest first.
    async fn list_images(&self) -> Result<Vec<Image>, StoreError>;

    /// Removes an image's record; `false` when there was none. Fails with
    /// [`StoreError::ImageInUse`] while any sandbox record names it.
    async fn delete_image(&self, id: &ImageId) -> Result<bool, StoreError>;

    /// Every sandbox whose image is `name`, oldest first.
    async fn sandboxes_using_image(&self, name: &str) -> Result<Vec<SandboxId>, StoreError>;

    /// Hands a warm-pool sandbox (one whose name is a placeholder) to a user, in one
    /// transaction: the sandbox takes the claim's name, environment, labels and TTL, its
    /// `created_at`, `updated_at` and `started_at` become `claim.at`, and its workspace
    /// takes `claim.workspace_name` (and `claim.at` as its times). Fails with
    /// [`StoreError::NotPooled`] when the sandbox is gone or already claimed,
    /// [`StoreError::NameTaken`] or [`StoreError::WorkspaceNameTaken`] when a name is in
    /// use; nothing changes then. Returns the sandbox as stored afterwards.
    async fn claim_pooled_sandbox(&self, claim: &PoolClaim) -> Result<Sandbox, StoreError>;
}

/// What a claimed warm-pool sandbox becomes: see [`Store::claim_pooled_sandbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct PoolClaim {
    /// The pooled sandbox.
    pub id: SandboxId,
    /// Its name from now on.
    pub name: SandboxName,
    /// Its environment.
    pub env: BTreeMap<String, String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its TTL, counted from `at`.
    pub ttl_seconds: Option<u64>,
    /// The moment of the claim: its creation and start, as far as the user can tell.
    pub at: Timestamp,
    /// The new name of its workspace.
    pub workspace_name: WorkspaceName,
}

impl PoolClaim {
    /// Applies the claim to a pooled sandbox and its workspace as read from a store,
    /// checking that the sandbox is still pooled and the workspace is its own. Every store
    /// implementation goes through this, so they agree. Name uniqueness is the store's.
    pub fn apply_to(
        &self,
        sandbox: &mut Sandbox,
        workspace: &mut Workspace,
    ) -> Result<(), StoreError> {
        if !sandbox.spec.name.is_placeholder()
            || sandbox.spec.workspace.as_ref() != Some(&workspace.id)
            || workspace.owner.as_ref() != Some(&sandbox.id)
        {
            return Err(StoreError::NotPooled {
                id: self.id.clone(),
            });
        }
        sandbox.spec.name = self.name.clone();
        sandbox.spec.env = self.env.clone();
        sandbox.spec.labels = self.labels.clone();
        sandbox.spec.ttl_seconds = self.ttl_seconds;
        sandbox.created_at = self.at;
        sandbox.updated_at = self.at;
        if sandbox.started_at.is_some() {
            sandbox.started_at = Some(self.at);
        }
        workspace.name = self.workspace_name.clone();
        workspace.created_at = self.at;
        workspace.updated_at = self.at;
        Ok(())
    }
}

/// A state change of one sandbox, applied only if it is still in `from` and the state
/// machine allows it. `from == to` only updates the runtime handle (and `updated_at`).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The sandbox.
    pub id: SandboxId,
    /// The state it must be in now.
    pub from: SandboxState,
    /// The state it moves to.
    pub to: SandboxState,
    /// When the change happens.
    pub at: Timestamp,
    /// Why it crashed; stored with `to == Crashed`, cleared otherwise.
    pub crash_reason: Option<String>,
    /// What happens to the driver's runtime handle.
    pub runtime: RuntimeUpdate,
}

/// What a transition does to the driver's runtime handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeUpdate {
    /// Leave it as it is.
    Keep,
    /// Replace it.
    Set(String),
    /// Remove it (nothing runs any more).
    Clear,
}

impl Transition {
    /// Applies this transition to a sandbox as read from a store, checking that it is
    /// still in `from`. Every store implementation goes through this, so they agree.
    pub fn apply_to(&self, sandbox: &mut Sandbox) -> Result<(), StoreError> {
        if sandbox.state != self.from {
            return Err(StoreError::StateChanged {
                id: self.id.clone(),
                expected: self.from,
                found: sandbox.state.as_str().to_owned(),
            });
        }
        if self.from != self.to && !self.from.can_become(self.to) {
            return Err(StoreError::IllegalTransition {
                id: self.id.clone(),
                from: self.from,
                to: self.to,
            });
        }
        sandbox.state = self.to;
        sandbox.updated_at = self.at;
        sandbox.crash_reason = if self.to == SandboxState::Crashed {
            self.crash_reason.clone()
        } else {
            None
        };
        if self.to == SandboxState::Running {
            sandbox.started_at = Some(self.at);
        }
        match &self.runtime {
            RuntimeUpdate::Keep => {}
            RuntimeUpdate::Set(runtime) => sandbox.runtime = Some(runtime.clone()),
            RuntimeUpdate::Clear => sandbox.runtime = None,
        }
        Ok(())
    }
}

/// Checks a generation change against a workspace as read from a store and applies it.
/// Every store implementation goes through this, so they agree.
pub fn apply_generation(
    workspace: &mut Workspace,
    expected: u64,
    new: u64,
    at: Timestamp,
) -> Result<(), StoreError> {
    if workspace.generation != expected {
        return Err(StoreError::GenerationChanged {
            id: workspace.id.clone(),
            expected,
            found: workspace.generation,
        });
    }
    if new <= expected {
        return Err(StoreError::IllegalGeneration {
            id: workspace.id.clone(),
            from: expected,
            to: new,
        });
    }
    workspace.generation = new;
    workspace.updated_at = at;
    Ok(())
}

/// `a, b, c` of a list of sandbox ids, for error messages.
fn join_ids(ids: &[SandboxId]) -> String {
    ids.iter()
        .map(SandboxId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
