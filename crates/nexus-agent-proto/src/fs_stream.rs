//! The streams of the file API: [`ByteStream`] (a file read or a tar download, granting
//! credit as the consumer takes bytes) and [`WatchStream`] (the changes a watch reports).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;

use crate::client::{Channel, Incoming, closed_error, response_error};
use crate::fs::{TreeSummary, WatchEvent};
use crate::stream::CreditReturn;
use crate::{Event, FrameType, ProtoError, Response};

/// The bytes of a file read or a tar download. Items are `Err` when the agent failed
/// midway or the connection broke; the stream ends (`None`) once the agent confirmed
/// that everything was sent. Dropping it early cancels the transfer on the agent.
#[derive(Debug)]
pub struct ByteStream {
    channel: Channel,
    credit: CreditReturn,
    /// Offset the next FILE_DATA frame must start at.
    next_offset: u64,
    start: u64,
    /// For a read: the bytes announced in `fs_read_start`.
    expected: Option<u64>,
    summary: Option<TreeSummary>,
    done: bool,
}

impl ByteStream {
    pub(crate) fn new(channel: Channel, window: u32, start: u64, expected: Option<u64>) -> Self {
        Self {
            channel,
            credit: CreditReturn::new(window),
            next_offset: start,
            start,
            expected,
            summary: None,
            done: false,
        }
    }

    /// After a tar download ended: what the archive held.
    pub fn tar_summary(&self) -> Option<TreeSummary> {
        self.summary
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.next_offset - self.start
    }

    /// Turns one incoming frame into an item; `Ok(None)` ends the stream, `Err(None)`
    /// skips the frame.
    fn item(&mut self, incoming: Incoming) -> Result<Option<Bytes>, Option<ProtoError>> {
        let frame = match incoming {
            Incoming::Frame(frame) => frame,
            Incoming::Closed(reason) => return Err(Some(closed_error(reason))),
        };
        match frame.kind {
            FrameType::FileData => {
                let (offset, bytes) = frame.split_data().map_err(Some)?;
                if offset != self.next_offset {
                    return Err(Some(ProtoError::Protocol(format!(
                        "file data at offset {offset}, expected {}",
                        self.next_offset
                    ))));
                }
                self.next_offset += bytes.len() as u64;
                self.consume(bytes.len()).map_err(Some)?;
                Ok(Some(bytes))
            }
            FrameType::Response => {
                self.channel.finished = true;
                match frame.response().map_err(Some)? {
                    Response::FsReadDone { bytes } => {
                        let received = self.received();
                        if bytes != received || self.expected.is_some_and(|e| e != bytes) {
                            return Err(Some(ProtoError::Protocol(format!(
                                "read ended after {received} bytes, agent says {bytes}, announced {:?}",
                                self.expected
                            ))));
                        }
                        Ok(None)
                    }
                    Response::FsTree(summary) => {
                        self.summary = Some(summary);
                        Ok(None)
                    }
                    other => Err(Some(response_error(other))),
                }
            }
            FrameType::Event => Err(None),
            other => Err(Some(ProtoError::Protocol(format!(
                "unexpected {other:?} frame on a file stream"
            )))),
        }
    }

    /// Counts `len` bytes as consumed and grants them back once half the window is used.
    fn consume(&mut self, len: usize) -> Result<(), ProtoError> {
        if let Some(grant) = self.credit.consume(len) {
            self.channel.grant(grant)?;
        }
        Ok(())
    }
}

impl Stream for ByteStream {
    type Item = Result<Bytes, ProtoError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let this = &mut *self;
            let incoming = match ready!(this.channel.poll_stream(&mut this.done, cx)) {
                Some(Ok(incoming)) => incoming,
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            };
            match self.item(incoming) {
                Ok(Some(bytes)) => return Poll::Ready(Some(Ok(bytes))),
                Ok(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Err(None) => continue,
                Err(Some(err)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }
}

/// The changes a watch reports, until it is dropped (which cancels the watch) or fails.
#[derive(Debug)]
pub struct WatchStream {
    channel: Channel,
    done: bool,
}

impl WatchStream {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            channel,
            done: false,
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, ProtoError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let this = &mut *self;
            let frame = match ready!(this.channel.poll_stream(&mut this.done, cx)) {
                Some(Ok(Incoming::Frame(frame))) => frame,
                Some(Ok(Incoming::Closed(reason))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(closed_error(reason))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            };
            let item = match frame.kind {
                FrameType::Event => match frame.parse::<Event>() {
                    Ok(Event::FsChange { change }) => Ok(change),
                    Ok(_) => continue,
                    Err(err) => Err(err),
                },
                FrameType::Response => {
                    self.channel.finished = true;
                    self.done = true;
                    match frame.response() {
                        Ok(response) => Err(response_error(response)),
                        Err(err) => Err(err),
                    }
                }
                other => Err(ProtoError::Protocol(format!(
                    "unexpected {other:?} frame on a watch"
                ))),
            };
            if item.is_err() {
                self.done = true;
            }
            return Poll::Ready(Some(item));
        }
    }
}
