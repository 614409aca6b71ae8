//! `GET /v1/sandboxes/{id}/terminal`: a terminal session over a WebSocket speaking ttyd's
//! protocol ([`super::ttyd`]). Authentication, the handshake, and the two directions of
//! a connection: typed input, resizes and pause/resume from the client; output from the
//! agent's flow-controlled stream through a small bounded queue to the socket.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use nexus_agent_proto::{TermEvent, TermSize};
use nexus_api::terminal::{
    CLOSE_BAD_HANDSHAKE, CLOSE_CONFLICT, CLOSE_HANDSHAKE_TIMEOUT, CLOSE_NOT_FOUND,
    CLOSE_UNAUTHORIZED, TERMINAL_SUBPROTOCOL,
};
use nexus_api::{ErrorBody, ErrorCode};
use nexus_core::service::{AttachedTerminal, ServiceError};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::parse_session;
use super::ttyd::{self, ClientMessage};
use crate::http::auth;
use crate::http::error::ApiError;
use crate::state::AppState;

/// How long a client has to send its handshake after the upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages queued between the agent's output stream and the socket. With the agent
/// stream's own credit window this bounds what a connection holds for a slow client.
const OUTPUT_QUEUE: usize = 8;

/// Largest message a client may send: input is typed, resizes are small; nothing
/// legitimate comes near this.
const MAX_CLIENT_MESSAGE: usize = 1024 * 1024;

/// Query of the terminal route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TerminalQuery {
    /// Re-attach to this existing session; without it a new one is opened.
    pub session: Option<String>,
}

/// A terminal over a WebSocket speaking ttyd's protocol (subprotocol `tty`).
///
/// Authenticate with `Authorization: Bearer <token>` on the upgrade request, or (browsers)
/// with the `AuthToken` field of the handshake. With the header, errors come as plain
/// HTTP before the upgrade; without it the upgrade is always accepted and errors come as
/// close frames once the handshake's token is checked: 4401 bad token, 4404 no such
/// sandbox or session, 4409 not running or paused, 4400 bad handshake, 4408 no handshake
/// within 10 s; the reason is `<error code>: <message>`.
///
/// Client to server: first the JSON handshake `{"AuthToken":"...","columns":N,"rows":N}`,
/// then messages whose first byte is the command: `0` input, `1` resize
/// `{"columns":N,"rows":N}` (clamped to 1..=1000), `2` pause output, `3` resume.
/// Server to client (binary): `1` title, `2` preferences
/// `{"nexus":{"session":"<id>","sandbox":"<sandbox id>"}}`, then `0` output (the replay
/// of recent output first on a re-attach). The shell's exit closes with 1000 and
/// `shell exited with status N`. A dropped connection leaves the session running.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/terminal",
    tag = "terminals",
    security(("bearer" = []), ()),
    params(("id" = String, Path, description = "Sandbox id or name"), TerminalQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket (ttyd protocol)"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "Wrong bearer token in the header", body = ErrorBody),
        (status = 404, description = "No such sandbox or session (header authentication)", body = ErrorBody),
        (status = 409, description = "The sandbox is not running or paused (header authentication)", body = ErrorBody),
    )
)]
pub async fn attach(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<TerminalQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let header_auth = match auth::check_header(&state, &headers, "/v1/sandboxes/{id}/terminal") {
        Some(result) => {
            result?;
            true
        }
        None => false,
    };
    let Ok(upgrade) = upgrade else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "this route is a WebSocket speaking ttyd's protocol: connect with a WebSocket client (subprotocol `tty`)",
        ));
    };
    let session = match query {
        Ok(Query(query)) => query.session,
        Err(e) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid query: {}", e.body_text()),
            ));
        }
    };
    let upgrade = upgrade
        .protocols([TERMINAL_SUBPROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE);
    // The connection outlives the request; it keeps the request's span (and id).
    let span = tracing::Span::current();
    if !header_auth {
        // Nothing is looked up before the handshake's token is checked.
        return Ok(upgrade.on_upgrade(move |socket| {
            unauthenticated(socket, state, id, session).instrument(span)
        }));
    }
    // With the header, every error is plain HTTP before the upgrade.
    let target = lookup(&state, &id, session.as_deref()).await?;
    Ok(upgrade.on_upgrade(move |mut socket| {
        async move {
            let Some(handshake) = read_handshake(&mut socket).await else {
                return;
            };
            run(socket, state, id, target, handshake.size()).await;
        }
        .instrument(span)
    }))
}

/// What a connection attaches to, found before the session loop.
enum Target {
    /// A new session, opened once the handshake gave its size.
    New,
    /// An existing session, attached to already.
    Existing(Box<AttachedTerminal>),
}

/// Checks the sandbox (and session) a connection asks for.
async fn lookup(state: &AppState, id: &str, session: Option<&str>) -> Result<Target, ApiError> {
    match session {
        None => {
            state.sandboxes.agent(id).await?;
            Ok(Target::New)
        }
        Some(session) => {
            // Check the sandbox first, so a bad session id on a stopped sandbox is a 409.
            state.sandboxes.agent(id).await?;
            let terminal = parse_session(session)?;
            let attached = state.sandboxes.attach_terminal(id, terminal).await?;
            Ok(Target::Existing(Box::new(attached)))
        }
    }
}

/// A connection that sent no header: handshake, token, then the same lookups, with
/// every refusal as a close frame.
async fn unauthenticated(
    mut socket: WebSocket,
    state: AppState,
    id: String,
    session: Option<String>,
) {
    let Some(handshake) = read_handshake(&mut socket).await else {
        return;
    };
    let refusal = if handshake.auth_token.is_empty() {
        Some(
            "the handshake has no AuthToken: send nexusd's token (its file is $XDG_CONFIG_HOME/nexus/token)",
        )
    } else if !state.token.matches(&handshake.auth_token) {
        Some(
            "invalid AuthToken: send nexusd's token from $XDG_CONFIG_HOME/nexus/token or NEXUS_TOKEN",
        )
    } else {
        None
    };
    if let Some(message) = refusal {
        tracing::warn!(sandbox = %id, "terminal handshake with a missing or wrong token refused");
        let reason = ttyd::close_reason(ErrorCode::Unauthorized.as_str(), message);
        close(&mut socket, CLOSE_UNAUTHORIZED, reason).await;
        return;
    }
    match lookup(&state, &id, session.as_deref()).await {
        Ok(target) => run(socket, state, id, target, handshake.size()).await,
        Err(err) => {
            let (code, reason) = close_for(err);
            close(&mut socket, code, reason).await;
        }
    }
}

/// Reads the first message as the handshake; closes the socket and returns `None` when
/// it does not come in time or is not one.
async fn read_handshake(socket: &mut WebSocket) -> Option<ttyd::Handshake> {
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Text(text))) => return Some(text.as_bytes().to_vec()),
                Some(Ok(Message::Binary(bytes))) => return Some(bytes.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            }
        }
    })
    .await;
    let bytes = match first {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(_) => {
            let reason = ttyd::close_reason(
                "handshake_timeout",
                "no handshake within 10 s; send {\"AuthToken\":\"...\",\"columns\":N,\"rows\":N} first",
            );
            close(socket, CLOSE_HANDSHAKE_TIMEOUT, reason).await;
            return None;
        }
    };
    match ttyd::parse_handshake(&bytes) {
        Ok(handshake) => Some(handshake),
        Err(message) => {
            let reason = ttyd::close_reason(ErrorCode::InvalidRequest.as_str(), &message);
            close(socket, CLOSE_BAD_HANDSHAKE, reason).await;
            None
        }
    }
}

/// A close frame for a refused lookup: 4404, 4409, 1011 otherwise.
fn close_for(err: ApiError) -> (u16, String) {
    let (code, message) = err.into_parts();
    let close_code = match code.http_status() {
        401 => CLOSE_UNAUTHORIZED,
        404 => CLOSE_NOT_FOUND,
        409 => CLOSE_CONFLICT,
        _ => 1011,
    };
    (close_code, ttyd::close_reason(code.as_str(), &message))
}

async fn close(socket: &mut WebSocket, code: u16, reason: String) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The session loop of an authenticated connection.
async fn run(
    mut socket: WebSocket,
    state: AppState,
    id: String,
    target: Target,
    size: Option<TermSize>,
) {
    let attached = match attach_target(&state, &id, target, size).await {
        Ok(attached) => attached,
        Err(err) => {
            let (code, reason) = close_for(err);
            close(&mut socket, code, reason).await;
            return;
        }
    };
    let span = tracing::info_span!(
        "terminal",
        sandbox_id = %attached.sandbox.id,
        session = %attached.terminal.id
    );
    serve(socket, state, id, attached).instrument(span).await;
}

/// Relays one attached session until the client leaves or the shell exits.
async fn serve(mut socket: WebSocket, state: AppState, id: String, attached: AttachedTerminal) {
    let AttachedTerminal {
        sandbox,
        terminal,
        output,
    } = attached;
    let session = terminal.id;
    tracing::info!("terminal attached");
    let title = ttyd::title(&format!("{}: {session}", sandbox.spec.name));
    let prefs = ttyd::preferences(&session.to_string(), &sandbox.id.to_string());
    for message in [title, prefs] {
        if socket.send(Message::Binary(message)).await.is_err() {
            return;
        }
    }

    let (sink, mut incoming) = socket.split();
    let (out, queue) = mpsc::channel::<Message>(OUTPUT_QUEUE);
    let (paused_tx, paused) = watch::channel(false);
    let mut writer = tokio::spawn(write_loop(sink, queue));
    let pump = tokio::spawn(forward_output(output, out.clone(), paused));

    let mut warned_unknown = false;
    let mut writer_done = false;
    loop {
        let message = tokio::select! {
            message = incoming.next() => message,
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        };
        let bytes = match message {
            Some(Ok(Message::Text(text))) => axum::body::Bytes::from(text),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
        };
        match ttyd::parse_client(&bytes) {
            ClientMessage::Input(input) if !input.is_empty() => {
                if let Err(err) = state.sandboxes.terminal_input(&id, session, input).await
                    && !input_error_is_transient(&err)
                {
                    let (code, reason) = close_for(err.into());
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = out.send(Message::Close(Some(frame))).await;
                    break;
                }
            }
            ClientMessage::Input(_) | ClientMessage::Empty => {}
            ClientMessage::Resize(size) => {
                if let Err(err) = state.sandboxes.resize_terminal(&id, session, size).await {
                    tracing::debug!(error = %err, "resizing the terminal failed");
                }
            }
            ClientMessage::BadResize(problem) => tracing::debug!("{problem}"),
            ClientMessage::Pause => {
                paused_tx.send_replace(true);
            }
            ClientMessage::Resume => {
                paused_tx.send_replace(false);
            }
            ClientMessage::Unknown(command) => {
                if !warned_unknown {
                    warned_unknown = true;
                    tracing::warn!(
                        command = %char::from(command).escape_default(),
                        "unknown terminal message type ignored (logged once per connection)"
                    );
                }
            }
        }
    }
    pump.abort();
    drop(out);
    // Let a queued close frame go out; the socket closes when the writer ends.
    if !writer_done
        && tokio::time::timeout(Duration::from_secs(2), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
    tracing::info!("terminal detached");
}

/// Opens the session of a new connection, or takes the one attached during the lookup
/// (resized to this client's size).
async fn attach_target(
    state: &AppState,
    id: &str,
    target: Target,
    size: Option<TermSize>,
) -> Result<AttachedTerminal, ApiError> {
    match target {
        Target::New => {
            let (_, info) = state
                .sandboxes
                .open_terminal(id, size.unwrap_or_default())
                .await?;
            Ok(state.sandboxes.attach_terminal(id, info.id).await?)
        }
        Target::Existing(attached) => {
            if let Some(size) = size {
                state
                    .sandboxes
                    .resize_terminal(id, attached.terminal.id, size)
                    .await?;
            }
            Ok(*attached)
        }
    }
}

/// Input errors after which the connection stays: the sandbox is paused (typing resumes
/// with it), or the shell just ended (the output side closes with its status).
fn input_error_is_transient(err: &ServiceError) -> bool {
    use nexus_agent_proto::ErrorCode as Remote;
    match err {
        ServiceError::Paused { .. } => true,
        ServiceError::Agent(e) => matches!(
            e.remote_code(),
            Some(Remote::NotRunning | Remote::UnknownTerminal)
        ),
        _ => false,
    }
}

/// Moves the agent's output to the socket's queue while not paused. Not polling the
/// stream (paused, or the queue full because the client reads slowly) stops granting
/// the agent credit, which stops it reading the terminal: nothing grows without bound.
async fn forward_output(
    mut output: nexus_agent_proto::TerminalStream,
    out: mpsc::Sender<Message>,
    mut paused: watch::Receiver<bool>,
) {
    loop {
        if *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
            continue;
        }
        let item = tokio::select! {
            item = output.next() => item,
            changed = paused.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let message = match item {
            Some(Ok(TermEvent::Output { bytes, .. })) => Message::Binary(ttyd::output(&bytes)),
            Some(Ok(TermEvent::Exit(exit))) => {
                tracing::info!(%exit, "terminal shell exited");
                Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: ttyd::exit_reason(exit).into(),
                }))
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "terminal output stream failed");
                Message::Close(Some(CloseFrame {
                    code: 1011,
                    reason: ttyd::close_reason("internal", "the terminal's output stream broke")
                        .into(),
                }))
            }
            None => return,
        };
        let last = matches!(message, Message::Close(_));
        if out.send(message).await.is_err() || last {
            return;
        }
    }
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

/// Sends queued messages until a close frame went out or the queue is gone.
async fn write_loop(mut sink: Sink, mut queue: mpsc::Receiver<Message>) {
    while let Some(message) = queue.recv().await {
        let last = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || last {
            break;
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use nexus_core::testing::MemoryStore;
    use tower::ServiceExt;

    use crate::http::{app, tests::state};

    async fn get(path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = axum::http::Request::get(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = app(state(Arc::new(MemoryStore::default())))
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&body).expect("an error body"),
        )
    }

    #[tokio::test]
    async fn a_wrong_header_is_refused_before_anything_else() {
        let (status, body) = get("/v1/sandboxes/nope/terminal", Some("wrong-token-000000")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
    }

    #[tokio::test]
    async fn a_plain_request_is_told_to_use_a_websocket_and_learns_nothing_else() {
        for token in [None, Some("0123456789abcdef")] {
            let (status, body) = get("/v1/sandboxes/nope/terminal", token).await;
            assert_eq!(status, 400, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("WebSocket")),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn the_session_routes_need_the_token() {
        let (status, _) = get("/v1/sandboxes/nope/terminals", None).await;
        assert_eq!(status, 401);
        let (status, body) = get("/v1/sandboxes/nope/terminals", Some("0123456789abcdef")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("sandbox_not_found"))
        );
    }
}
