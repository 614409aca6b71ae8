//! Restoring a workspace in place, and what happens to the sandbox that writes it.
//!
//! A restore clones the snapshot into a new generation of the workspace's tree, records
//! that generation in the store (the commit point), moves the writer onto it, and deletes
//! the old tree last. The writer, when it is running or paused, is moved by
//! [`Driver::replace_workspace`]: its processes keep running (a paused one stays paused)
//! and every later lookup under `/workspace` finds the restored files. Descriptors and
//! working directories opened in the old tree keep the old, now detached, files until
//! they are opened again (`cd /workspace` again), and inotify watches on the old tree stop
//! reporting. Where the driver cannot swap (a non-root daemon, the host driver, read-only
//! mounts inside `/workspace`) or the swap fails, the writer is restarted on the new tree
//! instead: same sandbox and id, its processes end. A stopped writer starts on the new
//! tree whenever it starts.
//!
//! # Crash safety
//!
//! The commit comes before the swap, so everything after it rolls forward and nothing
//! is ever rolled back:
//! - a crash before the commit leaves the new tree unrecorded, swept at the next start
//!   ([`SandboxService::recover_storage`]); the writer never left the old tree;
//! - a crash between the commit and the swap leaves the writer running on the old tree,
//!   which the store no longer records: the next start sweeps it (the restore was
//!   replacing it anyway), and adoption ([`SandboxService::settle_workspace`]) finds the
//!   sandbox on a tree other than its workspace's current one and swaps that in, or
//!   restarts the sandbox when it cannot;
//! - a crash after the swap leaves only the old tree, swept at the next start.
//!
//! Swapping first and committing after would need the reverse repair: after a crash, a
//! sandbox on a tree the store does not know, which the next start would delete under it
//! before putting the old tree back, and a failed commit would need a second swap back.
//!
//! [`Driver::replace_workspace`]: crate::driver::Driver::replace_workspace

use std::path::Path;

use super::{SandboxService, ServiceError, WorkspaceView};
use crate::driver::{DriverError, WorkspaceSwap};
use crate::sandbox::{Sandbox, SandboxId, SandboxState};

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoredWorkspace {
    /// The workspace, at its new generation.
    pub view: WorkspaceView,
    /// The sandbox that writes the workspace, when it was started (running, paused or
    /// starting) during the restore; `None` when there is none or it was stopped.
    pub writer: Option<RestoredWriter>,
}

/// What a restore did to the started sandbox that writes the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredWriter {
    /// The sandbox.
    pub sandbox: SandboxId,
    /// `true`: the same processes kept running (or stayed paused) and see the restored
    /// tree; `false`: it was restarted on it, and its processes ended.
    pub kept_running: bool,
}

impl SandboxService {
    /// Rolls a workspace back to one of its snapshots, in place: same workspace, and a
    /// started sandbox on it moves onto the restored tree, its processes kept running
    /// where the driver can (see the module doc).
    pub async fn restore_workspace(
        &self,
        workspace: &str,
        snapshot: &str,
    ) -> Result<RestoredWorkspace, ServiceError> {
        let workspace = self.find_workspace(workspace).await?;
        let snapshot = self.find_snapshot(&workspace, snapshot).await?;
        let next = workspace.generation + 1;
        let (ws, snap) = (workspace.id.clone(), snapshot.id.clone());
        self.blocking(move |s| s.clone_snapshot(&ws, &snap, &ws, next))
            .await?;
        let writer = self.writer(&workspace).await?;
        let lock = writer.as_ref().map(|w| self.lock(&w.id));
        let _guard = match &lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let writer = match writer {
            Some(w) => Some(self.reload(&w.id).await?),
            None => None,
        };
        // The commit point: from here on the workspace is at the new generation, and the
        // writer only moves forward onto it.
        let committed = self
            .store
            .set_workspace_generation(&workspace.id, workspace.generation, next, self.clock.now())
            .await;
        let updated = match committed {
            Ok(updated) => updated,
            Err(err) => {
                let ws = workspace.id.clone();
                let _ = self.blocking(move |s| s.delete_tree(&ws, next)).await;
                return Err(err.into());
            }
        };
        self.apply_quota(&updated).await;
        let tree = self.storage.tree_path(&updated.id, next);
        let started = writer.filter(|w| {
            matches!(
                w.state,
                SandboxState::Running | SandboxState::Paused | SandboxState::Starting
            )
        });
        let moved = match started {
            Some(sandbox) => Some(self.move_writer(sandbox, &tree).await),
            None => None,
        };
        // Even when the writer could not be moved: the restore replaced the old tree, and
        // the writer starts on the new one.
        let (ws, old) = (workspace.id.clone(), workspace.generation);
        if let Err(e) = self.blocking(move |s| s.delete_tree(&ws, old)).await {
            tracing::warn!(workspace = %workspace.name, error = %e, "removing the replaced tree failed; the next start sweeps it");
        }
        tracing::info!(workspace = %workspace.name, snapshot = %snapshot.name, generation = next, "workspace restored");
        let writer = moved.transpose()?;
        Ok(RestoredWorkspace {
            view: self.workspace_view(updated).await?,
            writer,
        })
    }

    /// After a daemon restart, for an adopted running or paused sandbox: makes sure it
    /// shows its workspace's current tree, which it does not when a restore was cut
    /// between its commit and its swap (see the module doc). Swaps the tree in, or
    /// restarts the sandbox when the swap fails; a driver that cannot swap never left a
    /// sandbox behind a restore, and is not asked further.
    pub(super) async fn settle_workspace(&self, sandbox: &Sandbox) {
        let Some(id) = &sandbox.spec.workspace else {
            return;
        };
        let workspace = match self.store.workspace(id).await {
            Ok(Some(workspace)) => workspace,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cannot check the workspace tree of an adopted sandbox");
                return;
            }
        };
        let tree = self.storage.tree_path(&workspace.id, workspace.generation);
        let Ok(driver) = self.driver(sandbox.spec.driver) else {
            return;
        };
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        match driver.replace_workspace(sandbox, &runtime, &tree).await {
            Ok(WorkspaceSwap::AlreadyThere) | Err(DriverError::Unsupported { .. }) => {}
            Ok(WorkspaceSwap::Replaced) => {
                tracing::warn!(sandbox_id = %sandbox.id, workspace = %workspace.name, generation = workspace.generation, "an adopted sandbox showed an older tree of its workspace (a restore was interrupted); it shows the current one now");
            }
            Err(e) => {
                tracing::warn!(sandbox_id = %sandbox.id, workspace = %workspace.name, error = %e, "an adopted sandbox shows an older tree of its workspace and the swap failed; restarting it");
                let restarted = async {
                    self.stop_locked(sandbox.clone()).await?;
                    let stopped = self.reload(&sandbox.id).await?;
                    self.start_locked(stopped).await
                };
                if let Err(e) = restarted.await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "restarting a sandbox on its workspace's current tree failed");
                }
            }
        }
    }

    /// Moves a started writer onto `tree`, the workspace's committed tree: swapped under
    /// it when it is running or paused and the driver can, else restarted.
    async fn move_writer(
        &self,
        sandbox: Sandbox,
        tree: &Path,
    ) -> Result<RestoredWriter, ServiceError> {
        let id = sandbox.id.clone();
        if matches!(sandbox.state, SandboxState::Running | SandboxState::Paused) {
            let driver = self.driver(sandbox.spec.driver)?;
            let runtime = sandbox.runtime.clone().unwrap_or_default();
            match driver.replace_workspace(&sandbox, &runtime, tree).await {
                Ok(_) => {
                    tracing::info!(sandbox_id = %id, name = %sandbox.spec.name, "restored tree swapped in under the running sandbox");
                    return Ok(RestoredWriter {
                        sandbox: id,
                        kept_running: true,
                    });
                }
                Err(DriverError::Unsupported { reason, .. }) => {
                    tracing::debug!(sandbox_id = %id, %reason, "the driver cannot swap the tree; restarting the sandbox on it");
                }
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "swapping the restored tree in failed; restarting the sandbox on it");
                }
            }
        }
        self.stop_locked(sandbox).await?;
        let stopped = self.reload(&id).await?;
        self.start_locked(stopped).await?;
        Ok(RestoredWriter {
            sandbox: id,
            kept_running: false,
        })
    }
}
