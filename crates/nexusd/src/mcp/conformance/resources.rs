//! The fixture resources of the conformance suite: a text and a binary resource, one
//! resource template, and a resource clients subscribe to.

use rmcp::ErrorData as McpError;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use serde_json::json;

use super::tools::PNG_BASE64;

const STATIC_TEXT: &str = "test://static-text";
const STATIC_BINARY: &str = "test://static-binary";
const WATCHED: &str = "test://watched-resource";
const TEMPLATE: &str = "test://template/{id}/data";
const TEMPLATE_PREFIX: &str = "test://template/";
const TEMPLATE_SUFFIX: &str = "/data";

/// The listed resources.
pub(super) fn list() -> ListResourcesResult {
    ListResourcesResult::with_all_items(vec![
        Resource::new(STATIC_TEXT, "Static Text Resource")
            .with_description("A static text resource for testing")
            .with_mime_type("text/plain"),
        Resource::new(STATIC_BINARY, "Static Binary Resource")
            .with_description("A static binary resource (a PNG image) for testing")
            .with_mime_type("image/png"),
        Resource::new(WATCHED, "Watched Resource")
            .with_description("A resource clients subscribe to")
            .with_mime_type("text/plain"),
    ])
}

/// The listed resource templates.
pub(super) fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(TEMPLATE, "Dynamic Resource")
            .with_description("A resource whose content names the id in its URI")
            .with_mime_type("application/json"),
    ])
}

/// The contents of `uri`; a URI naming no resource is an error carrying it.
pub(super) fn read(uri: &str) -> Result<ReadResourceResult, McpError> {
    let contents = match uri {
        STATIC_TEXT => {
            ResourceContents::text("This is the content of the static text resource.", uri)
        }
        STATIC_BINARY => ResourceContents::blob(PNG_BASE64, uri).with_mime_type("image/png"),
        WATCHED => ResourceContents::text("This resource never changes.", uri),
        _ => match template_id(uri) {
            Some(id) => {
                let body =
                    json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
                ResourceContents::text(body.to_string(), uri).with_mime_type("application/json")
            }
            None => {
                return Err(McpError::resource_not_found(
                    format!("resource not found: {uri}"),
                    Some(json!({ "uri": uri })),
                ));
            }
        },
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// The `{id}` of a URI of the template, if it is one.
fn template_id(uri: &str) -> Option<&str> {
    let id = uri
        .strip_prefix(TEMPLATE_PREFIX)?
        .strip_suffix(TEMPLATE_SUFFIX)?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_resource_reads() {
        for resource in list().resources {
            let read = read(&resource.uri).expect("readable");
            assert_eq!(read.contents.len(), 1);
        }
    }

    #[test]
    fn the_template_substitutes_its_id() {
        let read = read("test://template/123/data").expect("readable");
        let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
            panic!("text expected");
        };
        let body: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(body["id"], "123");
        assert_eq!(template_id("test://template//data"), None);
        assert_eq!(template_id("test://template/a/b/data"), None);
    }

    #[test]
    fn an_unknown_uri_is_an_error_naming_it() {
        let error = read("test://nope").expect_err("unknown");
        assert_eq!(error.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND);
        assert_eq!(error.data, Some(json!({ "uri": "test://nope" })));
    }

    #[test]
    fn the_binary_resource_is_a_blob_with_its_type() {
        let read = read(STATIC_BINARY).expect("readable");
        let ResourceContents::BlobResourceContents {
            mime_type, blob, ..
        } = &read.contents[0]
        else {
            panic!("blob expected");
        };
        assert_eq!(mime_type.as_deref(), Some("image/png"));
        assert!(!blob.is_empty());
    }
}
