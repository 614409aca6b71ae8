//! Opening the database file safely: directory, lock, version check, pragmas, migrations.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;
use std::time::Duration;

use nexus_core::StoreError;
use rusqlite::{Connection, OpenFlags};

use crate::error::{SqliteError, io, sql};
use crate::lock::DbLock;
use crate::migrations::{MIGRATIONS, Migration, ensure_known, migrate, read_version};
use crate::sqlite::SqliteStore;

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to this build's schema.
    ///
    /// Creates the parent directory with mode 0700 when missing. Blocks, so call it at
    /// startup or from a blocking task.
    ///
    /// # Errors
    ///
    /// - [`StoreError::Locked`] if another store, in this process or another, has the file open;
    /// - [`StoreError::TooNew`] if a newer build wrote it, in which case the file is untouched;
    /// - [`StoreError::Migration`] if a migration fails, leaving the version before it;
    /// - [`StoreError::Io`] or [`StoreError::Backend`] for anything else, naming the path.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_migrations(path, MIGRATIONS)
    }

    /// [`SqliteStore::open`] with another list of migrations, so that tests can play an older
    /// or a newer build. Not for production use.
    #[doc(hidden)]
    pub fn open_with_migrations(path: &Path, migrations: &[Migration]) -> Result<Self, StoreError> {
        create_parent(path)?;
        let lock = DbLock::acquire(path)?;

        // Refuse a newer database before anything writes to it. The probe is read-only: a
        // read-write connection could write on close (a WAL checkpoint), and switching the
        // journal mode to WAL rewrites the header.
        let exists = path.try_exists().map_err(io("check", path))?;
        if exists {
            let probe = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(sql("open (read-only)", path))?;
            ensure_known(path, read_version(&probe, path)?, migrations)?;
        }

        // No SQLITE_OPEN_URI: a state directory named `file:...` is a path, not a URI.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(sql("open", path))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("set busy timeout of", path))?;
        // Again, in case the file appeared between the probe and the open; reading writes nothing.
        ensure_known(path, read_version(&conn, path)?, migrations)?;
        configure(&conn, path)?;
        migrate(&mut conn, path, migrations)?;

        Ok(Self::from_parts(path.to_path_buf(), conn, lock))
    }
}

/// Creates the directory that holds the database, private to its owner, if it is missing.
fn create_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io("create directory", parent)),
        _ => Ok(()),
    }
}

/// Sets the per-connection pragmas and checks that write-ahead logging took.
fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql("enable write-ahead logging in", path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::NotWal {
            path: path.to_path_buf(),
            mode,
        }
        .into());
    }
    // In WAL mode NORMAL cannot corrupt the database; a power loss may only undo the last commits.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql("set synchronous mode of", path))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql("enable foreign keys in", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::test_support::{chain, db_in, raw, table_exists, version};

    #[test]
    fn fresh_open_creates_database_at_latest_version_in_wal_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_in(&dir);
        let store = SqliteStore::open(&db).expect("open");
        assert_eq!(store.path(), db);
        assert_eq!(version(&db) as usize, MIGRATIONS.len());
        let mode: String = raw(&db)
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        assert!(table_exists(&db, "meta"));
    }

    #[tokio::test]
    async fn connection_pragmas_are_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&db_in(&dir)).expect("open");
        let (synchronous, foreign_keys, busy_timeout) = store
            .with_connection(|conn, _| {
                let get = |name: &str| -> i64 {
                    conn.pragma_query_value(None, name, |r| r.get(0))
                        .expect("pragma")
                };
                Ok((get("synchronous"), get("foreign_keys"), get("busy_timeout")))
            })
            .await
            .expect("query");
        assert_eq!(synchronous, 1, "synchronous=NORMAL");
        assert_eq!(foreign_keys, 1);
        assert_eq!(busy_timeout, 5000);
    }

    #[test]
    fn reopen_is_idempotent_and_keeps_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_in(&dir);
        drop(SqliteStore::open(&db).expect("open"));
        raw(&db)
            .execute("INSERT INTO meta VALUES ('probe', 'kept')", [])
            .expect("insert");
        drop(SqliteStore::open(&db).expect("reopen"));
        drop(SqliteStore::open(&db).expect("reopen again"));
        assert_eq!(version(&db) as usize, MIGRATIONS.len());
        let value: String = raw(&db)
            .query_row("SELECT value FROM meta WHERE key = 'probe'", [], |r| {
                r.get(0)
            })
            .expect("row kept");
        assert_eq!(value, "kept");
    }

    #[test]
    fn too_new_database_is_refused_and_left_byte_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("nexus.db");
        {
            let conn = raw(&db);
            conn.execute_batch("CREATE TABLE t (x INTEGER); PRAGMA user_version = 99;")
                .expect("newer build's database");
        }
        let before = std::fs::read(&db).expect("read db");

        let err = SqliteStore::open(&db).expect_err("must refuse");
        match &err {
            StoreError::TooNew {
                path,
                found,
                supported,
            } => {
                assert_eq!(path, &db);
                assert_eq!(*found, 99);
                assert_eq!(*supported as usize, MIGRATIONS.len());
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&db.display().to_string()), "{message}");
        assert!(message.contains("99"), "{message}");
        assert!(
            message.contains(&format!("({})", MIGRATIONS.len())),
            "{message}"
        );

        assert_eq!(
            std::fs::read(&db).expect("read db"),
            before,
            "file was modified"
        );
        assert!(
            !dir.path().join("nexus.db-wal").exists(),
            "a WAL was created"
        );
    }

    /// A newer build's database in WAL mode, left with its last commits only in the WAL (as
    /// after a crash). Closing a read-write connection would checkpoint them into the main
    /// file, which is why the version is first read through a read-only connection.
    #[test]
    fn too_new_wal_database_is_refused_and_left_byte_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("nexus.db");
        let wal = dir.path().join("nexus.db-wal");
        {
            let newer = raw(&db);
            newer
                .execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                     CREATE TABLE t (x INTEGER); PRAGMA user_version = 9999;",
                )
                .expect("newer build's database");
            newer
                .set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    true,
                )
                .expect("no checkpoint on close");
        }
        let (db_before, wal_before) = (
            std::fs::read(&db).expect("db"),
            std::fs::read(&wal).expect("wal"),
        );

        let err = SqliteStore::open(&db).expect_err("must refuse");
        assert!(
            matches!(err, StoreError::TooNew { found: 9999, .. }),
            "{err:?}"
        );
        assert_eq!(
            std::fs::read(&db).expect("db"),
            db_before,
            "db file was modified"
        );
        assert_eq!(
            std::fs::read(&wal).expect("wal"),
            wal_before,
            "WAL was modified"
        );
    }

    #[test]
    fn second_open_is_locked_while_first_is_alive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_in(&dir);
        let first = SqliteStore::open(&db).expect("first open");
        let err = SqliteStore::open(&db).expect_err("second open must fail");
        let pid = std::process::id();
        match &err {
            StoreError::Locked { path, holder } => {
                assert_eq!(path, &db);
                assert_eq!(holder, &format!(" (pid {pid})"));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&format!("pid {pid}")), "{message}");
        assert!(message.contains(&db.display().to_string()), "{message}");

        // A clone keeps the lock alive.
        let clone = first.clone();
        drop(first);
        assert!(matches!(
            SqliteStore::open(&db),
            Err(StoreError::Locked { .. })
        ));
        drop(clone);
        drop(SqliteStore::open(&db).expect("open after drop"));
    }

    #[test]
    fn parent_directory_is_created_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_in(&dir);
        drop(SqliteStore::open(&db).expect("open"));
        for created in [
            dir.path().join("state"),
            dir.path().join("state").join("nexus"),
        ] {
            let mode = std::fs::metadata(&created)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{}: {mode:o}", created.display());
        }
    }

    #[test]
    fn unusable_parent_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "a file, not a directory").expect("write");
        let err = SqliteStore::open(&blocker.join("nexus.db")).expect_err("must fail");
        assert!(
            matches!(
                err,
                StoreError::Io {
                    action: "create directory",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&blocker.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn file_that_is_not_a_database_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("nexus.db");
        let junk = vec![0x5a_u8; 4096];
        std::fs::write(&db, &junk).expect("write");
        let err = SqliteStore::open(&db).expect_err("must fail");
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        assert!(
            chain(&err).contains(&db.display().to_string()),
            "{}",
            chain(&err)
        );
        assert_eq!(std::fs::read(&db).expect("read"), junk, "file was modified");
    }
}
