//! Frames: the unit on the wire (`u32 BE length | u8 type | u32 BE channel | payload`) and
//! the [`FrameCodec`] that cuts a byte stream into them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtoError;

/// Bytes of the frame header after the length field: the type byte and the channel.
pub const HEADER_LEN: usize = 5;

/// Largest value of the length field (type + channel + payload) either side accepts.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// Largest number of data bytes (process output, stdin, file data, upload) carried by one
/// data frame.
pub const MAX_DATA_CHUNK: usize = 64 * 1024;

/// The channel of connection-level frames (HELLO, WELCOME, ERROR).
pub const CONTROL_CHANNEL: u32 = 0;

/// What a frame carries. The numbering is part of the protocol (see PROTOCOL.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Client → agent, channel 0, JSON [`crate::Hello`]; the first frame of a connection.
    Hello = 0x01,
    /// Agent → client, channel 0, JSON [`crate::Welcome`]; the answer to HELLO.
    Welcome = 0x02,
    /// Client → agent, JSON [`crate::Request`]; opens the channel.
    Request = 0x03,
    /// Agent → client, JSON [`crate::Response`]; the last frame of a channel.
    Response = 0x04,
    /// Agent → client, JSON [`crate::Event`]; an intermediate message on an open channel.
    Event = 0x05,
    /// Agent → client, `u64 BE offset | bytes` of a process's stdout.
    Stdout = 0x06,
    /// Agent → client, `u64 BE offset | bytes` of a process's stderr.
    Stderr = 0x07,
    /// Client → agent, `u64 BE process id | bytes` to write to a process's stdin; opens
    /// the channel like a request and is answered by one RESPONSE.
    Stdin = 0x08,
    /// Client → agent, `u32 BE bytes`: more output the agent may send on the channel.
    /// (v2) Also agent → client on write and tar-upload channels: more UPLOAD bytes the
    /// client may send.
    Credit = 0x09,
    /// Client → agent, empty: the client gives up the channel (stops an output stream).
    Cancel = 0x0a,
    /// (v2) Agent → client, `u64 BE offset | bytes` of a file read or a tar download;
    /// spends the channel's credit like STDOUT.
    FileData = 0x0b,
    /// (v2) Client → agent, `u64 BE offset | bytes` of a write or tar-upload body; spends
    /// the credit the agent grants with CREDIT frames. No bytes = the end of the body.
    Upload = 0x0c,
    /// (v3) Client → agent, `u64 BE terminal id | bytes` to write to a terminal session's
    /// input; opens the channel like a request and is answered by one RESPONSE.
    TermInput = 0x0d,
    /// (v4) Agent → client, a [`crate::Response`] in the packed binary encoding
    /// ([`crate::packed`]) instead of JSON; like RESPONSE, the last frame of its channel.
    /// Sent for the answers that version 4 packs (`fs_stat`).
    Packed = 0x10,
    /// Either way, channel 0, JSON [`crate::ConnectionError`]: a fatal error; the sender
    /// closes the connection after it.
    Error = 0x0f,
}

impl FrameType {
    /// The frame type of a type byte, `None` for a byte this version does not know.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Request,
            0x04 => Self::Response,
            0x05 => Self::Event,
            0x06 => Self::Stdout,
            0x07 => Self::Stderr,
            0x08 => Self::Stdin,
            0x09 => Self::Credit,
            0x0a => Self::Cancel,
            0x0b => Self::FileData,
            0x0c => Self::Upload,
            0x0d => Self::TermInput,
            0x0f => Self::Error,
            0x10 => Self::Packed,
            _ => return None,
        })
    }
}

/// One frame: its type, its channel and its payload (JSON or raw bytes, by type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameType,
    /// The operation this frame belongs to; 0 for connection-level frames.
    pub channel: u32,
    /// The payload, never interpreted as text by the framing layer.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with the given payload.
    pub fn new(kind: FrameType, channel: u32, payload: impl Into<Bytes>) -> Self {
        Self {
            kind,
            channel,
            payload: payload.into(),
        }
    }

    /// A frame whose payload is `message` serialised as JSON.
    pub fn json<T: serde::Serialize>(kind: FrameType, channel: u32, message: &T) -> Self {
        let payload = serde_json::to_vec(message).expect("protocol messages always serialise");
        Self::new(kind, channel, payload)
    }

    /// Parses the JSON payload as a `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProtoError> {
        serde_json::from_slice(&self.payload).map_err(|source| ProtoError::BadPayload {
            kind: self.kind,
            source,
        })
    }

    /// The [`Response`](crate::Response) of a RESPONSE frame (JSON, by
    /// [`Response::decode`](crate::Response::decode)) or of a PACKED frame (by
    /// [`packed::decode`](crate::packed::decode)).
    pub fn response(&self) -> Result<crate::Response, ProtoError> {
        if self.kind == FrameType::Packed {
            return crate::packed::decode(&self.payload);
        }
        crate::Response::decode(&self.payload).map_err(|source| ProtoError::BadPayload {
            kind: self.kind,
            source,
        })
    }

    /// Whether this frame ends its channel: a RESPONSE, or (v4) a PACKED answer.
    pub fn is_answer(&self) -> bool {
        matches!(self.kind, FrameType::Response | FrameType::Packed)
    }

    /// A data frame (`Stdout`, `Stderr`, `Stdin`, `FileData`, `Upload`, `TermInput`): a
    /// big-endian `u64` then the bytes.
    pub fn data(kind: FrameType, channel: u32, head: u64, bytes: &[u8]) -> Self {
        let mut payload = BytesMut::with_capacity(8 + bytes.len());
        payload.put_u64(head);
        payload.put_slice(bytes);
        Self::new(kind, channel, payload.freeze())
    }

    /// Splits a data frame's payload into its `u64` head and its bytes.
    pub fn split_data(&self) -> Result<(u64, Bytes), ProtoError> {
        if self.payload.len() < 8 {
            return Err(ProtoError::ShortPayload {
                kind: self.kind,
                len: self.payload.len(),
            });
        }
        let mut payload = self.payload.clone();
        let head = payload.get_u64();
        Ok((head, payload))
    }

    /// A CREDIT frame granting `bytes` more output on `channel`.
    pub fn credit(channel: u32, bytes: u32) -> Self {
        Self::new(FrameType::Credit, channel, bytes.to_be_bytes().to_vec())
    }

    /// The grant of a CREDIT frame.
    pub fn credit_grant(&self) -> Result<u32, ProtoError> {
        let bytes: [u8; 4] =
            self.payload
                .as_ref()
                .try_into()
                .map_err(|_| ProtoError::ShortPayload {
                    kind: self.kind,
                    len: self.payload.len(),
                })?;
        Ok(u32::from_be_bytes(bytes))
    }
}

/// Cuts a byte stream into [`Frame`]s and back; rejects oversized, undersized and unknown
/// frames with a [`ProtoError`] (after which the connection must be closed).
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl FrameCodec {
    /// A codec accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A codec accepting frames whose length field is at most `max_frame_len`.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        if src.len() < 4 {
            src.reserve(4 - src.len());
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_len {
            return Err(ProtoError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if len < HEADER_LEN {
            return Err(ProtoError::FrameTooShort { len });
        }
        // Reject an unknown type as soon as its byte is here, before waiting for the rest.
        if src.len() > 4 && FrameType::from_byte(src[4]).is_none() {
            return Err(ProtoError::UnknownFrameType(src[4]));
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let type_byte = src.get_u8();
        let kind =
            FrameType::from_byte(type_byte).ok_or(ProtoError::UnknownFrameType(type_byte))?;
        let channel = src.get_u32();
        let payload = src.split_to(len - HEADER_LEN).freeze();
        Ok(Some(Frame {
            kind,
            channel,
            payload,
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let len = HEADER_LEN + frame.payload.len();
        if len > self.max_frame_len {
            return Err(ProtoError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        dst.reserve(4 + len);
        dst.put_u32(u32::try_from(len).expect("bounded by max_frame_len, itself below 4 GiB"));
        dst.put_u8(frame.kind as u8);
        dst.put_u32(frame.channel);
        dst.put_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::new().encode(frame, &mut buf).unwrap();
        buf
    }

    #[test]
    fn wire_layout_is_length_type_channel_payload() {
        let buf = encode(Frame::new(FrameType::Request, 0x0102_0304, &b"{}"[..]));
        assert_eq!(
            &buf[..],
            &[0, 0, 0, 7, 0x03, 1, 2, 3, 4, b'{', b'}'],
            "length counts type, channel and payload"
        );
    }

    #[test]
    fn round_trips_every_type_and_binary_payloads() {
        let binary: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe, b'\n']).collect();
        for byte in 0..=255u8 {
            let Some(kind) = FrameType::from_byte(byte) else {
                continue;
            };
            assert_eq!(kind as u8, byte);
            let frame = Frame::new(kind, 42, binary.clone());
            let mut buf = encode(frame.clone());
            let decoded = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
            assert_eq!(decoded, frame);
            assert!(buf.is_empty(), "nothing left over");
        }
    }

    #[test]
    fn decodes_byte_by_byte_and_back_to_back_frames() {
        let first = Frame::data(FrameType::Stdout, 7, 123, b"\0hello\xff");
        let second = Frame::new(FrameType::Cancel, 7, Bytes::new());
        let mut wire = encode(first.clone());
        wire.extend_from_slice(&encode(second.clone()));

        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(out, vec![first.clone(), second]);
        assert_eq!(
            out[0].split_data().unwrap(),
            (123, Bytes::from_static(b"\0hello\xff"))
        );
    }

    #[test]
    fn rejects_oversized_frame_from_its_header_alone() {
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_FRAME_LEN as u32 + 1);
        let err = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { len, max } if len == MAX_FRAME_LEN + 1 && max == MAX_FRAME_LEN),
            "{err}"
        );
        let big = Frame::new(FrameType::Stdin, 1, vec![0u8; MAX_FRAME_LEN]);
        let err = FrameCodec::new()
            .encode(big, &mut BytesMut::new())
            .unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err}");
    }

    #[test]
    fn accepts_frame_of_exactly_the_maximum() {
        let frame = Frame::new(FrameType::Stdin, 1, vec![7u8; MAX_FRAME_LEN - HEADER_LEN]);
        let mut buf = encode(frame.clone());
        assert_eq!(FrameCodec::new().decode(&mut buf).unwrap(), Some(frame));
    }

    #[test]
    fn rejects_unknown_type_and_too_short_frames() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 5, 0x7e][..]);
        let err = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtoError::UnknownFrameType(0x7e)), "{err}");
        assert_eq!(err.to_string(), "unknown frame type 0x7e");

        let mut buf = BytesMut::from(&[0u8, 0, 0, 4, 0x01, 0, 0, 0][..]);
        let err = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooShort { len: 4 }), "{err}");
    }

    #[test]
    fn terminal_input_is_a_data_frame_with_the_session_id() {
        let buf = encode(Frame::data(FrameType::TermInput, 9, 2, b"ls\r"));
        assert_eq!(
            &buf[..],
            &[
                0, 0, 0, 16, 0x0d, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, b'l', b's', b'\r'
            ],
            "length | TERM_INPUT | channel | terminal id | bytes"
        );
        let mut buf = buf;
        let frame = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.kind, FrameType::TermInput);
        assert_eq!(
            frame.split_data().unwrap(),
            (2, Bytes::from_static(b"ls\r"))
        );
    }

    #[test]
    fn credit_and_short_data_payloads() {
        let frame = Frame::credit(3, 65_536);
        assert_eq!(frame.credit_grant().unwrap(), 65_536);
        let bad = Frame::new(FrameType::Credit, 3, vec![1, 2]);
        assert!(bad.credit_grant().is_err());
        let bad = Frame::new(FrameType::Stdout, 3, vec![1, 2, 3]);
        assert!(matches!(
            bad.split_data(),
            Err(ProtoError::ShortPayload { len: 3, .. })
        ));
    }
}
