//! Command-line flags of `nexusd`. Each flag has a `NEXUS_*` environment variable;
//! flags override the environment, which overrides the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The Nexus daemon: isolated, persistent Linux sandboxes for AI agents.
#[derive(Debug, Clone, Parser)]
#[command(name = "nexusd", version, about, long_about = None)]
pub struct Args {
    /// Address to serve the API on [default: 127.0.0.1:9600].
    #[arg(long, env = "NEXUS_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Config file [default: $XDG_CONFIG_HOME/nexus/nexus.yaml, when it exists].
    #[arg(long, env = "NEXUS_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Directory of the state database [default: $XDG_STATE_HOME/nexus].
    #[arg(long, env = "NEXUS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Log format [default: text].
    #[arg(long, env = "NEXUS_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. `info` or `nexusd=debug,info` [default: info].
    #[arg(long, env = "NEXUS_LOG_LEVEL", value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_level: Option<String>,

    /// How long in-flight requests may take to finish after SIGTERM, e.g. `30s` [default: 30s].
    #[arg(long, env = "NEXUS_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<std::time::Duration>,

    /// The in-sandbox agent binary [default: `nexus-agent` beside this binary].
    #[arg(long, env = "NEXUS_AGENT_PATH", value_name = "PATH")]
    pub agent_path: Option<PathBuf>,

    /// Check what this host can enforce, print a report and exit (non-zero when the
    /// default driver cannot work here).
    #[arg(long)]
    pub doctor: bool,

    /// With --doctor: print the report as JSON.
    #[arg(long, requires = "doctor")]
    pub json: bool,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Accepts a `tracing` filter directive, so a typo is a usage error at start.
pub fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_owned())
        .map_err(|e| format!("{e} (examples: `info`, `debug`, `nexusd=debug,info`)"))
}

/// Accepts a human duration such as `30s` or `2m`.
pub fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (examples: `30s`, `2m`, `500ms`)"))
}
