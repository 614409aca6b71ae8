//! Logging: `tracing` events as plain lines on stderr (the host collects the agent's
//! stderr), level from `NEXUS_AGENT_LOG`, default `info`.

use tracing::Level;

/// Installs the stderr subscriber.
pub fn init() {
    let level = std::env::var("NEXUS_AGENT_LOG")
        .ok()
        .and_then(|v| v.parse::<Level>().ok())
        .unwrap_or(Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .init();
}
