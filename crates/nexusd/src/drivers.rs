//! The isolation drivers this daemon offers, built from its configuration.

use std::path::Path;
use std::sync::Arc;

use nexus_core::Driver;
use nexus_net::proxy::Egress;
use nexus_sandbox::driver::{BwrapDriver, BwrapDriverConfig, HostDriver, Layout};

use crate::config::Config;

/// Every driver this build has, configured. Whether a driver can work on this host is
/// checked when a sandbox first needs it (and by `doctor`), so a host without bubblewrap
/// still runs the daemon and says what is missing when asked for a sandbox.
pub fn build(
    config: &Config,
    agent: &Path,
    egress: Option<Arc<Egress>>,
) -> anyhow::Result<Vec<Arc<dyn Driver>>> {
    let layout = Layout {
        runtime_dir: config.runtime_dir.clone(),
        data_dir: config.data_dir.clone(),
    };
    let mut masked = vec![
        config.state_dir.clone(),
        config.data_dir.clone(),
        config.runtime_dir.clone(),
    ];
    if let Some(dir) = config.token_file.parent() {
        masked.push(dir.to_path_buf());
    }
    if let Some(file) = &config.config_file {
        masked.push(file.clone());
    }
    let bwrap = BwrapDriver::new(BwrapDriverConfig {
        layout: layout.clone(),
        bwrap: config.bwrap_path.clone(),
        agent: agent.to_path_buf(),
        masked,
        uid_range: config.uid_range.clone(),
        egress,
    })
    .map_err(|e| anyhow::anyhow!("cannot set up the bwrap driver: {e}"))?;
    let host = HostDriver::new(layout, agent.to_path_buf());
    Ok(vec![Arc::new(bwrap), Arc::new(host)])
}
