//! Rows of the `sandboxes` table and the queries over them.

use std::path::Path;

use nexus_core::{
    DriverKind, Limits, NetworkSpec, PoolClaim, Sandbox, SandboxId, SandboxName, SandboxSpec,
    SandboxState, StoreError, Timestamp, Transition, WorkspaceId,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::codec::{
    corrupt, from_json, mounts_from_json, mounts_to_json, opt_u64, to_i64, to_json,
};
use crate::error::sql;
use crate::workspaces;

const COLUMNS: &str = "id, name, image, driver, state, crash_reason, env, labels, memory_mib, \
                       cpus, pids, tmp_mib, ttl_seconds, created_at, updated_at, started_at, runtime, \
                       workspace_id, mounts, network";

/// Inserts a new sandbox in one transaction; a taken name is [`StoreError::NameTaken`], a
/// workspace (its own or a mount's) that is not recorded [`StoreError::WorkspaceNotFound`].
pub(crate) fn insert(conn: &mut Connection, path: &Path, s: &Sandbox) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin a transaction on", path))?;
    let used = s
        .spec
        .workspace
        .iter()
        .chain(s.spec.mounts.iter().map(|m| &m.workspace));
    for id in used {
        if !workspaces::exists(&tx, path, id)? {
            return Err(StoreError::WorkspaceNotFound { id: id.clone() });
        }
    }
    let result = tx.execute(
        &format!("INSERT INTO sandboxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"),
        params![
            s.id.as_str(),
            s.spec.name.as_str(),
            s.spec.image,
            s.spec.driver.as_str(),
            s.state.as_str(),
            s.crash_reason,
            to_json(&s.spec.env),
            to_json(&s.spec.labels),
            s.spec.limits.memory_mib.map(to_i64),
            s.spec.limits.cpus,
            s.spec.limits.pids.map(to_i64),
            s.spec.limits.tmp_mib.map(to_i64),
            s.spec.ttl_seconds.map(to_i64),
            s.created_at.0,
            s.updated_at.0,
            s.started_at.map(|t| t.0),
            s.runtime,
            s.spec.workspace.as_ref().map(WorkspaceId::as_str),
            mounts_to_json(&s.spec.mounts),
            network_to_json(&s.spec.network),
        ],
    );
    match result {
        Ok(_) => tx.commit().map_err(sql("commit a new sandbox to", path)),
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("sandboxes.name") =>
        {
            Err(StoreError::NameTaken {
                name: s.spec.name.to_string(),
            })
        }
        Err(e) => Err(sql("insert a sandbox into", path)(e)),
    }
}

/// One sandbox by id.
pub(crate) fn by_id(
    conn: &Connection,
    path: &Path,
    id: &SandboxId,
) -> Result<Option<Sandbox>, StoreError> {
    query_one(conn, path, "id", id.as_str())
}

/// One sandbox by name.
pub(crate) fn by_name(
    conn: &Connection,
    path: &Path,
    name: &SandboxName,
) -> Result<Option<Sandbox>, StoreError> {
    query_one(conn, path, "name", name.as_str())
}

/// Every sandbox, oldest first.
pub(crate) fn list(conn: &Connection, path: &Path) -> Result<Vec<Sandbox>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sandboxes ORDER BY created_at, id"
        ))
        .map_err(sql("list sandboxes of", path))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(sql("list sandboxes of", path))?;
    rows.map(|r| {
        r.map_err(sql("read a sandbox of", path))?
            .map_err(|e| corrupt(path, e))
    })
    .collect()
}

/// Applies a transition in one write transaction: read, check, update.
pub(crate) fn transition(
    conn: &mut Connection,
    path: &Path,
    t: &Transition,
) -> Result<Sandbox, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin a transaction on", path))?;
    let Some(mut sandbox) = query_one(&tx, path, "id", t.id.as_str())? else {
        return Err(StoreError::StateChanged {
            id: t.id.clone(),
            expected: t.from,
            found: "deleted".into(),
        });
    };
    t.apply_to(&mut sandbox)?;
    tx.execute(
        "UPDATE sandboxes SET state = ?2, crash_reason = ?3, updated_at = ?4, started_at = ?5, runtime = ?6 WHERE id = ?1",
        params![
            sandbox.id.as_str(),
            sandbox.state.as_str(),
            sandbox.crash_reason,
            sandbox.updated_at.0,
            sandbox.started_at.map(|t| t.0),
            sandbox.runtime,
        ],
    )
    .map_err(sql("update a sandbox in", path))?;
    tx.commit()
        .map_err(sql("commit a sandbox change to", path))?;
    Ok(sandbox)
}

/// Replaces a sandbox's network policy; `None` when there is no such sandbox.
pub(crate) fn set_network(
    conn: &mut Connection,
    path: &Path,
    id: &SandboxId,
    network: &NetworkSpec,
) -> Result<Option<Sandbox>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin a transaction on", path))?;
    let changed = tx
        .execute(
            "UPDATE sandboxes SET network = ?2 WHERE id = ?1",
            params![id.as_str(), network_to_json(network)],
        )
        .map_err(sql("update a sandbox's network policy in", path))?;
    if changed == 0 {
        return Ok(None);
    }
    let sandbox = query_one(&tx, path, "id", id.as_str())?;
    tx.commit()
        .map_err(sql("commit a network policy to", path))?;
    Ok(sandbox)
}

/// Claims a warm-pool sandbox in one write transaction: both rows are read, checked by
/// [`PoolClaim::apply_to`], and rewritten; a taken name is [`StoreError::NameTaken`] or
/// [`StoreError::WorkspaceNameTaken`] and rolls everything back.
pub(crate) fn claim(
    conn: &mut Connection,
    path: &Path,
    claim: &PoolClaim,
) -> Result<Sandbox, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin a transaction on", path))?;
    let not_pooled = || StoreError::NotPooled {
        id: claim.id.clone(),
    };
    let mut sandbox = query_one(&tx, path, "id", claim.id.as_str())?.ok_or_else(not_pooled)?;
    let ws_id = sandbox.spec.workspace.clone().ok_or_else(not_pooled)?;
    let mut workspace = workspaces::by_id(&tx, path, &ws_id)?.ok_or_else(not_pooled)?;
    claim.apply_to(&mut sandbox, &mut workspace)?;
    let renamed = tx.execute(
        "UPDATE sandboxes SET name = ?2, env = ?3, labels = ?4, ttl_seconds = ?5, \
         created_at = ?6, updated_at = ?7, started_at = ?8 WHERE id = ?1",
        params![
            sandbox.id.as_str(),
            sandbox.spec.name.as_str(),
            to_json(&sandbox.spec.env),
            to_json(&sandbox.spec.labels),
            sandbox.spec.ttl_seconds.map(to_i64),
            sandbox.created_at.0,
            sandbox.updated_at.0,
            sandbox.started_at.map(|t| t.0),
        ],
    );
    match renamed {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("sandboxes.name") =>
        {
            return Err(StoreError::NameTaken {
                name: claim.name.to_string(),
            });
        }
        Err(e) => return Err(sql("claim a pooled sandbox in", path)(e)),
    }
    let renamed = tx.execute(
        "UPDATE workspaces SET name = ?2, created_at = ?3, updated_at = ?4 WHERE id = ?1",
        params![
            workspace.id.as_str(),
            workspace.name.as_str(),
            workspace.created_at.0,
            workspace.updated_at.0,
        ],
    );
    match renamed {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("workspaces.name") =>
        {
            return Err(StoreError::WorkspaceNameTaken {
                name: claim.workspace_name.to_string(),
            });
        }
        Err(e) => return Err(sql("rename a pooled sandbox's workspace in", path)(e)),
    }
    tx.commit()
        .map_err(sql("commit a pooled sandbox's claim to", path))?;
    Ok(sandbox)
}

fn network_to_json(network: &NetworkSpec) -> String {
    serde_json::to_string(network).expect("lists of strings always serialize")
}

/// Deletes a sandbox's row; `false` when there was none.
pub(crate) fn delete(conn: &Connection, path: &Path, id: &SandboxId) -> Result<bool, StoreError> {
    conn.execute("DELETE FROM sandboxes WHERE id = ?1", [id.as_str()])
        .map(|n| n > 0)
        .map_err(sql("delete a sandbox from", path))
}

fn query_one(
    conn: &Connection,
    path: &Path,
    column: &str,
    value: &str,
) -> Result<Option<Sandbox>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sandboxes WHERE {column} = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([value], from_row).optional())
    .map_err(sql("read a sandbox of", path))?
    .transpose()
    .map_err(|e| corrupt(path, e))
}

/// Decodes a row. The outer error is SQLite's; the inner one a value no build writes.
fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<Sandbox, String>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let driver: String = row.get(3)?;
    let state: String = row.get(4)?;
    let env: String = row.get(6)?;
    let labels: String = row.get(7)?;
    let workspace: Option<String> = row.get(17)?;
    let mounts: String = row.get(18)?;
    let network: String = row.get(19)?;
    let decoded = (|| {
        Ok(Sandbox {
            id: SandboxId::parse(&id).ok_or_else(|| format!("bad sandbox id {id:?}"))?,
            spec: SandboxSpec {
                name: SandboxName::parse_stored(&name)?,
                image: row.get(2).map_err(|e| e.to_string())?,
                driver: DriverKind::parse(&driver)
                    .ok_or_else(|| format!("unknown driver {driver:?} of {id}"))?,
                env: from_json(&env)?,
                labels: from_json(&labels)?,
                limits: Limits {
                    memory_mib: opt_u64(row, 8)?,
                    cpus: row.get(9).map_err(|e| e.to_string())?,
                    pids: opt_u64(row, 10)?,
                    tmp_mib: opt_u64(row, 11)?,
                },
                ttl_seconds: opt_u64(row, 12)?,
                workspace: workspace
                    .map(|w| {
                        WorkspaceId::parse(&w)
                            .ok_or_else(|| format!("bad workspace id {w:?} of {id}"))
                    })
                    .transpose()?,
                mounts: mounts_from_json(&mounts)?,
                network: serde_json::from_str(&network)
                    .map_err(|e| format!("bad network policy of {id}: {e}"))?,
            },
            state: SandboxState::parse(&state)
                .ok_or_else(|| format!("unknown state {state:?} of {id}"))?,
            crash_reason: row.get(5).map_err(|e| e.to_string())?,
            created_at: Timestamp(row.get(13).map_err(|e| e.to_string())?),
            updated_at: Timestamp(row.get(14).map_err(|e| e.to_string())?),
            started_at: row
                .get::<_, Option<i64>>(15)
                .map_err(|e| e.to_string())?
                .map(Timestamp),
            runtime: row.get(16).map_err(|e| e.to_string())?,
        })
    })();
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use nexus_core::{RuntimeUpdate, Store};

    use super::*;
    use crate::SqliteStore;
    use crate::test_support::db_in;

    fn sandbox(name: &str) -> Sandbox {
        Sandbox {
            id: SandboxId::generate(),
            spec: SandboxSpec {
                name: SandboxName::parse(name).expect("name"),
                image: "host".into(),
                driver: DriverKind::Bwrap,
                env: BTreeMap::from([("A".into(), "1".into())]),
                labels: BTreeMap::from([("team".into(), "x".into())]),
                limits: Limits {
                    memory_mib: Some(256),
                    cpus: Some(0.5),
                    pids: Some(64),
                    tmp_mib: None,
                },
                ttl_seconds: Some(60),
                workspace: None,
                mounts: Vec::new(),
                network: NetworkSpec::default(),
            },
            state: SandboxState::Created,
            crash_reason: None,
            created_at: Timestamp(1_000),
            updated_at: Timestamp(1_000),
            started_at: None,
            runtime: None,
        }
    }

    fn open() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&db_in(&dir)).expect("open");
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn a_sandbox_round_trips_every_field() {
        let (_dir, store) = open();
        let original = sandbox("web");
        store.insert_sandbox(&original).await.expect("insert");
        assert_eq!(
            store.sandbox(&original.id).await.expect("get"),
            Some(original.clone())
        );
        assert_eq!(
            store
                .sandbox_by_name(&original.spec.name)
                .await
                .expect("get"),
            Some(original.clone())
        );
        assert_eq!(store.list_sandboxes().await.expect("list"), vec![original]);
    }

    #[tokio::test]
    async fn names_are_unique() {
        let (_dir, store) = open();
        store.insert_sandbox(&sandbox("web")).await.expect("first");
        let err = store
            .insert_sandbox(&sandbox("web"))
            .await
            .expect_err("second");
        assert!(
            matches!(err, StoreError::NameTaken { ref name } if name == "web"),
            "{err:?}"
        );
        assert_eq!(store.list_sandboxes().await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn transitions_are_compare_and_set() {
        let (_dir, store) = open();
        let s = sandbox("web");
        store.insert_sandbox(&s).await.expect("insert");
        let to_starting = Transition {
            id: s.id.clone(),
            from: SandboxState::Created,
            to: SandboxState::Starting,
            at: Timestamp(2_000),
            crash_reason: None,
            runtime: RuntimeUpdate::Set("{\"pid\":1}".into()),
        };
        let after = store
            .transition_sandbox(&to_starting)
            .await
            .expect("created -> starting");
        assert_eq!(
            (after.state, after.runtime.as_deref()),
            (SandboxState::Starting, Some("{\"pid\":1}"))
        );
        // The same change again lost the race: the sandbox is no longer `created`.
        let err = store
            .transition_sandbox(&to_starting)
            .await
            .expect_err("stale");
        assert!(
            matches!(err, StoreError::StateChanged { ref found, .. } if found == "starting"),
            "{err:?}"
        );

        let crashed = Transition {
            from: SandboxState::Starting,
            to: SandboxState::Crashed,
            at: Timestamp(3_000),
            crash_reason: Some("agent exited".into()),
            runtime: RuntimeUpdate::Clear,
            ..to_starting
        };
        let after = store
            .transition_sandbox(&crashed)
            .await
            .expect("starting -> crashed");
        let stored = store.sandbox(&s.id).await.expect("get").expect("exists");
        assert_eq!(after, stored);
        assert_eq!(stored.crash_reason.as_deref(), Some("agent exited"));
        assert_eq!(stored.runtime, None);
        assert_eq!(stored.updated_at, Timestamp(3_000));
    }

    #[tokio::test]
    async fn delete_removes_the_row_and_frees_the_name() {
        let (_dir, store) = open();
        let s = sandbox("web");
        store.insert_sandbox(&s).await.expect("insert");
        assert!(store.delete_sandbox(&s.id).await.expect("delete"));
        assert!(!store.delete_sandbox(&s.id).await.expect("delete again"));
        assert_eq!(store.sandbox(&s.id).await.expect("get"), None);
        store
            .insert_sandbox(&sandbox("web"))
            .await
            .expect("the name is free again");
    }

    #[tokio::test]
    async fn sandboxes_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sandbox("web");
        {
            let store = SqliteStore::open(&db_in(&dir)).expect("open");
            store.insert_sandbox(&s).await.expect("insert");
        }
        let store = SqliteStore::open(&db_in(&dir)).expect("reopen");
        assert_eq!(store.sandbox(&s.id).await.expect("get"), Some(s));
    }

    #[tokio::test]
    async fn a_version_1_database_upgrades_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_in(&dir);
        {
            let old =
                SqliteStore::open_with_migrations(&path, &crate::MIGRATIONS[..1]).expect("v1");
            drop(old);
            let conn = crate::test_support::raw(&path);
            conn.execute("INSERT INTO meta (key, value) VALUES ('mark', 'kept')", [])
                .expect("mark");
        }
        let store = SqliteStore::open(&path).expect("upgrade");
        assert_eq!(
            store.info().await.expect("info").schema_version as usize,
            crate::MIGRATIONS.len()
        );
        let conn = crate::test_support::raw(&path);
        let mark: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'mark'", [], |r| {
                r.get(0)
            })
            .expect("mark");
        assert_eq!(mark, "kept");
        store
            .insert_sandbox(&sandbox("after-upgrade"))
            .await
            .expect("the new table works");
    }

    /// Sandboxes recorded before workspaces existed keep their private directory: they
    /// come back with no workspace and no mounts, every other field intact.
    #[tokio::test]
    async fn a_version_3_sandbox_upgrades_without_a_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_in(&dir);
        let mut old = sandbox("old-one");
        old.state = SandboxState::Paused;
        old.runtime = Some("{\"pid\":7}".into());
        drop(SqliteStore::open_with_migrations(&path, &crate::MIGRATIONS[..3]).expect("v3"));
        crate::test_support::raw(&path)
            .execute(
                "INSERT INTO sandboxes (id, name, image, driver, state, crash_reason, env, labels,
                     memory_mib, cpus, pids, tmp_mib, ttl_seconds, created_at, updated_at,
                     started_at, runtime)
                 VALUES (?1, ?2, 'host', 'bwrap', 'paused', NULL, '{\"A\":\"1\"}',
                     '{\"team\":\"x\"}', 256, 0.5, 64, NULL, 60, 1000, 1000, NULL, ?3)",
                params![old.id.as_str(), old.spec.name.as_str(), old.runtime],
            )
            .expect("a version-3 row");

        let store = SqliteStore::open(&path).expect("upgrade");
        assert_eq!(
            crate::test_support::version(&path) as usize,
            crate::migrations::MIGRATIONS.len()
        );
        let found = store.sandbox(&old.id).await.expect("get").expect("kept");
        assert_eq!(found.spec.workspace, None);
        assert_eq!(found.spec.mounts, vec![]);
        assert_eq!(found, old);
        assert_eq!(
            store
                .sandboxes_using(&WorkspaceId::generate())
                .await
                .expect("users"),
            vec![]
        );
    }
}
