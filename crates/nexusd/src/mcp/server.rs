//! The MCP handler of `/mcp`: lists the tools a session's binding allows and runs them.

use rmcp::ServerHandler;
use rmcp::model::{ServerCapabilities, ServerConfig};

use crate::state::AppState;

/// The sandbox tools, for one MCP session.
#[derive(Debug, Clone)]
pub struct NexusTools {
    state: AppState,
}

impl NexusTools {
    /// A handler over the daemon's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl ServerHandler for NexusTools {
    fn get_info(&self) -> ServerConfig {
        let _ = &self.state;
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}
