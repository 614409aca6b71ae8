//! The SQLite implementation of [`nexus_core::Store`], with its versioned migrations.
//!
//! [`SqliteStore::open`] takes an exclusive lock beside the database file (so two
//! daemons never write the same state), refuses databases written by a newer build
//! without touching them, and brings older ones up to date one migration at a time.
//!
//! This is the only crate of Nexus that knows SQL.

mod codec;
mod error;
mod images;
mod lock;
mod migrations;
mod open;
mod sandboxes;
mod snapshots;
mod sqlite;
#[cfg(test)]
mod test_support;
mod workspaces;

pub use migrations::{MIGRATIONS, Migration};
pub use sqlite::SqliteStore;
