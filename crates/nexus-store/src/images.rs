//! Rows of the `images` table, and which sandboxes name each image.

use std::path::Path;

use nexus_core::{Image, ImageId, ImageName, ImageSource, SandboxId, StoreError, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::codec::{corrupt, get_u64, to_i64};
use crate::error::sql;
use crate::workspaces::begin;

const COLUMNS: &str = "id, name, source_kind, origin, packages, tool, size_bytes, created_at";

/// Inserts a new image; a taken name is [`StoreError::ImageNameTaken`].
pub(crate) fn insert(conn: &Connection, path: &Path, image: &Image) -> Result<(), StoreError> {
    let (origin, packages, tool) = match &image.source {
        ImageSource::Imported { from_dir } => (from_dir.as_str(), "[]".to_owned(), ""),
        ImageSource::Built {
            from,
            packages,
            tool,
        } => (
            from.as_str(),
            serde_json::to_string(packages).expect("a list of strings always serializes"),
            tool.as_str(),
        ),
    };
    let result = conn.execute(
        &format!("INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            image.id.as_str(),
            image.name.as_str(),
            image.source.kind(),
            origin,
            packages,
            tool,
            to_i64(image.size_bytes),
            image.created_at.0,
        ],
    );
    match result {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("images.name") =>
        {
            Err(StoreError::ImageNameTaken {
                name: image.name.to_string(),
            })
        }
        Err(e) => Err(sql("insert an image into", path)(e)),
    }
}

/// One image by `id` or `name`.
pub(crate) fn query_one(
    conn: &Connection,
    path: &Path,
    column: &str,
    value: &str,
) -> Result<Option<Image>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM images WHERE {column} = ?1"))
        .and_then(|mut stmt| stmt.query_row([value], from_row).optional())
        .map_err(sql("read an image of", path))?
        .transpose()
        .map_err(|e| corrupt(path, e))
}

/// Every image, oldest first.
pub(crate) fn list(conn: &Connection, path: &Path) -> Result<Vec<Image>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM images ORDER BY created_at, id"
        ))
        .map_err(sql("list images of", path))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(sql("list images of", path))?;
    rows.map(|r| {
        r.map_err(sql("read an image of", path))?
            .map_err(|e| corrupt(path, e))
    })
    .collect()
}

/// Deletes an image in one write transaction, unless a sandbox names it; `false` when
/// there was none.
pub(crate) fn delete(conn: &mut Connection, path: &Path, id: &ImageId) -> Result<bool, StoreError> {
    let tx = begin(conn, path)?;
    let name: Option<String> = tx
        .query_row(
            "SELECT name FROM images WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("read an image of", path))?;
    let Some(name) = name else {
        return Ok(false);
    };
    let users = using(&tx, path, &name)?;
    if !users.is_empty() {
        return Err(StoreError::ImageInUse {
            name,
            sandboxes: users,
        });
    }
    tx.execute("DELETE FROM images WHERE id = ?1", [id.as_str()])
        .map_err(sql("delete an image from", path))?;
    tx.commit()
        .map_err(sql("commit an image deletion to", path))?;
    Ok(true)
}

/// The sandboxes whose image is `name`, oldest first.
pub(crate) fn using(
    conn: &Connection,
    path: &Path,
    name: &str,
) -> Result<Vec<SandboxId>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM sandboxes WHERE image = ?1 ORDER BY created_at, id")
        .map_err(sql("find the users of an image in", path))?;
    let rows = stmt
        .query_map([name], |row| row.get::<_, String>(0))
        .map_err(sql("find the users of an image in", path))?;
    rows.map(|r| {
        let id = r.map_err(sql("find the users of an image in", path))?;
        SandboxId::parse(&id).ok_or_else(|| corrupt(path, format!("bad sandbox id {id:?}")))
    })
    .collect()
}

/// Decodes a row. The outer error is SQLite's; the inner one a value no build writes.
fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<Image, String>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let kind: String = row.get(2)?;
    let origin: String = row.get(3)?;
    let packages: String = row.get(4)?;
    let tool: String = row.get(5)?;
    let decoded = (|| {
        let source = match kind.as_str() {
            "imported" => ImageSource::Imported { from_dir: origin },
            "built" => ImageSource::Built {
                from: origin,
                packages: serde_json::from_str(&packages)
                    .map_err(|e| format!("bad package list {packages:?}: {e}"))?,
                tool,
            },
            other => return Err(format!("bad image source kind {other:?}")),
        };
        Ok(Image {
            id: ImageId::parse(&id).ok_or_else(|| format!("bad image id {id:?}"))?,
            name: ImageName::parse(&name)?,
            source,
            size_bytes: get_u64(row, 6)?,
            created_at: Timestamp(row.get(7).map_err(|e| e.to_string())?),
        })
    })();
    Ok(decoded)
}
