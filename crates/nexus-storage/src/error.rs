//! The one error type of the storage layer.

use std::path::PathBuf;

use crate::Backend;
use crate::id::{IdKind, IdProblem};

/// What went wrong in a storage operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A workspace or snapshot id cannot name a directory safely.
    #[error("invalid {kind} {id:?}: {problem}")]
    InvalidId {
        /// Which kind of id.
        kind: IdKind,
        /// The id as given.
        id: String,
        /// Why it was refused.
        problem: IdProblem,
    },
    /// The tree, snapshot or workspace does not exist.
    #[error("{path} does not exist")]
    NotFound {
        /// Where it was expected.
        path: PathBuf,
    },
    /// The destination exists already; storage never overwrites.
    #[error("{path} exists already")]
    AlreadyExists {
        /// The destination.
        path: PathBuf,
    },
    /// The backend asked for cannot work on the filesystem of the root.
    #[error("backend {backend} cannot be used for {root}: {reason}")]
    BackendUnsupported {
        /// The backend asked for.
        backend: Backend,
        /// The storage root.
        root: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A system call failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done, as a verb phrase ("create", "snapshot", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Wraps a system error, naming the operation and the path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// The errno of an [`StorageError::Io`], if it is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            StorageError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A closure for `map_err` turning a nix error into [`StorageError::Io`].
pub(crate) fn sys<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(nix::errno::Errno) -> StorageError + use<'a> {
    move |errno| StorageError::io(op, path, errno)
}
