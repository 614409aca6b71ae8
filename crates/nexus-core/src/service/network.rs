//! Changing what a sandbox may reach on the network, while it runs or not.

use super::{SandboxService, SandboxView, ServiceError};
use crate::NetworkSpec;
use crate::sandbox::SandboxState;

/// Checks a policy's rules; the error names the bad one (`network.allow[1] "x" ...`).
pub(super) fn validate_network(network: &NetworkSpec) -> Result<(), ServiceError> {
    nexus_net::policy::Policy::parse(network)
        .map(drop)
        .map_err(|e| ServiceError::Invalid(format!("network.{e}")))
}

impl SandboxService {
    /// Replaces a sandbox's network policy. A running (or paused) sandbox follows it for
    /// new connections at once; its open connections are cut too when `kill_existing`.
    /// A bad rule changes nothing.
    pub async fn set_network(
        &self,
        id_or_name: &str,
        network: NetworkSpec,
        kill_existing: bool,
    ) -> Result<SandboxView, ServiceError> {
        validate_network(&network)?;
        let sandbox = self.find(id_or_name).await?;
        let lock = self.lock(&sandbox.id);
        let _guard = lock.lock().await;
        self.cool(&sandbox.id);
        let sandbox = self
            .store
            .set_sandbox_network(&sandbox.id, &network)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id_or_name.to_owned()))?;
        self.cool(&sandbox.id);
        if matches!(sandbox.state, SandboxState::Running | SandboxState::Paused)
            && let Some(runtime) = sandbox.runtime.as_deref()
        {
            self.driver(sandbox.spec.driver)?
                .set_network(&sandbox, runtime, kill_existing)
                .await
                .map_err(ServiceError::Driver)?;
        }
        tracing::info!(sandbox_id = %sandbox.id, allow = ?network.allow, deny = ?network.deny, kill_existing, "network policy changed");
        Ok(self.view(sandbox))
    }
}
