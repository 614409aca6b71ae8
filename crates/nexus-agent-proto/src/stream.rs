//! [`OutputStream`]: a process's live output as a `futures::Stream`, granting the agent
//! flow-control credit only as the consumer takes bytes out.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;

use crate::client::{Channel, Incoming, closed_error, response_error};
use crate::{Event, ExitInfo, FrameType, ProcessId, ProtoError, Response, StreamKind};

/// One item of a process's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputEvent {
    /// Bytes of stdout starting at absolute stdout offset `offset`.
    Stdout {
        /// Offset of the first byte in the stream.
        offset: u64,
        /// The raw bytes.
        bytes: Bytes,
    },
    /// Bytes of stderr starting at absolute stderr offset `offset`.
    Stderr {
        /// Offset of the first byte in the stream.
        offset: u64,
        /// The raw bytes.
        bytes: Bytes,
    },
    /// Bytes `offset..offset + bytes` of `stream` are no longer kept by the agent.
    Skipped {
        /// Which stream.
        stream: StreamKind,
        /// Where the gap starts.
        offset: u64,
        /// How long it is.
        bytes: u64,
    },
    /// The process finished and all its recorded output has been delivered. Last item.
    Exit(ExitInfo),
}

/// A finished process and its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedProcess {
    /// The id it had (already forgotten by the agent).
    pub id: ProcessId,
    /// Everything it wrote to stdout, up to the cap.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr, up to the cap.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub exit: ExitInfo,
}

/// The receiving side of per-stream credit: counts consumed data bytes and says when to
/// grant them back (each time half the window has been consumed), so the sender never
/// has more than one window in flight. Shared by output streams and file transfers.
#[derive(Debug)]
pub(crate) struct CreditReturn {
    window: u32,
    consumed: u32,
}

impl CreditReturn {
    /// Credit for a stream whose initial grant was `window` bytes.
    pub(crate) fn new(window: u32) -> Self {
        Self {
            window,
            consumed: 0,
        }
    }

    /// Counts `len` bytes as consumed; returns the credit to grant back, if it is time.
    pub(crate) fn consume(&mut self, len: usize) -> Option<u32> {
        let len = u32::try_from(len).expect("a data frame is far below 4 GiB");
        self.consumed = self.consumed.saturating_add(len);
        (self.consumed >= self.window / 2).then(|| std::mem::take(&mut self.consumed))
    }
}

/// The live output of one process. Items are `Err` when the agent refused the stream (for
/// instance [`crate::ErrorCode::UnknownProcess`]) or the connection broke; the stream ends
/// after [`OutputEvent::Exit`] or an error. Dropping it cancels the stream on the agent,
/// which then no longer holds the process back.
#[derive(Debug)]
pub struct OutputStream {
    channel: Channel,
    credit: CreditReturn,
    done: bool,
}

impl OutputStream {
    pub(crate) fn new(channel: Channel, window: u32) -> Self {
        Self {
            channel,
            credit: CreditReturn::new(window),
            done: false,
        }
    }

    /// Turns one incoming frame into an item, or `None` for a frame to skip.
    fn item(&mut self, incoming: Incoming) -> Option<Result<OutputEvent, ProtoError>> {
        let frame = match incoming {
            Incoming::Frame(frame) => frame,
            Incoming::Closed(reason) => {
                self.done = true;
                return Some(Err(closed_error(reason)));
            }
        };
        let result = match frame.kind {
            FrameType::Stdout | FrameType::Stderr => {
                frame.split_data().and_then(|(offset, bytes)| {
                    self.consume(bytes.len())?;
                    Ok(if frame.kind == FrameType::Stdout {
                        OutputEvent::Stdout { offset, bytes }
                    } else {
                        OutputEvent::Stderr { offset, bytes }
                    })
                })
            }
            FrameType::Event => match frame.parse::<Event>() {
                Ok(Event::Skipped {
                    stream,
                    offset,
                    bytes,
                }) => Ok(OutputEvent::Skipped {
                    stream,
                    offset,
                    bytes,
                }),
                Ok(_) => return None,
                Err(err) => Err(err),
            },
            FrameType::Response => {
                self.done = true;
                self.channel.finished = true;
                match frame.response() {
                    Ok(Response::Exited { exit }) => Ok(OutputEvent::Exit(exit)),
                    Ok(other) => Err(response_error(other)),
                    Err(err) => Err(err),
                }
            }
            other => Err(ProtoError::Protocol(format!(
                "unexpected {other:?} frame on an output stream"
            ))),
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }

    /// Counts `len` bytes as consumed and grants them back once half the window is used.
    fn consume(&mut self, len: usize) -> Result<(), ProtoError> {
        if let Some(grant) = self.credit.consume(len) {
            self.channel.grant(grant)?;
        }
        Ok(())
    }
}

impl Stream for OutputStream {
    type Item = Result<OutputEvent, ProtoError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let this = &mut *self;
            let incoming = match ready!(this.channel.poll_stream(&mut this.done, cx)) {
                Some(Ok(incoming)) => incoming,
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            };
            if let Some(item) = self.item(incoming) {
                return Poll::Ready(Some(item));
            }
        }
    }
}
