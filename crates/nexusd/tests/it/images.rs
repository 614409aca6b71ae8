//! Images through the REST API of a real daemon with real bubblewrap: import a tree,
//! run sandboxes on it, write anywhere through a per-sandbox layer that never reaches
//! the image, refuse to delete an image in use.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::harness::{Api, Daemon, Dirs, agent_binary, bwrap_usable, skip};

/// A minimal root tree: `sh`, `cat`, `mkdir`, `ls` and the libraries they and the agent
/// load (as `ldd` resolves them), plus a marker file.
fn minimal_tree(dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    let programs = ["/bin/sh", "/bin/cat", "/bin/mkdir", "/bin/ls", "/bin/rm"];
    let mut libs: Vec<PathBuf> = Vec::new();
    let agent = agent_binary();
    for program in programs.iter().map(PathBuf::from).chain([agent]) {
        let out = Command::new("ldd").arg(&program).output().expect("ldd");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            if let Some(path) = path
                && !libs.contains(&path)
            {
                libs.push(path);
            }
        }
    }
    for path in programs.iter().map(PathBuf::from).chain(libs) {
        let dest = root.join(path.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(std::fs::canonicalize(&path).expect("resolve"), &dest).expect("copy");
    }
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(root.join("etc/marker"), "from the image\n").expect("write");
    std::os::unix::fs::symlink("bin", root.join("sbin")).expect("symlink");
    root
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_write_anywhere_through_their_own_layer_and_the_image_never_changes() {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return;
    }
    let dirs = Dirs::new();
    let source = minimal_tree(dirs.root.path());
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);

    let (status, image) = api
        .post(
            "/v1/images",
            json!({"name": "mini", "path": source.display().to_string()}),
        )
        .await;
    assert_eq!(status, 201, "{image}");
    assert_eq!(image["source"]["kind"], "imported", "{image}");
    assert!(image["size_bytes"].as_u64().expect("size") > 0, "{image}");
    let (_, list) = api.get("/v1/images").await;
    let names: Vec<&str> = list["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["host", "mini"], "{list}");
    // The source is copied: changing it later does not reach the image.
    std::fs::write(source.join("etc/marker"), "changed\n").expect("write");

    let first = api.create(json!({"name": "one", "image": "mini"})).await;
    assert_eq!(first["image"], "mini", "{first}");
    let out = api.sh("one", "cat /etc/marker").await;
    assert_eq!(out["stdout"], "from the image\n", "{out}");
    let root_daemon = nix::unistd::geteuid().is_root();
    let warnings = first["isolation"]["warnings"].to_string();
    let write = api
        .sh(
            "one",
            "echo mine > /etc/foo && mkdir -p /opt/x && echo y > /opt/x/f && echo more >> /etc/marker && cat /etc/foo",
        )
        .await;
    if !root_daemon {
        assert!(warnings.contains("root filesystem read-only"), "{first}");
        assert_ne!(
            write["exit_code"], 0,
            "a read-only root refuses writes: {write}"
        );
        return;
    }
    assert!(!warnings.contains("read-only"), "{first}");
    assert_eq!(write["exit_code"], 0, "{write}");
    assert_eq!(write["stdout"], "mine\n", "{write}");

    // The image tree itself is untouched.
    let tree = image_tree(&dirs, image["id"].as_str().expect("id"));
    assert!(tree.join("etc/marker").exists(), "{}", tree.display());
    assert!(
        !tree.join("etc/foo").exists(),
        "the write reached the image"
    );
    assert!(!tree.join("opt").exists(), "the write reached the image");
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/marker")).expect("read"),
        "from the image\n"
    );

    // A second sandbox on the image sees none of the first one's changes.
    api.create(json!({"name": "two", "image": "mini"})).await;
    let out = api
        .sh("two", "cat /etc/marker; ls /etc/foo 2>&1; ls /opt 2>&1")
        .await;
    let text = out["stdout"].as_str().expect("stdout");
    assert!(text.starts_with("from the image\n"), "{out}");
    assert!(!text.contains("mine"), "{out}");

    // The layer survives stop and start.
    let (status, body) = api.post("/v1/sandboxes/one/stop", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.post("/v1/sandboxes/one/start", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let out = api.sh("one", "cat /etc/foo").await;
    assert_eq!(out["stdout"], "mine\n", "{out}");

    // In use: refused, naming the sandboxes.
    let (status, err) = api.delete("/v1/images/mini").await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("image_in_use")),
        "{err}"
    );
    let message = err["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("one") && message.contains("two"),
        "{message}"
    );
    let (_, got) = api.get("/v1/images/mini").await;
    assert_eq!(got["used_by"], json!(["one", "two"]), "{got}");

    for name in ["one", "two"] {
        let (status, body) = api
            .delete(&format!("/v1/sandboxes/{name}?force=true"))
            .await;
        assert_eq!(status, 204, "{body}");
    }
    let (status, body) = api.delete("/v1/images/mini").await;
    assert_eq!(status, 204, "{body}");
    assert!(!tree.exists(), "the image tree goes with it");
    let (status, err) = api.get("/v1/images/mini").await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("image_not_found")),
        "{err}"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_image_requests_name_the_field_and_unknown_images_list_the_available_ones() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let tree = dirs.path("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    for (body, field) in [
        (json!({"name": "host", "path": tree}), "name"),
        (json!({"name": "Bad!", "path": tree}), "name"),
        (json!({"name": "ok", "path": "relative"}), "path"),
        (json!({"name": "ok", "path": "/no/such/dir"}), "path"),
    ] {
        let (status, err) = api.post("/v1/images", body.clone()).await;
        assert_eq!(
            (status, &err["error"]["code"]),
            (400, &json!("invalid_request")),
            "{body}: {err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .expect("message")
                .starts_with(field),
            "{body}: {err}"
        );
    }
    let (status, _) = api
        .post("/v1/images", json!({"name": "ok", "path": tree}))
        .await;
    assert_eq!(status, 201);
    let (status, err) = api
        .post("/v1/images", json!({"name": "ok", "path": tree}))
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("image_name_taken")),
        "{err}"
    );

    let (status, err) = api
        .post("/v1/sandboxes", json!({"name": "x", "image": "nope"}))
        .await;
    assert_eq!(status, 400, "{err}");
    let message = err["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("\"nope\"") && message.contains("\"host\"") && message.contains("\"ok\""),
        "{message}"
    );
    let (status, err) = api.delete("/v1/images/host").await;
    assert_eq!(status, 400, "{err}");
    let (status, host) = api.get("/v1/images/host").await;
    assert_eq!(
        (status, &host["source"]["kind"]),
        (200, &json!("builtin")),
        "{host}"
    );
    drop(daemon);
}

/// Where the daemon keeps an image's tree.
fn image_tree(dirs: &Dirs, id: &str) -> PathBuf {
    let data = dirs.path("data").join("nexus");
    let root = if data.exists() {
        data
    } else {
        PathBuf::from("/var/lib/nexus")
    };
    root.join("images").join(id).join("trees").join("1")
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_build_requests_are_refused_before_anything_runs() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    for (body, field) in [
        (json!({"name": "py", "from": "alpine:3"}), "from"),
        (
            json!({"name": "py", "from": "debian:bookworm", "packages": ["a b"]}),
            "packages[0]",
        ),
        (json!({"name": "host", "from": "debian:bookworm"}), "name"),
    ] {
        let (status, err) = api.post("/v1/images/build", body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .expect("message")
                .starts_with(field),
            "{body}: {err}"
        );
    }
    drop(daemon);
}

/// The real build downloads a Debian system: minutes, and the network. Opt in with
/// `NEXUS_TEST_IMAGE_BUILD=1`.
#[tokio::test(flavor = "multi_thread")]
async fn a_built_image_has_its_packages_and_runs_sandboxes() {
    if std::env::var_os("NEXUS_TEST_IMAGE_BUILD").is_none() {
        skip(
            "the real image build (mmdebstrap from deb.debian.org, minutes) runs only with NEXUS_TEST_IMAGE_BUILD=1",
        );
        return;
    }
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let token = crate::harness::read_token(&dirs.token_file());
    let response = reqwest::Client::new()
        .post(daemon.url("/v1/images/build"))
        .bearer_auth(token)
        .json(&json!({"name": "py", "from": "debian:bookworm", "packages": ["python3", "git"]}))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect();
    assert!(
        events.iter().filter(|e| e["type"] == "progress").count() > 3,
        "{text}"
    );
    let last = events.last().expect("events");
    assert_eq!(last["type"], "done", "{text}");
    let image = &last["image"];
    assert_eq!(image["source"]["kind"], "built", "{image}");
    assert_eq!(image["source"]["packages"], json!(["python3", "git"]));
    assert!(
        image["source"]["tool"]
            .as_str()
            .expect("tool")
            .starts_with("mmdebstrap"),
        "{image}"
    );
    api.create(json!({"name": "pyrun", "image": "py"})).await;
    let out = api
        .sh(
            "pyrun",
            "python3 -c 'print(6*7)' && git --version && grep -c bookworm /etc/os-release",
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert!(
        out["stdout"]
            .as_str()
            .expect("stdout")
            .starts_with("42\ngit version"),
        "{out}"
    );
    let (status, body) = api.delete("/v1/sandboxes/pyrun?force=true").await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = api.delete("/v1/images/py").await;
    assert_eq!(status, 204, "{body}");
    drop(daemon);
}
