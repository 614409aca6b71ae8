//! The fixture tools of the conformance suite: content of every kind, errors, progress and
//! log notifications, requests back to the client (sampling, elicitation), the stateless
//! protocol's diagnostic tools, and schemas the suite inspects.

use std::sync::LazyLock;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock,
    LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam, ResourceContents,
    Tool, object,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};

use super::{Fixtures, ListChange, client, input, severity};

/// A 1×1 red PNG.
pub(super) const PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
/// A WAV file with no samples.
const WAV_BASE64: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";
/// The logger name on the fixtures' log messages.
const LOGGER: &str = "nexus-conformance";
/// The pause between the notifications of one call, so clients see them arrive apart.
const STEP: Duration = Duration::from_millis(50);

/// Every fixture tool, in a fixed order.
pub(super) fn catalog() -> Vec<Tool> {
    static CATALOG: LazyLock<Vec<Tool>> = LazyLock::new(build_catalog);
    CATALOG.clone()
}

/// Runs the fixture tool `request` names (the input-required ones excepted).
pub(super) async fn call(
    fixtures: &Fixtures,
    request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    let args = request.arguments.unwrap_or_default();
    let result = match request.name.as_ref() {
        "test_simple_text" => text("This is a simple text response for testing."),
        "test_image_content" => CallToolResult::success(vec![image()]),
        "test_audio_content" => {
            CallToolResult::success(vec![ContentBlock::audio(WAV_BASE64, "audio/wav")])
        }
        "test_embedded_resource" => {
            CallToolResult::success(vec![ContentBlock::resource(ResourceContents::text(
                "This is an embedded resource content.",
                "test://embedded-resource",
            ))])
        }
        "test_multiple_content_types" => CallToolResult::success(vec![
            ContentBlock::text("Multiple content types test:"),
            image(),
            ContentBlock::resource(
                ResourceContents::text(
                    r#"{"test":"data","value":123}"#,
                    "test://mixed-content-resource",
                )
                .with_mime_type("application/json"),
            ),
        ]),
        "test_error_handling" => CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )]),
        "test_tool_with_logging" => {
            for message in [
                "Tool execution started",
                "Tool processing data",
                "Tool execution completed",
            ] {
                log(fixtures, &context, LoggingLevel::Info, message).await;
                tokio::time::sleep(STEP).await;
            }
            text("Logging test completed")
        }
        "test_logging_tool" => {
            log(
                fixtures,
                &context,
                LoggingLevel::Info,
                "logLevel was requested",
            )
            .await;
            text("Logging tool completed")
        }
        "test_tool_with_progress" => {
            progress(&context).await;
            text("Progress test completed")
        }
        "test_reconnection" => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            text("Reconnection test completed")
        }
        "test_sampling" => client::sample(&args, &context).await?,
        "test_elicitation" => client::elicit_user(&args, &context).await?,
        "test_elicitation_sep1034_defaults" => client::elicit_defaults(&context).await?,
        "test_elicitation_sep1330_enums" => client::elicit_enums(&context).await?,
        "json_schema_2020_12_tool" => {
            let name = args.get("name").and_then(Value::as_str).unwrap_or("world");
            text(format!("Hello, {name}!"))
        }
        "test_custom_header" => {
            let value = args
                .get("value")
                .and_then(Value::as_str)
                .ok_or_else(|| McpError::invalid_params("`value` must be a string", None))?;
            text(value)
        }
        "test_missing_capability" => {
            let declared = context
                .client_capabilities()
                .is_some_and(|caps| caps.sampling.is_some());
            if !declared {
                return Err(McpError::missing_required_client_capability(
                    ClientCapabilities::builder().enable_sampling().build(),
                ));
            }
            text("The sampling capability is declared")
        }
        "test_streaming_elicitation" => return Ok(input::streaming_elicitation()?.into()),
        "test_trigger_tool_change" => {
            fixtures.hub.notify_listeners(ListChange::Tools).await;
            text("Tool list change triggered")
        }
        "test_trigger_prompt_change" => {
            fixtures.hub.notify_listeners(ListChange::Prompts).await;
            text("Prompt list change triggered")
        }
        other => {
            return Err(McpError::invalid_params(
                format!("tool not found: {other}"),
                Some(json!({ "name": other })),
            ));
        }
    };
    Ok(result.into())
}

fn text(message: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(message)])
}

fn image() -> ContentBlock {
    ContentBlock::image(PNG_BASE64, "image/png")
}

/// Sends a log message when the request's threshold lets it through.
async fn log(
    fixtures: &Fixtures,
    context: &RequestContext<RoleServer>,
    level: LoggingLevel,
    message: &str,
) {
    let Some(threshold) = fixtures.log_threshold(context) else {
        return;
    };
    if severity(level) < severity(threshold) {
        return;
    }
    let param = LoggingMessageNotificationParam::new(level, json!(message)).with_logger(LOGGER);
    if let Err(error) = context.peer.notify_logging_message(param).await {
        tracing::debug!(%error, "conformance: log notification not delivered");
    }
}

/// Reports 0, 50 and 100 of 100 to the request's progress token, if it has one.
async fn progress(context: &RequestContext<RoleServer>) {
    let token = context.meta.get_progress_token();
    for (done, message) in [(0.0, "Starting"), (50.0, "Halfway"), (100.0, "Complete")] {
        if let Some(token) = &token {
            let param = ProgressNotificationParam::new(token.clone(), done)
                .with_total(100.0)
                .with_message(message);
            if let Err(error) = context.peer.notify_progress(param).await {
                tracing::debug!(%error, "conformance: progress notification not delivered");
            }
        }
        tokio::time::sleep(STEP).await;
    }
}

fn build_catalog() -> Vec<Tool> {
    let no_arguments = || json!({ "type": "object", "properties": {} });
    let mut tools = vec![
        tool(
            "test_simple_text",
            "Returns simple text content",
            no_arguments(),
        ),
        tool(
            "test_image_content",
            "Returns image content",
            no_arguments(),
        ),
        tool(
            "test_audio_content",
            "Returns audio content",
            no_arguments(),
        ),
        tool(
            "test_embedded_resource",
            "Returns embedded resource content",
            no_arguments(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and resource content together",
            no_arguments(),
        ),
        tool(
            "test_error_handling",
            "Always returns a tool error",
            no_arguments(),
        ),
        tool(
            "test_tool_with_logging",
            "Sends three log messages while it runs",
            no_arguments(),
        ),
        tool(
            "test_logging_tool",
            "Sends a log message only when the request asks for a log level",
            no_arguments(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress to the request's progress token",
            no_arguments(),
        ),
        tool(
            "test_reconnection",
            "Takes a moment, for SSE reconnection tests",
            no_arguments(),
        ),
        tool(
            "test_sampling",
            "Asks the client to sample an LLM",
            json!({
                "type": "object",
                "properties": {
                    "prompt": { "type": "string", "description": "The prompt to send" }
                },
                "required": ["prompt"]
            }),
        ),
        tool(
            "test_elicitation",
            "Asks the user for a user name and an email address",
            json!({
                "type": "object",
                "properties": {
                    "message": { "type": "string", "description": "The message to show" }
                },
                "required": ["message"]
            }),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicits values that all have defaults (SEP-1034)",
            no_arguments(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicits every kind of enum (SEP-1330)",
            no_arguments(),
        ),
        tool(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            json_schema_2020_12(),
        ),
        tool(
            "test_custom_header",
            "Echoes a value that also travels in the Mcp-Param-Value header (SEP-2243)",
            json!({
                "type": "object",
                "properties": {
                    "value": { "type": "string", "x-mcp-header": "Value" }
                },
                "required": ["value"]
            }),
        ),
        tool(
            "test_missing_capability",
            "Needs the client's sampling capability",
            no_arguments(),
        ),
        tool(
            "test_streaming_elicitation",
            "Returns an input-required result asking for a value",
            no_arguments(),
        ),
        tool(
            "test_trigger_tool_change",
            "Notifies subscribed listeners that the tool list changed",
            no_arguments(),
        ),
        tool(
            "test_trigger_prompt_change",
            "Notifies subscribed listeners that the prompt list changed",
            no_arguments(),
        ),
    ];
    tools.extend(
        input::TOOLS
            .iter()
            .map(|(name, description)| tool(name, description, no_arguments())),
    );
    tools
}

fn tool(name: &'static str, description: &'static str, schema: Value) -> Tool {
    Tool::new(name, description, object(schema))
}

/// The schema of `json_schema_2020_12_tool`: the keywords SEP-1613 and SEP-2106 say a
/// server must pass through untouched.
fn json_schema_2020_12() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {
                    "street": { "type": "string" },
                    "city": { "type": "string" }
                }
            }
        },
        "properties": {
            "name": { "type": "string" },
            "address": { "$ref": "#/$defs/address" },
            "contactMethod": { "type": "string", "enum": ["phone", "email"] },
            "phone": { "type": "string" },
            "email": { "type": "string" }
        },
        "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
        "if": {
            "properties": { "contactMethod": { "const": "phone" } },
            "required": ["contactMethod"]
        },
        "then": { "required": ["phone"] },
        "else": { "required": ["email"] },
        "additionalProperties": false
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use base64::Engine;

    use super::*;

    #[test]
    fn tool_names_are_unique_and_follow_the_spec_rules() {
        let tools = catalog();
        let mut seen = HashSet::new();
        for tool in &tools {
            assert!(seen.insert(tool.name.to_string()), "{} twice", tool.name);
            assert!((1..=128).contains(&tool.name.len()));
            assert!(
                tool.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
                "{}",
                tool.name
            );
            assert!(tool.description.is_some());
        }
        assert_eq!(catalog(), tools, "the order is fixed");
    }

    #[test]
    fn the_2020_12_schema_keeps_its_keywords() {
        let tool = catalog()
            .into_iter()
            .find(|t| t.name == "json_schema_2020_12_tool")
            .expect("tool");
        let schema = Value::Object((*tool.input_schema).clone());
        for pointer in [
            "/$schema",
            "/$defs/address/$anchor",
            "/allOf/0/anyOf",
            "/if",
            "/then",
        ] {
            assert!(schema.pointer(pointer).is_some(), "{pointer} lost");
        }
        assert_eq!(schema["additionalProperties"], json!(false));
    }

    #[test]
    fn the_custom_header_tool_declares_its_header() {
        let tool = catalog()
            .into_iter()
            .find(|t| t.name == "test_custom_header")
            .expect("tool");
        let schema = Value::Object((*tool.input_schema).clone());
        assert_eq!(
            schema.pointer("/properties/value/x-mcp-header"),
            Some(&json!("Value"))
        );
    }

    #[test]
    fn media_fixtures_are_valid_base64_of_their_format() {
        let engine = base64::engine::general_purpose::STANDARD;
        let png = engine.decode(PNG_BASE64).expect("png base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let wav = engine.decode(WAV_BASE64).expect("wav base64");
        assert!(wav.starts_with(b"RIFF") && &wav[8..12] == b"WAVE");
    }
}
