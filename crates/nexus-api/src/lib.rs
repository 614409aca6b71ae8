//! Wire types of the Nexus HTTP API (`/v1`), shared by the daemon and its clients.
//!
//! Only serde and OpenAPI schema derives live here: no HTTP server, no runtime, no SQL.
//! Field names are the JSON names; changing one is a breaking API change.

pub mod error;
pub mod exec;
pub mod exec_stream;
pub mod files;
pub mod image;
pub mod network;
pub mod process;
pub mod sandbox;
pub mod stats;
pub mod system;
pub mod terminal;
pub mod workspace;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use exec::{ExecEvent, ExecRequest, ExecResult, ExitStatus, OutputEncoding};
pub use image::{
    BuildImageRequest, ImageBuildEvent, ImageBuildInfo, ImageBuildList, ImageInfo, ImageList,
    ImageSourceInfo, ImportImageRequest,
};
pub use network::{NetworkLog, NetworkLogEntry, NetworkPolicyBody, SetNetworkRequest};
pub use process::{OutputLine, ProcessInfo, ProcessList, SignalRequest, StartProcessRequest};
pub use sandbox::{
    CreateSandboxRequest, IsolationReport, LimitReport, LimitsBody, MountBody, SandboxInfo,
    SandboxList, SandboxUsage,
};
pub use stats::SandboxStats;
pub use system::{
    DaemonPaths, DaemonStatus, DatabaseHealth, DatabaseStatus, Health, HealthStatus, WarmPoolStatus,
};
pub use terminal::{CreateTerminalRequest, TerminalInfo, TerminalList};
pub use workspace::{
    CreateSnapshotRequest, CreateWorkspaceRequest, ForkSandboxRequest, ForkWorkspaceRequest,
    RestoreRequest, RestoredWorkspace, RestoredWriter, SnapshotInfo, SnapshotList, WorkspaceInfo,
    WorkspaceList, WorkspaceUser,
};

/// The API version prefix every versioned route lives under.
pub const API_PREFIX: &str = "/v1";

/// The default address `nexusd` listens on and `nexusctl` connects to.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9600";
