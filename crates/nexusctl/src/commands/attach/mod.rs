//! `nexusctl attach SB [--session ID]`: an interactive shell in a sandbox, over the
//! daemon's terminal WebSocket (ttyd's protocol, see `nexusd`'s `http::terminal`).
//!
//! The local terminal goes into raw mode, so every key (Ctrl-C and Ctrl-D included)
//! reaches the sandbox's shell; the window size is sent at start and on every SIGWINCH.
//! The detach sequence (Ctrl-P Ctrl-Q unless `--detach-keys` says otherwise) leaves the
//! session and the sandbox running, and prints how to come back; re-attaching replays
//! the session's recent screen. The command exits with the shell's status when the shell
//! ends. The terminal is restored on every way out, errors included.

mod keys;
mod tty;

use std::io::{Read, Write};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use nexus_client::{Client, ClientError};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

pub use self::keys::DEFAULT_DETACH_KEYS;
use self::keys::{DetachKeys, Detacher};
use super::exec::ExitWith;
use crate::cli::AttachArgs;

/// The window size sent when the output is not a terminal.
const FALLBACK_SIZE: (u16, u16) = (80, 24);

/// How an attachment ended.
#[derive(Debug)]
enum Ending {
    /// The detach sequence was typed.
    Detached,
    /// The daemon closed the connection (shell exit, or an error) with this frame.
    Closed(Option<CloseFrame>),
    /// The connection ended without a close frame.
    Lost,
}

/// `nexusctl attach`.
pub async fn run(client: &Client, args: AttachArgs) -> anyhow::Result<()> {
    let keys = DetachKeys::parse(&args.detach_keys).map_err(anyhow::Error::msg)?;
    let (columns, rows) = tty::window_size().unwrap_or(FALLBACK_SIZE);

    let url = client.terminal_url(&args.sandbox, args.session.as_deref());
    let mut request = url
        .as_str()
        .into_client_request()
        .context("cannot build the terminal request")?;
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("tty"));
    if let Some(authorization) = client.authorization() {
        headers.insert(
            "Authorization",
            HeaderValue::from_str(&authorization).context("the token is not a valid header")?,
        );
    }
    let socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(tungstenite::Error::Http(response)) => return Err(refusal(&response).into()),
        Err(error) => {
            return Err(anyhow::anyhow!(
                "cannot open a terminal at {}: {error}",
                client.addr()
            ));
        }
    };
    let (mut sink, mut incoming) = socket.split();
    let handshake = serde_json::json!({"AuthToken": "", "columns": columns, "rows": rows});
    sink.send(Message::Binary(handshake.to_string().into_bytes().into()))
        .await
        .context("cannot send the terminal handshake")?;

    let raw = tty::RawMode::enable().context("cannot put the terminal in raw mode")?;
    let mut input = spawn_stdin_reader();
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("cannot watch the window size")?;
    let mut detacher = Detacher::new(keys.clone());
    let mut session: Option<String> = None;
    let mut stdout = std::io::stdout();
    let mut stdin_open = true;

    let ending = loop {
        tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    on_server_message(&data, &mut stdout, &mut session)?;
                }
                Some(Ok(Message::Text(text))) => {
                    on_server_message(text.as_bytes(), &mut stdout, &mut session)?;
                }
                Some(Ok(Message::Close(frame))) => break Ending::Closed(frame),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Ending::Lost,
            },
            chunk = input.recv(), if stdin_open => match chunk {
                Some(bytes) => {
                    let filtered = detacher.feed(&bytes);
                    if !filtered.send.is_empty() {
                        sink.send(Message::Binary(prefixed(b'0', &filtered.send).into())).await
                            .context("the terminal connection broke")?;
                    }
                    if filtered.detach {
                        let _ = sink.send(Message::Close(None)).await;
                        break Ending::Detached;
                    }
                }
                // Piped input ran out: the shell still runs what it was given.
                None => stdin_open = false,
            },
            _ = resized.recv() => {
                if let Some((columns, rows)) = tty::window_size() {
                    let size = serde_json::json!({"columns": columns, "rows": rows});
                    sink.send(Message::Binary(prefixed(b'1', size.to_string().as_bytes()).into()))
                        .await
                        .context("the terminal connection broke")?;
                }
            }
        }
    };
    drop(raw);
    finish(ending, &args.sandbox, session.as_deref(), &keys)
}

/// Handles one server message: `0` output, `1` title (ignored: the local terminal's
/// title stays the user's), `2` preferences (which name the session).
fn on_server_message(
    data: &[u8],
    stdout: &mut std::io::Stdout,
    session: &mut Option<String>,
) -> anyhow::Result<()> {
    match data.split_first() {
        Some((b'0', output)) => {
            stdout.write_all(output)?;
            stdout.flush()?;
        }
        Some((b'2', preferences)) => {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(preferences)
                && let Some(id) = value["nexus"]["session"].as_str()
            {
                *session = Some(id.to_owned());
            }
        }
        _ => {}
    }
    Ok(())
}

/// What the user is told, and the exit code, once the terminal is restored.
fn finish(
    ending: Ending,
    sandbox: &str,
    session: Option<&str>,
    keys: &DetachKeys,
) -> anyhow::Result<()> {
    let reattach = session.map_or_else(
        || format!("nexusctl attach {sandbox} --session ID (see the sandbox's terminals)"),
        |id| format!("nexusctl attach {sandbox} --session {id}"),
    );
    match ending {
        Ending::Detached => {
            let _ = writeln!(
                std::io::stderr(),
                "\r\ndetached ({}); the shell keeps running. Re-attach: {reattach}",
                keys.describe()
            );
            Ok(())
        }
        Ending::Closed(Some(frame)) if frame.code == CloseCode::Normal => {
            let reason = frame.reason.as_str();
            let _ = writeln!(std::io::stderr(), "\r\n{reason}");
            Err(ExitWith(exit_code(reason)).into())
        }
        Ending::Closed(Some(frame)) => Err(anyhow::anyhow!(
            "the daemon closed the terminal: {} (close code {})",
            frame.reason,
            u16::from(frame.code)
        )),
        Ending::Closed(None) => Err(ExitWith(0).into()),
        Ending::Lost => Err(anyhow::anyhow!(
            "the connection to the daemon was lost; the session may still run: {reattach}"
        )),
    }
}

/// The exit code for a close reason: the shell's status, 128 + its signal, else 0.
fn exit_code(reason: &str) -> u8 {
    let number = |prefix: &str| {
        reason
            .strip_prefix(prefix)
            .and_then(|n| n.trim().parse::<u32>().ok())
    };
    if let Some(status) = number("shell exited with status ") {
        return u8::try_from(status).unwrap_or(1);
    }
    number("shell killed by signal ").map_or(0, |signal| {
        u8::try_from(128 + signal.min(127)).unwrap_or(255)
    })
}

/// The API error of a refused upgrade (404, 409, 401), as the other commands report it.
fn refusal(response: &tungstenite::http::Response<Option<Vec<u8>>>) -> ClientError {
    let status = response.status().as_u16();
    let body = response.body().as_deref().unwrap_or_default();
    match serde_json::from_slice::<nexus_api::ErrorBody>(body) {
        Ok(error) => ClientError::Api {
            status,
            code: error.error.code,
            message: error.error.message,
        },
        Err(_) => ClientError::Unexpected {
            status,
            detail: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

/// Reads stdin on a thread of its own (a blocking read cannot be cancelled; the thread
/// ends with the process), handing chunks over as they come.
fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = [0u8; 4096];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    receiver
}

fn prefixed(command: u8, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(1 + body.len());
    message.push(command);
    message.extend_from_slice(body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_follows_the_shell() {
        assert_eq!(exit_code("shell exited with status 0"), 0);
        assert_eq!(exit_code("shell exited with status 3"), 3);
        assert_eq!(exit_code("shell killed by signal 9"), 137);
        assert_eq!(exit_code("shell exited"), 0);
    }

    #[test]
    fn preferences_name_the_session_and_output_is_written() {
        let mut session = None;
        let mut stdout = std::io::stdout();
        on_server_message(
            br#"2{"nexus":{"session":"7","sandbox":"sb-1"}}"#,
            &mut stdout,
            &mut session,
        )
        .expect("handled");
        assert_eq!(session.as_deref(), Some("7"));
        on_server_message(b"1title", &mut stdout, &mut session).expect("ignored");
        assert_eq!(session.as_deref(), Some("7"));
    }
}
