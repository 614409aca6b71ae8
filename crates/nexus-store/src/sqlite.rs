//! [`SqliteStore`] and its [`Store`] implementation; opening it is in `open.rs`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use nexus_core::{
    DatabaseInfo, Image, ImageId, ImageName, NetworkSpec, PoolClaim, Sandbox, SandboxId,
    SandboxName, Snapshot, SnapshotId, SnapshotName, Store, StoreError, Timestamp, Transition,
    Workspace, WorkspaceId, WorkspaceName,
};
use rusqlite::Connection;

use crate::error::{SqliteError, io, sql};
use crate::lock::DbLock;
use crate::migrations::read_version;
use crate::{images, sandboxes, snapshots, workspaces};

/// The state database of one node, in a SQLite file.
///
/// Holds an exclusive lock on the file for as long as it (or a query it runs) lives.
/// Queries run on tokio's blocking pool, one at a time, so async callers are never blocked.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// What the store's clones and its in-flight queries share.
struct Inner {
    path: PathBuf,
    /// Declared before `_lock`, so the connection closes (and checkpoints) before unlocking.
    conn: Mutex<Connection>,
    _lock: DbLock,
}

impl SqliteStore {
    /// Wraps a configured, migrated connection and the lock that guards its file.
    pub(crate) fn from_parts(path: PathBuf, conn: Connection, lock: DbLock) -> Self {
        Self {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                _lock: lock,
            }),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with the connection on the blocking pool, one call at a time.
    ///
    /// This is how every query of the [`Store`] methods reaches SQLite.
    pub(crate) async fn with_connection<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the mutex cannot leave a half-done write: an unfinished
            // rusqlite transaction rolls back when dropped. So poisoning is safe to ignore.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &inner.path)
        })
        .await
        .map_err(|source| SqliteError::Worker {
            path: self.inner.path.clone(),
            source,
        })?
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.with_connection(|conn, path| {
            conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                .map(drop)
                .map_err(sql("query", path))
        })
        .await
    }

    async fn info(&self) -> Result<DatabaseInfo, StoreError> {
        self.with_connection(|conn, path| {
            let schema_version = read_version(conn, path)?;
            let table_count = conn
                .query_row(
                    r"SELECT count(*) FROM sqlite_schema
                      WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'",
                    [],
                    |row| row.get(0),
                )
                .map_err(sql("count tables of", path))?;
            let size_bytes = file_size(path)? + file_size(&wal_path(path))?;
            Ok(DatabaseInfo {
                backend: "sqlite",
                location: path.to_path_buf(),
                schema_version,
                table_count,
                size_bytes,
            })
        })
        .await
    }

    async fn insert_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError> {
        let sandbox = sandbox.clone();
        self.with_connection(move |conn, path| sandboxes::insert(conn, path, &sandbox))
            .await
    }

    async fn sandbox(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| sandboxes::by_id(conn, path, &id))
            .await
    }

    async fn sandbox_by_name(&self, name: &SandboxName) -> Result<Option<Sandbox>, StoreError> {
        let name = name.clone();
        self.with_connection(move |conn, path| sandboxes::by_name(conn, path, &name))
            .await
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError> {
        self.with_connection(|conn, path| sandboxes::list(conn, path))
            .await
    }

    async fn transition_sandbox(&self, transition: &Transition) -> Result<Sandbox, StoreError> {
        let transition = transition.clone();
        self.with_connection(move |conn, path| sandboxes::transition(conn, path, &transition))
            .await
    }

    async fn delete_sandbox(&self, id: &SandboxId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| sandboxes::delete(conn, path, &id))
            .await
    }

    async fn set_sandbox_network(
        &self,
        id: &SandboxId,
        network: &NetworkSpec,
    ) -> Result<Option<Sandbox>, StoreError> {
        let (id, network) = (id.clone(), network.clone());
        self.with_connection(move |conn, path| sandboxes::set_network(conn, path, &id, &network))
            .await
    }

    async fn insert_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        let workspace = workspace.clone();
        self.with_connection(move |conn, path| workspaces::insert(conn, path, &workspace))
            .await
    }

    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| workspaces::by_id(conn, path, &id))
            .await
    }

    async fn workspace_by_name(
        &self,
        name: &WorkspaceName,
    ) -> Result<Option<Workspace>, StoreError> {
        let name = name.clone();
        self.with_connection(move |conn, path| workspaces::by_name(conn, path, &name))
            .await
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        self.with_connection(|conn, path| workspaces::list(conn, path))
            .await
    }

    async fn set_workspace_generation(
        &self,
        id: &WorkspaceId,
        expected: u64,
        new: u64,
        at: Timestamp,
    ) -> Result<Workspace, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| {
            workspaces::set_generation(conn, path, &id, expected, new, at)
        })
        .await
    }

    async fn set_workspace_quota(
        &self,
        id: &WorkspaceId,
        quota_mib: Option<u64>,
        at: Timestamp,
    ) -> Result<Workspace, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| {
            workspaces::set_quota(conn, path, &id, quota_mib, at)
        })
        .await
    }

    async fn disown_workspace(
        &self,
        id: &WorkspaceId,
        at: Timestamp,
    ) -> Result<Workspace, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| workspaces::disown(conn, path, &id, at))
            .await
    }

    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| workspaces::delete(conn, path, &id))
            .await
    }

    async fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let snapshot = snapshot.clone();
        self.with_connection(move |conn, path| snapshots::insert(conn, path, &snapshot))
            .await
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| snapshots::by_id(conn, path, &id))
            .await
    }

    async fn snapshot_by_name(
        &self,
        workspace: &WorkspaceId,
        name: &SnapshotName,
    ) -> Result<Option<Snapshot>, StoreError> {
        let (workspace, name) = (workspace.clone(), name.clone());
        self.with_connection(move |conn, path| snapshots::by_name(conn, path, &workspace, &name))
            .await
    }

    async fn snapshots_of(&self, workspace: &WorkspaceId) -> Result<Vec<Snapshot>, StoreError> {
        let workspace = workspace.clone();
        self.with_connection(move |conn, path| snapshots::of(conn, path, &workspace))
            .await
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| snapshots::delete(conn, path, &id))
            .await
    }

    async fn sandboxes_using(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<(SandboxId, bool)>, StoreError> {
        let workspace = workspace.clone();
        self.with_connection(move |conn, path| workspaces::using(conn, path, &workspace))
            .await
    }

    async fn insert_image(&self, image: &Image) -> Result<(), StoreError> {
        let image = image.clone();
        self.with_connection(move |conn, path| images::insert(conn, path, &image))
            .await
    }

    async fn image(&self, id: &ImageId) -> Result<Option<Image>, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| images::query_one(conn, path, "id", id.as_str()))
            .await
    }

    async fn image_by_name(&self, name: &ImageName) -> Result<Option<Image>, StoreError> {
        let name = name.clone();
        self.with_connection(move |conn, path| images::query_one(conn, path, "name", name.as_str()))
            .await
    }

    async fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        self.with_connection(|conn, path| images::list(conn, path))
            .await
    }

    async fn delete_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.with_connection(move |conn, path| images::delete(conn, path, &id))
            .await
    }

    async fn sandboxes_using_image(&self, name: &str) -> Result<Vec<SandboxId>, StoreError> {
        let name = name.to_owned();
        self.with_connection(move |conn, path| images::using(conn, path, &name))
            .await
    }

    async fn claim_pooled_sandbox(&self, claim: &PoolClaim) -> Result<Sandbox, StoreError> {
        let claim = claim.clone();
        self.with_connection(move |conn, path| sandboxes::claim(conn, path, &claim))
            .await
    }
}

/// The write-ahead log of a database: its path with `-wal` appended.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Size of a file in bytes; 0 if it does not exist (a WAL between checkpoints may not).
fn file_size(path: &Path) -> Result<u64, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(io("stat", path)(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::{MIGRATIONS, Migration};

    #[tokio::test]
    async fn ping_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("nexus.db")).expect("open");
        store.ping().await.expect("ping");
    }

    #[tokio::test]
    async fn info_reports_version_tables_and_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("nexus.db");
        let store = SqliteStore::open(&db).expect("open");
        let info = store.info().await.expect("info");
        assert_eq!(info.backend, "sqlite");
        assert_eq!(info.location, db);
        assert_eq!(info.schema_version as usize, MIGRATIONS.len());
        assert_eq!(
            info.table_count, 5,
            "meta, sandboxes, workspaces, snapshots and images"
        );
        let on_disk = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let (main, wal) = (on_disk(&db), on_disk(&wal_path(&db)));
        assert!(wal > 0, "the migration's commit should still be in the WAL");
        assert_eq!(info.size_bytes, main + wal);
    }

    /// Indexes, views and SQLite's own tables (here `sqlite_sequence`) are not schema tables.
    #[tokio::test]
    async fn info_counts_only_schema_tables() {
        const SCHEMA: Migration = Migration {
            version: 1,
            name: "schema",
            sql: "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, x TEXT) STRICT;
                  CREATE TABLE b (a_id INTEGER NOT NULL REFERENCES a (id)) STRICT;
                  CREATE INDEX b_a ON b (a_id);
                  CREATE VIEW v AS SELECT x FROM a;
                  INSERT INTO a (x) VALUES ('one');",
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_with_migrations(&dir.path().join("nexus.db"), &[SCHEMA])
            .expect("open");
        let info = store.info().await.expect("info");
        assert_eq!((info.schema_version, info.table_count), (1, 2));
    }

    #[test]
    fn wal_path_appends_suffix() {
        assert_eq!(
            wal_path(Path::new("/s/nexus.db")),
            PathBuf::from("/s/nexus.db-wal")
        );
    }

    #[test]
    fn debug_shows_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("nexus.db");
        let store = SqliteStore::open(&db).expect("open");
        assert!(format!("{store:?}").contains(&db.display().to_string()));
    }
}
