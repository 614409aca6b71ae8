//! The isolation drivers this daemon offers, built from its configuration.

use std::sync::Arc;

use nexus_core::Driver;

use crate::config::Config;

/// Every driver this build has, configured. Availability on this host is checked per
/// sandbox (and by `doctor`), so a host without bubblewrap still starts the daemon.
pub fn build(_config: &Config) -> anyhow::Result<Vec<Arc<dyn Driver>>> {
    Ok(Vec::new())
}
