//! Conversions between domain values and the column values the tables store them as.

use std::collections::BTreeMap;
use std::path::Path;

use nexus_core::{StoreError, WorkspaceId, WorkspaceMount};
use rusqlite::Row;
use serde_json::{Value, json};

use crate::error::SqliteError;

/// An optional non-negative integer column.
pub(crate) fn opt_u64(row: &Row<'_>, index: usize) -> Result<Option<u64>, String> {
    let value: Option<i64> = row.get(index).map_err(|e| e.to_string())?;
    value
        .map(|v| u64::try_from(v).map_err(|_| format!("negative value {v} in column {index}")))
        .transpose()
}

/// A non-negative integer column.
pub(crate) fn get_u64(row: &Row<'_>, index: usize) -> Result<u64, String> {
    let value: i64 = row.get(index).map_err(|e| e.to_string())?;
    u64::try_from(value).map_err(|_| format!("negative value {value} in column {index}"))
}

/// A `u64` as SQLite's `INTEGER`, saturating (no quantity we store comes near `i64::MAX`).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A map of strings as a JSON object.
pub(crate) fn to_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("a map of strings always serializes")
}

/// A JSON object of strings.
pub(crate) fn from_json(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text).map_err(|e| format!("bad JSON map {text:?}: {e}"))
}

/// Mounts as a JSON array of `{"workspace", "path", "read_only"}` objects.
pub(crate) fn mounts_to_json(mounts: &[WorkspaceMount]) -> String {
    Value::Array(
        mounts
            .iter()
            .map(|m| {
                json!({
                    "workspace": m.workspace.as_str(),
                    "path": m.path,
                    "read_only": m.read_only,
                })
            })
            .collect(),
    )
    .to_string()
}

/// The mounts written by [`mounts_to_json`].
pub(crate) fn mounts_from_json(text: &str) -> Result<Vec<WorkspaceMount>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("bad JSON mounts {text:?}: {e}"))?;
    let items = value
        .as_array()
        .ok_or_else(|| format!("mounts {text:?} are not a JSON array"))?;
    items
        .iter()
        .map(|item| {
            let bad = || format!("bad mount {item} in {text:?}");
            Ok(WorkspaceMount {
                workspace: item
                    .get("workspace")
                    .and_then(Value::as_str)
                    .and_then(WorkspaceId::parse)
                    .ok_or_else(bad)?,
                path: item
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?
                    .to_owned(),
                read_only: item
                    .get("read_only")
                    .and_then(Value::as_bool)
                    .ok_or_else(bad)?,
            })
        })
        .collect()
}

/// A row holding a value no build writes, as a [`StoreError`] naming the database.
pub(crate) fn corrupt(path: &Path, detail: String) -> StoreError {
    SqliteError::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_round_trip_through_json() {
        let mounts = vec![
            WorkspaceMount {
                workspace: WorkspaceId::generate(),
                path: "/mnt/data".into(),
                read_only: true,
            },
            WorkspaceMount {
                workspace: WorkspaceId::generate(),
                path: "/mnt/\"odd\" name".into(),
                read_only: false,
            },
        ];
        assert_eq!(mounts_from_json(&mounts_to_json(&mounts)), Ok(mounts));
        assert_eq!(mounts_to_json(&[]), "[]");
        assert_eq!(mounts_from_json("[]"), Ok(vec![]));
    }

    #[test]
    fn unreadable_mounts_are_reported() {
        for bad in [
            "{}",
            "not json",
            r#"[{"workspace":"nope","path":"/x","read_only":true}]"#,
            r#"[{"workspace":"ws-0123456789abcdef","path":"/x"}]"#,
        ] {
            assert!(mounts_from_json(bad).is_err(), "{bad:?} accepted");
        }
    }
}
