//! Terminal sessions through a real daemon and real bubblewrap sandboxes, driven by a
//! WebSocket client that speaks ttyd's protocol directly: the handshake (token in the
//! message or in the header), input, resize, re-attach with replay, exit, close codes,
//! the session routes, and backpressure from a client that stops reading.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, read_token, skip};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single expectation may take before the test fails (not a timing
/// assertion: a bound so a broken feature fails instead of hanging).
const PATIENCE: Duration = Duration::from_secs(30);

/// One WebSocket connection to a terminal session.
struct Tty {
    ws: Socket,
    /// The session id the server announced in its preferences.
    session: String,
    /// The title message.
    title: String,
    /// The `nexus` part of the preferences.
    nexus: Value,
}

/// How a connection authenticates.
enum Auth<'a> {
    /// `AuthToken` in the handshake, no header.
    Handshake(&'a str),
    /// `Authorization: Bearer` on the upgrade, empty `AuthToken`.
    Header(&'a str),
}

fn url(daemon: &Daemon, sandbox: &str, session: Option<&str>) -> String {
    let mut url = format!("ws://{}/v1/sandboxes/{sandbox}/terminal", daemon.addr);
    if let Some(session) = session {
        url.push_str(&format!("?session={session}"));
    }
    url
}

/// Opens the WebSocket and sends the handshake; returns the socket before the server's
/// first message, or the HTTP error of the upgrade.
async fn open(
    daemon: &Daemon,
    sandbox: &str,
    session: Option<&str>,
    auth: Auth<'_>,
    size: Option<(i64, i64)>,
) -> Result<Socket, WsError> {
    let mut request = url(daemon, sandbox, session)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("tty"));
    let token = match auth {
        Auth::Handshake(token) => token,
        Auth::Header(token) => {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
            );
            ""
        }
    };
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("tty"),
        "the server speaks the tty subprotocol"
    );
    let mut handshake = json!({"AuthToken": token});
    if let Some((columns, rows)) = size {
        handshake["columns"] = json!(columns);
        handshake["rows"] = json!(rows);
    }
    ws.send(Message::text(handshake.to_string()))
        .await
        .expect("send the handshake");
    Ok(ws)
}

/// The next message, or the close frame's (code, reason) as an error.
async fn next(ws: &mut Socket) -> Result<Vec<u8>, (u16, String)> {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes.to_vec()),
            Some(Ok(Message::Text(text))) => return Ok(text.as_bytes().to_vec()),
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.expect("close frames carry a code");
                return Err((u16::from(frame.code), frame.reason.to_string()));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err((0, format!("socket error: {err}"))),
            None => return Err((0, "socket ended without a close frame".into())),
        }
    }
}

/// The close frame that ends the connection, skipping output before it.
async fn closed(ws: &mut Socket) -> (u16, String) {
    loop {
        if let Err(close) = next(ws).await {
            return close;
        }
    }
}

impl Tty {
    async fn connect(
        daemon: &Daemon,
        sandbox: &str,
        session: Option<&str>,
        auth: Auth<'_>,
        size: Option<(i64, i64)>,
    ) -> Self {
        let mut ws = open(daemon, sandbox, session, auth, size)
            .await
            .expect("upgrade");
        let title = next(&mut ws).await.expect("title");
        assert_eq!(title[0], b'1', "the title comes first");
        let prefs = next(&mut ws).await.expect("preferences");
        assert_eq!(prefs[0], b'2', "then the preferences");
        let prefs: Value = serde_json::from_slice(&prefs[1..]).expect("preferences JSON");
        let session = prefs["nexus"]["session"]
            .as_str()
            .expect("the session id")
            .to_owned();
        Self {
            ws,
            session,
            title: String::from_utf8_lossy(&title[1..]).into_owned(),
            nexus: prefs["nexus"].clone(),
        }
    }

    async fn send(&mut self, message: &[u8]) {
        self.ws
            .send(Message::binary(message.to_vec()))
            .await
            .expect("send");
    }

    async fn type_line(&mut self, line: &str) {
        let mut message = b"0".to_vec();
        message.extend_from_slice(line.as_bytes());
        message.push(b'\r');
        self.send(&message).await;
    }

    async fn resize(&mut self, columns: i64, rows: i64) {
        let body = json!({"columns": columns, "rows": rows});
        self.send(format!("1{body}").as_bytes()).await;
    }

    /// Output until `needle` has appeared; everything read.
    async fn read_until(&mut self, needle: &str) -> String {
        let mut seen = Vec::new();
        loop {
            match next(&mut self.ws).await {
                Ok(message) => {
                    assert_eq!(message[0], b'0', "only output after the preferences");
                    seen.extend_from_slice(&message[1..]);
                    if String::from_utf8_lossy(&seen).contains(needle) {
                        return String::from_utf8_lossy(&seen).into_owned();
                    }
                }
                Err(close) => panic!(
                    "closed {close:?} before {needle:?}; output: {:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    }
}

/// A daemon with one running sandbox, or `None` (said loudly) without bubblewrap.
async fn setup(name: &str) -> Option<(Dirs, Daemon, Api, String, String)> {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host");
        return None;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let sandbox = api.create(json!({"name": name})).await;
    let id = sandbox["id"].as_str().expect("id").to_owned();
    let token = read_token(&dirs.token_file());
    Some((dirs, daemon, api, token, id))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_speaks_ttyd_resizes_and_survives_a_dropped_connection() {
    let Some((_dirs, daemon, api, token, sandbox_id)) = setup("tty").await else {
        return;
    };
    // Token in the handshake, no header: what a browser does.
    let mut tty = Tty::connect(
        &daemon,
        "tty",
        None,
        Auth::Handshake(&token),
        Some((100, 30)),
    )
    .await;
    assert_eq!(tty.title, format!("tty: {}", tty.session));
    assert_eq!(tty.nexus["sandbox"], sandbox_id);
    tty.type_line("echo hello; stty size; echo $TERM; pwd")
        .await;
    let text = tty.read_until("/workspace").await;
    assert!(text.contains("\rhello\r\n"), "{text:?}");
    assert!(text.contains("30 100"), "the handshake's size: {text:?}");
    assert!(text.contains("xterm-256color"), "{text:?}");

    tty.resize(132, 43).await;
    tty.type_line("stty size").await;
    tty.read_until("43 132").await;
    // Absurd sizes are clamped, not refused.
    tty.resize(100_000, -3).await;
    tty.type_line("stty size").await;
    tty.read_until("1 1000").await;
    tty.resize(80, 24).await;
    // An unknown command byte is ignored and the connection goes on.
    tty.send(b"9whatever").await;
    tty.type_line("echo marker-$((40+2))").await;
    tty.read_until("marker-42").await;

    // A second session at the same time is independent.
    let mut other = Tty::connect(&daemon, "tty", None, Auth::Handshake(&token), None).await;
    assert_ne!(other.session, tty.session);
    other.type_line("echo \"[$MINE]\"").await;
    tty.type_line("MINE=first; echo \"[$MINE]\"").await;
    tty.read_until("[first]").await;
    other.read_until("[]").await;

    let (status, list) = api.get("/v1/sandboxes/tty/terminals").await;
    assert_eq!(status, 200, "{list}");
    let sessions = list["terminals"].as_array().expect("terminals");
    assert_eq!(sessions.len(), 2, "{list}");
    let first = sessions
        .iter()
        .find(|t| t["id"] == tty.session)
        .expect("the first session is listed");
    assert_eq!(first["attached"], 1);
    assert_eq!(first["alive"], true);
    assert_eq!(
        (first["cols"].as_u64(), first["rows"].as_u64()),
        (Some(80), Some(24))
    );

    // Drop the connection: the session keeps running and replays on re-attach.
    let session = tty.session.clone();
    drop(tty);
    let (_, list) = api.get("/v1/sandboxes/tty/terminals").await;
    assert!(
        list["terminals"]
            .as_array()
            .expect("terminals")
            .iter()
            .any(|t| t["id"] == session.as_str() && t["alive"] == true),
        "{list}"
    );
    let mut again = Tty::connect(
        &daemon,
        "tty",
        Some(&session),
        Auth::Handshake(&token),
        Some((90, 20)),
    )
    .await;
    assert_eq!(again.session, session);
    let replay = again.read_until("marker-42").await;
    assert!(
        replay.contains("[first]"),
        "earlier output is replayed: {replay:?}"
    );
    again.type_line("echo \"[$MINE]\"; stty size").await;
    again.read_until("20 90").await;

    // `exit` ends the shell: close 1000 with its status.
    again.type_line("exit").await;
    assert_eq!(
        closed(&mut again.ws).await,
        (1000, "shell exited with status 0".to_owned())
    );
    let (_, list) = api.get("/v1/sandboxes/tty/terminals").await;
    let ended = list["terminals"]
        .as_array()
        .expect("terminals")
        .iter()
        .find(|t| t["id"] == session.as_str())
        .cloned()
        .expect("an ended session stays listed");
    assert_eq!(
        (ended["alive"].clone(), ended["exit_code"].clone()),
        (json!(false), json!(0))
    );

    // Delete both; then they are gone.
    for id in [session.as_str(), other.session.as_str()] {
        let (status, body) = api
            .delete(&format!("/v1/sandboxes/tty/terminals/{id}"))
            .await;
        assert_eq!(status, 204, "{body}");
    }
    closed(&mut other.ws).await;
    let (_, list) = api.get("/v1/sandboxes/tty/terminals").await;
    assert_eq!(list["terminals"], json!([]), "{list}");
    let (status, body) = api.delete("/v1/sandboxes/tty/terminals/1").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("terminal_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_close_codes_without_a_header_and_http_errors_with_one() {
    let Some((_dirs, daemon, api, token, _)) = setup("gate").await else {
        return;
    };
    // Wrong or missing token in the handshake: 4401 with a reason naming the fix. A
    // sandbox that does not exist answers the same, so nothing is revealed.
    for (sandbox, presented) in [
        ("gate", "wrong-token-0123456789"),
        ("gate", ""),
        ("nope", "x"),
    ] {
        let mut ws = open(&daemon, sandbox, None, Auth::Handshake(presented), None)
            .await
            .expect("the upgrade is accepted before the token is checked");
        let (code, reason) = closed(&mut ws).await;
        assert_eq!(code, 4401, "{reason}");
        assert!(reason.starts_with("unauthorized: "), "{reason}");
        assert!(reason.contains("AuthToken"), "{reason}");
        assert!(reason.len() <= 123);
    }
    // Right token, unknown sandbox or session: 4404.
    let mut ws = open(&daemon, "nope", None, Auth::Handshake(&token), None)
        .await
        .expect("upgrade");
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4404, "{reason}");
    assert!(reason.starts_with("sandbox_not_found: "), "{reason}");
    let mut ws = open(&daemon, "gate", Some("77"), Auth::Handshake(&token), None)
        .await
        .expect("upgrade");
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4404, "{reason}");
    assert!(reason.starts_with("terminal_not_found: "), "{reason}");
    // A first message that is not a handshake: 4400.
    let mut request = url(&daemon, "gate", None)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("tty"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    ws.send(Message::binary(b"0ls\r".to_vec()))
        .await
        .expect("send");
    assert_eq!(closed(&mut ws).await.0, 4400);

    // With the header: a session works with an empty AuthToken...
    let mut tty = Tty::connect(&daemon, "gate", None, Auth::Header(&token), None).await;
    tty.type_line("echo via-$((1+1))-header").await;
    tty.read_until("via-2-header").await;
    drop(tty);
    // ... and errors are plain HTTP with the standard body, before any upgrade.
    let http_error = |err: WsError| match err {
        WsError::Http(response) => {
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("an error body");
            (response.status().as_u16(), body["error"]["code"].clone())
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    };
    let err = open(
        &daemon,
        "gate",
        None,
        Auth::Header("wrong-token-0123456789"),
        None,
    )
    .await
    .expect_err("bad header");
    assert_eq!(http_error(err), (401, json!("unauthorized")));
    let err = open(&daemon, "nope", None, Auth::Header(&token), None)
        .await
        .expect_err("no sandbox");
    assert_eq!(http_error(err), (404, json!("sandbox_not_found")));
    let err = open(&daemon, "gate", Some("77"), Auth::Header(&token), None)
        .await
        .expect_err("no session");
    assert_eq!(http_error(err), (404, json!("terminal_not_found")));

    // A stopped sandbox: the same 409 as exec.
    let (status, body) = api.post("/v1/sandboxes/gate/stop", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let err = open(&daemon, "gate", None, Auth::Header(&token), None)
        .await
        .expect_err("stopped");
    assert_eq!(http_error(err), (409, json!("sandbox_not_running")));
    let mut ws = open(&daemon, "gate", None, Auth::Handshake(&token), None)
        .await
        .expect("upgrade");
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4409, "{reason}");
    assert!(reason.starts_with("sandbox_not_running: "), "{reason}");
    let (status, body) = api.get("/v1/sandboxes/gate/terminals").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("sandbox_not_running"))
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_holds_the_shell_back() {
    let Some((_dirs, daemon, api, token, _)) = setup("flood").await else {
        return;
    };
    let (status, created) = api
        .post(
            "/v1/sandboxes/flood/terminals",
            json!({"cols": 120, "rows": 40}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["cols"].as_u64(), created["rows"].as_u64()),
        (Some(120), Some(40))
    );
    let session = created["id"].as_str().expect("id").to_owned();
    let mut tty = Tty::connect(
        &daemon,
        "flood",
        Some(&session),
        Auth::Handshake(&token),
        None,
    )
    .await;
    tty.type_line("yes").await;
    // Never read while `yes` floods: every buffer between it and this socket fills
    // (kernel socket buffers, the daemon's bounded queue, one credit window, the
    // agent's ring) and then `yes` blocks. The daemon must not grow meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = rss_kib(daemon.pid());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = rss_kib(daemon.pid());
    assert!(
        later < settled + 4 * 1024,
        "nexusd grew from {settled} KiB to {later} KiB while a client did not read"
    );

    // Pause, read what was in flight, and the session still works after resuming.
    tty.send(b"2").await;
    tty.send(b"0\x03").await;
    tty.send(b"3").await;
    tty.type_line("echo done-$((5+5))").await;
    tty.read_until("done-10").await;
    let (_, list) = api.get("/v1/sandboxes/flood/terminals").await;
    assert_eq!(list["terminals"][0]["alive"], true, "{list}");
}
