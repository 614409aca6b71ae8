//! Helpers shared by the unit tests of this crate.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// A database path two missing directories deep in `dir`.
pub(crate) fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("nexus").join("nexus.db")
}

/// A plain connection, as another program (or another build) would open it.
pub(crate) fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("raw open")
}

/// The schema version in the file.
pub(crate) fn version(path: &Path) -> u32 {
    raw(path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

/// Whether the schema has an object of that name.
pub(crate) fn table_exists(path: &Path, name: &str) -> bool {
    raw(path)
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .expect("query schema")
        == 1
}

/// The error and all its causes, as `{:#}` would show them.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        text = format!("{text}: {next}");
        cause = next.source();
    }
    text
}
