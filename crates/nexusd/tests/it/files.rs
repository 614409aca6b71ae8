//! The file API over REST against real sandboxes: content round trips, ranges, atomic
//! replace and append, directories, moves and removal, error codes, a full /tmp, tar
//! archives, watches, and symlinks planted inside the sandbox that try to reach the host.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, read_token, skip};

/// Raw-bytes access to the file routes (the JSON helper of the harness cannot carry them).
struct Files {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Files {
    fn new(daemon: &Daemon, dirs: &Dirs, sandbox: &str) -> Self {
        Self {
            base: daemon.url(&format!("/v1/sandboxes/{sandbox}/files")),
            token: read_token(&dirs.token_file()),
            http: reqwest::Client::new(),
        }
    }

    async fn put(&self, query: &[(&str, &str)], body: impl Into<reqwest::Body>) -> (u16, Value) {
        let res = self
            .http
            .put(format!("{}/content", self.base))
            .query(query)
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.expect("json"))
    }

    async fn write(&self, path: &str, body: &[u8]) -> Value {
        let (status, json) = self.put(&[("path", path)], body.to_vec()).await;
        assert_eq!(status, 200, "write {path}: {json}");
        json
    }

    /// Status, body bytes and the file-size header of a read.
    async fn get(&self, query: &[(&str, &str)]) -> (u16, Vec<u8>, Option<String>) {
        let res = self
            .http
            .get(format!("{}/content", self.base))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let size = res
            .headers()
            .get("x-nexus-file-size")
            .map(|v| v.to_str().expect("ascii").to_owned());
        (status, res.bytes().await.expect("body").to_vec(), size)
    }

    async fn read(&self, path: &str) -> Vec<u8> {
        let (status, body, _) = self.get(&[("path", path)]).await;
        assert_eq!(
            status,
            200,
            "read {path}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// Status and error code of a read expected to fail.
    async fn read_error(&self, path: &str) -> (u16, String) {
        let (status, body, _) = self.get(&[("path", path)]).await;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (
            status,
            json["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    }

    async fn json(
        &self,
        method: reqwest::Method,
        rest: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{rest}", self.base))
            .query(query)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

/// SHA-256 of `new+more` (`printf new+more | sha256sum`).
const NEW_MORE_SHA256: &str = "9c4553e16c2c65942020cd77504d8d3581ff00ad92ff6b0a1e714f486b06e859";

#[tokio::test(flavor = "multi_thread")]
async fn files_can_be_written_read_listed_moved_and_removed() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "fs"})).await;
    let files = Files::new(&daemon, &dirs, "fs");
    use reqwest::Method;

    // Write, read back whole and by range (also past the end).
    let stat = files.write("/workspace/a.txt", b"hello world").await;
    assert_eq!(stat["size"], 11, "{stat}");
    assert_eq!(stat["type"], "file");
    assert_eq!(files.read("/workspace/a.txt").await, b"hello world");
    let (status, body, size) = files
        .get(&[("path", "a.txt"), ("offset", "6"), ("length", "3")])
        .await;
    assert_eq!(
        (status, body.as_slice(), size.as_deref()),
        (200, &b"wor"[..], Some("11"))
    );
    let (status, body, _) = files.get(&[("path", "a.txt"), ("offset", "100")]).await;
    assert_eq!((status, body.len()), (200, 0));

    // Atomic overwrite, append, mode.
    files.write("/workspace/a.txt", b"new").await;
    assert_eq!(files.read("/workspace/a.txt").await, b"new");
    let (status, stat) = files
        .put(
            &[("path", "/workspace/a.txt"), ("append", "true")],
            b"+more".to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{stat}");
    assert_eq!(files.read("/workspace/a.txt").await, b"new+more");
    let (status, stat) = files
        .put(
            &[
                ("path", "/workspace/deep/er/x.sh"),
                ("create_parents", "true"),
                ("mode", "750"),
            ],
            b"#!/bin/sh\n".to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{stat}");
    assert_eq!(stat["mode"], "0750");
    // A large body streams through (well above the JSON body cap).
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    files.write("/workspace/big.bin", &big).await;
    assert!(
        files.read("/workspace/big.bin").await == big,
        "big file differs"
    );

    // mkdir -p, list, stat with its hash.
    let (status, made) = files
        .json(
            Method::POST,
            "/mkdir",
            &[],
            Some(json!({"path": "/workspace/d/e/f", "parents": true})),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["type"], "dir");
    files.write("/workspace/d/e/f/g.txt", b"g").await;
    let (status, list) = files
        .json(
            Method::GET,
            "/list",
            &[("path", "/workspace/d"), ("depth", "3")],
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let paths: Vec<&str> = list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        [
            "/workspace/d/e",
            "/workspace/d/e/f",
            "/workspace/d/e/f/g.txt"
        ]
    );
    let (status, stat) = files
        .json(Method::GET, "/stat", &[("path", "/workspace/a.txt")], None)
        .await;
    assert_eq!(status, 200, "{stat}");
    assert_eq!(stat["sha256"], NEW_MORE_SHA256);
    let (status, many) = files
        .json(
            Method::POST,
            "/stat",
            &[],
            Some(json!({"paths": ["/workspace/a.txt", "/workspace/nope", ""]})),
        )
        .await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["results"][0]["stat"]["size"], 8, "{many}");
    assert_eq!(
        many["results"][1]["error"]["code"], "file_not_found",
        "{many}"
    );
    assert_eq!(
        many["results"][2]["error"]["code"], "invalid_path",
        "{many}"
    );

    // Move; an existing destination needs overwrite.
    let (status, moved) = files
        .json(
            Method::POST,
            "/move",
            &[],
            Some(json!({"from": "/workspace/a.txt", "to": "/workspace/b.txt"})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["path"], "/workspace/b.txt");
    files.write("/workspace/c.txt", b"c").await;
    let (status, err) = files
        .json(
            Method::POST,
            "/move",
            &[],
            Some(json!({"from": "/workspace/c.txt", "to": "/workspace/b.txt"})),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("file_conflict")),
        "{err}"
    );

    // Remove: a non-empty directory needs recursive.
    let (status, err) = files
        .json(Method::DELETE, "", &[("path", "/workspace/d")], None)
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("file_conflict")),
        "{err}"
    );
    let (status, removed) = files
        .json(
            Method::DELETE,
            "",
            &[("path", "/workspace/d"), ("recursive", "true")],
            None,
        )
        .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["removed"], 4);

    // Error codes.
    assert_eq!(
        files.read_error("/workspace/missing").await,
        (404, "file_not_found".into())
    );
    assert_eq!(files.read_error("").await, (400, "invalid_path".into()));
    assert_eq!(
        files.read_error("/workspace/a\0b").await,
        (400, "invalid_path".into())
    );
    assert_eq!(files.read_error("/workspace").await.0, 409);
    let (status, err) = files
        .put(&[("path", "/workspace/x"), ("mode", "999")], "x")
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &json!("invalid_request"))
    );

    // Glob, grep, batch, copy.
    let (status, globbed) = files
        .json(
            Method::POST,
            "/glob",
            &[],
            Some(json!({"patterns": ["*.txt"]})),
        )
        .await;
    assert_eq!(status, 200, "{globbed}");
    assert_eq!(
        globbed["matches"].as_array().expect("matches").len(),
        2,
        "{globbed}"
    );
    let (status, grepped) = files
        .json(Method::POST, "/grep", &[], Some(json!({"pattern": "more"})))
        .await;
    assert_eq!(status, 200, "{grepped}");
    assert_eq!(
        grepped["matches"][0]["path"], "/workspace/b.txt",
        "{grepped}"
    );
    let (status, batch) = files
        .json(
            Method::POST,
            "/batch",
            &[],
            Some(json!({"ops": [
                {"op": "write", "path": "/workspace/n.txt", "content": "bg=="
                    , "encoding": "base64"},
                {"op": "stat", "path": "/workspace/none"},
                {"op": "copy", "from": "/workspace/n.txt", "to": "/workspace/m.txt"},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["bytes"], 1, "{batch}");
    assert_eq!(
        batch["results"][1]["error"]["code"], "file_not_found",
        "{batch}"
    );
    assert_eq!(batch["results"][2]["copied"]["files"], 1, "{batch}");
    assert_eq!(files.read("/workspace/m.txt").await, b"n");

    // A stopped sandbox has no files to serve.
    let (status, _) = api.post("/v1/sandboxes/fs/stop", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        files.read_error("/workspace/m.txt").await,
        (409, "sandbox_not_running".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_round_trip_and_watches_see_changes() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "tar"})).await;
    let files = Files::new(&daemon, &dirs, "tar");
    files
        .json(
            reqwest::Method::POST,
            "/mkdir",
            &[],
            Some(json!({"path": "/workspace/src"})),
        )
        .await;
    files.write("/workspace/src/a.txt", b"").await;
    let (status, err) = files
        .put(
            &[
                ("path", "/workspace/src/sub/b.txt"),
                ("create_parents", "true"),
            ],
            "bee",
        )
        .await;
    assert_eq!(status, 200, "{err}");

    let res = files
        .http
        .get(format!("{}/archive", files.base))
        .query(&[("path", "/workspace/src")])
        .bearer_auth(&files.token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let tar = res.bytes().await.expect("body");
    let res = files
        .http
        .put(format!("{}/archive", files.base))
        .query(&[("path", "/workspace/copy")])
        .bearer_auth(&files.token)
        .body(tar)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let summary: Value = res.json().await.expect("json");
    assert_eq!(summary["files"], 2, "{summary}");
    assert_eq!(files.read("/workspace/copy/src/sub/b.txt").await, b"bee");
    let res = files
        .http
        .get(format!("{}/archive", files.base))
        .query(&[("path", "/workspace/none")])
        .bearer_auth(&files.token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 404);

    // Watch: the response starts once the watch is in place.
    let mut res = files
        .http
        .get(format!("{}/watch", files.base))
        .query(&[("path", "/workspace"), ("recursive", "true")])
        .bearer_auth(&files.token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    files.write("/workspace/src/new.txt", b"x").await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("/workspace/src/new.txt") {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("a watch event within 10 s")
            .expect("chunk")
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first: Value = serde_json::from_str(seen.lines().next().expect("line")).expect("ndjson");
    assert!(first["kind"].is_string(), "{first}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_tmp_is_507_and_keeps_the_old_content() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "full", "limits": {"tmp_mib": 1}}))
        .await;
    let files = Files::new(&daemon, &dirs, "full");
    files.write("/tmp/small", b"old content").await;
    let res = files
        .http
        .put(format!("{}/content", files.base))
        .query(&[("path", "/tmp/small")])
        .bearer_auth(&files.token)
        .body(vec![7u8; 4 * 1024 * 1024])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 507);
    // Regression: the daemon answers before reading the whole body, so it must not let
    // the client reuse the connection (the next request failed now and then).
    assert_eq!(
        res.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let err: Value = res.json().await.expect("json");
    assert_eq!(err["error"]["code"], "insufficient_storage", "{err}");
    assert_eq!(files.read("/tmp/small").await, b"old content");
}

/// Symlinks planted from inside the sandbox must never let the API read host files:
/// ordinary links resolve inside the sandbox's own view, `/proc` magic links are refused.
#[tokio::test(flavor = "multi_thread")]
async fn planted_symlinks_never_reach_host_files() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    api.create(json!({"name": "evil"})).await;
    let files = Files::new(&daemon, &dirs, "evil");
    let token = read_token(&dirs.token_file());
    let token_file = dirs.token_file().display().to_string();
    let host_shadow = std::fs::read("/etc/shadow").ok();

    let script = format!(
        "cd /workspace && ln -s '{token_file}' token && ln -s /etc/shadow shadow \
         && ln -s /proc/1/root root1 && ln -s /proc/self/root/etc/shadow selfshadow \
         && ln -s /proc/1/root/etc/shadow root1shadow"
    );
    let done = api.sh("evil", &script).await;
    assert_eq!(done["exit_code"], 0, "{done}");

    let host_secret = |body: &[u8]| {
        let text = String::from_utf8_lossy(body);
        text.contains(&token)
            || host_shadow
                .as_deref()
                .is_some_and(|s| !s.is_empty() && body == s)
    };
    for path in [
        "/workspace/token",
        "/workspace/shadow",
        "/workspace/selfshadow",
        "/workspace/root1shadow",
        "/workspace/../../etc/shadow",
        token_file.as_str(),
    ] {
        let (status, body, _) = files.get(&[("path", path)]).await;
        assert!(
            !host_secret(&body),
            "{path} returned host content (HTTP {status})"
        );
    }
    // Magic links are refused outright, not followed.
    for path in [
        "/workspace/selfshadow",
        "/workspace/root1shadow",
        "/proc/1/root/etc/passwd",
        "/proc/self/root/etc/passwd",
    ] {
        assert_eq!(
            files.read_error(path).await,
            (400, "invalid_path".into()),
            "{path}"
        );
    }
    let (status, body) = files
        .json(
            reqwest::Method::GET,
            "/list",
            &[("path", "/workspace/root1")],
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_path");
    // Through the archive route as well.
    let res = files
        .http
        .get(format!("{}/archive", files.base))
        .query(&[("path", "/workspace/root1/etc")])
        .bearer_auth(&files.token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 400);
}
