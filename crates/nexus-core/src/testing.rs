//! Fakes of the outside-world traits, for unit tests of the layers above the domain.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use async_trait::async_trait;

use crate::clock::{Clock, Timestamp};
use crate::store::{DatabaseInfo, Store, StoreError};

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct FakeClock {
    millis: AtomicI64,
}

impl FakeClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: AtomicI64::new(start.0),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

/// An in-memory store that can be told to fail.
#[derive(Debug)]
pub struct MemoryStore {
    failing: AtomicBool,
    info: Mutex<DatabaseInfo>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            failing: AtomicBool::new(false),
            info: Mutex::new(DatabaseInfo {
                backend: "memory",
                location: PathBuf::from(":memory:"),
                schema_version: 1,
                table_count: 0,
                size_bytes: 0,
            }),
        }
    }
}

impl MemoryStore {
    /// Makes every later call fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("memory store told to fail".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }

    async fn info(&self) -> Result<DatabaseInfo, StoreError> {
        self.check()?;
        Ok(self
            .info
            .lock()
            .expect("memory store lock is never poisoned")
            .clone())
    }
}
