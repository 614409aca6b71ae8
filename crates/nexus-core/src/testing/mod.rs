//! Fakes of the outside-world traits, for unit tests of the layers above the domain.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use async_trait::async_trait;

mod driver;

pub use driver::FakeDriver;

use crate::clock::{Clock, Timestamp};
use crate::sandbox::{Sandbox, SandboxId, SandboxName};
use crate::store::{DatabaseInfo, Store, StoreError, Transition};

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
    sandboxes: Mutex<Vec<Sandbox>>,
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
            sandboxes: Mutex::new(Vec::new()),
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

    async fn insert_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError> {
        self.check()?;
        let mut all = self.rows();
        if all.iter().any(|s| s.spec.name == sandbox.spec.name) {
            return Err(StoreError::NameTaken {
                name: sandbox.spec.name.to_string(),
            });
        }
        all.push(sandbox.clone());
        Ok(())
    }

    async fn sandbox(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        self.check()?;
        Ok(self.rows().iter().find(|s| &s.id == id).cloned())
    }

    async fn sandbox_by_name(&self, name: &SandboxName) -> Result<Option<Sandbox>, StoreError> {
        self.check()?;
        Ok(self.rows().iter().find(|s| &s.spec.name == name).cloned())
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError> {
        self.check()?;
        Ok(self.rows().clone())
    }

    async fn transition_sandbox(&self, transition: &Transition) -> Result<Sandbox, StoreError> {
        self.check()?;
        let mut all = self.rows();
        let Some(sandbox) = all.iter_mut().find(|s| s.id == transition.id) else {
            return Err(StoreError::StateChanged {
                id: transition.id.clone(),
                expected: transition.from,
                found: "deleted".into(),
            });
        };
        transition.apply_to(sandbox)?;
        Ok(sandbox.clone())
    }

    async fn delete_sandbox(&self, id: &SandboxId) -> Result<bool, StoreError> {
        self.check()?;
        let mut all = self.rows();
        let before = all.len();
        all.retain(|s| &s.id != id);
        Ok(all.len() != before)
    }
}

impl MemoryStore {
    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<Sandbox>> {
        self.sandboxes
            .lock()
            .expect("memory store lock is never poisoned")
    }
}
