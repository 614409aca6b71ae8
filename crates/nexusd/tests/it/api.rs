//! The HTTP surface: health, readiness, metrics, OpenAPI, auth and error shapes.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::harness::{Daemon, Dirs, read_token};

async fn get(url: &str, token: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.expect("body"))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn health_reports_version_and_database() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let (status, _, body) = get(&daemon.url("/v1/health"), None).await;
    assert_eq!(status, 200);
    let body = json(&body);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["database"]["status"], "ok");
    assert_eq!(body["database"]["backend"], "sqlite");
    assert!(
        body["database"]["schema_version"]
            .as_u64()
            .expect("schema version")
            >= 1
    );
}

#[tokio::test]
async fn operator_endpoints_answer() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    assert_eq!(get(&daemon.url("/healthz"), None).await.2, "ok\n");
    let (status, _, body) = get(&daemon.url("/readyz"), None).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    for _ in 0..3 {
        get(&daemon.url("/v1/health"), None).await;
    }
    get(&daemon.url("/v1/status"), None).await;
    get(&daemon.url("/no/such/route"), None).await;
    let (status, headers, text) = get(&daemon.url("/metrics"), None).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    assert!(
        text.contains(
            r#"nexus_http_requests_total{method="GET",route="/v1/health",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"nexus_http_requests_total{method="GET",route="/v1/status",status="401"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        text.contains("nexus_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"nexus_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_one() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let (status, _, body) = get(&daemon.url("/v1/openapi.json"), None).await;
    assert_eq!(status, 200);
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../openapi/nexus-v1.json"
    ))
    .expect("openapi/nexus-v1.json is checked in");
    assert_eq!(
        body, checked_in,
        "the served document differs from openapi/nexus-v1.json"
    );
    let doc = json(&body);
    assert!(doc["paths"]["/v1/health"]["get"].is_object());
    assert!(doc["paths"]["/v1/status"]["get"]["security"].is_array());
}

#[tokio::test]
async fn a_generated_token_is_private_and_required() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let token_file = dirs.token_file();
    let mode = std::fs::metadata(&token_file)
        .expect("token file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let token = read_token(&token_file);

    let (status, headers, body) = get(&daemon.url("/v1/status"), None).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(json(&body)["error"]["code"], "unauthorized");

    let (status, _, body) = get(&daemon.url("/v1/status"), Some("not-the-token-at-all")).await;
    assert_eq!(status, 401);
    assert!(
        json(&body)["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("invalid bearer token")
    );

    let (status, _, body) = get(&daemon.url("/v1/status"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    assert_eq!(
        body["database"]["path"],
        dirs.db_file().display().to_string()
    );
    assert_eq!(body["pid"], daemon.pid());

    let logs = daemon.stop();
    assert!(!logs.contains(&token), "the token appeared in the log");
}

#[tokio::test]
async fn a_configured_token_is_used_and_no_file_is_written() {
    let dirs = Dirs::new();
    let mut cmd = dirs.command();
    cmd.env("NEXUS_TOKEN", "configured-token-for-tests").args([
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    let daemon = Daemon::spawn(cmd);
    assert_eq!(
        get(
            &daemon.url("/v1/status"),
            Some("configured-token-for-tests")
        )
        .await
        .0,
        200
    );
    assert!(!dirs.token_file().exists());
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_error_shape() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let (status, headers, body) = get(&daemon.url("/v1/nope"), None).await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("x-request-id"));
    let body = json(&body);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("/v1/nope")
    );

    let res = reqwest::Client::new()
        .delete(daemon.url("/v1/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(
        json(&res.text().await.expect("body"))["error"]["code"],
        "method_not_allowed"
    );
}
