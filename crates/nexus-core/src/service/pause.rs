//! Pausing and resuming sandboxes: every process frozen in place by the driver (the
//! freezer cgroup for bwrap), memory kept, no CPU used, until resumed.
//!
//! While a sandbox is paused its agent is frozen too, so nothing that needs the agent
//! is attempted: exec, processes and files answer `Paused` at once instead of hanging.
//! An operation that already reached the agent when the pause landed simply waits for
//! the resume. Stopping or deleting a paused sandbox thaws it first, so its processes
//! can receive SIGTERM.

use super::{SandboxService, SandboxView, ServiceError};
use crate::sandbox::SandboxState;
use crate::store::RuntimeUpdate;

impl SandboxService {
    /// Freezes every process of a running sandbox. Pausing a paused one changes nothing.
    pub async fn pause(&self, id_or_name: &str) -> Result<SandboxView, ServiceError> {
        self.set_paused(id_or_name, true).await
    }

    /// Thaws a paused sandbox. Resuming a running one changes nothing.
    pub async fn resume(&self, id_or_name: &str) -> Result<SandboxView, ServiceError> {
        self.set_paused(id_or_name, false).await
    }

    async fn set_paused(
        &self,
        id_or_name: &str,
        paused: bool,
    ) -> Result<SandboxView, ServiceError> {
        let sandbox = self.find(id_or_name).await?;
        let lock = self.lock(&sandbox.id);
        let _guard = lock.lock().await;
        let sandbox = self.reload(&sandbox.id).await?;
        let (from, to) = if paused {
            (SandboxState::Running, SandboxState::Paused)
        } else {
            (SandboxState::Paused, SandboxState::Running)
        };
        if sandbox.state == to {
            return Ok(self.view(sandbox));
        }
        if sandbox.state != from {
            return Err(ServiceError::NotRunning {
                name: sandbox.spec.name.to_string(),
                state: sandbox.state,
            });
        }
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        self.driver(sandbox.spec.driver)?
            .set_paused(&sandbox, &runtime, paused)
            .await
            .map_err(ServiceError::Driver)?;
        let recorded = self
            .transition(&sandbox, to, None, RuntimeUpdate::Keep)
            .await;
        let sandbox = match recorded {
            Ok(sandbox) => sandbox,
            Err(err) => {
                // The store did not take the new state: put the processes back as recorded.
                if let Err(e) = self
                    .driver(sandbox.spec.driver)?
                    .set_paused(&sandbox, &runtime, !paused)
                    .await
                {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "undoing a pause change failed");
                }
                return Err(err);
            }
        };
        tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, state = %to, "sandbox {}", if paused { "paused" } else { "resumed" });
        Ok(self.view(sandbox))
    }

    /// Thaws a paused sandbox before it is stopped, so its processes can be signalled.
    pub(super) async fn thaw_for_stop(&self, sandbox: &crate::sandbox::Sandbox) {
        if sandbox.state != SandboxState::Paused {
            return;
        }
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        if let Ok(driver) = self.driver(sandbox.spec.driver)
            && let Err(e) = driver.set_paused(sandbox, &runtime, false).await
        {
            tracing::warn!(sandbox_id = %sandbox.id, error = %e, "thawing a paused sandbox before stopping it failed; the driver kills what is left");
        }
    }
}
