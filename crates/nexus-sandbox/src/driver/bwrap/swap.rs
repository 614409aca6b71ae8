//! The bwrap driver's half of a workspace restore under a running sandbox: the new tree
//! is handed to the sandbox's host uid and swapped in at `/workspace` by
//! [`launch::replace_workspace`] (root daemons only; see there for how).

use std::path::{Path, PathBuf};

use nexus_core::{DriverError, DriverKind, Sandbox, WorkspaceSwap};

use super::{BwrapDriver, chain, parse};
use crate::bwrap::WORKSPACE_DIR;
use crate::launch;

impl BwrapDriver {
    /// [`nexus_core::Driver::replace_workspace`], on a blocking thread.
    pub(super) fn swap_workspace(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        tree: &Path,
    ) -> Result<WorkspaceSwap, DriverError> {
        let unsupported = |reason: &str| DriverError::Unsupported {
            driver: DriverKind::Bwrap,
            what: "replace the workspace of a running sandbox".into(),
            reason: reason.into(),
        };
        let failed = |reason: String| DriverError::Failed {
            what: format!("replace the workspace of sandbox {}", sandbox.spec.name),
            reason,
        };
        let rt = parse(runtime).ok_or_else(|| failed("it has no runtime record".into()))?;
        if !rt.dedicated_uid {
            return Err(unsupported(
                "entering its mount namespace needs nexusd running as root",
            ));
        }
        // Detaching /workspace takes the read-only mounts inside it along; a start makes
        // them again.
        if sandbox
            .spec
            .mounts
            .iter()
            .any(|m| PathBuf::from(&m.path).starts_with(WORKSPACE_DIR))
        {
            return Err(unsupported(
                "it mounts other workspaces inside /workspace, which a swap would take away",
            ));
        }
        // As a start would: the tree becomes the sandbox's own (a snapshot keeps the uid
        // of whichever sandbox wrote it). The uid owns this workspace's current tree
        // already, and generations of one workspace may share a uid (`launch::ids`).
        launch::prepare_workspace(tree, rt.uid).map_err(|e| failed(chain(&e)))?;
        match launch::replace_workspace(&rt.process, tree) {
            Ok(swap) => Ok(swap),
            Err(launch::SwapError::NotRoot) => Err(unsupported(
                "entering its mount namespace needs nexusd running as root",
            )),
            Err(error) => Err(failed(chain(&error))),
        }
    }
}
