//! The Nexus daemon as a library: configuration, the HTTP application and the
//! start/stop machinery. `main.rs` is a thin wrapper; tests start it in-process too.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod drivers;
pub mod file_args;
pub mod http;
pub mod image_build;
pub mod logging;
pub mod mcp;
pub mod netlog;
pub mod pool_config;
pub mod state;
pub mod storage;
pub mod token;

pub use config::Config;
pub use daemon::{RunningDaemon, start};
