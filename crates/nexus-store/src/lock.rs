//! The sidecar `<db>.lock` file that keeps a second daemon from writing the same database.
//!
//! SQLite's own locking only serialises transactions; two daemons could still each believe
//! they own every sandbox in the file. So [`DbLock`] takes an exclusive, non-blocking
//! `flock(2)` for as long as the store lives, and writes the holder's pid into the file so
//! that the refusal can say who holds it. `flock` locks belong to the open file description,
//! so a second open in the same process conflicts too, and the kernel drops the lock when
//! the process dies: a crashed daemon never leaves a stale lock behind. The file is opened
//! close-on-exec, so sandboxes spawned by the daemon do not inherit it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use nexus_core::StoreError;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::io;

/// An exclusive lock on a database, released when dropped.
#[derive(Debug)]
pub(crate) struct DbLock {
    /// The lock file, locked. Never read after the pid is written; it is kept for its lock.
    _file: Flock<File>,
}

impl DbLock {
    /// Locks `db` through its sidecar lock file, or reports who holds it.
    ///
    /// Never blocks: a held lock is an immediate [`StoreError::Locked`].
    pub(crate) fn acquire(db: &Path) -> Result<Self, StoreError> {
        let lock_path = lock_path(db);
        // No truncation here: until we hold the lock, the pid inside belongs to the holder.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open lock file", &lock_path))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::Locked {
                    path: db.to_path_buf(),
                    holder: holder(&lock_path),
                });
            }
            Err((_, errno)) => return Err(io("lock", &lock_path)(errno.into())),
        };
        file.set_len(0)
            .map_err(io("truncate lock file", &lock_path))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io("write pid into lock file", &lock_path))?;
        Ok(Self { _file: file })
    }
}

/// The lock file of a database: its path with `.lock` appended.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// ` (pid N)` from the lock file, or empty when the holder has not written its pid yet.
fn holder(lock_path: &Path) -> String {
    std::fs::read_to_string(lock_path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_appends_suffix() {
        assert_eq!(
            lock_path(Path::new("/s/nexus.db")),
            PathBuf::from("/s/nexus.db.lock")
        );
    }

    #[test]
    fn second_lock_is_refused_with_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("nexus.db");
        let first = DbLock::acquire(&db).expect("first lock");
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(lock_path(&db)).expect("read lock file"),
            format!("{pid}\n")
        );
        match DbLock::acquire(&db) {
            Err(StoreError::Locked { path, holder }) => {
                assert_eq!(path, db);
                assert_eq!(holder, format!(" (pid {pid})"));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        DbLock::acquire(&db).expect("lock again after drop");
    }

    #[test]
    fn unknown_holder_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.lock");
        std::fs::write(&path, "").expect("write");
        assert_eq!(holder(&path), "");
        assert_eq!(holder(&dir.path().join("missing")), "");
    }

    #[test]
    fn lock_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("nexus.db");
        let _lock = DbLock::acquire(&db).expect("lock");
        let mode = std::fs::metadata(lock_path(&db))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "lock file mode {mode:o}");
    }
}
