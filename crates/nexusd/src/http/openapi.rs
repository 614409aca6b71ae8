//! The OpenAPI document of every `/v1` route, generated from the handlers themselves.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The document's fixed parts; paths are added by the router that serves them.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Nexus API",
        description = "Isolated, persistent Linux sandboxes for AI agents. Every route except \
                       `/v1/health` and `/v1/openapi.json` needs `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "system", description = "Health and status of the daemon"),
        (name = "sandboxes", description = "Sandbox lifecycle and commands"),
        (name = "processes", description = "Background processes in a sandbox"),
        (name = "files", description = "Files of a running sandbox"),
        (name = "terminals", description = "Interactive terminal sessions: a WebSocket speaking ttyd's protocol, and their list"),
        (name = "workspaces", description = "Persistent workspaces, snapshots, restore and fork"),
        (name = "images", description = "Images: the read-only root trees sandboxes start from"),
        (name = "network", description = "Network egress policy of a sandbox, and its network log"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
