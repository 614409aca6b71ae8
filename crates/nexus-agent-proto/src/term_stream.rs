//! [`TerminalStream`]: a terminal session's output (the replay, then live) as a
//! `futures::Stream`, granting the agent flow-control credit only as the consumer takes
//! bytes out.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;

use crate::client::{Channel, Incoming, closed_error, response_error};
use crate::stream::CreditReturn;
use crate::terminal::TermExit;
use crate::{FrameType, ProtoError, Response};

/// One item of a terminal's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TermEvent {
    /// Bytes the terminal wrote, starting at absolute offset `offset` of its output.
    Output {
        /// Offset of the first byte since the session opened.
        offset: u64,
        /// The raw bytes (escape sequences included; never split into lines).
        bytes: Bytes,
    },
    /// The shell exited and everything it wrote was delivered. Last item.
    Exit(TermExit),
}

/// The output of one attached terminal session. Items are `Err` when the agent refused
/// the stream or the connection broke; the stream ends after [`TermEvent::Exit`] or an
/// error. Dropping it detaches from the session (which keeps running) and releases
/// whatever the agent held back for it.
#[derive(Debug)]
pub struct TerminalStream {
    channel: Channel,
    credit: CreditReturn,
    /// Offset the next data frame must start at, once one has arrived.
    next_offset: Option<u64>,
    done: bool,
}

impl TerminalStream {
    pub(crate) fn new(channel: Channel, window: u32) -> Self {
        Self {
            channel,
            credit: CreditReturn::new(window),
            next_offset: None,
            done: false,
        }
    }

    /// Turns one incoming frame into an item, or `None` for a frame to skip.
    fn item(&mut self, incoming: Incoming) -> Option<Result<TermEvent, ProtoError>> {
        let frame = match incoming {
            Incoming::Frame(frame) => frame,
            Incoming::Closed(reason) => return Some(Err(closed_error(reason))),
        };
        match frame.kind {
            FrameType::Stdout => Some(frame.split_data().and_then(|(offset, bytes)| {
                if self.next_offset.is_some_and(|next| next != offset) {
                    return Err(ProtoError::Protocol(format!(
                        "terminal output at offset {offset}, expected {:?}",
                        self.next_offset
                    )));
                }
                self.next_offset = Some(offset + bytes.len() as u64);
                if let Some(grant) = self.credit.consume(bytes.len()) {
                    self.channel.grant(grant)?;
                }
                Ok(TermEvent::Output { offset, bytes })
            })),
            FrameType::Event => None,
            FrameType::Response => {
                self.channel.finished = true;
                Some(match frame.response() {
                    Ok(Response::TermExited { exit }) => Ok(TermEvent::Exit(exit)),
                    Ok(other) => Err(response_error(other)),
                    Err(err) => Err(err),
                })
            }
            other => Some(Err(ProtoError::Protocol(format!(
                "unexpected {other:?} frame on a terminal stream"
            )))),
        }
    }
}

impl Stream for TerminalStream {
    type Item = Result<TermEvent, ProtoError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let this = &mut *self;
            let incoming = match ready!(this.channel.poll_stream(&mut this.done, cx)) {
                Some(Ok(incoming)) => incoming,
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            };
            if let Some(item) = self.item(incoming) {
                self.done = !matches!(item, Ok(TermEvent::Output { .. }));
                return Poll::Ready(Some(item));
            }
        }
    }
}
