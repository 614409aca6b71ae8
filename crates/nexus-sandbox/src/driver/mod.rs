//! The `nexus_core::Driver` implementations: [`BwrapDriver`] (namespaces, seccomp,
//! cgroups) and [`HostDriver`] (no isolation), with the on-disk layout they share.
//!
//! | what | path |
//! |---|---|
//! | runtime files (agent socket, log, pid) | `<runtime_dir>/sandboxes/<id>/` |
//! | workspace tree (persistent, owned by the service) | passed in `SandboxMounts`, e.g. `<data_dir>/workspaces/<ws>/trees/<generation>` |
//! | private workspace of a legacy sandbox (`workspace: None`) | `<data_dir>/sandboxes/<id>/workspace` |
//!
//! `destroy` removes `<data_dir>/sandboxes/<id>` only: workspace trees outlive sandboxes.

mod bwrap;
mod host;

use std::path::{Path, PathBuf};

pub use self::bwrap::{BwrapDriver, BwrapDriverConfig};
pub use self::host::HostDriver;

/// Where a driver keeps its files.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The daemon's runtime directory (sockets, pid files).
    pub runtime_dir: PathBuf,
    /// The daemon's data directory (workspaces).
    pub data_dir: PathBuf,
}

impl Layout {
    /// The runtime directory of one sandbox.
    pub fn sandbox_runtime(&self, id: &str) -> PathBuf {
        self.runtime_dir.join("sandboxes").join(id)
    }

    /// Everything a sandbox keeps in the data directory.
    pub fn sandbox_data(&self, id: &str) -> PathBuf {
        self.data_dir.join("sandboxes").join(id)
    }

    /// The workspace of one sandbox.
    pub fn workspace(&self, id: &str) -> PathBuf {
        self.sandbox_data(id).join("workspace")
    }

    /// Where each launcher assembles its sandbox's root, in its own mount namespace
    /// (see [`crate::bwrap::plan_tree`]): an empty directory (mode 0755) that the host
    /// never sees anything mounted on. Created if missing.
    pub fn ensure_root_tree(&self) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.data_dir.join("rootfs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&path)?;
        Ok(path)
    }

    /// Creates the workspace (mode 0700) if missing. Its parent is made traversable
    /// (0711, not listable), because bwrap runs as the sandbox's own host uid and must
    /// reach the workspace it then owns.
    pub fn ensure_workspace(&self, id: &str) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let parent = self.sandbox_data(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&parent)?;
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o711))?;
        let path = self.workspace(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)?;
        Ok(path)
    }
}

/// Connects to an agent's listening socket on the host side.
pub(crate) async fn connect_agent(
    socket: &Path,
) -> Result<nexus_core::AgentStream, nexus_core::DriverError> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        nexus_core::DriverError::Connect {
            reason: format!("{}: {e}", socket.display()),
        }
    })?;
    Ok(Box::new(stream))
}

/// Removes a directory tree; a missing one is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}
