//! The input-required fixtures (SEP-2322, protocol 2026-07-28): a call answers with an
//! `InputRequiredResult` naming what it needs from the client (an elicitation, a sampling,
//! the roots), and completes when the client calls again with `inputResponses` and the
//! sealed `requestState` it was given.

use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CreateMessageRequest,
    CreateMessageRequestParams, ElicitRequest, ElicitRequestParams, ElicitationSchema,
    InputRequest, InputRequests, InputRequiredResult, InputResponses, JsonObject, ListRootsRequest,
    RequestStateCodec, SamplingMessage, SealOptions,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The input-required fixture tools, with their descriptions.
pub(super) const TOOLS: &[(&str, &str)] = &[
    (
        "test_input_required_result_elicitation",
        "Needs the user's name through an elicitation (SEP-2322)",
    ),
    (
        "test_input_required_result_sampling",
        "Needs a sampled answer from the client's model (SEP-2322)",
    ),
    (
        "test_input_required_result_list_roots",
        "Needs the client's roots (SEP-2322)",
    ),
    (
        "test_input_required_result_request_state",
        "Round-trips a sealed requestState (SEP-2322)",
    ),
    (
        "test_input_required_result_multiple_inputs",
        "Needs an elicitation, a sampling and the roots in one round (SEP-2322)",
    ),
    (
        "test_input_required_result_multi_round",
        "Needs two rounds of input, its requestState changing between them (SEP-2322)",
    ),
    (
        "test_input_required_result_tampered_state",
        "Refuses a requestState that fails verification (SEP-2322)",
    ),
    (
        "test_input_required_result_capabilities",
        "Asks only for the inputs the client declared it can give (SEP-2322)",
    ),
];

/// How long a sealed `requestState` may be echoed back.
const STATE_TTL: Duration = Duration::from_secs(600);
/// The largest answer a sampling input asks the client's model for.
const MAX_TOKENS: u32 = 100;

/// Whether `name` is one of [`TOOLS`].
pub(super) fn handles(name: &str) -> bool {
    TOOLS.iter().any(|(tool, _)| *tool == name)
}

/// Runs one round of the input-required tool `request` names.
pub(super) fn call(
    codec: &RequestStateCodec,
    request: CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    let name = request.name.as_ref();
    let responses = request.input_responses.as_ref();
    let state = request.request_state.as_deref();
    let done = |text: String| Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into());
    match name {
        "test_input_required_result_elicitation" => match response(responses, "user_name") {
            Some(answer) => done(format!("Hello, {}!", elicited(answer, "name"))),
            None => ask([("user_name", ask_name("What is your name?")?)], None),
        },
        "test_input_required_result_sampling" => match response(responses, "capital_question") {
            Some(answer) => done(format!("Sampling response: {}", sampled(answer))),
            None => ask(
                [(
                    "capital_question",
                    sampling("What is the capital of France?"),
                )],
                None,
            ),
        },
        "test_input_required_result_list_roots" => match response(responses, "client_roots") {
            Some(answer) => done(format!("Client roots: [{}]", roots(answer))),
            None => ask([("client_roots", list_roots())], None),
        },
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => {
            match (state, response(responses, "confirm")) {
                (Some(sealed), Some(_)) => {
                    open(codec, name, sealed)?;
                    done("Confirmed: state-ok".into())
                }
                (Some(sealed), None) => {
                    open(codec, name, sealed)?;
                    ask([("confirm", confirm()?)], Some(seal(codec, name, 1)?))
                }
                (None, _) => ask([("confirm", confirm()?)], Some(seal(codec, name, 1)?)),
            }
        }
        "test_input_required_result_multiple_inputs" => {
            if let Some(sealed) = state {
                open(codec, name, sealed)?;
            }
            let keys = ["user_name", "greeting", "client_roots"];
            if state.is_some() && keys.iter().all(|key| response(responses, key).is_some()) {
                return done("All inputs received".into());
            }
            ask(
                [
                    ("user_name", ask_name("What is your name?")?),
                    ("greeting", sampling("Generate a greeting")),
                    ("client_roots", list_roots()),
                ],
                Some(seal(codec, name, 1)?),
            )
        }
        "test_input_required_result_multi_round" => {
            let step = match state {
                Some(sealed) => open(codec, name, sealed)?.step,
                None => 0,
            };
            match step {
                0 => ask(
                    [("step1", ask_name("Step 1: What is your name?")?)],
                    Some(seal(codec, name, 1)?),
                ),
                1 if response(responses, "step1").is_some() => {
                    ask([("step2", ask_color()?)], Some(seal(codec, name, 2)?))
                }
                1 => ask(
                    [("step1", ask_name("Step 1: What is your name?")?)],
                    Some(seal(codec, name, 1)?),
                ),
                _ if response(responses, "step2").is_some() => {
                    done("Multi-round flow complete".into())
                }
                _ => ask([("step2", ask_color()?)], Some(seal(codec, name, 2)?)),
            }
        }
        "test_input_required_result_capabilities" => {
            if responses.is_some_and(|r| r.values().any(Value::is_object)) {
                return done("Capability-aware flow complete".into());
            }
            let caps = context.client_capabilities().unwrap_or_default();
            let mut wanted = InputRequests::new();
            if caps.elicitation.is_some() {
                wanted.insert("user_name".into(), ask_name("What is your name?")?);
            }
            if caps.sampling.is_some() {
                wanted.insert("greeting".into(), sampling("Generate a greeting"));
            }
            if caps.roots.is_some() {
                wanted.insert("client_roots".into(), list_roots());
            }
            if wanted.is_empty() {
                return done("The client declared no capability to ask it through".into());
            }
            Ok(InputRequiredResult::from_input_requests(wanted).into())
        }
        other => Err(McpError::invalid_params(
            format!("tool not found: {other}"),
            None,
        )),
    }
}

/// `test_streaming_elicitation`: always asks for a value (the stateless scenario only
/// checks what the response stream carries).
pub(super) fn streaming_elicitation() -> Result<InputRequiredResult, McpError> {
    let wanted = [(
        "streaming_elicitation",
        elicitation(
            "Provide a value",
            json!({ "value": { "type": "string" } }),
            "value",
        )?,
    )];
    Ok(InputRequiredResult::from_input_requests(requests(wanted)))
}

/// The context a prompt elicits (`test_input_required_result_prompt`): `Ok` with it once
/// the client gave it, else the input-required result asking for it.
pub(super) fn prompt_context(
    responses: Option<&InputResponses>,
) -> Result<Result<String, InputRequiredResult>, McpError> {
    Ok(match response(responses, "user_context") {
        Some(answer) => Ok(elicited(answer, "context")),
        None => Err(InputRequiredResult::from_input_requests(requests([(
            "user_context",
            elicitation(
                "What context should the prompt use?",
                json!({ "context": { "type": "string" } }),
                "context",
            )?,
        )]))),
    })
}

/// What a sealed `requestState` carries: how far the call got.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    step: u32,
}

/// Seals `step` for `tool`: the state cannot be replayed against another tool.
fn seal(codec: &RequestStateCodec, tool: &str, step: u32) -> Result<String, McpError> {
    let options = SealOptions::new()
        .associated_data(tool.as_bytes())
        .ttl(STATE_TTL);
    codec
        .seal_json_with(&Progress { step }, &options)
        .map_err(|error| McpError::internal_error(format!("cannot seal state: {error}"), None))
}

/// Opens a `requestState` the client echoed: untrusted until it verifies.
fn open(codec: &RequestStateCodec, tool: &str, sealed: &str) -> Result<Progress, McpError> {
    codec
        .open_json_with(sealed, tool.as_bytes())
        .map_err(|error| {
            McpError::invalid_params(format!("requestState failed verification: {error}"), None)
        })
}

fn ask<const N: usize>(
    wanted: [(&str, InputRequest); N],
    state: Option<String>,
) -> Result<CallToolResponse, McpError> {
    Ok(InputRequiredResult::new(Some(requests(wanted)), state).into())
}

fn requests<const N: usize>(wanted: [(&str, InputRequest); N]) -> InputRequests {
    wanted
        .into_iter()
        .map(|(key, request)| (key.to_owned(), request))
        .collect()
}

/// The client's answer under `key`; anything but a JSON object (an `ElicitResult`,
/// `CreateMessageResult` or `ListRootsResult`) counts as missing, so it is asked again.
fn response<'a>(responses: Option<&'a InputResponses>, key: &str) -> Option<&'a JsonObject> {
    responses?.get(key)?.as_object()
}

/// A field of an accepted elicitation's content.
fn elicited(answer: &JsonObject, field: &str) -> String {
    answer
        .get("content")
        .and_then(|content| content.get(field))
        .and_then(Value::as_str)
        .unwrap_or("(none)")
        .to_owned()
}

/// The text of a sampling result.
fn sampled(answer: &JsonObject) -> String {
    answer
        .get("content")
        .and_then(|content| content.get("text"))
        .and_then(Value::as_str)
        .unwrap_or("(no text)")
        .to_owned()
}

/// The URIs of a roots result, comma-separated.
fn roots(answer: &JsonObject) -> String {
    answer
        .get("roots")
        .and_then(Value::as_array)
        .map(|roots| {
            roots
                .iter()
                .filter_map(|root| root.get("uri").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn ask_name(message: &str) -> Result<InputRequest, McpError> {
    elicitation(message, json!({ "name": { "type": "string" } }), "name")
}

fn ask_color() -> Result<InputRequest, McpError> {
    elicitation(
        "Step 2: What is your favorite color?",
        json!({ "color": { "type": "string" } }),
        "color",
    )
}

fn confirm() -> Result<InputRequest, McpError> {
    elicitation(
        "Please confirm",
        json!({ "ok": { "type": "boolean" } }),
        "ok",
    )
}

fn elicitation(message: &str, properties: Value, required: &str) -> Result<InputRequest, McpError> {
    let schema = json!({ "type": "object", "properties": properties, "required": [required] });
    let requested_schema: ElicitationSchema = serde_json::from_value(schema).map_err(|error| {
        McpError::internal_error(format!("invalid fixture elicitation schema: {error}"), None)
    })?;
    Ok(InputRequest::Elicitation(ElicitRequest::new(
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message.to_owned(),
            requested_schema,
        },
    )))
}

fn sampling(prompt: &str) -> InputRequest {
    InputRequest::CreateMessage(CreateMessageRequest::new(CreateMessageRequestParams::new(
        vec![SamplingMessage::user_text(prompt)],
        MAX_TOKENS,
    )))
}

fn list_roots() -> InputRequest {
    InputRequest::ListRoots(ListRootsRequest::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> RequestStateCodec {
        RequestStateCodec::new_unchecked(vec![7u8; 32])
    }

    #[test]
    fn sealed_state_opens_for_its_tool_only() {
        let codec = codec();
        let sealed = seal(&codec, "tool_a", 2).expect("seal");
        assert_eq!(open(&codec, "tool_a", &sealed).expect("open").step, 2);
        let error = open(&codec, "tool_b", &sealed).expect_err("other tool");
        assert_eq!(error.code, rmcp::model::ErrorCode::INVALID_PARAMS);
    }

    #[test]
    fn tampered_state_is_refused() {
        let codec = codec();
        let sealed = seal(&codec, "tool_a", 1).expect("seal");
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(open(&codec, "tool_a", &tampered).is_err());
        assert!(open(&codec, "tool_a", "not a state").is_err());
    }

    #[test]
    fn a_response_that_is_not_an_object_counts_as_missing() {
        let mut responses = InputResponses::new();
        responses.insert("user_name".into(), json!(12345));
        responses.insert("other".into(), json!({ "action": "accept" }));
        assert!(response(Some(&responses), "user_name").is_none());
        assert!(response(Some(&responses), "other").is_some());
        assert!(response(None, "other").is_none());
    }

    #[test]
    fn answers_are_read_from_their_result_shapes() {
        let elicit = json!({ "action": "accept", "content": { "name": "Alice" } });
        assert_eq!(
            elicited(elicit.as_object().expect("object"), "name"),
            "Alice"
        );
        let sample = json!({ "role": "assistant", "content": { "type": "text", "text": "Paris" } });
        assert_eq!(sampled(sample.as_object().expect("object")), "Paris");
        let listed = json!({ "roots": [{ "uri": "file:///a" }, { "uri": "file:///b" }] });
        assert_eq!(
            roots(listed.as_object().expect("object")),
            "file:///a, file:///b"
        );
    }

    #[test]
    fn every_input_request_serializes_with_its_method() {
        let wanted = requests([
            ("a", ask_name("name?").expect("elicitation")),
            ("b", sampling("hi")),
            ("c", list_roots()),
        ]);
        let value = serde_json::to_value(&wanted).expect("serialize");
        assert_eq!(value["a"]["method"], "elicitation/create");
        assert_eq!(value["b"]["method"], "sampling/createMessage");
        assert_eq!(value["c"]["method"], "roots/list");
    }
}
