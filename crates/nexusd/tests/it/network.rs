//! Network egress through the REST API of a real daemon: the policy routes and the
//! network log.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, read_token, skip};

macro_rules! require_bwrap {
    () => {
        if !bwrap_usable() {
            skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Routes without traffic: `PATCH .../network`, `GET .../network/log`, create with a
// policy. Nothing here opens a connection from inside a sandbox.
// ---------------------------------------------------------------------------------------

async fn patch(api: &Api, sandbox: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    api.send(
        reqwest::Method::PATCH,
        &format!("/v1/sandboxes/{sandbox}/network"),
        Some(body),
    )
    .await
}

/// Creates a sandbox that is only recorded (not started), with this policy.
async fn create_stopped(api: &Api, name: &str, network: serde_json::Value) -> serde_json::Value {
    let (status, sb) = api
        .post(
            "/v1/sandboxes",
            json!({"name": name, "start": false, "network": network}),
        )
        .await;
    assert_eq!(status, 201, "{sb}");
    sb
}

fn message(body: &serde_json::Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_rule_is_refused_naming_it_and_the_old_policy_stays() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let before = json!({"allow": ["pypi.org:443"], "deny": ["10.0.0.0/8:*"]});
    create_stopped(&api, "web", before.clone()).await;

    let (status, err) = patch(&api, "web", json!({"allow": ["pypi.org"]})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &json!("invalid_request")),
        "{err}"
    );
    assert!(message(&err).contains("network.allow[0]"), "{err}");
    assert!(message(&err).contains("pypi.org"), "{err}");

    let (status, err) = patch(
        &api,
        "web",
        json!({"allow": ["example.com:443"], "deny": ["10.0.0.0/8:*", "10.0.0.0/99:*"]}),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(message(&err).contains("network.deny[1]"), "{err}");

    let (status, sb) = api.get("/v1/sandboxes/web").await;
    assert_eq!(status, 200);
    assert_eq!(sb["network"], before, "a refused change changes nothing");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_policy_replaces_both_lists_of_a_running_sandbox() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let sb = api
        .create(json!({"name": "web", "network": {"allow": ["pypi.org:443"]}}))
        .await;
    assert_eq!(
        sb["network"],
        json!({"allow": ["pypi.org:443"], "deny": []})
    );
    assert!(
        sb["isolation"]["network"].is_string(),
        "the isolation report states the network: {sb}"
    );

    let policy =
        json!({"allow": ["*.github.com:443", "10.1.2.0/24:5432"], "deny": ["169.254.0.0/16:*"]});
    let (status, changed) = patch(&api, "web", policy.clone()).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["network"], policy);
    assert_eq!(changed["state"], "running");

    // By id, and cutting open connections too.
    let id = sb["id"].as_str().expect("id");
    let (status, changed) = patch(
        &api,
        id,
        json!({"allow": [], "deny": [], "kill_existing": true}),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["network"], json!({"allow": [], "deny": []}));
    let (_, got) = api.get("/v1/sandboxes/web").await;
    assert_eq!(got["network"], json!({"allow": [], "deny": []}));

    // An unknown field is refused, not ignored.
    let (status, err) = patch(&api, "web", json!({"allow": [], "alow": []})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &json!("invalid_json"))
    );

    let (status, _) = api.delete("/v1/sandboxes/web?force=true").await;
    assert_eq!(status, 204);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_network_routes_of_an_unknown_sandbox_are_404() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    for path in [
        "/v1/sandboxes/nope/network/log",
        "/v1/sandboxes/nope/network/log?follow=true",
    ] {
        let (status, err) = api.get(path).await;
        assert_eq!(
            (status, &err["error"]["code"]),
            (404, &json!("sandbox_not_found")),
            "{path}: {err}"
        );
    }
    let (status, err) = patch(&api, "nope", json!({"allow": ["pypi.org:443"]})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("sandbox_not_found")),
        "{err}"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_log_parameters_are_400_naming_them() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    create_stopped(&api, "web", json!({})).await;

    for (query, named) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=10001", "limit"),
        ("limit=-1", "limit"),
        ("after=x", "after"),
        ("follow=maybe", "follow"),
        ("colour=red", "colour"),
    ] {
        let (status, err) = api
            .get(&format!("/v1/sandboxes/web/network/log?{query}"))
            .await;
        assert_eq!(
            (status, &err["error"]["code"]),
            (400, &json!("invalid_request")),
            "{query}: {err}"
        );
        assert!(message(&err).contains(named), "{query}: {err}");
    }

    // Good values on a sandbox that never connected: an empty page.
    for query in ["", "?limit=1", "?limit=10000&after=5", "?follow=false"] {
        let (status, log) = api
            .get(&format!("/v1/sandboxes/web/network/log{query}"))
            .await;
        assert_eq!((status, &log), (200, &json!({"entries": []})), "{query}");
    }
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn following_the_log_streams_ndjson_until_the_sandbox_is_deleted() {
    require_bwrap!();
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    create_stopped(&api, "web", json!({})).await;

    let response = reqwest::Client::new()
        .get(daemon.url("/v1/sandboxes/web/network/log?follow=true"))
        .bearer_auth(read_token(&dirs.token_file()))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let body = tokio::spawn(response.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!body.is_finished(), "a follow stays open");

    let (status, _) = api.delete("/v1/sandboxes/web").await;
    assert_eq!(status, 204);
    let text = tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("the stream ends once the sandbox is deleted")
        .expect("join")
        .expect("body");
    assert_eq!(text, "", "no connection, no line");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn create_with_a_bad_rule_is_400_and_creates_nothing() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let (status, err) = api
        .post(
            "/v1/sandboxes",
            json!({"name": "web", "network": {"allow": ["pypi.org:443", "*.github.com"]}}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &json!("invalid_request")),
        "{err}"
    );
    assert!(message(&err).contains("network.allow[1]"), "{err}");
    let (status, list) = api.get("/v1/sandboxes").await;
    assert_eq!((status, &list), (200, &json!({"sandboxes": []})));
    let (status, _) = api.get("/v1/sandboxes/web").await;
    assert_eq!(status, 404);
    let (status, workspaces) = api.get("/v1/workspaces").await;
    assert_eq!(status, 200);
    assert_eq!(
        workspaces["workspaces"],
        json!([]),
        "no workspace was left behind: {workspaces}"
    );
    daemon.stop();
}

// ---------------------------------------------------------------------------------------
// Traffic from inside sandboxes (curl, Python, raw sockets) against loopback servers.
// ---------------------------------------------------------------------------------------
