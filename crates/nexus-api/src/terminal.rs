//! Terminal sessions of a sandbox: login shells on pseudo-terminals that outlive the
//! WebSocket connections attached to them (`GET /v1/sandboxes/{id}/terminal`, ttyd's
//! protocol), listed, created and closed over plain JSON routes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sandboxes/{id}/terminals`: the size of the new session. Absent fields
/// default to 80 columns and 24 rows; values are clamped to `1..=1000`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTerminalRequest {
    /// Columns [default: 80].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 120)]
    pub cols: Option<u32>,
    /// Rows [default: 24].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 40)]
    pub rows: Option<u32>,
}

/// A terminal session as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TerminalInfo {
    /// The session's id in this sandbox (`?session=` of the WebSocket route); never
    /// reused while the sandbox runs.
    #[schema(example = "1")]
    pub id: String,
    /// When it was opened, RFC 3339.
    pub created_at: String,
    /// Current columns.
    pub cols: u16,
    /// Current rows.
    pub rows: u16,
    /// The shell's pid inside the sandbox.
    pub pid: u32,
    /// WebSocket connections attached right now.
    pub attached: u32,
    /// Whether the shell still runs. An ended session stays listed (and can be
    /// attached to, to read its last output) until it is deleted.
    pub alive: bool,
    /// The shell's exit status, once it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the shell, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// `GET /v1/sandboxes/{id}/terminals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TerminalList {
    /// The sandbox's sessions, oldest first.
    pub terminals: Vec<TerminalInfo>,
}

/// The WebSocket subprotocol of `GET /v1/sandboxes/{id}/terminal`: ttyd's.
pub const TERMINAL_SUBPROTOCOL: &str = "tty";

/// Close code of the terminal WebSocket: the handshake's token is missing or wrong.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// Close code of the terminal WebSocket: no such sandbox or session.
pub const CLOSE_NOT_FOUND: u16 = 4404;

/// Close code of the terminal WebSocket: the sandbox is not running, or paused.
pub const CLOSE_CONFLICT: u16 = 4409;

/// Close code of the terminal WebSocket: the first message was not a valid handshake.
pub const CLOSE_BAD_HANDSHAKE: u16 = 4400;

/// Close code of the terminal WebSocket: no handshake came in time.
pub const CLOSE_HANDSHAKE_TIMEOUT: u16 = 4408;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_fields_are_optional_and_strict() {
        let empty: CreateTerminalRequest = serde_json::from_str("{}").expect("empty");
        assert_eq!(empty, CreateTerminalRequest::default());
        let sized: CreateTerminalRequest =
            serde_json::from_str(r#"{"cols":100,"rows":30}"#).expect("sized");
        assert_eq!((sized.cols, sized.rows), (Some(100), Some(30)));
        assert!(serde_json::from_str::<CreateTerminalRequest>(r#"{"columns":1}"#).is_err());
    }
}
