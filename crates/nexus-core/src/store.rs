//! The `Store` trait: durable state behind an interface that SQLite implements now
//! and PostgreSQL can implement later.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::sandbox::{Sandbox, SandboxId, SandboxName, SandboxState};

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

    /// Records a new sandbox. Fails with [`StoreError::NameTaken`] when its name is in use.
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
