//! The fixture tools that send a request back to the client during the call (sessions of
//! protocols before 2026-07-28): `sampling/createMessage` and `elicitation/create`.

use rmcp::model::{
    CallToolResult, ContentBlock, CreateMessageRequestParams, ElicitRequestParams,
    ElicitationAction, ElicitationSchema, JsonObject, SamplingMessage,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};

/// The largest answer `test_sampling` asks the client's model for.
const MAX_TOKENS: u32 = 100;

/// `test_sampling`: asks the client's model the `prompt` argument and returns its answer.
pub(super) async fn sample(
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let prompt = args
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or("Hello");
    let params =
        CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], MAX_TOKENS);
    Ok(match context.peer.create_message(params).await {
        Ok(result) => {
            let answer = result
                .message
                .content
                .first()
                .and_then(|block| block.as_text())
                .map_or_else(|| "(no text)".to_owned(), |text| text.text.clone());
            success(format!("LLM response: {answer}"))
        }
        Err(error) => failure(format!("sampling failed: {error}")),
    })
}

/// `test_elicitation`: asks the user for a user name and an email address.
pub(super) async fn elicit_user(
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let message = args
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("Please provide your information");
    elicit(context, message, user_schema(), "User response").await
}

/// `test_elicitation_sep1034_defaults`: a form whose every field has a default (SEP-1034).
pub(super) async fn elicit_defaults(
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let message = "Please provide values (all have defaults)";
    elicit(context, message, defaults_schema(), "Elicitation completed").await
}

/// `test_elicitation_sep1330_enums`: every way of writing an enum (SEP-1330).
pub(super) async fn elicit_enums(
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let message = "Test enum schema improvements";
    elicit(
        context,
        message,
        enums_schema(),
        "Enum elicitation completed",
    )
    .await
}

async fn elicit(
    context: &RequestContext<RoleServer>,
    message: &str,
    schema: Value,
    label: &str,
) -> Result<CallToolResult, McpError> {
    let requested_schema: ElicitationSchema = serde_json::from_value(schema).map_err(|error| {
        McpError::internal_error(format!("invalid fixture elicitation schema: {error}"), None)
    })?;
    let params = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: message.to_owned(),
        requested_schema,
    };
    Ok(match context.peer.create_elicitation(params).await {
        Ok(result) => {
            let action = match result.action {
                ElicitationAction::Accept => "accept",
                ElicitationAction::Decline => "decline",
                ElicitationAction::Cancel => "cancel",
                _ => "unknown",
            };
            let content = result.content.unwrap_or(Value::Null);
            success(format!("{label}: action={action}, content={content}"))
        }
        Err(error) => failure(format!("elicitation failed: {error}")),
    })
}

fn success(text: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn failure(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn user_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "username": { "type": "string", "description": "User's response" },
            "email": { "type": "string", "description": "User's email address" }
        },
        "required": ["username", "email"]
    })
}

fn defaults_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "User's name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User's age", "default": 30 },
            "score": { "type": "number", "description": "User's score", "default": 95.5 },
            "status": {
                "type": "string",
                "description": "User's status",
                "enum": ["active", "inactive", "pending"],
                "default": "active"
            },
            "verified": {
                "type": "boolean",
                "description": "Whether user is verified",
                "default": true
            }
        }
    })
}

fn enums_schema() -> Value {
    let titled = |titles: [&str; 3]| {
        titles
            .iter()
            .enumerate()
            .map(|(i, title)| json!({ "const": format!("value{}", i + 1), "title": title }))
            .collect::<Vec<_>>()
    };
    json!({
        "type": "object",
        "properties": {
            "untitledSingle": { "type": "string", "enum": ["option1", "option2", "option3"] },
            "titledSingle": {
                "type": "string",
                "oneOf": titled(["First Option", "Second Option", "Third Option"])
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"]
            },
            "untitledMulti": {
                "type": "array",
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
            },
            "titledMulti": {
                "type": "array",
                "items": { "anyOf": titled(["First Choice", "Second Choice", "Third Choice"]) }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schemas go through rmcp's typed model on the way out: what it would drop or
    /// reject, the suite would never see.
    fn round_trip(schema: Value) -> Value {
        let typed: ElicitationSchema = serde_json::from_value(schema).expect("parses");
        serde_json::to_value(typed).expect("serializes")
    }

    #[test]
    fn the_user_schema_keeps_its_required_fields() {
        let out = round_trip(user_schema());
        assert_eq!(out["required"], json!(["username", "email"]));
    }

    #[test]
    fn every_default_survives_the_typed_model() {
        let out = round_trip(defaults_schema());
        assert_eq!(
            out.pointer("/properties/name/default"),
            Some(&json!("John Doe"))
        );
        assert_eq!(out.pointer("/properties/age/default"), Some(&json!(30)));
        assert_eq!(out.pointer("/properties/score/default"), Some(&json!(95.5)));
        assert_eq!(
            out.pointer("/properties/status/default"),
            Some(&json!("active"))
        );
        assert_eq!(
            out.pointer("/properties/verified/default"),
            Some(&json!(true))
        );
    }

    #[test]
    fn every_enum_form_survives_the_typed_model() {
        let out = round_trip(enums_schema());
        assert_eq!(
            out.pointer("/properties/titledSingle/oneOf/1/const"),
            Some(&json!("value2"))
        );
        assert_eq!(
            out.pointer("/properties/legacyEnum/enumNames/2"),
            Some(&json!("Option Three"))
        );
        assert_eq!(
            out.pointer("/properties/untitledMulti/items/enum/0"),
            Some(&json!("option1"))
        );
        assert_eq!(
            out.pointer("/properties/titledMulti/items/anyOf/0/title"),
            Some(&json!("First Choice"))
        );
    }
}
