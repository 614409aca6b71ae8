//! ttyd's WebSocket protocol, as the terminal route speaks it: every message after the
//! JSON handshake starts with one command byte. Client to server: `0` input, `1` resize
//! (`{"columns":N,"rows":N}`), `2` pause, `3` resume. Server to client: `0` output, `1`
//! window title, `2` preferences (JSON). The protocol is described in the Rust roadmap
//! (`../shared/seeds/002_c51e0584d5ec03f8.txt`, step 10); ttyd's own client and xterm.js
//! front ends speak it. Pure functions, no I/O.

use axum::body::Bytes;
use nexus_agent_proto::{TermExit, TermSize};
use serde::Deserialize;
use serde_json::Value;

/// Longest close reason a WebSocket close frame can carry, in bytes.
pub const MAX_CLOSE_REASON: usize = 123;

/// The first message of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Handshake {
    /// The API token, for clients that cannot send an `Authorization` header (browsers);
    /// empty when the header authenticated.
    #[serde(rename = "AuthToken", default)]
    pub auth_token: String,
    /// The client's columns, if it said.
    #[serde(default, deserialize_with = "dimension")]
    pub columns: Option<u64>,
    /// The client's rows, if it said.
    #[serde(default, deserialize_with = "dimension")]
    pub rows: Option<u64>,
}

impl Handshake {
    /// The size the client asked for (clamped), if it named one.
    pub fn size(&self) -> Option<TermSize> {
        match (self.columns, self.rows) {
            (None, None) => None,
            (cols, rows) => Some(TermSize::clamped(
                cols.unwrap_or(u64::from(TermSize::DEFAULT.cols)),
                rows.unwrap_or(u64::from(TermSize::DEFAULT.rows)),
            )),
        }
    }
}

/// Parses the handshake; the error says what is wrong with it.
pub fn parse_handshake(bytes: &[u8]) -> Result<Handshake, String> {
    if bytes.first() != Some(&b'{') {
        return Err(
            "the first message must be the JSON handshake {\"AuthToken\":\"...\",\"columns\":N,\"rows\":N}"
                .into(),
        );
    }
    serde_json::from_slice(bytes).map_err(|e| format!("the handshake is not valid JSON: {e}"))
}

/// A message from the client after the handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// `0`: bytes typed.
    Input(&'a [u8]),
    /// `1`: the new size, clamped.
    Resize(TermSize),
    /// `1` with a body that is not the resize JSON; the text says why.
    BadResize(String),
    /// `2`: stop sending output.
    Pause,
    /// `3`: send output again.
    Resume,
    /// Any other command byte (ignored).
    Unknown(u8),
    /// An empty message (ignored).
    Empty,
}

/// Parses one message from the client.
pub fn parse_client(bytes: &[u8]) -> ClientMessage<'_> {
    let Some((command, body)) = bytes.split_first() else {
        return ClientMessage::Empty;
    };
    match command {
        b'0' => ClientMessage::Input(body),
        b'1' => match serde_json::from_slice::<Value>(body) {
            Ok(value) => match (
                value.get("columns").and_then(number),
                value.get("rows").and_then(number),
            ) {
                (Some(cols), Some(rows)) => ClientMessage::Resize(TermSize::clamped(cols, rows)),
                _ => ClientMessage::BadResize(format!(
                    "resize needs numeric columns and rows, got {value}"
                )),
            },
            Err(e) => ClientMessage::BadResize(format!("resize is not valid JSON: {e}")),
        },
        b'2' => ClientMessage::Pause,
        b'3' => ClientMessage::Resume,
        other => ClientMessage::Unknown(*other),
    }
}

/// `0` + output bytes.
pub fn output(bytes: &[u8]) -> Bytes {
    prefixed(b'0', bytes)
}

/// `1` + the window title.
pub fn title(text: &str) -> Bytes {
    prefixed(b'1', text.as_bytes())
}

/// `2` + the preferences: ttyd's client options plus `nexus`, which tells the client
/// which session (and sandbox) it is attached to.
pub fn preferences(session: &str, sandbox: &str) -> Bytes {
    let value = serde_json::json!({"nexus": {"session": session, "sandbox": sandbox}});
    prefixed(b'2', value.to_string().as_bytes())
}

/// A close reason `"<code>: <message>"`, cut at a character boundary to fit a close
/// frame.
pub fn close_reason(code: &str, message: &str) -> String {
    let mut reason = format!("{code}: {message}");
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// The close reason when the shell exited: `shell exited with status N`, or `shell
/// killed by signal N`.
pub fn exit_reason(exit: TermExit) -> String {
    match (exit.exit_code, exit.signal) {
        (_, Some(signal)) => format!("shell killed by signal {signal}"),
        (Some(code), None) => format!("shell exited with status {code}"),
        (None, None) => "shell exited".to_owned(),
    }
}

fn prefixed(command: u8, body: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(1 + body.len());
    message.push(command);
    message.extend_from_slice(body);
    Bytes::from(message)
}

/// A size as a client may send it: a non-negative integer, a negative one (taken as 0)
/// or a float (truncated), all clamped later.
fn number(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_i64().map(|n| n.max(0).unsigned_abs()))
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.max(0.0) as u64)
        })
}

fn dimension<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.as_ref().and_then(number))
}

#[cfg(test)]
mod tests {
    use nexus_agent_proto::terminal::{MAX_TERM_COLS, MAX_TERM_ROWS};

    use super::*;

    #[test]
    fn the_handshake_carries_token_and_optional_size() {
        let h = parse_handshake(br#"{"AuthToken":"t0k","columns":120,"rows":40}"#).unwrap();
        assert_eq!(h.auth_token, "t0k");
        assert_eq!(
            h.size(),
            Some(TermSize {
                cols: 120,
                rows: 40
            })
        );
        let h = parse_handshake(br#"{"AuthToken":""}"#).unwrap();
        assert_eq!((h.auth_token.as_str(), h.size()), ("", None));
        let h = parse_handshake(br#"{"columns":-5,"rows":1e9,"extra":true}"#).unwrap();
        assert_eq!(
            h.size(),
            Some(TermSize {
                cols: 1,
                rows: MAX_TERM_ROWS
            }),
            "absurd sizes are clamped; unknown fields ignored"
        );
        assert!(
            parse_handshake(b"0ls")
                .unwrap_err()
                .contains("JSON handshake")
        );
        assert!(
            parse_handshake(b"{nope")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn client_messages_are_told_apart_by_their_first_byte() {
        assert_eq!(parse_client(b"0ls -l\r"), ClientMessage::Input(b"ls -l\r"));
        assert_eq!(parse_client(b"0"), ClientMessage::Input(b""));
        assert_eq!(
            parse_client(br#"1{"columns":100,"rows":30}"#),
            ClientMessage::Resize(TermSize {
                cols: 100,
                rows: 30
            })
        );
        assert_eq!(
            parse_client(br#"1{"columns":99999,"rows":0}"#),
            ClientMessage::Resize(TermSize {
                cols: MAX_TERM_COLS,
                rows: 1
            })
        );
        assert!(matches!(
            parse_client(br#"1{"columns":"wide"}"#),
            ClientMessage::BadResize(_)
        ));
        assert!(matches!(parse_client(b"1{"), ClientMessage::BadResize(_)));
        assert_eq!(parse_client(b"2"), ClientMessage::Pause);
        assert_eq!(parse_client(b"3"), ClientMessage::Resume);
        assert_eq!(parse_client(b"9what"), ClientMessage::Unknown(b'9'));
        assert_eq!(parse_client(b""), ClientMessage::Empty);
    }

    #[test]
    fn server_messages_are_prefixed() {
        assert_eq!(&output(b"\x1b[1mhi")[..], b"0\x1b[1mhi");
        assert_eq!(&title("web: 3")[..], b"1web: 3");
        let prefs = preferences("3", "sb-1");
        assert_eq!(prefs[0], b'2');
        let value: Value = serde_json::from_slice(&prefs[1..]).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"nexus": {"session": "3", "sandbox": "sb-1"}})
        );
    }

    #[test]
    fn exits_read_as_sentences() {
        let exit = |exit_code, signal| TermExit { exit_code, signal };
        assert_eq!(
            exit_reason(exit(Some(0), None)),
            "shell exited with status 0"
        );
        assert_eq!(exit_reason(exit(None, Some(9))), "shell killed by signal 9");
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("a", "b"), "a: b");
        let long = close_reason("sandbox_not_running", &"é".repeat(200));
        assert!(long.len() <= MAX_CLOSE_REASON, "{}", long.len());
        assert!(long.starts_with("sandbox_not_running: é"));
    }
}
