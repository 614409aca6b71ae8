//! Background processes in a sandbox: start one, list them, follow or re-attach to their
//! output from an offset, write their stdin, signal and wait for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::exec::ExitStatus;

/// `POST /v1/sandboxes/{id}/processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartProcessRequest {
    /// Program and arguments; no shell is involved.
    pub argv: Vec<String>,
    /// Extra environment, on top of the sandbox's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory [default: `/workspace`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Keep stdin open for `POST .../stdin`; otherwise stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Kill the process (and its children) after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Cap on recorded stdout plus stderr [default: 2000000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// A process as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessInfo {
    /// The process's id in this sandbox (not its pid); never reused.
    pub id: u64,
    /// Its pid inside the sandbox.
    pub pid: u32,
    /// What runs.
    pub argv: Vec<String>,
    /// `running` or `exited`.
    pub state: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// How it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
}

/// `GET /v1/sandboxes/{id}/processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessList {
    /// Running processes and exited ones not yet waited for.
    pub processes: Vec<ProcessInfo>,
}

/// `POST /v1/sandboxes/{id}/processes/{process}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// Signal number (15 TERM, 9 KILL, 2 INT, 1 HUP...), sent to the whole process group.
    #[schema(example = 15)]
    pub signal: i32,
}

/// One line of `GET .../output`: bytes with their absolute offsets, so a client that
/// drops can re-attach from where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputLine {
    /// Bytes of stdout, base64, starting at `offset` in stdout.
    Stdout {
        /// Offset of the first byte.
        offset: u64,
        /// The bytes, base64.
        data: String,
    },
    /// Bytes of stderr, base64, starting at `offset` in stderr.
    Stderr {
        /// Offset of the first byte.
        offset: u64,
        /// The bytes, base64.
        data: String,
    },
    /// Bytes no longer kept by the sandbox (older than its recent window).
    Skipped {
        /// `stdout` or `stderr`.
        stream: String,
        /// Where the gap starts.
        offset: u64,
        /// How many bytes are missing.
        bytes: u64,
    },
    /// The process ended; the last line.
    Exit(ExitStatus),
    /// The stream failed; the last line.
    Error {
        /// What went wrong.
        message: String,
    },
}
