//! The messages of terminal sessions (protocol version 3) and their value types: a
//! session is a login shell on a pseudo-terminal, run by the agent, outliving the
//! connections that attach to it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Fewest columns or rows a terminal can have.
pub const MIN_TERM_SIZE: u16 = 1;

/// Most columns a terminal can have; larger requests are clamped to it.
pub const MAX_TERM_COLS: u16 = 1000;

/// Most rows a terminal can have; larger requests are clamped to it.
pub const MAX_TERM_ROWS: u16 = 1000;

/// The agent-assigned id of a terminal session, unique for the agent's lifetime (never
/// reused, and never equal to a process id's meaning: the two are separate spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TerminalId(pub u64);

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A terminal's size in character cells, always within
/// `1..=`[`MAX_TERM_COLS`] × `1..=`[`MAX_TERM_ROWS`] once made by [`TermSize::clamped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TermSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl TermSize {
    /// The size a terminal starts with when nobody said: 80 × 24.
    pub const DEFAULT: Self = Self { cols: 80, rows: 24 };

    /// `cols` × `rows` brought into the allowed range: 0 becomes 1, anything above the
    /// maximum becomes the maximum. Never fails, so absurd client input cannot either.
    pub fn clamped(cols: u64, rows: u64) -> Self {
        let clamp = |value: u64, max: u16| {
            u16::try_from(value.clamp(u64::from(MIN_TERM_SIZE), u64::from(max)))
                .expect("clamped into u16 range")
        };
        Self {
            cols: clamp(cols, MAX_TERM_COLS),
            rows: clamp(rows, MAX_TERM_ROWS),
        }
    }

    /// This size brought into the allowed range (for sizes read off the wire).
    pub fn clamp(self) -> Self {
        Self::clamped(u64::from(self.cols), u64::from(self.rows))
    }
}

impl Default for TermSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `term_open`: start a login shell on a new pseudo-terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermOpenRequest {
    /// The terminal's initial size (clamped by the agent).
    #[serde(default)]
    pub size: TermSize,
    /// Environment on top of the agent's defaults, as for `exec` (`TERM` is always
    /// `xterm-256color`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `term_attach`: stream a session's output, replaying what the agent kept first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermAttachRequest {
    /// Which session.
    pub id: TerminalId,
    /// Initial flow-control credit, in bytes.
    pub credit: u32,
}

/// `term_resize`: change a session's size (clamped by the agent); the shell's foreground
/// job gets `SIGWINCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermResizeRequest {
    /// Which session.
    pub id: TerminalId,
    /// The new size.
    pub size: TermSize,
}

/// `term_close`: end a session and forget it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermCloseRequest {
    /// Which session.
    pub id: TerminalId,
    /// Time between `SIGHUP` and `SIGKILL` to the session's processes [1000].
    #[serde(default = "default_close_grace_ms")]
    pub grace_ms: u64,
}

fn default_close_grace_ms() -> u64 {
    1000
}

/// How a session's shell ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermExit {
    /// The shell's exit status when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that killed the shell, when one did.
    pub signal: Option<i32>,
}

impl fmt::Display for TermExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.exit_code, self.signal) {
            (_, Some(signal)) => write!(f, "killed by signal {signal}"),
            (Some(code), None) => write!(f, "status {code}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

/// One terminal session, as `term_list` and `term_open` report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalInfo {
    /// The agent's id of the session.
    pub id: TerminalId,
    /// The shell's pid in the agent's PID namespace (also its session id).
    pub pid: u32,
    /// The current size.
    pub size: TermSize,
    /// When it was opened, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// How many output streams are attached right now.
    pub attached: u32,
    /// Whether the shell is still running.
    pub alive: bool,
    /// How the shell ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<TermExit>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_are_clamped_into_range() {
        assert_eq!(
            TermSize::clamped(0, 0),
            TermSize { cols: 1, rows: 1 },
            "zero becomes one"
        );
        assert_eq!(
            TermSize::clamped(u64::MAX, 100_000),
            TermSize {
                cols: MAX_TERM_COLS,
                rows: MAX_TERM_ROWS
            }
        );
        assert_eq!(
            TermSize::clamped(120, 40),
            TermSize {
                cols: 120,
                rows: 40
            },
            "sane sizes are kept"
        );
        assert_eq!(
            TermSize {
                cols: 5000,
                rows: 0
            }
            .clamp(),
            TermSize {
                cols: MAX_TERM_COLS,
                rows: 1
            }
        );
    }

    #[test]
    fn requests_have_the_documented_shape() {
        let request = crate::Request::TermOpen(TermOpenRequest {
            size: TermSize {
                cols: 100,
                rows: 30,
            },
            env: BTreeMap::new(),
        });
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"op": "term_open", "size": {"cols": 100, "rows": 30}, "env": {}})
        );
        let close: crate::Request =
            serde_json::from_value(json!({"op": "term_close", "id": 3})).unwrap();
        assert_eq!(
            close,
            crate::Request::TermClose(TermCloseRequest {
                id: TerminalId(3),
                grace_ms: 1000
            }),
            "the grace has a default"
        );
        let open: crate::Request = serde_json::from_value(json!({"op": "term_open"})).unwrap();
        assert_eq!(
            open,
            crate::Request::TermOpen(TermOpenRequest {
                size: TermSize::DEFAULT,
                env: BTreeMap::new()
            })
        );
        assert_eq!(request.min_version(), 3);
        assert_eq!(crate::Request::TermList.min_version(), 3);
        assert_eq!(crate::Request::List.min_version(), 1);
    }

    #[test]
    fn answers_round_trip() {
        let info = TerminalInfo {
            id: TerminalId(2),
            pid: 40,
            size: TermSize::DEFAULT,
            created_at_ms: 5,
            attached: 1,
            alive: false,
            exit: Some(TermExit {
                exit_code: Some(0),
                signal: None,
            }),
        };
        for response in [
            crate::Response::TermOpened {
                terminal: info.clone(),
            },
            crate::Response::Terminals {
                terminals: vec![info.clone()],
            },
            crate::Response::TermExited {
                exit: TermExit {
                    exit_code: None,
                    signal: Some(9),
                },
            },
        ] {
            let text = serde_json::to_string(&response).unwrap();
            assert_eq!(
                serde_json::from_str::<crate::Response>(&text).unwrap(),
                response
            );
        }
        let event = crate::Event::TermAttached { terminal: info };
        assert_eq!(
            serde_json::to_value(&event).unwrap()["event"],
            "term_attached"
        );
        assert_eq!(
            TermExit {
                exit_code: Some(3),
                signal: None
            }
            .to_string(),
            "status 3"
        );
        assert_eq!(
            serde_json::to_value(crate::ErrorCode::UnknownTerminal).unwrap(),
            "unknown_terminal"
        );
    }
}
