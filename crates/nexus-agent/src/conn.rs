//! One client connection: handshake, then a loop that routes each incoming frame to the
//! operation of its channel. Every operation is a task of its own, so a slow one never
//! holds up the others; closing the connection cancels its operations, never processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use nexus_agent_proto::handshake::accept_handshake;
use nexus_agent_proto::{
    CONTROL_CHANNEL, ConnectionError, ErrorCode, FS_PROTOCOL_VERSION, Frame, FrameCodec, FrameType,
    ProtoError, Request, Response, SUPPORTED_VERSIONS, TERMINAL_PROTOCOL_VERSION, TerminalId,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::codec::Framed;

use crate::Agent;
use crate::fs::transfer::{Body, UploadCredit};
use crate::ops::{self, Credit};

/// Most operations one connection may have open at once.
pub const MAX_OPEN_CHANNELS: usize = 4096;

/// Frames queued for the socket per connection; operations wait when it is full, which
/// carries a slow client's backpressure to them.
const WRITE_QUEUE: usize = 64;

/// How long a closing connection may take to flush what was queued.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// Where an operation sends its frames.
pub type FrameSender = mpsc::Sender<Frame>;

/// The operations open on one connection, by channel.
#[derive(Debug, Default)]
pub struct Channels {
    open: Mutex<HashMap<u32, OpenChannel>>,
}

#[derive(Debug)]
struct OpenChannel {
    task: AbortHandle,
    credit: Option<Arc<Credit>>,
    /// For writes and tar uploads: where UPLOAD frames go. Dropping the sender (CANCEL,
    /// closing) tells the operation the client gave up.
    upload: Option<(Arc<UploadCredit>, mpsc::UnboundedSender<Bytes>)>,
}

impl Channels {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, OpenChannel>> {
        self.open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Marks `channel` closed; its task calls this right before sending its RESPONSE so
    /// the client may reuse the id as soon as it has the answer.
    pub fn close(&self, channel: u32) {
        self.lock().remove(&channel);
    }
}

/// Serves one connection until it closes.
pub async fn serve<S>(agent: Arc<Agent>, stream: S, peer: u64)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut framed = Framed::new(stream, FrameCodec::new());
    let (hello, version) =
        match accept_handshake(&mut framed, SUPPORTED_VERSIONS, |v| agent.info(v)).await {
            Ok((hello, info)) => (hello, info.protocol_version),
            Err(err) => {
                tracing::warn!(peer, error = %err, "handshake failed");
                return;
            }
        };
    tracing::info!(peer, client = %hello.client, version, "client connected");

    let (sink, mut source) = framed.split();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let mut writer = tokio::spawn(write_loop(sink, rx));
    let abort = writer.abort_handle();
    let channels = Arc::new(Channels::default());

    // The writer ends early only when writing failed: then no answer can reach the
    // client any more, so the connection is closed rather than left taking requests.
    let mut writer_ended = false;
    let fatal = loop {
        let next = tokio::select! {
            next = source.next() => next,
            _ = &mut writer => {
                writer_ended = true;
                break None;
            }
        };
        let frame = match next {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => break Some(err),
            None => break None,
        };
        if let Err(err) = route(&agent, &channels, &tx, version, frame) {
            break Some(err);
        }
    };
    if let Some(err) = &fatal {
        tracing::warn!(peer, error = %err, "closing the connection");
        let error = ConnectionError {
            code: ErrorCode::ProtocolError,
            message: err.to_string(),
            agent_min: None,
            agent_max: None,
        };
        let _ = tx.try_send(Frame::json(FrameType::Error, CONTROL_CHANNEL, &error));
    }
    let open: Vec<OpenChannel> = channels.lock().drain().map(|(_, open)| open).collect();
    for channel in &open {
        channel.task.abort();
    }
    drop(tx);
    if !writer_ended && tokio::time::timeout(FLUSH_GRACE, writer).await.is_err() {
        abort.abort();
    }
    tracing::info!(peer, cancelled = open.len(), "client disconnected");
}

/// Handles one frame from the client; an error closes the connection.
fn route(
    agent: &Arc<Agent>,
    channels: &Arc<Channels>,
    tx: &FrameSender,
    version: u16,
    frame: Frame,
) -> Result<(), ProtoError> {
    let channel = frame.channel;
    match frame.kind {
        FrameType::TermInput if version < TERMINAL_PROTOCOL_VERSION => {
            return Err(ProtoError::Protocol(format!(
                "TERM_INPUT frames need protocol version {TERMINAL_PROTOCOL_VERSION}, this connection speaks {version}"
            )));
        }
        FrameType::Request | FrameType::Stdin | FrameType::TermInput => {
            if channel == CONTROL_CHANNEL {
                return Err(ProtoError::Protocol("operation on channel 0".into()));
            }
            let mut open = channels.lock();
            let refusal = if open.contains_key(&channel) {
                Some(format!("channel {channel} is already open"))
            } else if open.len() >= MAX_OPEN_CHANNELS {
                Some(format!("more than {MAX_OPEN_CHANNELS} operations open"))
            } else {
                None
            };
            if let Some(message) = refusal {
                drop(open);
                reply_now(tx, channel, ErrorCode::Busy, message);
                return Ok(());
            }
            let (op, credit, upload) = match parse_op(frame, version) {
                Ok(parsed) => parsed,
                Err(message) => {
                    drop(open);
                    reply_now(tx, channel, ErrorCode::BadRequest, message);
                    return Ok(());
                }
            };
            // Spawned with the map locked, so the task cannot close its channel before
            // the channel is registered.
            let task = tokio::spawn(ops::run(
                Arc::clone(agent),
                Arc::clone(channels),
                tx.clone(),
                channel,
                op,
                credit.clone(),
                version,
            ));
            open.insert(
                channel,
                OpenChannel {
                    task: task.abort_handle(),
                    credit,
                    upload,
                },
            );
        }
        FrameType::Upload if version >= FS_PROTOCOL_VERSION => {
            let (offset, bytes) = frame.split_data()?;
            let open = channels.lock();
            // Frames for a channel already answered (an early error) are dropped.
            if let Some((credit, body)) = open.get(&channel).and_then(|c| c.upload.as_ref()) {
                credit.spend(offset, bytes.len())?;
                let _ = body.send(bytes);
            }
        }
        FrameType::Credit => {
            let grant = frame.credit_grant()?;
            if let Some(credit) = channels.lock().get(&channel).and_then(|c| c.credit.clone()) {
                credit.grant(grant);
            }
        }
        FrameType::Cancel => {
            if let Some(open) = channels.lock().remove(&channel) {
                open.task.abort();
            }
        }
        FrameType::Error => {
            let error: ConnectionError = frame.parse()?;
            return Err(ProtoError::Fatal {
                code: error.code,
                message: error.message,
            });
        }
        other => {
            return Err(ProtoError::Protocol(format!(
                "a client may not send {other:?} frames"
            )));
        }
    }
    Ok(())
}

/// What a parsed operation frame opens.
type Parsed = (
    ops::Op,
    Option<Arc<Credit>>,
    Option<(Arc<UploadCredit>, mpsc::UnboundedSender<Bytes>)>,
);

/// Parses an operation frame; a malformed one, or one the connection's protocol
/// `version` does not have, is refused on its channel only.
fn parse_op(frame: Frame, version: u16) -> Result<Parsed, String> {
    if frame.kind == FrameType::TermInput {
        let (id, bytes) = frame.split_data().map_err(|e| e.to_string())?;
        return Ok((
            ops::Op::TermInput {
                id: TerminalId(id),
                bytes,
            },
            None,
            None,
        ));
    }
    if frame.kind == FrameType::Stdin {
        let (id, bytes) = frame.split_data().map_err(|e| e.to_string())?;
        return Ok((
            ops::Op::WriteStdin {
                id: nexus_agent_proto::ProcessId(id),
                bytes,
            },
            None,
            None,
        ));
    }
    let request: Request = frame.parse().map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        format!("{e}: {}", cause.unwrap_or_default())
    })?;
    if request.min_version() > version {
        return Err(format!(
            "operation {} needs protocol version {}, this connection speaks {version}",
            request.op_name(),
            request.min_version()
        ));
    }
    let credit = match &request {
        Request::Output { credit, .. } => Some(*credit),
        Request::Exec {
            attach: Some(attach),
            ..
        } => Some(attach.credit),
        Request::FsRead(read) => Some(read.credit),
        Request::FsTarDownload(download) => Some(download.credit),
        Request::TermAttach(attach) => Some(attach.credit),
        _ => None,
    };
    let credit = credit.map(|c| Arc::new(Credit::new(c)));
    if matches!(request, Request::FsWrite(_) | Request::FsTarUpload(_)) {
        let upload = Arc::new(UploadCredit::new());
        let (body_tx, rx) = mpsc::unbounded_channel();
        let body = Body {
            rx,
            credit: Arc::clone(&upload),
        };
        return Ok((
            ops::Op::Upload(request, body),
            None,
            Some((upload, body_tx)),
        ));
    }
    Ok((ops::Op::Request(request), credit, None))
}

/// Answers a refused operation without opening its channel.
fn reply_now(tx: &FrameSender, channel: u32, code: ErrorCode, message: String) {
    let response = Response::Error { code, message };
    if tx
        .try_send(Frame::json(FrameType::Response, channel, &response))
        .is_err()
    {
        // The queue is full: the client is not reading; answering later keeps order.
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx
                .send(Frame::json(FrameType::Response, channel, &response))
                .await;
        });
    }
}

type Sink<S> = futures::stream::SplitSink<Framed<S, FrameCodec>, Frame>;

/// Writes queued frames, flushing when the queue runs empty, until every sender is gone.
async fn write_loop<S>(mut sink: Sink<S>, mut queue: mpsc::Receiver<Frame>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result: Result<(), ProtoError> = async {
        while let Some(frame) = queue.recv().await {
            sink.feed(frame).await?;
            while let Ok(frame) = queue.try_recv() {
                sink.feed(frame).await?;
            }
            sink.flush().await?;
        }
        sink.close().await
    }
    .await;
    if let Err(err) = result {
        tracing::info!(error = %err, "writing to the client failed; closing the connection");
    }
}
