//! The schema's versioned migrations and the runner that applies them.
//!
//! The runner is hand-written rather than taken from `rusqlite_migration`: that crate
//! had no release compatible with rusqlite 0.41 when this was written, and what we need
//! is small. The schema version is SQLite's `PRAGMA user_version`, which lives in the
//! database header and so commits or rolls back together with each migration.

use std::path::Path;

use nexus_core::StoreError;
use rusqlite::{Connection, TransactionBehavior};

use crate::error::{SqliteError, sql};

/// One step of the schema: the SQL that takes the database from `version - 1` to `version`.
///
/// The SQL must not contain `BEGIN` or `COMMIT`: the runner wraps each migration in a
/// transaction of its own, together with the bump of the schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The version the database is at once this migration is applied; 1 for the first.
    pub version: u32,
    /// Short name, the file name without its number, e.g. `init`.
    pub name: &'static str,
    /// The statements, from `migrations/NNNN_name.sql`.
    pub sql: &'static str,
}

/// Every migration this build knows, in order; version `n` is at index `n - 1`.
///
/// To change the schema, add a file `migrations/NNNN_name.sql` and list it here. Never edit
/// a migration that has been released.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "sandboxes",
        sql: include_str!("../migrations/0002_sandboxes.sql"),
    },
    Migration {
        version: 3,
        name: "paused",
        sql: include_str!("../migrations/0003_paused.sql"),
    },
    Migration {
        version: 4,
        name: "workspaces",
        sql: include_str!("../migrations/0004_workspaces.sql"),
    },
    Migration {
        version: 5,
        name: "images",
        sql: include_str!("../migrations/0005_images.sql"),
    },
    Migration {
        version: 6,
        name: "network",
        sql: include_str!("../migrations/0006_network.sql"),
    },
];

/// The highest version a list of migrations reaches.
pub(crate) fn latest_version(migrations: &[Migration]) -> u32 {
    migrations.last().map_or(0, |m| m.version)
}

/// Reads the schema version (`PRAGMA user_version`) without writing anything.
pub(crate) fn read_version(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql("read schema version of", path))?;
    u32::try_from(found).map_err(|_| {
        SqliteError::InvalidVersion {
            path: path.to_path_buf(),
            found,
        }
        .into()
    })
}

/// Fails with [`StoreError::TooNew`] when `found` is beyond what `migrations` reach.
pub(crate) fn ensure_known(
    path: &Path,
    found: u32,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let supported = latest_version(migrations);
    if found > supported {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    Ok(())
}

/// Applies the migrations the database lacks, each in its own transaction, and returns the
/// version reached.
///
/// A failing migration is rolled back entirely and reported as [`StoreError::Migration`];
/// the ones before it stay applied.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<u32, StoreError> {
    debug_assert!(
        migrations.iter().zip(1..).all(|(m, n)| m.version == n),
        "migration versions must be 1, 2, 3, ... in order"
    );
    let found = read_version(conn, path)?;
    ensure_known(path, found, migrations)?;
    let mut current = found;
    for migration in migrations.iter().filter(|m| m.version > found) {
        apply(conn, migration).map_err(|source| StoreError::Migration {
            path: path.to_path_buf(),
            version: migration.version,
            name: migration.name,
            previous: current,
            source: Box::new(source),
        })?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            path = %path.display(),
            "migration applied"
        );
        current = migration.version;
    }
    Ok(current)
}

/// Runs one migration and records its version, atomically.
fn apply(conn: &mut Connection, migration: &Migration) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock up front rather than fail half-way on a busy database.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(migration.sql)?;
    tx.pragma_update(None, "user_version", migration.version)?;
    // Dropping `tx` on an early return above rolls the whole migration back.
    tx.commit()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::SqliteStore;
    use crate::test_support::{chain, db_in, raw, table_exists, version};

    const NOTES: Migration = Migration {
        version: 1,
        name: "notes",
        sql: "CREATE TABLE notes (body TEXT NOT NULL) STRICT;",
    };
    const TAGS: Migration = Migration {
        version: 2,
        name: "tags",
        sql: "ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT 'none';",
    };
    /// Creates a table, then fails: the table must not survive.
    const BROKEN: Migration = Migration {
        version: 2,
        name: "broken",
        sql: "CREATE TABLE half (x INTEGER) STRICT; INSERT INTO no_such_table VALUES (1);",
    };

    #[test]
    fn versions_are_contiguous_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{migration:?}");
            assert!(
                !migration.sql.trim().is_empty(),
                "{} is empty",
                migration.name
            );
        }
        assert_eq!(latest_version(MIGRATIONS) as usize, MIGRATIONS.len());
    }

    /// A file added to `migrations/` but not listed in [`MIGRATIONS`] would never run.
    #[test]
    fn every_migration_file_is_listed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<(u32, String)> = std::fs::read_dir(&dir)
            .expect("read migrations directory")
            .map(|entry| {
                let name = entry.expect("directory entry").file_name();
                let name = name.to_str().expect("utf-8 file name").to_owned();
                let stem = name.strip_suffix(".sql").expect("only .sql files");
                let (number, rest) = stem.split_once('_').expect("NNNN_name.sql");
                assert_eq!(number.len(), 4, "{name}: four-digit version");
                (number.parse().expect("numeric version"), rest.to_owned())
            })
            .collect();
        files.sort();
        let listed: Vec<(u32, String)> = MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name.to_owned()))
            .collect();
        assert_eq!(files, listed);
    }

    #[test]
    fn migrate_applies_pending_only_and_reports_version() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new(":memory:");
        let latest = latest_version(MIGRATIONS);
        assert_eq!(
            migrate(&mut conn, path, MIGRATIONS).expect("migrate"),
            latest
        );
        // A second run applies nothing; rerunning 0001 would fail on CREATE TABLE meta.
        assert_eq!(
            migrate(&mut conn, path, MIGRATIONS).expect("migrate again"),
            latest
        );
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM meta", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1);
    }

    #[test]
    fn negative_user_version_is_invalid() {
        let conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "user_version", -3).expect("set");
        let err = read_version(&conn, Path::new("/x/nexus.db")).expect_err("must fail");
        let cause = std::error::Error::source(&err).expect("cause").to_string();
        assert!(
            cause.contains("/x/nexus.db") && cause.contains("-3"),
            "{cause}"
        );
    }

    #[test]
    fn created_at_is_recorded_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_in(&dir);
        let now_ms = || {
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970");
            i64::try_from(since.as_millis()).expect("fits")
        };
        let created_at = || -> i64 {
            let text: String = raw(&db)
                .query_row("SELECT value FROM meta WHERE key = 'created_at'", [], |r| {
                    r.get(0)
                })
                .expect("created_at");
            text.parse().expect("unix milliseconds")
        };
        let before = now_ms();
        drop(SqliteStore::open(&db).expect("open"));
        let first = created_at();
        assert!((before..=now_ms()).contains(&first), "{before} <= {first}");
        std::thread::sleep(Duration::from_millis(5));
        drop(SqliteStore::open(&db).expect("reopen"));
        assert_eq!(created_at(), first);
    }

    #[test]
    fn upgrade_in_place_keeps_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_in(&dir);
        drop(SqliteStore::open_with_migrations(&db, &[NOTES]).expect("old build"));
        assert_eq!(version(&db), 1);
        raw(&db)
            .execute("INSERT INTO notes (body) VALUES ('hello')", [])
            .expect("insert");

        drop(SqliteStore::open_with_migrations(&db, &[NOTES, TAGS]).expect("new build"));
        assert_eq!(version(&db), 2);
        let (body, tag): (String, String) = raw(&db)
            .query_row("SELECT body, tag FROM notes", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("row kept");
        assert_eq!((body.as_str(), tag.as_str()), ("hello", "none"));
    }

    #[test]
    fn failing_migration_rolls_back_and_keeps_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_in(&dir);
        let err = SqliteStore::open_with_migrations(&db, &[NOTES, BROKEN]).expect_err("must fail");
        match &err {
            StoreError::Migration {
                path,
                version,
                name,
                previous,
                ..
            } => {
                assert_eq!(path, &db);
                assert_eq!((*version, *name, *previous), (2, "broken", 1));
            }
            other => panic!("expected Migration, got {other:?}"),
        }
        let message = chain(&err);
        assert!(message.contains("no_such_table"), "{message}");
        assert!(message.contains(&db.display().to_string()), "{message}");

        assert_eq!(version(&db), 1, "version moved");
        assert!(table_exists(&db, "notes"), "migration 1 was lost");
        assert!(!table_exists(&db, "half"), "half of migration 2 was kept");
        // The failure released the lock and left a usable database.
        drop(SqliteStore::open_with_migrations(&db, &[NOTES]).expect("reopen with old build"));
    }
}
