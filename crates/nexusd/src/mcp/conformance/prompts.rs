//! The fixture prompts of the conformance suite, and the completions of their arguments
//! and of the resource template's.

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionInfo, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Prompt, PromptArgument, PromptMessage, Reference, Role,
};
use serde_json::{Value, json};

use super::input;
use super::tools::PNG_BASE64;

/// Every fixture prompt, in a fixed order.
pub(super) fn catalog() -> Vec<Prompt> {
    vec![
        Prompt::new(
            "test_simple_prompt",
            Some("A simple prompt without arguments"),
            None,
        ),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("A prompt that substitutes its arguments"),
            Some(vec![
                PromptArgument::new("arg1")
                    .with_description("First test argument")
                    .with_required(true),
                PromptArgument::new("arg2")
                    .with_description("Second test argument")
                    .with_required(false),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("A prompt that embeds a resource"),
            Some(vec![
                PromptArgument::new("resourceUri")
                    .with_description("URI of the resource to embed")
                    .with_required(false),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_image",
            Some("A prompt that includes an image"),
            None,
        ),
        Prompt::new(
            "test_input_required_result_prompt",
            Some("A prompt that first elicits its context (SEP-2322)"),
            None,
        ),
    ]
}

/// The prompt `request` names, with its arguments substituted.
pub(super) fn get(request: GetPromptRequestParams) -> Result<GetPromptResponse, McpError> {
    let args = request.arguments.unwrap_or_default();
    let arg = |name: &str| args.get(name).and_then(Value::as_str).unwrap_or("");
    let result = match request.name.as_str() {
        "test_simple_prompt" => GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            "This is a simple prompt for testing.",
        )])
        .with_description("A simple prompt"),
        "test_prompt_with_arguments" => GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                arg("arg1"),
                arg("arg2")
            ),
        )])
        .with_description("A prompt with arguments"),
        "test_prompt_with_embedded_resource" => {
            let uri = Some(arg("resourceUri"))
                .filter(|uri| !uri.is_empty())
                .unwrap_or("test://static-text");
            GetPromptResult::new(vec![
                PromptMessage::new_resource(
                    Role::User,
                    uri.to_owned(),
                    Some("text/plain".into()),
                    Some("Embedded resource content for testing.".into()),
                    None,
                    None,
                    None,
                ),
                PromptMessage::new_text(Role::User, "Please process the embedded resource above."),
            ])
            .with_description("A prompt with an embedded resource")
        }
        "test_prompt_with_image" => GetPromptResult::new(vec![
            PromptMessage::new(Role::User, ContentBlock::image(PNG_BASE64, "image/png")),
            PromptMessage::new_text(Role::User, "Please analyze the image above."),
        ])
        .with_description("A prompt with an image"),
        "test_input_required_result_prompt" => {
            return Ok(
                match input::prompt_context(request.input_responses.as_ref())? {
                    Ok(context) => GetPromptResult::new(vec![PromptMessage::new_text(
                        Role::User,
                        format!("Prompt with elicited context: {context}"),
                    )])
                    .with_description("A prompt built from elicited context")
                    .into(),
                    Err(wanted) => wanted.into(),
                },
            );
        }
        other => {
            return Err(McpError::invalid_params(
                format!("prompt not found: {other}"),
                Some(json!({ "name": other })),
            ));
        }
    };
    Ok(result.into())
}

/// Completions of a prompt argument or of the resource template's `{id}`: the known
/// values that start with what the user typed.
pub(super) fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, McpError> {
    let candidates: &[&str] = match (&request.r#ref, request.argument.name.as_str()) {
        (Reference::Prompt(prompt), "arg1" | "arg2")
            if prompt.name == "test_prompt_with_arguments" =>
        {
            &["paris", "park", "party", "test", "testValue1", "testValue2"]
        }
        (Reference::Resource(_), "id") => &["1", "2", "3", "123"],
        _ => &[],
    };
    let typed = request.argument.value.as_str();
    let values = candidates
        .iter()
        .filter(|value| value.starts_with(typed))
        .map(|value| (*value).to_owned())
        .collect();
    let info = CompletionInfo::new(values)
        .map_err(|error| McpError::internal_error(error.to_string(), None))?;
    Ok(CompleteResult::new(info))
}

#[cfg(test)]
mod tests {
    use rmcp::model::ArgumentInfo;

    use super::*;

    fn get_named(name: &str, args: Value) -> Value {
        let mut request = GetPromptRequestParams::new(name);
        if let Value::Object(map) = args {
            request = request.with_arguments(map);
        }
        match get(request).expect("prompt") {
            GetPromptResponse::Complete(result) => serde_json::to_value(result).expect("json"),
            other => panic!("complete result expected, got {other:?}"),
        }
    }

    #[test]
    fn every_listed_prompt_but_the_input_required_one_completes() {
        for prompt in catalog() {
            if prompt.name == "test_input_required_result_prompt" {
                continue;
            }
            let result = get_named(&prompt.name, json!({ "arg1": "x" }));
            assert!(!result["messages"].as_array().expect("messages").is_empty());
            assert!(prompt.description.is_some());
        }
    }

    #[test]
    fn arguments_are_substituted() {
        let result = get_named(
            "test_prompt_with_arguments",
            json!({ "arg1": "testValue1", "arg2": "testValue2" }),
        );
        let text = result.to_string();
        assert!(
            text.contains("testValue1") && text.contains("testValue2"),
            "{text}"
        );
    }

    #[test]
    fn the_embedded_resource_is_the_one_asked_for() {
        let result = get_named(
            "test_prompt_with_embedded_resource",
            json!({ "resourceUri": "test://example-resource" }),
        );
        assert_eq!(
            result.pointer("/messages/0/content/resource/uri"),
            Some(&json!("test://example-resource"))
        );
    }

    #[test]
    fn an_unknown_prompt_is_invalid_params() {
        let error = get(GetPromptRequestParams::new("nope")).expect_err("unknown");
        assert_eq!(error.code, rmcp::model::ErrorCode::INVALID_PARAMS);
    }

    #[test]
    fn completions_filter_by_prefix() {
        let request = CompleteRequestParams::new(
            Reference::for_prompt("test_prompt_with_arguments"),
            ArgumentInfo::new("arg1", "par"),
        );
        let result = complete(&request).expect("complete");
        assert_eq!(result.completion.values, ["paris", "park", "party"]);
        let request = CompleteRequestParams::new(
            Reference::for_prompt("test_simple_prompt"),
            ArgumentInfo::new("x", ""),
        );
        assert!(
            complete(&request)
                .expect("complete")
                .completion
                .values
                .is_empty()
        );
    }
}
