//! Running commands in a sandbox: the request, the collected result, and the events of a
//! streamed run (one JSON object per line, `application/x-ndjson`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The default cap on collected output, as in the deployment guide (`log.max_output_bytes`).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 2_000_000;

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; no shell is involved (use `["sh", "-c", "..."]` for one).
    #[schema(example = json!(["python3", "-c", "print(1 + 1)"]))]
    pub argv: Vec<String>,
    /// Extra environment, on top of the sandbox's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory [default: `/workspace`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Bytes written to the process's stdin, which is then closed (UTF-8 text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Kill the process (and its children) after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Cap on collected stdout plus stderr [default: 2000000, and none when streaming];
    /// beyond it output is discarded (the process keeps running) and `output_truncated`
    /// is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// How `stdout`/`stderr` are encoded in the result: `utf8` (invalid bytes replaced)
    /// or `base64` (exact bytes) [default: utf8].
    #[serde(default)]
    pub encoding: OutputEncoding,
    /// Stream events as they happen (`application/x-ndjson`) instead of one result at the end.
    #[serde(default)]
    pub stream: bool,
}

/// How output bytes are put into JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncoding {
    /// Text; invalid UTF-8 is replaced with U+FFFD.
    #[default]
    Utf8,
    /// Exact bytes, base64 (standard alphabet, padded).
    Base64,
}

/// How a process ended and which limits bit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExitStatus {
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Killed because `timeout_ms` passed.
    pub timed_out: bool,
    /// Killed by the kernel's OOM killer (the sandbox's memory limit).
    pub oom_killed: bool,
    /// Output beyond `max_output_bytes` was discarded.
    pub output_truncated: bool,
    /// Run time in milliseconds.
    pub duration_ms: u64,
}

/// The result of a non-streamed exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// Collected stdout, in `encoding`.
    pub stdout: String,
    /// Collected stderr, in `encoding`.
    pub stderr: String,
    /// The encoding of `stdout` and `stderr`.
    pub encoding: OutputEncoding,
    /// How it ended.
    #[serde(flatten)]
    pub status: ExitStatus,
}

/// One line of a streamed exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    /// The process started.
    Started {
        /// Its pid inside the sandbox.
        pid: u32,
    },
    /// Bytes written to stdout, base64.
    Stdout {
        /// The bytes, base64.
        data: String,
    },
    /// Bytes written to stderr, base64.
    Stderr {
        /// The bytes, base64.
        data: String,
    },
    /// The process ended; always the last line.
    Exit(ExitStatus),
    /// The stream failed; always the last line.
    Error {
        /// What went wrong.
        message: String,
    },
}
