//! The fixtures of the MCP conformance suite (`@modelcontextprotocol/conformance`): the
//! tools, resources and prompts its server scenarios call. Served only at
//! `/mcp/conformance`, and only when `mcp.conformance` is switched on; they touch no sandbox.

use rmcp::ServerHandler;
use rmcp::model::{ServerCapabilities, ServerConfig};

/// The conformance fixture server.
#[derive(Debug, Clone, Default)]
pub struct Fixtures {}

impl Fixtures {
    /// A fresh fixture server for one session.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ServerHandler for Fixtures {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}
