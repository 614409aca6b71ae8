//! Rows of the `snapshots` table.

use std::path::Path;

use nexus_core::{Snapshot, SnapshotId, SnapshotName, StoreError, Timestamp, WorkspaceId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::codec::{corrupt, get_u64, opt_u64, to_i64};
use crate::error::sql;
use crate::workspaces;

const COLUMNS: &str = "id, workspace_id, name, generation, size_bytes, created_at";

/// Inserts a new snapshot in one transaction: its workspace must be recorded
/// ([`StoreError::WorkspaceNotFound`]) and must not have a snapshot of that name yet
/// ([`StoreError::SnapshotNameTaken`]).
pub(crate) fn insert(conn: &mut Connection, path: &Path, s: &Snapshot) -> Result<(), StoreError> {
    let tx = workspaces::begin(conn, path)?;
    if !workspaces::exists(&tx, path, &s.workspace)? {
        return Err(StoreError::WorkspaceNotFound {
            id: s.workspace.clone(),
        });
    }
    let result = tx.execute(
        &format!("INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            s.id.as_str(),
            s.workspace.as_str(),
            s.name.as_str(),
            to_i64(s.generation),
            s.size_bytes.map(to_i64),
            s.created_at.0,
        ],
    );
    match result {
        Ok(_) => tx.commit().map_err(sql("commit a new snapshot to", path)),
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("snapshots.name") =>
        {
            Err(StoreError::SnapshotNameTaken {
                workspace: s.workspace.clone(),
                name: s.name.to_string(),
            })
        }
        Err(e) => Err(sql("insert a snapshot into", path)(e)),
    }
}

/// One snapshot by id.
pub(crate) fn by_id(
    conn: &Connection,
    path: &Path,
    id: &SnapshotId,
) -> Result<Option<Snapshot>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id.as_str()], from_row).optional())
        .map_err(sql("read a snapshot of", path))?
        .transpose()
        .map_err(|e| corrupt(path, e))
}

/// One snapshot of a workspace by name.
pub(crate) fn by_name(
    conn: &Connection,
    path: &Path,
    workspace: &WorkspaceId,
    name: &SnapshotName,
) -> Result<Option<Snapshot>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM snapshots WHERE workspace_id = ?1 AND name = ?2"
    ))
    .and_then(|mut stmt| {
        stmt.query_row([workspace.as_str(), name.as_str()], from_row)
            .optional()
    })
    .map_err(sql("read a snapshot of", path))?
    .transpose()
    .map_err(|e| corrupt(path, e))
}

/// Every snapshot of a workspace, oldest first.
pub(crate) fn of(
    conn: &Connection,
    path: &Path,
    workspace: &WorkspaceId,
) -> Result<Vec<Snapshot>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE workspace_id = ?1 ORDER BY created_at, id"
        ))
        .map_err(sql("list snapshots of", path))?;
    let rows = stmt
        .query_map([workspace.as_str()], from_row)
        .map_err(sql("list snapshots of", path))?;
    rows.map(|r| {
        r.map_err(sql("read a snapshot of", path))?
            .map_err(|e| corrupt(path, e))
    })
    .collect()
}

/// Deletes a snapshot's row; `false` when there was none.
pub(crate) fn delete(conn: &Connection, path: &Path, id: &SnapshotId) -> Result<bool, StoreError> {
    conn.execute("DELETE FROM snapshots WHERE id = ?1", [id.as_str()])
        .map(|n| n > 0)
        .map_err(sql("delete a snapshot from", path))
}

/// Decodes a row. The outer error is SQLite's; the inner one a value no build writes.
fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<Snapshot, String>> {
    let id: String = row.get(0)?;
    let workspace: String = row.get(1)?;
    let name: String = row.get(2)?;
    let decoded = (|| {
        Ok(Snapshot {
            id: SnapshotId::parse(&id).ok_or_else(|| format!("bad snapshot id {id:?}"))?,
            workspace: WorkspaceId::parse(&workspace)
                .ok_or_else(|| format!("bad workspace id {workspace:?} of {id}"))?,
            name: SnapshotName::parse(&name)?,
            generation: get_u64(row, 3)?,
            size_bytes: opt_u64(row, 4)?,
            created_at: Timestamp(row.get(5).map_err(|e| e.to_string())?),
        })
    })();
    Ok(decoded)
}
