//! The `Driver` trait: how a sandbox is isolated and started. The bubblewrap and host
//! drivers implement it now, a microVM driver later; the service above never knows which.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::sandbox::{DriverKind, Sandbox};

/// A reliable byte stream to a sandbox's agent (a Unix socket now, a virtio channel later).
pub trait AgentIo: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> AgentIo for T {}

/// A boxed agent stream.
pub type AgentStream = Box<dyn AgentIo>;

/// What a driver reports after starting a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// Driver-private handle to persist (JSON): enough to find, adopt and clean up the
    /// sandbox after a daemon restart.
    pub runtime: String,
    /// The isolation actually in force.
    pub isolation: Isolation,
}

/// The host directories a sandbox mounts, resolved by the service from its workspaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxMounts {
    /// The workspace tree mounted read-write at `/workspace` (and the host driver's cwd).
    /// `None` only for sandboxes recorded before workspaces existed: they keep the
    /// driver's private directory.
    pub workspace: Option<PathBuf>,
    /// Trees of other workspaces, mounted read-only.
    pub read_only: Vec<ReadOnlyMount>,
    /// The tree of the sandbox's image, its `/` under a writable layer of its own;
    /// `None` for the built-in `host` image (the host's `/`, read-only).
    pub image_root: Option<PathBuf>,
}

/// A tree of another workspace, mounted read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnlyMount {
    /// The tree on the host.
    pub source: PathBuf,
    /// The absolute path inside the sandbox (validated by `WorkspaceMount::validate`).
    pub target: String,
}

/// The isolation a running sandbox really has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// `false` when nothing separates the sandbox from the host.
    pub isolated: bool,
    /// Namespaces of its own: `user`, `mount`, `pid`, `ipc`, `uts`, `net`, `cgroup`.
    pub namespaces: Vec<String>,
    /// Seccomp filter loaded.
    pub seccomp: bool,
    /// Capabilities held inside: `none` or a list.
    pub capabilities: String,
    /// `no_new_privs` set.
    pub no_new_privs: bool,
    /// Uid inside the sandbox.
    pub uid_inside: Option<u32>,
    /// Host uid it maps to.
    pub uid_host: Option<u32>,
    /// Each requested limit and whether it is enforced.
    pub limits: Vec<LimitEnforcement>,
    /// How the sandbox reaches the network, and what is not enforced, in plain words.
    pub network: String,
    /// Anything else worth knowing.
    pub warnings: Vec<String>,
}

/// Whether one requested limit is enforced here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitEnforcement {
    /// `memory`, `cpu`, `pids` or `tmp`.
    pub name: String,
    /// The requested value, for people (`256 MiB`).
    pub requested: String,
    /// Whether the host enforces it.
    pub enforced: bool,
    /// How, or why not.
    pub detail: String,
}

/// Resource usage of a sandbox, from its cgroups; `None` where the host cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use, bytes.
    pub memory_current: Option<u64>,
    /// Peak memory, bytes.
    pub memory_peak: Option<u64>,
    /// The memory limit in force, bytes; `None` also when unlimited.
    pub memory_limit: Option<u64>,
    /// OOM kills so far.
    pub oom_kills: Option<u64>,
    /// Processes and threads.
    pub pids_current: Option<u64>,
    /// The process limit in force; `None` also when unlimited.
    pub pids_limit: Option<u64>,
    /// CPU time used, microseconds.
    pub cpu_usage_usec: Option<u64>,
    /// CPU time in user mode, microseconds.
    pub cpu_user_usec: Option<u64>,
    /// CPU time in the kernel, microseconds.
    pub cpu_system_usec: Option<u64>,
    /// Bytes read from block devices.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub io_write_bytes: Option<u64>,
    /// Read operations on block devices.
    pub io_read_ops: Option<u64>,
    /// Write operations on block devices.
    pub io_write_ops: Option<u64>,
}

/// What [`Driver::replace_workspace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceSwap {
    /// The sandbox shows the new tree at `/workspace` now.
    Replaced,
    /// It already showed that tree; nothing was changed.
    AlreadyThere,
}

/// Why a driver could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver cannot work on this host (bubblewrap missing, user namespaces off).
    #[error(
        "the {driver} driver cannot run sandboxes here: {reason}; run `nexusctl doctor` for details"
    )]
    Unavailable {
        /// The driver.
        driver: DriverKind,
        /// What is missing and how to fix it.
        reason: String,
    },
    /// The driver is disabled by configuration.
    #[error("the {driver} driver is disabled: {reason}")]
    Disabled {
        /// The driver.
        driver: DriverKind,
        /// How to enable it.
        reason: String,
    },
    /// Starting failed; whatever was made has been removed.
    #[error("cannot start sandbox: {reason}")]
    Start {
        /// What went wrong.
        reason: String,
    },
    /// The agent cannot be reached.
    #[error("cannot reach the sandbox's agent: {reason}")]
    Connect {
        /// What went wrong.
        reason: String,
    },
    /// The driver cannot do this on this host.
    #[error("the {driver} driver cannot {what}: {reason}")]
    Unsupported {
        /// The driver.
        driver: DriverKind,
        /// What was asked, as a verb phrase (`pause sandboxes`).
        what: String,
        /// Why not, and what would make it possible.
        reason: String,
    },
    /// An operation on a started sandbox failed; it was undone where it could be.
    #[error("cannot {what}: {reason}")]
    Failed {
        /// What was asked, as a verb phrase (`pause sandbox web`).
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// Cleaning up failed; the message says what was left.
    #[error("cannot clean up sandbox: {reason}")]
    Cleanup {
        /// What is left behind.
        reason: String,
    },
}

/// An isolation backend.
#[async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// Which driver this is.
    fn kind(&self) -> DriverKind;

    /// Checks, without starting anything, that the driver can work here.
    fn check_available(&self) -> Result<(), DriverError>;

    /// Starts the sandbox's processes (its agent first). On failure, everything made on
    /// the way is removed before returning.
    async fn start(
        &self,
        sandbox: &Sandbox,
        mounts: &SandboxMounts,
    ) -> Result<Started, DriverError>;

    /// Opens a stream to the agent of a started sandbox.
    async fn connect(&self, sandbox: &Sandbox, runtime: &str) -> Result<AgentStream, DriverError>;

    /// Whether the sandbox's processes still exist.
    async fn is_alive(&self, runtime: &str) -> bool;

    /// The isolation of a started sandbox (re-derived from its runtime handle after a
    /// daemon restart).
    fn isolation(&self, sandbox: &Sandbox, runtime: &str) -> Isolation;

    /// Resource usage, where the host can tell.
    async fn usage(&self, runtime: &str) -> Usage;

    /// Processes the OOM killer ended in the sandbox so far. Read around every command, so
    /// drivers that can read just this counter should.
    async fn oom_kills(&self, runtime: &str) -> Option<u64> {
        self.usage(runtime).await.oom_kills
    }

    /// Freezes (`paused`) or thaws every process of a started sandbox, in constant time
    /// whatever its memory size. Returns once the change is complete.
    async fn set_paused(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        paused: bool,
    ) -> Result<(), DriverError> {
        let _ = (sandbox, runtime, paused);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            what: "pause sandboxes".into(),
            reason: "it has no freezer".into(),
        })
    }

    /// Applies the sandbox's network policy (in `sandbox.spec.network`, already
    /// validated and stored) to a started sandbox: new connections follow it at once,
    /// open ones are cut when `kill_existing`.
    async fn set_network(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        kill_existing: bool,
    ) -> Result<(), DriverError> {
        let _ = (sandbox, runtime, kill_existing);
        Ok(())
    }

    /// Renames a running sandbox's host name (what `hostname` says inside): a sandbox
    /// taken from the warm pool was started under a placeholder and gets its name here.
    /// The default does nothing: a driver without a UTS namespace of its own has the
    /// host's name.
    async fn set_hostname(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        hostname: &str,
    ) -> Result<(), DriverError> {
        let _ = (sandbox, runtime, hostname);
        Ok(())
    }

    /// Puts `tree` at `/workspace` of a started (running or paused) sandbox in place of
    /// the tree it shows there, without stopping anything: its processes keep running and
    /// every later lookup under `/workspace` finds `tree`; descriptors and working
    /// directories opened in the old tree keep pointing at the old files. `tree` is
    /// handed to the sandbox's host user first, as a start would. Calling it again with
    /// the same tree changes nothing ([`WorkspaceSwap::AlreadyThere`]), so a daemon can
    /// check an adopted sandbox with it. On an error the sandbox still shows its old tree,
    /// or (when even that could not be restored) must be restarted. The default:
    /// [`DriverError::Unsupported`], and the service restarts the sandbox instead.
    async fn replace_workspace(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        tree: &Path,
    ) -> Result<WorkspaceSwap, DriverError> {
        let _ = (sandbox, runtime, tree);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            what: "replace the workspace of a running sandbox".into(),
            reason: "it cannot change the mounts of running processes".into(),
        })
    }

    /// Called once a daemon restart has found the sandbox still alive, before anything
    /// else uses it: the driver takes back what lives in the daemon (the policy proxy's
    /// sockets).
    async fn adopted(&self, sandbox: &Sandbox, runtime: &str) {
        let _ = (sandbox, runtime);
    }

    /// Ends every process of the sandbox (SIGKILL after `grace`) and releases what its
    /// running needed (cgroups, sockets). The workspace is kept.
    async fn stop(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        grace: Duration,
    ) -> Result<(), DriverError>;

    /// Removes every trace of a stopped sandbox: its private runtime and data
    /// directories. Workspace trees are the service's and are never touched here.
    async fn destroy(&self, sandbox: &Sandbox) -> Result<(), DriverError>;
}
