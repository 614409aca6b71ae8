//! The Nexus domain: the traits the daemon is built on and the types they speak.
//!
//! This crate knows nothing of HTTP, SQL or command lines. The daemon wires real
//! implementations (`nexus-store`, the drivers) behind these traits; unit tests use
//! the fakes in [`testing`] (feature `testing`).

pub mod clock;
pub mod driver;
mod id;
pub mod image;
pub mod paths;
pub mod sandbox;
pub mod service;
pub mod storage;
pub mod store;
pub mod workspace;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use clock::{Clock, SystemClock, Timestamp};
pub use driver::{
    AgentStream, Driver, DriverError, Isolation, LimitEnforcement, ReadOnlyMount, SandboxMounts,
    Started, Usage, WorkspaceSwap,
};
pub use image::{HOST_IMAGE, Image, ImageId, ImageName, ImageSource};
pub use nexus_net::policy::{Policy as NetworkPolicy, PolicySpec as NetworkSpec};
pub use sandbox::{DriverKind, Limits, Sandbox, SandboxId, SandboxName, SandboxSpec, SandboxState};
pub use storage::{
    ImageBuilder, ImageStorage, KnownWorkspace, QuotaStatus, StorageBackend, StorageFault,
    StorageFaultKind, WorkspaceStorage,
};
pub use store::{DatabaseInfo, PoolClaim, RuntimeUpdate, Store, StoreError, Transition};
pub use workspace::{
    Snapshot, SnapshotId, SnapshotName, Workspace, WorkspaceId, WorkspaceMount, WorkspaceName,
};
