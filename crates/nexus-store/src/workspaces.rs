//! Rows of the `workspaces` table, and which sandboxes use each workspace.

use std::path::Path;

use nexus_core::store::apply_generation;
use nexus_core::{SandboxId, StoreError, Timestamp, Workspace, WorkspaceId, WorkspaceName};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use crate::codec::{corrupt, from_json, get_u64, opt_u64, to_i64, to_json};
use crate::error::sql;

const COLUMNS: &str =
    "id, name, generation, quota_mib, labels, owner_sandbox_id, created_at, updated_at";

/// Inserts a new workspace; a taken name is [`StoreError::WorkspaceNameTaken`].
pub(crate) fn insert(conn: &Connection, path: &Path, w: &Workspace) -> Result<(), StoreError> {
    let result = conn.execute(
        &format!("INSERT INTO workspaces ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            w.id.as_str(),
            w.name.as_str(),
            to_i64(w.generation),
            w.quota_mib.map(to_i64),
            to_json(&w.labels),
            w.owner.as_ref().map(SandboxId::as_str),
            w.created_at.0,
            w.updated_at.0,
        ],
    );
    match result {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("workspaces.name") =>
        {
            Err(StoreError::WorkspaceNameTaken {
                name: w.name.to_string(),
            })
        }
        Err(e) => Err(sql("insert a workspace into", path)(e)),
    }
}

/// One workspace by id.
pub(crate) fn by_id(
    conn: &Connection,
    path: &Path,
    id: &WorkspaceId,
) -> Result<Option<Workspace>, StoreError> {
    query_one(conn, path, "id", id.as_str())
}

/// One workspace by name.
pub(crate) fn by_name(
    conn: &Connection,
    path: &Path,
    name: &WorkspaceName,
) -> Result<Option<Workspace>, StoreError> {
    query_one(conn, path, "name", name.as_str())
}

/// Whether a workspace is recorded.
pub(crate) fn exists(conn: &Connection, path: &Path, id: &WorkspaceId) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM workspaces WHERE id = ?1")
        .and_then(|mut stmt| stmt.exists([id.as_str()]))
        .map_err(sql("read a workspace of", path))
}

/// Every workspace, oldest first.
pub(crate) fn list(conn: &Connection, path: &Path) -> Result<Vec<Workspace>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM workspaces ORDER BY created_at, id"
        ))
        .map_err(sql("list workspaces of", path))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(sql("list workspaces of", path))?;
    rows.map(|r| {
        r.map_err(sql("read a workspace of", path))?
            .map_err(|e| corrupt(path, e))
    })
    .collect()
}

/// Compare-and-set of the generation, in one write transaction.
pub(crate) fn set_generation(
    conn: &mut Connection,
    path: &Path,
    id: &WorkspaceId,
    expected: u64,
    new: u64,
    at: Timestamp,
) -> Result<Workspace, StoreError> {
    update(conn, path, id, |w| apply_generation(w, expected, new, at))
}

/// Sets or removes the quota, in one write transaction.
pub(crate) fn set_quota(
    conn: &mut Connection,
    path: &Path,
    id: &WorkspaceId,
    quota_mib: Option<u64>,
    at: Timestamp,
) -> Result<Workspace, StoreError> {
    update(conn, path, id, |w| {
        w.quota_mib = quota_mib;
        w.updated_at = at;
        Ok(())
    })
}

/// Clears the owner, in one write transaction.
pub(crate) fn disown(
    conn: &mut Connection,
    path: &Path,
    id: &WorkspaceId,
    at: Timestamp,
) -> Result<Workspace, StoreError> {
    update(conn, path, id, |w| {
        w.owner = None;
        w.updated_at = at;
        Ok(())
    })
}

/// Deletes a workspace and its snapshots in one write transaction, unless a sandbox uses
/// it; `false` when there was none.
pub(crate) fn delete(
    conn: &mut Connection,
    path: &Path,
    id: &WorkspaceId,
) -> Result<bool, StoreError> {
    let tx = begin(conn, path)?;
    let users = using(&tx, path, id)?;
    if !users.is_empty() {
        return Err(StoreError::WorkspaceInUse {
            id: id.clone(),
            sandboxes: users.into_iter().map(|(s, _)| s).collect(),
        });
    }
    tx.execute(
        "DELETE FROM snapshots WHERE workspace_id = ?1",
        [id.as_str()],
    )
    .map_err(sql("delete the snapshots of a workspace from", path))?;
    let deleted = tx
        .execute("DELETE FROM workspaces WHERE id = ?1", [id.as_str()])
        .map_err(sql("delete a workspace from", path))?;
    tx.commit()
        .map_err(sql("commit a workspace deletion to", path))?;
    Ok(deleted > 0)
}

/// The sandboxes that mount a workspace, oldest first, each with whether it only reads it.
///
/// Mounts live in a JSON column, so that half of the lookup scans the sandboxes; a node
/// holds few enough of them for that to stay cheap.
pub(crate) fn using(
    conn: &Connection,
    path: &Path,
    id: &WorkspaceId,
) -> Result<Vec<(SandboxId, bool)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id,
                    workspace_id IS ?1 OR EXISTS (
                        SELECT 1 FROM json_each(sandboxes.mounts)
                        WHERE json_extract(value, '$.workspace') = ?1
                          AND json_extract(value, '$.read_only') = 0)
             FROM sandboxes
             WHERE workspace_id = ?1 OR EXISTS (
                        SELECT 1 FROM json_each(sandboxes.mounts)
                        WHERE json_extract(value, '$.workspace') = ?1)
             ORDER BY created_at, id",
        )
        .map_err(sql("find the users of a workspace in", path))?;
    let rows = stmt
        .query_map([id.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?))
        })
        .map_err(sql("find the users of a workspace in", path))?;
    rows.map(|r| {
        let (sandbox, writes) = r.map_err(sql("find the users of a workspace in", path))?;
        let sandbox = SandboxId::parse(&sandbox)
            .ok_or_else(|| corrupt(path, format!("bad sandbox id {sandbox:?}")))?;
        Ok((sandbox, !writes))
    })
    .collect()
}

/// Begins a write transaction, taking the lock up front.
pub(crate) fn begin<'c>(
    conn: &'c mut Connection,
    path: &Path,
) -> Result<Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin a transaction on", path))
}

/// Reads a workspace, changes it with `change` and writes it back, in one transaction.
fn update(
    conn: &mut Connection,
    path: &Path,
    id: &WorkspaceId,
    change: impl FnOnce(&mut Workspace) -> Result<(), StoreError>,
) -> Result<Workspace, StoreError> {
    let tx = begin(conn, path)?;
    let Some(mut workspace) = query_one(&tx, path, "id", id.as_str())? else {
        return Err(StoreError::WorkspaceNotFound { id: id.clone() });
    };
    change(&mut workspace)?;
    tx.execute(
        "UPDATE workspaces SET generation = ?2, quota_mib = ?3, owner_sandbox_id = ?4, updated_at = ?5 WHERE id = ?1",
        params![
            workspace.id.as_str(),
            to_i64(workspace.generation),
            workspace.quota_mib.map(to_i64),
            workspace.owner.as_ref().map(SandboxId::as_str),
            workspace.updated_at.0,
        ],
    )
    .map_err(sql("update a workspace in", path))?;
    tx.commit()
        .map_err(sql("commit a workspace change to", path))?;
    Ok(workspace)
}

fn query_one(
    conn: &Connection,
    path: &Path,
    column: &str,
    value: &str,
) -> Result<Option<Workspace>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM workspaces WHERE {column} = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([value], from_row).optional())
    .map_err(sql("read a workspace of", path))?
    .transpose()
    .map_err(|e| corrupt(path, e))
}

/// Decodes a row. The outer error is SQLite's; the inner one a value no build writes.
fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<Workspace, String>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let labels: String = row.get(4)?;
    let owner: Option<String> = row.get(5)?;
    let decoded = (|| {
        Ok(Workspace {
            id: WorkspaceId::parse(&id).ok_or_else(|| format!("bad workspace id {id:?}"))?,
            name: WorkspaceName::parse_stored(&name)?,
            generation: get_u64(row, 2)?,
            quota_mib: opt_u64(row, 3)?,
            labels: from_json(&labels)?,
            owner: owner
                .map(|o| SandboxId::parse(&o).ok_or_else(|| format!("bad owner {o:?} of {id}")))
                .transpose()?,
            created_at: Timestamp(row.get(6).map_err(|e| e.to_string())?),
            updated_at: Timestamp(row.get(7).map_err(|e| e.to_string())?),
        })
    })();
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use nexus_core::testing::contract;
    use nexus_core::{SnapshotName, Store};

    use super::*;
    use crate::SqliteStore;
    use crate::test_support::{db_in, raw};

    /// One test per store contract scenario, each on a fresh database file.
    macro_rules! contract_tests {
        ($($scenario:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $scenario() {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(&db_in(&dir)).expect("open");
                contract::$scenario(&store).await;
            }
        )*};
    }

    contract_tests!(
        workspaces_round_trip,
        workspace_names_are_unique,
        generations_are_compare_and_set,
        quota_and_owner_change,
        snapshots_are_named_per_workspace,
        deleting_a_workspace_deletes_its_snapshots,
        workspaces_in_use_are_kept,
        sandboxes_need_recorded_workspaces,
        images_round_trip_and_are_kept_while_used,
        network_policies_round_trip_and_are_replaced,
        pooled_sandboxes_are_claimed_in_one_change,
    );

    #[tokio::test]
    async fn workspaces_snapshots_and_mounts_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ws = contract::workspace("data", 1_000);
        ws.owner = Some(SandboxId::generate());
        let tools = contract::workspace("tools", 1_000);
        let snap = contract::snapshot(&ws, "v1", 2_000);
        let sandbox = contract::sandbox(
            "web",
            3_000,
            Some(&ws),
            vec![contract::mount(&tools, "/mnt/tools", true)],
        );
        let moved = {
            let store = SqliteStore::open(&db_in(&dir)).expect("open");
            store.insert_workspace(&ws).await.expect("insert");
            store.insert_workspace(&tools).await.expect("insert");
            store.insert_snapshot(&snap).await.expect("snapshot");
            store.insert_sandbox(&sandbox).await.expect("sandbox");
            store
                .set_workspace_generation(&ws.id, 1, 2, Timestamp(4_000))
                .await
                .expect("restore")
        };
        let store = SqliteStore::open(&db_in(&dir)).expect("reopen");
        assert_eq!(store.workspace(&ws.id).await.expect("get"), Some(moved));
        assert_eq!(
            store
                .snapshot_by_name(&ws.id, &SnapshotName::parse("v1").expect("name"))
                .await
                .expect("snapshot"),
            Some(snap)
        );
        assert_eq!(
            store.sandbox(&sandbox.id).await.expect("get"),
            Some(sandbox.clone())
        );
        assert_eq!(
            store.sandboxes_using(&tools.id).await.expect("users"),
            vec![(sandbox.id, true)]
        );
    }

    /// The foreign keys back the store's own checks: even a raw delete cannot leave a
    /// sandbox or a snapshot pointing at a workspace that is gone.
    #[tokio::test]
    async fn foreign_keys_guard_workspace_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_in(&dir);
        let store = SqliteStore::open(&path).expect("open");
        let ws = contract::workspace("data", 1_000);
        store.insert_workspace(&ws).await.expect("insert");
        store
            .insert_snapshot(&contract::snapshot(&ws, "v1", 2_000))
            .await
            .expect("snapshot");
        let err = store
            .with_connection(move |conn, _| {
                conn.execute("DELETE FROM workspaces WHERE id = ?1", [ws.id.as_str()])
                    .map_err(|e| StoreError::Backend(Box::new(e)))
            })
            .await
            .expect_err("a workspace with snapshots");
        let cause = std::error::Error::source(&err).expect("cause").to_string();
        assert!(cause.contains("FOREIGN KEY"), "{cause}");
    }

    #[tokio::test]
    async fn an_unreadable_mounts_column_names_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_in(&dir);
        let store = SqliteStore::open(&path).expect("open");
        let sandbox = contract::sandbox("web", 1_000, None, vec![]);
        store.insert_sandbox(&sandbox).await.expect("insert");
        raw(&path)
            .execute("UPDATE sandboxes SET mounts = '{}'", [])
            .expect("corrupt");
        let err = store.sandbox(&sandbox.id).await.expect_err("unreadable");
        let cause = std::error::Error::source(&err).expect("cause").to_string();
        assert!(
            cause.contains("not a JSON array") && cause.contains(&path.display().to_string()),
            "{cause}"
        );
    }
}
