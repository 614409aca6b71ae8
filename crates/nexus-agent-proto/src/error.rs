//! [`ProtoError`]: everything that can go wrong between the host and the agent.

use crate::{ErrorCode, FrameType};

/// An error of the protocol layer: transport, framing, handshake, or a refusal by the
/// agent ([`ProtoError::Remote`]) that leaves the connection usable.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Reading or writing the byte stream failed.
    #[error("i/o error on the agent connection")]
    Io(#[from] std::io::Error),
    /// A frame's length field is above the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The length field.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame's length field cannot even hold the type and channel.
    #[error("frame length {len} is shorter than the 5-byte header")]
    FrameTooShort {
        /// The length field.
        len: usize,
    },
    /// A type byte this protocol version does not define.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A binary payload too short for its fixed fields.
    #[error("{kind:?} frame payload of {len} bytes is too short")]
    ShortPayload {
        /// The frame type.
        kind: FrameType,
        /// The payload length.
        len: usize,
    },
    /// A JSON payload that does not parse as the message its frame type announces.
    #[error("malformed {kind:?} payload")]
    BadPayload {
        /// The frame type.
        kind: FrameType,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// (v4) A PACKED payload that does not decode as the answer it announces.
    #[error("malformed PACKED payload: {0}")]
    BadPacked(String),
    /// The two sides share no protocol version.
    #[error(
        "protocol version mismatch: client supports {client_min}..={client_max}, agent supports {agent_min}..={agent_max}"
    )]
    VersionMismatch {
        /// Oldest version the client speaks.
        client_min: u16,
        /// Newest version the client speaks.
        client_max: u16,
        /// Oldest version the agent speaks.
        agent_min: u16,
        /// Newest version the agent speaks.
        agent_max: u16,
    },
    /// The peer broke the handshake or the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer sent an ERROR frame and closed the connection.
    #[error("agent closed the connection: {code}: {message}")]
    Fatal {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The agent refused an operation; the connection is still usable.
    #[error("{code}: {message}")]
    Remote {
        /// Stable code.
        code: ErrorCode,
        /// The agent's message.
        message: String,
    },
    /// The negotiated protocol version does not have this operation (an older agent).
    #[error("{op} needs protocol version {needed}, the agent speaks version {negotiated}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The version that introduced it.
        needed: u16,
        /// The version of this connection.
        negotiated: u16,
    },
    /// The body stream of an upload (write, tar upload) failed; the agent was told to
    /// abandon the operation.
    #[error("reading the upload body failed")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection is gone (the agent closed it, or it broke earlier).
    #[error("agent connection closed")]
    Closed,
    /// The agent did not answer in time.
    #[error("agent did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl ProtoError {
    /// The agent's code when this is a refusal of one operation.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}
