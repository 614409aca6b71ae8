//! The MCP tools: their catalog (names, descriptions, schemas, hints, the profile that
//! brings each one in) and the dispatch of a call to its implementation.
//!
//! Choices made here:
//! - Tools that act in a sandbox take a `sandbox` argument (id or name) in unbound
//!   sessions; in sessions bound to a sandbox the argument is absent from the schema and
//!   the binding decides. Tools that create or remove sandboxes are absent from bound
//!   sessions whatever their profile, since they would reach beyond the one sandbox.
//! - A failure is a result with `isError: true` and a message that says what to do;
//!   protocol errors are kept for calls that cannot be routed at all.
//! - A path the sandbox refuses to resolve (a magic link, an escape) fails with the same
//!   message as a missing file, so the answer reveals nothing about what exists.

pub mod commands;
pub mod files;
pub mod sandboxes;

use std::sync::{Arc, OnceLock};

use nexus_agent_proto::{ErrorCode as RemoteCode, ProtoError};
use nexus_core::service::ServiceError;
use rmcp::RoleServer;
use rmcp::model::JsonObject;
use rmcp::service::RequestContext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::binding::{Binding, Profile};
use crate::state::AppState;

/// How a tool relates to sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Acts inside one sandbox: takes `sandbox` unless the session is bound to one.
    Sandbox,
    /// Creates, lists or removes sandboxes: only in unbound sessions.
    Host,
}

/// Which module implements a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `sandboxes`: lifecycle.
    Sandboxes,
    /// `commands`: commands and background processes.
    Commands,
    /// `files`: the file API.
    Files,
}

/// Behaviour hints for clients, set honestly (`readOnlyHint`, `destructiveHint`, ...).
#[derive(Debug, Clone, Copy)]
pub struct Hints {
    /// Changes nothing.
    pub read_only: bool,
    /// May remove or overwrite what exists.
    pub destructive: bool,
    /// Calling it twice with the same arguments has no further effect.
    pub idempotent: bool,
}

impl Hints {
    /// Changes nothing.
    pub const READ_ONLY: Hints = Hints {
        read_only: true,
        destructive: false,
        idempotent: true,
    };
    /// Adds something new, overwriting nothing; a repeat adds again.
    pub const ADDITIVE: Hints = Hints {
        read_only: false,
        destructive: false,
        idempotent: false,
    };
    /// Adds something new, overwriting nothing; a repeat changes nothing more.
    pub const ADDITIVE_IDEMPOTENT: Hints = Hints {
        read_only: false,
        destructive: false,
        idempotent: true,
    };
    /// May remove or overwrite; a repeat may do so again.
    pub const DESTRUCTIVE: Hints = Hints {
        read_only: false,
        destructive: true,
        idempotent: false,
    };
    /// May remove or overwrite; a repeat changes nothing more.
    pub const DESTRUCTIVE_IDEMPOTENT: Hints = Hints {
        read_only: false,
        destructive: true,
        idempotent: true,
    };
}

/// One tool of the catalog.
#[derive(Debug)]
pub struct ToolDef {
    /// The name models call.
    pub name: &'static str,
    /// A short human title.
    pub title: &'static str,
    /// What it does and when to use it, written for a model.
    pub description: &'static str,
    /// The smallest profile that includes it.
    pub profile: Profile,
    /// Sandbox-bound or host-level.
    pub scope: Scope,
    /// The module that runs it.
    pub family: Family,
    /// Behaviour hints.
    pub hints: Hints,
    /// Arguments, without `sandbox`.
    pub input: Arc<JsonObject>,
    /// Shape of `structuredContent`.
    pub output: Arc<JsonObject>,
}

impl ToolDef {
    /// A tool whose arguments are `A` and whose structured result is `O`.
    pub fn new<A: schemars::JsonSchema + 'static, O: schemars::JsonSchema + 'static>(
        name: &'static str,
        title: &'static str,
        description: &'static str,
        profile: Profile,
        scope: Scope,
        family: Family,
        hints: Hints,
    ) -> Self {
        Self {
            name,
            title,
            description,
            profile,
            scope,
            family,
            hints,
            input: input_schema::<A>(),
            output: output_schema::<O>(),
        }
    }

    /// Whether a session with `binding` sees this tool.
    pub fn visible_to(&self, binding: &Binding) -> bool {
        self.profile <= binding.profile && !(self.scope == Scope::Host && binding.sandbox.is_some())
    }

    /// The tool as listed to a session with `binding`.
    pub fn listed(&self, binding: &Binding) -> rmcp::model::Tool {
        let mut input = self.input.as_ref().clone();
        if self.scope == Scope::Sandbox && binding.sandbox.is_none() {
            add_sandbox_argument(&mut input);
        }
        let annotations = rmcp::model::ToolAnnotations::new()
            .read_only(self.hints.read_only)
            .destructive(self.hints.destructive)
            .idempotent(self.hints.idempotent)
            .open_world(false);
        let mut annotations = annotations;
        annotations.title = Some(self.title.to_owned());
        let mut tool = rmcp::model::Tool::new(self.name, self.description, Arc::new(input));
        tool.title = Some(self.title.to_owned());
        tool.output_schema = Some(self.output.clone());
        tool.annotations = Some(annotations);
        tool
    }
}

/// Every tool, in a fixed order.
pub fn catalog() -> &'static [ToolDef] {
    static CATALOG: OnceLock<Vec<ToolDef>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut tools = sandboxes::defs();
        tools.extend(commands::defs());
        tools.extend(files::defs());
        tools
    })
}

/// What a tool implementation works with.
#[derive(Debug)]
pub struct ToolCtx<'a> {
    /// The daemon.
    pub state: &'a AppState,
    /// The sandbox a `Scope::Sandbox` tool acts in (already checked against the binding).
    pub sandbox: String,
    /// The MCP request: progress token, cancellation, the peer for notifications.
    pub request: &'a RequestContext<RoleServer>,
}

/// A successful result: text for the model, and the same as `structuredContent`.
#[derive(Debug)]
pub struct ToolOutput {
    /// What the model reads.
    pub text: String,
    /// Matches the tool's output schema.
    pub structured: Value,
}

impl ToolOutput {
    /// A result from its text and its structured form.
    pub fn new<T: Serialize>(text: impl Into<String>, structured: &T) -> Self {
        Self {
            text: text.into(),
            structured: serde_json::to_value(structured).unwrap_or(Value::Null),
        }
    }
}

/// A failed call, reported to the model as a result with `isError: true`.
#[derive(Debug)]
pub struct ToolError {
    /// What went wrong and what to do about it.
    pub message: String,
    /// Structured content matching the output schema, when the failure still has some
    /// (a command that timed out has its output so far).
    pub structured: Option<Value>,
}

impl ToolError {
    /// A failure with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            structured: None,
        }
    }
}

/// Runs the tool `def` with its arguments (`sandbox` already taken out).
pub async fn call(
    def: &ToolDef,
    ctx: &ToolCtx<'_>,
    args: JsonObject,
) -> Result<ToolOutput, ToolError> {
    match def.family {
        Family::Sandboxes => sandboxes::call(def.name, ctx, args).await,
        Family::Commands => commands::call(def.name, ctx, args).await,
        Family::Files => files::call(def.name, ctx, args).await,
    }
}

/// Parses arguments; a mismatch names the field and what was expected.
pub fn parse<T: DeserializeOwned>(args: JsonObject) -> Result<T, ToolError> {
    serde_path_to_error::deserialize::<_, T>(Value::Object(args)).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        if field == "." || field.is_empty() {
            ToolError::new(format!("invalid arguments: {inner}"))
        } else {
            ToolError::new(format!("invalid argument `{field}`: {inner}"))
        }
    })
}

/// A service failure in words a model can act on.
pub fn service_error(ctx: &ToolCtx<'_>, err: ServiceError) -> ToolError {
    match err {
        ServiceError::NotFound(_) => ToolError::new(format!(
            "no sandbox {:?}; sandbox_list shows the sandboxes that exist",
            ctx.sandbox
        )),
        ServiceError::NotRunning { .. } | ServiceError::Paused { .. } => {
            ToolError::new(format!("sandbox {:?} is not running: {err}", ctx.sandbox))
        }
        ServiceError::Storage(_) | ServiceError::DriverUnavailable(_) => {
            tracing::warn!(error = %err, "MCP tool failed inside the daemon");
            ToolError::new("the daemon failed to carry this out; its log has the details")
        }
        other => ToolError::new(other.to_string()),
    }
}

/// A file operation's failure in words a model can act on. Refused paths read like
/// missing ones (no existence oracle).
pub fn file_error(path: &str, err: ProtoError) -> ToolError {
    match err {
        ProtoError::Remote { code, message } => match code {
            RemoteCode::NotFound | RemoteCode::InvalidPath | RemoteCode::SymlinkRefused => {
                ToolError::new(format!("no such file or directory: {path}"))
            }
            RemoteCode::Exists
            | RemoteCode::NotADirectory
            | RemoteCode::IsADirectory
            | RemoteCode::NotEmpty
            | RemoteCode::PermissionDenied
            | RemoteCode::ReadOnly
            | RemoteCode::NoSpace
            | RemoteCode::BadRequest => ToolError::new(message),
            other => {
                tracing::warn!(?other, %message, "MCP file tool failed in the agent");
                ToolError::new(format!(
                    "the sandbox failed to carry this out on {path}: {message}"
                ))
            }
        },
        other => {
            tracing::warn!(error = %other, "MCP file tool lost the sandbox's agent");
            ToolError::new(format!(
                "lost contact with the sandbox while working on {path}; check that it is still running"
            ))
        }
    }
}

/// Adds the `sandbox` argument (first, required) to an input schema.
fn add_sandbox_argument(schema: &mut JsonObject) {
    let property = serde_json::json!({
        "type": "string",
        "description": "The sandbox to act in: its id or name (sandbox_list shows them)."
    });
    let mut properties = serde_json::Map::new();
    properties.insert("sandbox".into(), property);
    if let Some(Value::Object(existing)) = schema.remove("properties") {
        properties.extend(existing);
    }
    schema.insert("properties".into(), Value::Object(properties));
    let mut required = vec![Value::from("sandbox")];
    if let Some(Value::Array(existing)) = schema.remove("required") {
        required.extend(existing);
    }
    schema.insert("required".into(), Value::Array(required));
}

/// The input schema of `T`, as MCP wants it (an object, no root title). An optional
/// argument is simply not required: its type is the value's alone, not a `[T, "null"]`
/// pair, which clients mapping schemas onto single-type dialects reject.
pub fn input_schema<T: schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    let schema = rmcp::handler::server::common::schema_for_input::<T>()
        .expect("tool arguments are structs, whose schema is an object");
    let mut schema = schema.as_ref().clone();
    let required: Vec<Value> = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            if required.iter().any(|r| r == name) {
                continue;
            }
            if let Some(Value::Array(types)) = property.get("type") {
                let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
                if let [single] = kept.as_slice() {
                    property["type"] = single.clone();
                }
            }
        }
    }
    portable(&schema)
}

/// The output schema of `T`.
pub fn output_schema<T: schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    portable(&rmcp::handler::server::common::schema_for_output::<T>())
}

/// Formats JSON Schema 2020-12 defines; others (schemars' `uint64`, `double`, ...) are
/// dropped, since clients warn about them and `minimum` already says what they meant.
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// `schema` as the most clients read it, at every depth: no non-standard `format`, and a
/// nullable value as `anyOf` a type and `null` rather than a `type` array.
fn portable(schema: &JsonObject) -> Arc<JsonObject> {
    fn clean_object(map: &mut JsonObject) {
        let nonstandard = map
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| !STANDARD_FORMATS.contains(&f));
        if nonstandard {
            map.remove("format");
        }
        if let Some(Value::Array(types)) = map.get("type") {
            let branches: Vec<Value> = types
                .iter()
                .map(|t| serde_json::json!({ "type": t }))
                .collect();
            map.remove("type");
            map.insert("anyOf".into(), Value::Array(branches));
        }
        map.values_mut().for_each(clean);
    }
    fn clean(value: &mut Value) {
        match value {
            Value::Object(map) => clean_object(map),
            Value::Array(items) => items.iter_mut().for_each(clean),
            _ => {}
        }
    }
    let mut cleaned = schema.clone();
    clean_object(&mut cleaned);
    Arc::new(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_arguments_have_one_type() {
        for def in catalog() {
            let text = serde_json::to_string(def.input.as_ref()).expect("json");
            assert!(
                !text.contains("\"null\""),
                "{} has a nullable argument: {text}",
                def.name
            );
        }
    }

    #[test]
    fn schemas_carry_only_standard_formats() {
        for def in catalog() {
            for schema in [&def.input, &def.output] {
                let text = serde_json::to_string(schema.as_ref()).expect("json");
                for format in [
                    "uint64", "uint32", "int64", "int32", "double", "float", "uint",
                ] {
                    assert!(
                        !text.contains(&format!("\"format\":\"{format}\"")),
                        "{} has format {format}",
                        def.name
                    );
                }
            }
        }
    }
}
