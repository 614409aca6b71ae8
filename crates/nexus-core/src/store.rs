//! The `Store` trait: durable state behind an interface that SQLite implements now
//! and PostgreSQL can implement later.

use std::path::PathBuf;

use async_trait::async_trait;

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
}
