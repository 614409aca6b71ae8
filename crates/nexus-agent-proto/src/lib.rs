//! The protocol between `nexusd` and `nexus-agent`, the program inside every sandbox.
//!
//! It runs over any reliable byte stream (a Unix socket now, a virtio-vsock channel later):
//! everything here is generic over `AsyncRead + AsyncWrite`. `PROTOCOL.md` beside this
//! crate's manifest is the specification; this crate is its implementation:
//!
//! - [`frame`]: the wire unit, `u32 BE length | u8 type | u32 BE channel | payload`, and
//!   its codec (size limit, unknown types rejected);
//! - [`messages`]: the JSON messages and the values they carry;
//! - [`fs`]: the messages of the file API (version 2) and their value types;
//! - [`packed`]: the compact binary answers of PACKED frames (version 4);
//! - [`handshake`]: version negotiation, both halves;
//! - [`AgentClient`]: the host side, many concurrent operations on one connection,
//!   output streams with credit-based flow control ([`OutputStream`]), file reads and tar
//!   downloads ([`ByteStream`]), uploads with agent-granted credit, watches
//!   ([`WatchStream`]), terminal sessions ([`TerminalStream`]);
//! - [`terminal`]: the messages of terminal sessions (version 3) and their value types.
//!
//! The agent's side of the operations lives in the `nexus-agent` crate, which uses the
//! frame codec, the messages and [`handshake::accept_handshake`] from here.

mod client;
mod error;
pub mod frame;
pub mod fs;
mod fs_stream;
pub mod handshake;
pub mod messages;
pub mod packed;
mod stream;
mod term_stream;
pub mod terminal;

pub use client::{
    AgentClient, ClientOptions, DEFAULT_FILE_WINDOW, DEFAULT_OUTPUT_WINDOW, ProcessHandle,
};
pub use error::ProtoError;
pub use frame::{CONTROL_CHANNEL, Frame, FrameCodec, FrameType, MAX_DATA_CHUNK, MAX_FRAME_LEN};
pub use fs_stream::{ByteStream, WatchStream};
pub use handshake::{
    FS_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, PACKED_PROTOCOL_VERSION, PROTOCOL_VERSION,
    SUPPORTED_VERSIONS, TERMINAL_PROTOCOL_VERSION,
};
pub use messages::{
    AgentInfo, Attach, ConnectionError, DEFAULT_MAX_OUTPUT_BYTES, ErrorCode, Event, ExecRequest,
    ExitInfo, Hello, MAGIC, OutputOffsets, Pong, ProcessId, ProcessInfo, ProcessState, Request,
    Response, StreamKind, TerminateReport,
};
pub use stream::{CompletedProcess, OutputEvent, OutputStream};
pub use term_stream::{TermEvent, TerminalStream};
pub use terminal::{TermExit, TermSize, TerminalId, TerminalInfo};
