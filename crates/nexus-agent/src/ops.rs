//! The operations: one task per open channel, each ending with the RESPONSE that closes
//! it. Output streams live here, with their flow control: data goes out only against the
//! credit the client granted, and the reader's cursor (which the pumps respect) moves
//! only as data goes out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nexus_agent_proto::{
    ErrorCode, Event, ExitInfo, Frame, FrameType, MAX_DATA_CHUNK, Pong, ProcessId, Request,
    Response, StreamKind, TerminalId,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::conn::{Channels, FrameSender};
use crate::procs::ring::{Chunk, index};
use crate::procs::{Process, Refusal};
use crate::{Agent, init};

/// Most credit a channel may accumulate; more grants are ignored (a client cannot ask
/// for more than a bounded burst anyway, since data frames queue in a bounded writer).
const MAX_CREDIT: u64 = 1 << 30;

/// What a channel was opened for.
#[derive(Debug)]
pub enum Op {
    /// A JSON request.
    Request(Request),
    /// A write or tar upload: the request and its body.
    Upload(Request, crate::fs::transfer::Body),
    /// A STDIN frame.
    WriteStdin {
        /// Which process.
        id: ProcessId,
        /// What to write.
        bytes: Bytes,
    },
    /// (v3) A TERM_INPUT frame.
    TermInput {
        /// Which terminal session.
        id: TerminalId,
        /// What to type.
        bytes: Bytes,
    },
}

/// Output bytes a channel may still send.
#[derive(Debug)]
pub struct Credit {
    available: Mutex<u64>,
    granted: Notify,
}

impl Credit {
    /// Credit with an initial grant.
    pub fn new(initial: u32) -> Self {
        Self {
            available: Mutex::new(u64::from(initial)),
            granted: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.available
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds a CREDIT grant.
    pub fn grant(&self, bytes: u32) {
        let mut available = self.lock();
        *available = (*available + u64::from(bytes)).min(MAX_CREDIT);
        drop(available);
        self.granted.notify_one();
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> usize {
        usize::try_from(*self.lock()).unwrap_or(usize::MAX)
    }

    /// Waits for the next grant (one that came since the last wait counts).
    pub async fn granted(&self) {
        self.granted.notified().await;
    }

    /// Waits until some credit is available; returns how much.
    pub async fn wait_available(&self) -> usize {
        loop {
            let available = self.available();
            if available > 0 {
                return available;
            }
            self.granted.notified().await;
        }
    }

    /// Takes `bytes` of credit (sent data).
    pub fn spend(&self, bytes: usize) {
        let mut available = self.lock();
        *available = available.saturating_sub(bytes as u64);
    }
}

/// Runs one operation and answers it; `version` is the connection's protocol version,
/// which decides the answer's encoding.
pub async fn run(
    agent: Arc<Agent>,
    channels: Arc<Channels>,
    tx: FrameSender,
    channel: u32,
    op: Op,
    credit: Option<Arc<Credit>>,
    version: u16,
) {
    let response = match execute(&agent, &tx, channel, op, credit).await {
        Ok(response) => response,
        Err(refusal) => Response::Error {
            code: refusal.code,
            message: refusal.message,
        },
    };
    channels.close(channel);
    let _ = tx
        .send(crate::answer::answer(channel, response, version))
        .await;
}

async fn execute(
    agent: &Arc<Agent>,
    tx: &FrameSender,
    channel: u32,
    op: Op,
    credit: Option<Arc<Credit>>,
) -> Result<Response, Refusal> {
    let table = &agent.table;
    let request = match op {
        Op::Request(request) => request,
        Op::Upload(request, body) => {
            return crate::fs::execute(agent, tx, channel, request, None, Some(body)).await;
        }
        Op::WriteStdin { id, bytes } => return write_stdin(&*table.get(id)?, &bytes).await,
        Op::TermInput { id, bytes } => {
            return agent.terminals.get(id)?.write_input(&bytes).await;
        }
    };
    Ok(match request {
        Request::Ping => Response::Pong {
            pong: Pong {
                pid: std::process::id(),
                uptime_ms: u64::try_from(agent.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                dumpable: init::dumpable(),
                running: table.running(),
            },
        },
        Request::Exec { process, attach } => {
            let (process, reader) = table.spawn(&process, attach.is_some())?;
            let pid = u32::try_from(process.pid).unwrap_or(0);
            match (reader, credit) {
                (Some(reader), Some(credit)) => {
                    let started = Event::Started {
                        id: process.id,
                        pid,
                    };
                    send(tx, Frame::json(FrameType::Event, channel, &started)).await?;
                    stream_output(&process, reader, &credit, tx, channel).await?
                }
                _ => Response::Started {
                    id: process.id,
                    pid,
                },
            }
        }
        Request::Output { id, from, .. } => {
            let process = table.get(id)?;
            let reader = process
                .lock()
                .output
                .attach([from.stdout, from.stderr])
                .map_err(|message| Refusal::new(ErrorCode::BadRequest, message))?;
            let credit = credit.expect("output requests always carry credit");
            stream_output(&process, reader, &credit, tx, channel).await?
        }
        Request::Wait { id } => Response::Exited {
            exit: table.get(id)?.wait().await,
        },
        Request::Signal { id, signal } => {
            if !(1..=64).contains(&signal) {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("{signal} is not a signal number"),
                ));
            }
            if !table.signal_group(&*table.get(id)?, signal) {
                return Err(Refusal::new(
                    ErrorCode::NotRunning,
                    format!("process {id} is not running"),
                ));
            }
            Response::Done
        }
        Request::CloseStdin { id } => {
            let process = table.get(id)?;
            if process.stdin.lock().await.take().is_none() {
                return Err(stdin_closed(id));
            }
            Response::Done
        }
        Request::List => Response::Processes {
            processes: table.list(),
        },
        Request::Forget { id } => {
            table.forget(id)?;
            Response::Done
        }
        Request::TerminateAll { grace_ms } => {
            // Its own task: a client that goes away must not stop the escalation midway.
            let table = Arc::clone(table);
            let grace = Duration::from_millis(grace_ms);
            let report = tokio::spawn(async move { table.terminate_all(grace).await })
                .await
                .map_err(|err| Refusal::new(ErrorCode::Internal, err.to_string()))?;
            Response::Terminated { report }
        }
        request @ (Request::TermOpen(_)
        | Request::TermAttach(_)
        | Request::TermResize(_)
        | Request::TermClose(_)
        | Request::TermList) => {
            return crate::terms::execute(agent, tx, channel, request, credit).await;
        }
        request => return crate::fs::execute(agent, tx, channel, request, credit, None).await,
    })
}

/// Writes to a process's stdin; answers once the pipe took every byte.
async fn write_stdin(process: &Process, bytes: &[u8]) -> Result<Response, Refusal> {
    let mut stdin = process.stdin.lock().await;
    let Some(pipe) = stdin.as_mut() else {
        return Err(stdin_closed(process.id));
    };
    match pipe.write_all(bytes).await {
        Ok(()) => Ok(Response::Done),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            *stdin = None;
            Err(Refusal::new(
                ErrorCode::StdinClosed,
                format!("process {} closed its stdin", process.id),
            ))
        }
        Err(err) => Err(Refusal::new(
            ErrorCode::Internal,
            format!("writing to the stdin of process {}: {err}", process.id),
        )),
    }
}

fn stdin_closed(id: ProcessId) -> Refusal {
    Refusal::new(
        ErrorCode::StdinClosed,
        format!("process {id} has no open stdin (closed, or not started with stdin)"),
    )
}

/// Queues `frame` for the client; fails once the connection is gone.
pub async fn send(tx: &FrameSender, frame: Frame) -> Result<(), Refusal> {
    tx.send(frame)
        .await
        .map_err(|_| Refusal::new(ErrorCode::Internal, "connection closed"))
}

/// Detaches an output reader however its stream ends (finished, cancelled, aborted).
struct Detach<'a> {
    process: &'a Process,
    reader: u64,
}

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        self.process.lock().output.detach(self.reader);
        self.process.notify_drained();
    }
}

/// Sends the output of `process` from reader `reader`'s cursors until the process has
/// exited and everything recorded was sent; returns the final RESPONSE.
async fn stream_output(
    process: &Process,
    reader: u64,
    credit: &Credit,
    tx: &FrameSender,
    channel: u32,
) -> Result<Response, Refusal> {
    let _detach = Detach { process, reader };
    let mut changed = process.changed.subscribe();
    loop {
        changed.borrow_and_update();
        let mut frames = Vec::new();
        let mut sent_data = false;
        let finished = {
            let mut state = process.lock();
            let mut cursor = state.output.cursor(reader).expect("attached until dropped");
            for kind in [StreamKind::Stdout, StreamKind::Stderr] {
                let i = index(kind);
                let buf = state.output.stream(kind);
                if let Chunk::Gap { offset, bytes } = buf.read(cursor[i], 1) {
                    let skipped = Event::Skipped {
                        stream: kind,
                        offset,
                        bytes,
                    };
                    frames.push(Frame::json(FrameType::Event, channel, &skipped));
                    cursor[i] = offset + bytes;
                }
                let allowed = credit.available().min(MAX_DATA_CHUNK);
                if let Chunk::Data { offset, bytes } = buf.read(cursor[i], allowed) {
                    credit.spend(bytes.len());
                    cursor[i] += bytes.len() as u64;
                    let frame_type = match kind {
                        StreamKind::Stdout => FrameType::Stdout,
                        StreamKind::Stderr => FrameType::Stderr,
                    };
                    frames.push(Frame::data(frame_type, channel, offset, &bytes));
                    sent_data = true;
                }
            }
            state.output.set_cursor(reader, cursor);
            let at_end = cursor[0] == state.output.stream(StreamKind::Stdout).end()
                && cursor[1] == state.output.stream(StreamKind::Stderr).end();
            state.exit.clone().filter(|_| at_end)
        };
        if sent_data {
            process.notify_drained();
        }
        let idle = frames.is_empty();
        for frame in frames {
            send(tx, frame).await?;
        }
        if let Some(exit) = finished {
            return Ok(exited(exit));
        }
        if idle {
            tokio::select! {
                _ = changed.changed() => {}
                () = credit.granted.notified() => {}
            }
        }
    }
}

fn exited(exit: ExitInfo) -> Response {
    Response::Exited { exit }
}
