//! The JSON messages of the protocol (handshake, requests, responses, events) and the
//! value types they carry. Field names are part of the protocol; see PROTOCOL.md.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fs::{
    BatchOutput, BatchRequest, CopyRequest, FileReadInfo, FileStat, GlobRequest, GlobResult,
    GrepRequest, GrepResult, ListRequest, ListResult, MkdirRequest, MoveRequest, Outcome,
    ReadRequest, RemoveRequest, RemoveSummary, StatRequest, StatResult, TarDownloadRequest,
    TarUploadRequest, TreeSummary, WatchEvent, WatchRequest, WriteRequest, WriteResult,
};
use crate::terminal::{
    TermAttachRequest, TermCloseRequest, TermExit, TermOpenRequest, TermResizeRequest, TerminalInfo,
};

/// The default cap on a process's recorded output (stdout and stderr together), as in the
/// deployment guide.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 2_000_000;

/// The string every HELLO carries, so an agent can tell a Nexus client from a stray peer.
pub const MAGIC: &str = "nexus-agent";

/// The agent-assigned id of a process, unique for the agent's lifetime (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcessId(pub u64);

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One of a process's two output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// HELLO: the client's opening message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The oldest protocol version the client speaks.
    pub min_version: u16,
    /// The newest protocol version the client speaks.
    pub max_version: u16,
    /// Free text naming the client, for the agent's log (`nexusd/0.1.0`).
    #[serde(default)]
    pub client: String,
}

/// WELCOME: what the agent tells about itself once it has picked a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The protocol version both sides speak from now on.
    pub protocol_version: u16,
    /// The agent's build version (its crate version).
    pub agent_version: String,
    /// The agent's pid in its own PID namespace (1 when it is a sandbox's init).
    pub pid: u32,
    /// The uid the agent runs as, in its user namespace.
    pub uid: u32,
    /// Whether the agent is PID 1 of its PID namespace.
    pub pid1: bool,
    /// Whether the agent is a child subreaper (always true when it is not PID 1).
    pub subreaper: bool,
    /// `prctl(PR_GET_DUMPABLE)` of the agent: false means it cannot be ptraced or have its
    /// `/proc/<pid>/mem` and `fd` read by the code it runs.
    pub dumpable: bool,
    /// How many bytes of each output stream the agent keeps for re-attaching.
    pub window_bytes: u64,
}

/// The payload of an ERROR frame: a fatal, connection-level error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionError {
    /// What went wrong, stable.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// On `version_mismatch`: the oldest version the agent speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_min: Option<u16>,
    /// On `version_mismatch`: the newest version the agent speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_max: Option<u16>,
}

/// How to start a process. No shell is involved: `argv[0]` is looked up in the `PATH`
/// of the process's environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The program and its arguments; must not be empty.
    pub argv: Vec<String>,
    /// The process's environment on top of the agent's defaults (`PATH`, `HOME`, `LANG`),
    /// which these override. Nothing else is inherited.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the agent's default (`/workspace`, else `/`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Keep stdin open as a pipe for `write_stdin`; otherwise stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Kill the whole process group with SIGKILL after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Cap on the output recorded (stdout and stderr together); the rest is read and
    /// discarded, the process keeps running and `output_truncated` is set.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
}

fn default_max_output_bytes() -> u64 {
    DEFAULT_MAX_OUTPUT_BYTES
}

impl ExecRequest {
    /// A request for `argv` with every other field at its default.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            stdin: false,
            timeout_ms: None,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// How a process ended, and what limits bit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit status when the process exited normally.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, when one did.
    pub signal: Option<i32>,
    /// The agent killed the process group because `timeout_ms` passed.
    pub timed_out: bool,
    /// Some output was discarded because `max_output_bytes` was reached.
    pub output_truncated: bool,
    /// From the start of the process to the reaping of its leader.
    pub duration_ms: u64,
    /// Bytes the process wrote to stdout, including discarded ones.
    pub stdout_bytes: u64,
    /// Bytes the process wrote to stderr, including discarded ones.
    pub stderr_bytes: u64,
}

/// Whether a process is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Running, or its leader exited and its output is still being collected.
    Running,
    /// Finished; `exit` is set.
    Exited,
}

/// One process the agent knows, as `list` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The agent's id of the process.
    pub id: ProcessId,
    /// Its pid in the agent's PID namespace (also its process group id).
    pub pid: u32,
    /// What was run.
    pub argv: Vec<String>,
    /// Running or exited.
    pub state: ProcessState,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// How it ended, once it has.
    pub exit: Option<ExitInfo>,
}

/// The answer to a ping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The agent's pid.
    pub pid: u32,
    /// Milliseconds since the agent started.
    pub uptime_ms: u64,
    /// `prctl(PR_GET_DUMPABLE)`, read now.
    pub dumpable: bool,
    /// Processes currently running.
    pub running: u32,
}

/// What `terminate_all` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateReport {
    /// Process groups sent SIGTERM.
    pub signalled: u32,
    /// Process groups still running after the grace period and sent SIGKILL.
    pub killed: u32,
}

/// Absolute byte offsets in a process's stdout and stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputOffsets {
    /// Offset in stdout.
    pub stdout: u64,
    /// Offset in stderr.
    pub stderr: u64,
}

impl OutputOffsets {
    /// The beginning of both streams.
    pub const START: Self = Self {
        stdout: 0,
        stderr: 0,
    };
}

/// Attach an output stream to a new process before it can write anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    /// Initial flow-control credit, in bytes.
    pub credit: u32,
}

/// REQUEST: an operation, tagged by `op`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Answered by [`Response::Pong`].
    Ping,
    /// Start a process. Without `attach`: answered by [`Response::Started`]. With it: an
    /// [`Event::Started`], then its output as with [`Request::Output`].
    Exec {
        /// What to run.
        process: ExecRequest,
        /// Stream the output on this channel from offset 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attach: Option<Attach>,
    },
    /// Stream a process's output from the given offsets: STDOUT/STDERR frames and
    /// [`Event::Skipped`], ended by [`Response::Exited`]. Flow-controlled by CREDIT.
    Output {
        /// Which process.
        id: ProcessId,
        /// Where to start in each stream.
        from: OutputOffsets,
        /// Initial flow-control credit, in bytes.
        credit: u32,
    },
    /// Answered by [`Response::Exited`] when the process has finished.
    Wait {
        /// Which process.
        id: ProcessId,
    },
    /// Send a signal to the process's whole process group. Answered by [`Response::Done`].
    Signal {
        /// Which process.
        id: ProcessId,
        /// The signal number.
        signal: i32,
    },
    /// Close the process's stdin pipe. Answered by [`Response::Done`].
    CloseStdin {
        /// Which process.
        id: ProcessId,
    },
    /// Answered by [`Response::Processes`].
    List,
    /// Drop an exited process's record and output. Answered by [`Response::Done`].
    Forget {
        /// Which process.
        id: ProcessId,
    },
    /// SIGTERM every running process group, SIGKILL those left after `grace_ms`.
    /// Answered by [`Response::Terminated`] once all have exited.
    TerminateAll {
        /// Grace period between SIGTERM and SIGKILL.
        grace_ms: u64,
    },
    /// (v2) Read a file: [`Event::FsReadStart`], FILE_DATA frames (flow-controlled by
    /// CREDIT), then [`Response::FsReadDone`].
    FsRead(ReadRequest),
    /// (v2) Write a file from UPLOAD frames. Answered by [`Response::FsWritten`].
    FsWrite(WriteRequest),
    /// (v2) Stat many paths. Answered by [`Response::FsStats`].
    FsStat(StatRequest),
    /// (v2) List a directory. Answered by [`Response::FsListed`].
    FsList(ListRequest),
    /// (v2) Make a directory. Answered by [`Response::FsStat`].
    FsMkdir(MkdirRequest),
    /// (v2) Rename. Answered by [`Response::FsStat`] of the destination.
    FsMove(MoveRequest),
    /// (v2) Remove. Answered by [`Response::FsRemoved`].
    FsRemove(RemoveRequest),
    /// (v2) Copy a file or tree. Answered by [`Response::FsTree`].
    FsCopy(CopyRequest),
    /// (v2) Several operations in order. Answered by [`Response::FsBatch`].
    FsBatch(BatchRequest),
    /// (v2) Find paths by glob. Answered by [`Response::FsGlobbed`].
    FsGlob(GlobRequest),
    /// (v2) Search file contents. Answered by [`Response::FsGrepped`].
    FsGrep(GrepRequest),
    /// (v2) A tar of a file or tree in FILE_DATA frames, then [`Response::FsTree`].
    FsTarDownload(TarDownloadRequest),
    /// (v2) Unpack a tar sent in UPLOAD frames. Answered by [`Response::FsTree`].
    FsTarUpload(TarUploadRequest),
    /// (v2) [`Event::FsWatching`], then [`Event::FsChange`]s until CANCEL.
    FsWatch(WatchRequest),
    /// (v3) Start a login shell on a new pseudo-terminal. Answered by
    /// [`Response::TermOpened`].
    TermOpen(TermOpenRequest),
    /// (v3) [`Event::TermAttached`], the kept output then live output in STDOUT frames
    /// (flow-controlled by CREDIT), ended by [`Response::TermExited`].
    TermAttach(TermAttachRequest),
    /// (v3) Change a session's size. Answered by [`Response::Done`].
    TermResize(TermResizeRequest),
    /// (v3) End a session (SIGHUP, SIGKILL after the grace) and forget it. Answered by
    /// [`Response::TermExited`].
    TermClose(TermCloseRequest),
    /// (v3) Answered by [`Response::Terminals`].
    TermList,
}

impl Request {
    /// The oldest protocol version that has this operation.
    pub fn min_version(&self) -> u16 {
        match self {
            Self::Ping
            | Self::Exec { .. }
            | Self::Output { .. }
            | Self::Wait { .. }
            | Self::Signal { .. }
            | Self::CloseStdin { .. }
            | Self::List
            | Self::Forget { .. }
            | Self::TerminateAll { .. } => 1,
            Self::TermOpen(_)
            | Self::TermAttach(_)
            | Self::TermResize(_)
            | Self::TermClose(_)
            | Self::TermList => 3,
            _ => 2,
        }
    }

    /// The `op` tag, for messages.
    pub fn op_name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(|op| op.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }
}

/// RESPONSE: the last message of a channel, tagged by `result`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// To [`Request::Ping`].
    Pong {
        /// What the agent reports.
        pong: Pong,
    },
    /// To [`Request::Exec`] without attach.
    Started {
        /// The new process's id.
        id: ProcessId,
        /// Its pid.
        pid: u32,
    },
    /// To [`Request::Wait`], and the end of an output stream.
    Exited {
        /// How the process ended.
        exit: ExitInfo,
    },
    /// To [`Request::List`].
    Processes {
        /// Every process the agent knows, oldest first.
        processes: Vec<ProcessInfo>,
    },
    /// The operation was done.
    Done,
    /// To [`Request::TerminateAll`].
    Terminated {
        /// What was done.
        report: TerminateReport,
    },
    /// (v2) The end of a read: how many bytes were sent.
    FsReadDone {
        /// Data bytes sent.
        bytes: u64,
    },
    /// (v2) To [`Request::FsWrite`].
    FsWritten(WriteResult),
    /// (v2) To [`Request::FsStat`]: one result per path, in order.
    FsStats {
        /// The results.
        results: Vec<StatResult>,
    },
    /// (v2) To [`Request::FsList`].
    FsListed(ListResult),
    /// (v2) To [`Request::FsMkdir`] and [`Request::FsMove`].
    FsStat {
        /// The stat of the directory made, or of the destination.
        stat: FileStat,
    },
    /// (v2) To [`Request::FsRemove`].
    FsRemoved(RemoveSummary),
    /// (v2) To [`Request::FsCopy`], and the end of a tar download or upload.
    FsTree(TreeSummary),
    /// (v2) To [`Request::FsBatch`]: one result per operation, in order.
    FsBatch {
        /// The results.
        results: Vec<Outcome<BatchOutput>>,
    },
    /// (v2) To [`Request::FsGlob`].
    FsGlobbed(GlobResult),
    /// (v2) To [`Request::FsGrep`].
    FsGrepped(GrepResult),
    /// (v3) To [`Request::TermOpen`].
    TermOpened {
        /// The new session.
        terminal: TerminalInfo,
    },
    /// (v3) To [`Request::TermList`].
    Terminals {
        /// Every session the agent knows, oldest first.
        terminals: Vec<TerminalInfo>,
    },
    /// (v3) To [`Request::TermClose`], and the end of a terminal's output stream.
    TermExited {
        /// How the shell ended.
        exit: TermExit,
    },
    /// The operation failed; the connection is still fine.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

impl Response {
    /// Decodes a RESPONSE payload.
    ///
    /// serde decodes an internally tagged enum by first copying the whole message into an
    /// intermediate tree, which for the large file-system answers (a bulk stat of 100
    /// paths is about 25 KB) cost as much as the decoding itself. Those variants are
    /// decoded in two passes instead: the tag is read with everything else skipped
    /// unallocated, then the same bytes are decoded straight into the variant's fields
    /// (the tag is an unknown field there and ignored). Every other variant takes serde's
    /// path. The wire format is unchanged.
    pub fn decode(payload: &[u8]) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(borrow)]
            result: std::borrow::Cow<'a, str>,
        }
        #[derive(Deserialize)]
        struct Stats {
            results: Vec<StatResult>,
        }
        #[derive(Deserialize)]
        struct Batch {
            results: Vec<Outcome<BatchOutput>>,
        }
        use serde_json::from_slice as from;
        Ok(match &*from::<Tag<'_>>(payload)?.result {
            "fs_stats" => Self::FsStats {
                results: from::<Stats>(payload)?.results,
            },
            "fs_batch" => Self::FsBatch {
                results: from::<Batch>(payload)?.results,
            },
            "fs_listed" => Self::FsListed(from(payload)?),
            "fs_globbed" => Self::FsGlobbed(from(payload)?),
            "fs_grepped" => Self::FsGrepped(from(payload)?),
            _ => from(payload)?,
        })
    }
}

/// EVENT: an intermediate message on an open channel, tagged by `event`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An attached exec started the process.
    Started {
        /// The new process's id.
        id: ProcessId,
        /// Its pid.
        pid: u32,
    },
    /// `bytes` bytes of `stream` from `offset` on are no longer kept; the stream goes on at
    /// `offset + bytes`.
    Skipped {
        /// Which stream.
        stream: StreamKind,
        /// Where the gap starts.
        offset: u64,
        /// How long it is.
        bytes: u64,
    },
    /// (v2) A read opened its file; FILE_DATA frames follow.
    FsReadStart(FileReadInfo),
    /// (v2) A watch is in place; changes from now on are reported.
    FsWatching {
        /// The watched path, absolute.
        path: String,
    },
    /// (v2) A watched change.
    FsChange {
        /// What changed.
        change: WatchEvent,
    },
    /// (v3) A terminal output stream is attached; output follows.
    TermAttached {
        /// The session, as it is now.
        terminal: TerminalInfo,
    },
}

/// Stable error codes of [`Response::Error`] and [`ConnectionError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No process with that id (never existed, or forgotten).
    UnknownProcess,
    /// The operation needs an exited process.
    StillRunning,
    /// The operation needs a running process.
    NotRunning,
    /// The process could not be started (program not found, bad cwd, ...).
    SpawnFailed,
    /// The request is malformed or names an impossible value.
    BadRequest,
    /// The process's stdin is closed, or was never a pipe.
    StdinClosed,
    /// A channel id already in use, or too many open channels.
    Busy,
    /// The client's and agent's protocol versions do not overlap.
    VersionMismatch,
    /// The peer broke the protocol (bad frame, unexpected frame).
    ProtocolError,
    /// Something failed inside the agent.
    Internal,
    /// (v2) A path is empty, contains NUL, or names nothing usable (`..`, `/` to remove).
    InvalidPath,
    /// (v2) No such file or directory.
    NotFound,
    /// (v2) The path already exists.
    Exists,
    /// (v2) A directory was needed (a component, or the target).
    NotADirectory,
    /// (v2) A directory where a file was needed.
    IsADirectory,
    /// (v2) A directory is not empty.
    NotEmpty,
    /// (v2) The sandbox's permissions forbid it.
    PermissionDenied,
    /// (v2) The file system is read-only.
    ReadOnly,
    /// (v2) No space or quota left (ENOSPC, EDQUOT).
    NoSpace,
    /// (v2) Resolution met a `/proc` magic link (or a symlink loop); refused.
    SymlinkRefused,
    /// (v2) A batch item not run because an earlier one failed (`stop_on_error`), or an
    /// upload the client abandoned.
    Cancelled,
    /// (v3) No terminal session with that id (never existed, or closed).
    UnknownTerminal,
    /// A code this version does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let mut process = ExecRequest::new(["echo", "hi"]);
        process.timeout_ms = Some(300);
        let request = Request::Exec {
            process,
            attach: Some(Attach { credit: 65536 }),
        };
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(
            value,
            json!({"op": "exec", "process": {"argv": ["echo", "hi"], "env": {}, "stdin": false,
                   "timeout_ms": 300, "max_output_bytes": 2_000_000}, "attach": {"credit": 65536}})
        );
        assert_eq!(serde_json::from_value::<Request>(value).unwrap(), request);
        assert_eq!(
            serde_json::to_value(Request::TerminateAll { grace_ms: 5 }).unwrap(),
            json!({"op": "terminate_all", "grace_ms": 5})
        );
    }

    #[test]
    fn exec_defaults_apply_to_missing_fields() {
        let request: Request =
            serde_json::from_value(json!({"op": "exec", "process": {"argv": ["true"]}})).unwrap();
        assert_eq!(
            request,
            Request::Exec {
                process: ExecRequest::new(["true"]),
                attach: None
            }
        );
    }

    #[test]
    fn unknown_op_is_an_error_and_unknown_fields_are_ignored() {
        assert!(serde_json::from_value::<Request>(json!({"op": "reboot"})).is_err());
        let request: Request =
            serde_json::from_value(json!({"op": "wait", "id": 4, "future_field": true})).unwrap();
        assert_eq!(request, Request::Wait { id: ProcessId(4) });
    }

    #[test]
    fn responses_and_events_round_trip() {
        let exit = ExitInfo {
            exit_code: None,
            signal: Some(9),
            timed_out: true,
            output_truncated: false,
            duration_ms: 301,
            stdout_bytes: 0,
            stderr_bytes: 12,
        };
        for response in [
            Response::Exited { exit },
            Response::Done,
            Response::Error {
                code: ErrorCode::UnknownProcess,
                message: "no process 3".into(),
            },
        ] {
            let text = serde_json::to_string(&response).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), response);
        }
        let event = Event::Skipped {
            stream: StreamKind::Stderr,
            offset: 10,
            bytes: 20,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"event": "skipped", "stream": "stderr", "offset": 10, "bytes": 20})
        );
    }

    #[test]
    fn decode_gives_what_serde_gives_on_the_fast_path_and_off_it() {
        use crate::fs::{FileType, GlobMatch, GrepMatch, ItemError};
        let stat = FileStat {
            path: "/workspace/a \"quoted\"".into(),
            file_type: FileType::File,
            size: 2,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_ms: 1_001,
            mtime_sec: 1,
            mtime_nsec: 1_000_000,
            symlink_target: None,
            sha256: Some("9a27".into()),
        };
        let responses = [
            Response::FsStats {
                results: vec![
                    StatResult {
                        path: "/workspace/a".into(),
                        result: Outcome::Ok(stat.clone()),
                    },
                    StatResult {
                        path: "/workspace/b".into(),
                        result: Outcome::Error(ItemError {
                            code: ErrorCode::NotFound,
                            message: "stat /workspace/b: no such file".into(),
                        }),
                    },
                ],
            },
            Response::FsListed(ListResult {
                entries: vec![stat.clone()],
                truncated: true,
            }),
            Response::FsBatch {
                results: vec![Outcome::Ok(BatchOutput::Stat { stat: stat.clone() })],
            },
            Response::FsGlobbed(GlobResult {
                matches: vec![GlobMatch {
                    path: "/workspace/a.rs".into(),
                    file_type: FileType::File,
                }],
                truncated: false,
            }),
            Response::FsGrepped(GrepResult {
                matches: vec![GrepMatch {
                    path: "/workspace/a.rs".into(),
                    line: 3,
                    column: 5,
                    text: "fn main() {}".into(),
                }],
                truncated: false,
                binary_files_skipped: 1,
            }),
            Response::FsStat { stat },
            Response::Done,
            Response::Error {
                code: ErrorCode::NotFound,
                message: "m".into(),
            },
        ];
        for response in responses {
            let bytes = serde_json::to_vec(&response).unwrap();
            assert_eq!(Response::decode(&bytes).unwrap(), response);
        }
        // The tag may come anywhere, and be escaped.
        assert_eq!(
            Response::decode(br#"{"results":[],"result":"fs_\u0073tats"}"#).unwrap(),
            Response::FsStats { results: vec![] }
        );
        // What serde refuses, decode refuses.
        for bad in [
            &br#"{"result":"fs_stats"}"#[..],
            br#"{"results":[]}"#,
            br#"{"result":"fs_listed","entries":3,"truncated":false}"#,
            br#"{"result":"no_such_result"}"#,
        ] {
            assert!(serde_json::from_slice::<Response>(bad).is_err());
            assert!(
                Response::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn unknown_error_codes_from_newer_peers_still_parse() {
        let response: Response = serde_json::from_value(
            json!({"result": "error", "code": "quota_exceeded", "message": "m"}),
        )
        .unwrap();
        assert_eq!(
            response,
            Response::Error {
                code: ErrorCode::Unknown,
                message: "m".into()
            }
        );
        assert_eq!(ErrorCode::SpawnFailed.to_string(), "spawn_failed");
    }
}
