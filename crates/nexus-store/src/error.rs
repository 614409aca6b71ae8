//! Causes of [`StoreError::Backend`](nexus_core::StoreError::Backend) that name the database.

use std::path::{Path, PathBuf};

use nexus_core::StoreError;

/// A failure of SQLite or of the glue around it, always naming the database file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SqliteError {
    /// A statement or pragma failed.
    #[error("cannot {action} database {path}")]
    Sql {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// `PRAGMA user_version` holds something no build of Nexus writes.
    #[error("database {path} has an invalid schema version {found}")]
    InvalidVersion { path: PathBuf, found: i64 },
    /// SQLite would not switch the database to write-ahead logging.
    #[error("database {path} stayed in journal mode {mode:?} instead of \"wal\"")]
    NotWal { path: PathBuf, mode: String },
    /// A row holds a value no build of Nexus writes.
    #[error("database {path} holds an unreadable row: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// The blocking task running a query died (it panicked or the runtime is shutting down).
    #[error("database worker for {path} failed")]
    Worker {
        path: PathBuf,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<SqliteError> for StoreError {
    fn from(err: SqliteError) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

/// Returns a closure turning a [`rusqlite::Error`] into a [`StoreError`] that says what was being
/// done to which database, for use with `map_err`.
pub(crate) fn sql(action: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| {
        SqliteError::Sql {
            action,
            path,
            source,
        }
        .into()
    }
}

/// Returns a closure turning an [`std::io::Error`] into a [`StoreError::Io`] naming `path`.
pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}
