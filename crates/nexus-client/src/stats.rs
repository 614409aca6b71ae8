//! Live resource statistics of a sandbox (`/v1/sandboxes/{id}/stats`).

use nexus_api::SandboxStats;

use crate::{Client, ClientError, segment};

impl Client {
    /// `GET /v1/sandboxes/{id}/stats`: one sample of a running or paused sandbox's CPU
    /// time, memory, processes, block I/O and OOM kills. A stopped sandbox is the API
    /// error `sandbox_not_running`.
    pub async fn sandbox_stats(&self, id: &str) -> Result<SandboxStats, ClientError> {
        self.get_json(&format!("/v1/sandboxes/{}/stats", segment(id)))
            .await
    }
}
