//! Keeping sandboxes honest over time: adopting them after a daemon restart, stopping
//! them at their TTL, noticing the ones that died.

use std::time::Duration;

use super::{SandboxService, ServiceError};
use crate::sandbox::SandboxState;
use crate::store::RuntimeUpdate;

impl SandboxService {
    /// After a daemon restart: re-attaches to sandboxes whose processes survived (and
    /// moves them onto their workspace's current tree if a restore was cut short, see
    /// `super::restore`), marks the others crashed. Returns how many were adopted. The previous run's warm pool is
    /// left to [`Self::remove_pool_leftovers`].
    pub async fn adopt(&self) -> Result<usize, ServiceError> {
        let mut adopted = 0;
        for sandbox in self.store.list_sandboxes().await? {
            if sandbox.spec.name.is_placeholder() {
                continue;
            }
            if !matches!(
                sandbox.state,
                SandboxState::Starting
                    | SandboxState::Running
                    | SandboxState::Paused
                    | SandboxState::Stopping
            ) {
                continue;
            }
            let driver = self.driver(sandbox.spec.driver)?;
            let runtime = sandbox.runtime.clone().unwrap_or_default();
            let alive = !runtime.is_empty() && driver.is_alive(&runtime).await;
            if alive {
                driver.adopted(&sandbox, &runtime).await;
            }
            if sandbox.state == SandboxState::Paused && alive {
                // Its agent is frozen and cannot shake hands; it is connected on resume.
                self.isolation
                    .lock()
                    .expect("isolation map is never poisoned")
                    .insert(sandbox.id.clone(), driver.isolation(&sandbox, &runtime));
                tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "paused sandbox adopted");
                self.settle_workspace(&sandbox).await;
                adopted += 1;
                continue;
            }
            let connected = if alive {
                self.connect(&sandbox).await.ok()
            } else {
                None
            };
            match (sandbox.state, connected) {
                (SandboxState::Running | SandboxState::Starting, Some(agent)) => {
                    let sandbox = if sandbox.state == SandboxState::Starting {
                        self.transition(&sandbox, SandboxState::Running, None, RuntimeUpdate::Keep)
                            .await?
                    } else {
                        sandbox
                    };
                    self.remember(&sandbox, agent, driver.isolation(&sandbox, &runtime));
                    tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "sandbox adopted");
                    self.settle_workspace(&sandbox).await;
                    adopted += 1;
                }
                (SandboxState::Stopping, _) => {
                    // It was being stopped when the daemon went away: finish the job.
                    self.stop_locked(sandbox).await?;
                }
                (_, None) => {
                    let reason = if alive {
                        "its agent did not answer when nexusd restarted"
                    } else {
                        "its processes were gone when nexusd restarted"
                    }
                    .to_owned();
                    // Also without a live handle: a start cut off before its runtime was
                    // recorded left processes that only the driver can still find (by
                    // cgroup, or by the launch record).
                    if let Err(e) = driver.stop(&sandbox, &runtime, Duration::ZERO).await {
                        tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cannot clean up an unreachable sandbox");
                    }
                    tracing::warn!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, %reason, "sandbox crashed");
                    self.transition(
                        &sandbox,
                        SandboxState::Crashed,
                        Some(reason),
                        RuntimeUpdate::Clear,
                    )
                    .await?;
                }
                _ => {}
            }
        }
        Ok(adopted)
    }

    /// Stops running sandboxes whose `ttl_seconds` have passed, and marks crashed the
    /// ones whose processes died. A warm-pool sandbox that died is replaced instead.
    /// Call periodically.
    pub async fn tick(&self) -> Result<(), ServiceError> {
        let now = self.clock.now();
        for sandbox in self.store.list_sandboxes().await? {
            if sandbox.spec.name.is_placeholder() {
                self.check_pooled(&sandbox).await;
                continue;
            }
            if !matches!(sandbox.state, SandboxState::Running | SandboxState::Paused) {
                continue;
            }
            let expired = match (sandbox.spec.ttl_seconds, sandbox.started_at) {
                (Some(ttl), Some(started)) => {
                    now.0.saturating_sub(started.0)
                        >= i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX)
                }
                _ => false,
            };
            if expired {
                tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "ttl reached; stopping sandbox");
                if let Err(e) = self.stop(sandbox.id.as_str()).await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "stopping an expired sandbox failed");
                }
                continue;
            }
            let driver = self.driver(sandbox.spec.driver)?;
            let runtime = sandbox.runtime.clone().unwrap_or_default();
            if !driver.is_alive(&runtime).await {
                let lock = self.lock(&sandbox.id);
                let _guard = lock.lock().await;
                let Ok(current) = self.reload(&sandbox.id).await else {
                    continue;
                };
                if !matches!(current.state, SandboxState::Running | SandboxState::Paused)
                    || driver.is_alive(&runtime).await
                {
                    continue;
                }
                let reason = "its init process (the agent) exited".to_owned();
                tracing::warn!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, %reason, "sandbox crashed");
                if let Err(e) = driver.stop(&current, &runtime, Duration::ZERO).await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cleanup of a crashed sandbox failed");
                }
                self.forget_runtime(&sandbox.id);
                self.transition(
                    &current,
                    SandboxState::Crashed,
                    Some(reason),
                    RuntimeUpdate::Clear,
                )
                .await?;
            }
        }
        Ok(())
    }
}
