//! The binary form of a streamed exec, asked for with
//! `Accept: application/vnd.nexus.exec-stream` on `POST /v1/sandboxes/{id}/exec` with
//! `stream: true`: output bytes as they are, without the NDJSON form's base64.
//!
//! The body is a sequence of frames, each a one-byte kind, a big-endian `u32` payload
//! length, and the payload:
//!
//! | kind | payload |
//! |------|---------|
//! | 1    | stdout bytes |
//! | 2    | stderr bytes |
//! | 3    | one [`ExecEvent`] as JSON: `started` first, `exit` or `error` last |
//!
//! Kinds a reader does not know are skipped, so later versions may add some.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ExecEvent;

/// The media type of the binary stream.
pub const MEDIA_TYPE: &str = "application/vnd.nexus.exec-stream";

/// Frame kind: stdout bytes.
pub const STDOUT: u8 = 1;
/// Frame kind: stderr bytes.
pub const STDERR: u8 = 2;
/// Frame kind: an [`ExecEvent`] as JSON.
pub const EVENT: u8 = 3;

/// Bytes before each payload: the kind and the length.
const HEADER: usize = 5;
/// The largest payload a reader accepts; the daemon's are at most 64 KiB.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes the process wrote to stdout.
    Stdout(Bytes),
    /// Bytes the process wrote to stderr.
    Stderr(Bytes),
    /// `started`, `exit` or `error`. Never `stdout`/`stderr`, which have their own kinds.
    Event(ExecEvent),
}

/// A frame of `kind` carrying `payload`.
pub fn encode(kind: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(HEADER + payload.len());
    frame.put_u8(kind);
    frame.put_u32(u32::try_from(payload.len()).expect("payloads are far below 4 GiB"));
    frame.put_slice(payload);
    frame.freeze()
}

/// An [`EVENT`] frame.
pub fn encode_event(event: &ExecEvent) -> Bytes {
    encode(
        EVENT,
        &serde_json::to_vec(event).expect("events always serialize"),
    )
}

/// Why a stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A frame claims more than [`MAX_PAYLOAD`] bytes.
    TooLarge(usize),
    /// An event frame is not an event.
    BadEvent(String),
    /// The stream ended inside a frame.
    Truncated(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(n) => write!(f, "a frame of {n} bytes is larger than {MAX_PAYLOAD}"),
            Self::BadEvent(e) => write!(f, "an event frame is not a valid event: {e}"),
            Self::Truncated(n) => write!(f, "the stream ended {n} bytes into a frame"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Reads frames out of the chunks of a body, whatever their boundaries.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    /// Adds the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        loop {
            if self.buffer.len() < HEADER {
                return Ok(None);
            }
            let kind = self.buffer[0];
            let len = u32::from_be_bytes([
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
                self.buffer[4],
            ]) as usize;
            if len > MAX_PAYLOAD {
                return Err(DecodeError::TooLarge(len));
            }
            if self.buffer.len() < HEADER + len {
                self.buffer.reserve(HEADER + len - self.buffer.len());
                return Ok(None);
            }
            self.buffer.advance(HEADER);
            let payload = self.buffer.split_to(len).freeze();
            match kind {
                STDOUT => return Ok(Some(Frame::Stdout(payload))),
                STDERR => return Ok(Some(Frame::Stderr(payload))),
                EVENT => {
                    return serde_json::from_slice(&payload)
                        .map(|event| Some(Frame::Event(event)))
                        .map_err(|e| DecodeError::BadEvent(e.to_string()));
                }
                _ => continue,
            }
        }
    }

    /// Checks that the body ended between frames.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buffer.len() {
            0 => Ok(()),
            n => Err(DecodeError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitStatus;

    fn exit() -> ExecEvent {
        ExecEvent::Exit(ExitStatus {
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            oom_killed: false,
            output_truncated: false,
            duration_ms: 3,
        })
    }

    #[test]
    fn frames_come_back_whatever_the_chunk_boundaries() {
        let mut body = Vec::new();
        body.extend_from_slice(&encode_event(&ExecEvent::Started { pid: 7 }));
        body.extend_from_slice(&encode(STDOUT, b"a\0\xffb"));
        body.extend_from_slice(&encode(9, b"a kind from a later version"));
        body.extend_from_slice(&encode(STDERR, b""));
        body.extend_from_slice(&encode_event(&exit()));
        let want = vec![
            Frame::Event(ExecEvent::Started { pid: 7 }),
            Frame::Stdout(Bytes::from_static(b"a\0\xffb")),
            Frame::Stderr(Bytes::new()),
            Frame::Event(exit()),
        ];
        for chunk in [1, 2, 5, 7, body.len()] {
            let mut decoder = Decoder::default();
            let mut got = Vec::new();
            for piece in body.chunks(chunk) {
                decoder.push(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    got.push(frame);
                }
            }
            decoder.finish().unwrap();
            assert_eq!(got, want, "chunks of {chunk}");
        }
    }

    #[test]
    fn broken_streams_are_errors() {
        let mut decoder = Decoder::default();
        decoder.push(&encode(STDOUT, b"abc")[..6]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(DecodeError::Truncated(6)));

        let mut decoder = Decoder::default();
        decoder.push(&[STDOUT, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decoder.next_frame(),
            Err(DecodeError::TooLarge(_))
        ));

        let mut decoder = Decoder::default();
        decoder.push(&encode(EVENT, b"{\"type\":\"nonsense\"}"));
        assert!(matches!(
            decoder.next_frame(),
            Err(DecodeError::BadEvent(_))
        ));
    }
}
