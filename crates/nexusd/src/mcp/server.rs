//! The MCP handler of `/mcp`: lists the tools a session's binding allows and runs them.
//! The binding is put on each HTTP request by [`super::auth`]; a request without one
//! sees no tools at all.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;
use tracing::Instrument;

use super::binding::Binding;
use super::tools::{self, Scope, ToolCtx};
use crate::state::AppState;

/// What the server tells clients about itself and how to use it.
const INSTRUCTIONS: &str = "Nexus gives you Linux sandboxes: isolated computers with a persistent /workspace. \
Every tool acts inside a sandbox, never on the host. Paths are absolute or relative to /workspace. \
Use run_command for shell commands (background: true for servers and long jobs, then process_output), \
file_read/file_write/file_edit for files, glob and grep to find things.";

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

/// The binding the auth middleware put on the HTTP request carrying this message.
fn binding(context: &RequestContext<RoleServer>) -> Option<Binding> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Binding>())
        .cloned()
}

/// The error of a tool that does not exist for this session (unknown or outside its
/// profile): the same either way, so a profile cannot be probed.
fn not_found(name: &str) -> McpError {
    McpError::invalid_params(format!("tool not found: {name}"), None)
}

impl ServerHandler for NexusTools {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("nexus", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(INSTRUCTIONS.into());
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = match binding(&context) {
            Some(binding) => tools::catalog()
                .iter()
                .filter(|def| def.visible_to(&binding))
                .map(|def| def.listed(&binding))
                .collect(),
            None => Vec::new(),
        };
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.as_ref();
        let binding = binding(&context).ok_or_else(|| not_found(name))?;
        let def = tools::catalog()
            .iter()
            .find(|def| def.name == name && def.visible_to(&binding))
            .ok_or_else(|| not_found(name))?;
        let mut args = request.arguments.unwrap_or_default();
        let sandbox = match def.scope {
            Scope::Host => String::new(),
            Scope::Sandbox => match target(&binding, args.remove("sandbox")) {
                Ok(sandbox) => sandbox,
                Err(message) => return Ok(error_result(message, None).into()),
            },
        };
        let span = tracing::info_span!("mcp_tool", tool = def.name, sandbox_id = %sandbox);
        let ctx = ToolCtx {
            state: &self.state,
            sandbox,
            request: &context,
        };
        let result = match tools::call(def, &ctx, args).instrument(span).await {
            Ok(output) => {
                let mut result = CallToolResult::success(vec![ContentBlock::text(output.text)]);
                result.structured_content = Some(output.structured);
                result
            }
            Err(error) => error_result(error.message, error.structured),
        };
        Ok(result.into())
    }
}

/// The sandbox a call acts in: the binding's, or the `sandbox` argument of an unbound
/// session. A bound session naming another sandbox is told it does not exist.
fn target(binding: &Binding, argument: Option<Value>) -> Result<String, String> {
    let named = match argument {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(_) => {
            return Err(
                "invalid argument `sandbox`: expected the id or name of a sandbox as a string"
                    .into(),
            );
        }
    };
    match (&binding.sandbox, named) {
        (Some(bound), None) => Ok(bound.clone()),
        (Some(bound), Some(named)) if &named == bound => Ok(named),
        (Some(_), Some(named)) => Err(format!("no sandbox {named:?}")),
        (None, Some(named)) => Ok(named),
        (None, None) => Err(
            "missing argument `sandbox`: give the id or name of the sandbox to act in (sandbox_list shows them)"
                .into(),
        ),
    }
}

fn error_result(message: String, structured: Option<Value>) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
    result.structured_content = structured;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::binding::Profile;

    fn bound(sandbox: &str) -> Binding {
        Binding {
            profile: Profile::Full,
            sandbox: Some(sandbox.into()),
        }
    }

    #[test]
    fn a_bound_session_acts_in_its_sandbox_only() {
        assert_eq!(target(&bound("sb1"), None), Ok("sb1".into()));
        assert_eq!(target(&bound("sb1"), Some("sb1".into())), Ok("sb1".into()));
        let err = target(&bound("sb1"), Some("sb2".into())).expect_err("another sandbox");
        assert_eq!(err, "no sandbox \"sb2\"");
    }

    #[test]
    fn an_unbound_session_must_name_the_sandbox() {
        let open = Binding::unrestricted();
        assert_eq!(target(&open, Some("sb2".into())), Ok("sb2".into()));
        let err = target(&open, None).expect_err("no sandbox named");
        assert!(err.contains("missing argument `sandbox`"), "{err}");
        let err = target(&open, Some(Value::from(3))).expect_err("not a string");
        assert!(err.contains("invalid argument `sandbox`"), "{err}");
    }

    #[test]
    fn profiles_nest_and_bound_sessions_lose_host_tools() {
        let names = |binding: &Binding| -> Vec<&str> {
            tools::catalog()
                .iter()
                .filter(|d| d.visible_to(binding))
                .map(|d| d.name)
                .collect()
        };
        let mut previous: Vec<&str> = Vec::new();
        for profile in Profile::ALL {
            let now = names(&Binding {
                profile,
                sandbox: None,
            });
            assert!(
                previous.iter().all(|n| now.contains(n)),
                "{profile} drops a tool"
            );
            assert!(now.len() > previous.len(), "{profile} adds nothing");
            previous = now;
        }
        let minimal = names(&Binding {
            profile: Profile::Minimal,
            sandbox: None,
        });
        assert_eq!(minimal, ["file_read", "file_list", "file_stat", "glob"]);
        let bound_full = names(&bound("sb1"));
        assert!(bound_full.contains(&"run_command") && bound_full.contains(&"sandbox_snapshot"));
        for host in [
            "sandbox_create",
            "sandbox_list",
            "sandbox_delete",
            "sandbox_fork",
        ] {
            assert!(!bound_full.contains(&host), "{host} in a bound session");
        }
    }

    #[test]
    fn sandbox_argument_is_listed_only_for_unbound_sessions() {
        let def = tools::catalog()
            .iter()
            .find(|d| d.name == "file_read")
            .expect("file_read");
        let open = serde_json::to_value(def.listed(&Binding::unrestricted())).expect("json");
        assert_eq!(open["inputSchema"]["required"][0], "sandbox");
        assert!(open["inputSchema"]["properties"]["sandbox"].is_object());
        let closed = serde_json::to_value(def.listed(&bound("sb1"))).expect("json");
        assert!(closed["inputSchema"]["properties"].get("sandbox").is_none());
        assert_eq!(closed["annotations"]["readOnlyHint"], true);
        assert!(closed["outputSchema"].is_object());
    }
}
