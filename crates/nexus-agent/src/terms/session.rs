//! One terminal session: its record, the pump that drains the pseudo-terminal into its
//! [`TermOutput`], the supervisor that decides when the shell is over, input, resize, and
//! the attached output stream with its flow control.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nexus_agent_proto::{
    ErrorCode, Frame, FrameType, MAX_DATA_CHUNK, Response, TermExit, TermSize, TerminalId,
    TerminalInfo,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::output::TermOutput;
use super::pty;
use crate::conn::FrameSender;
use crate::ops::{Credit, send};
use crate::procs::ring::PUMP_CHUNK;
use crate::procs::{LeaderExit, Refusal};

/// The mutable part of a session.
#[derive(Debug)]
pub struct TermState {
    /// Its recent output and readers.
    pub output: TermOutput,
    /// Its size now.
    pub size: TermSize,
    /// Set by the reaper.
    pub leader: Option<LeaderExit>,
    /// The terminal reported end of file (every process holding it has closed it).
    pub eof: bool,
    /// Set once the shell is over: reaped and its output collected.
    pub exit: Option<TermExit>,
}

/// A login shell on a pseudo-terminal, run by the agent.
#[derive(Debug)]
pub struct Terminal {
    /// The agent's id.
    pub id: TerminalId,
    /// The shell's pid: also its process group and session id.
    pub pid: i32,
    /// Milliseconds since the Unix epoch at open.
    pub created_at_ms: u64,
    master: AsyncFd<OwnedFd>,
    /// Serialises input, so writes are applied in the order their frames arrived.
    writer: tokio::sync::Mutex<()>,
    state: Mutex<TermState>,
    /// Bumped when output, end of file, the leader's status or the exit changes.
    pub changed: watch::Sender<u64>,
    /// Bumped when readers move or detach, so a waiting pump looks at its room again.
    drained: watch::Sender<u64>,
    /// Set when the session is closed: the pump stops and the terminal is released.
    closed: watch::Sender<bool>,
}

impl Terminal {
    /// A record for a just-started shell on `master`.
    pub fn new(
        id: TerminalId,
        pid: i32,
        master: OwnedFd,
        size: TermSize,
        window: usize,
    ) -> std::io::Result<Self> {
        // SAFETY: the `OwnedFd` owns the descriptor, so it stays open and the same for as
        // long as the `AsyncFd` holding it.
        let master = unsafe { AsyncFd::register(master) }?;
        Ok(Self {
            id,
            pid,
            created_at_ms: now_ms(),
            master,
            writer: tokio::sync::Mutex::new(()),
            state: Mutex::new(TermState {
                output: TermOutput::new(window),
                size,
                leader: None,
                eof: false,
                exit: None,
            }),
            changed: watch::Sender::new(0),
            drained: watch::Sender::new(0),
            closed: watch::Sender::new(false),
        })
    }

    /// Locks the mutable state (poisoning ignored, as for processes).
    pub fn lock(&self) -> MutexGuard<'_, TermState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn notify_changed(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn notify_drained(&self) {
        self.drained.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Called by the reaper (under the table lock) with the shell's status.
    pub fn leader_exited(&self, exit: LeaderExit) {
        self.lock().leader = Some(exit);
        self.notify_changed();
    }

    /// How `term_list` shows it.
    pub fn info(&self) -> TerminalInfo {
        let state = self.lock();
        TerminalInfo {
            id: self.id,
            pid: u32::try_from(self.pid).unwrap_or(0),
            size: state.size,
            created_at_ms: self.created_at_ms,
            attached: u32::try_from(state.output.readers()).unwrap_or(u32::MAX),
            alive: state.exit.is_none(),
            exit: state.exit,
        }
    }

    /// The exit, once final.
    pub fn exit(&self) -> Option<TermExit> {
        self.lock().exit
    }

    /// Waits until the shell is over.
    pub async fn wait(&self) -> TermExit {
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            if let Some(exit) = self.exit() {
                return exit;
            }
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops the pump; the terminal is released once the last reference goes.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Writes `bytes` to the terminal as typed input; answers once it took all of them.
    pub async fn write_input(&self, bytes: &[u8]) -> Result<Response, Refusal> {
        if self.exit().is_some() {
            return Err(self.ended());
        }
        let _order = self.writer.lock().await;
        let mut rest = bytes;
        while !rest.is_empty() {
            let mut ready = self.master.writable().await.map_err(internal)?;
            match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), rest).map_err(Into::into)) {
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(err)) if err.raw_os_error() == Some(libc::EIO) => {
                    return Err(self.ended());
                }
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(err)) => return Err(internal(err)),
                Err(_would_block) => {}
            }
        }
        Ok(Response::Done)
    }

    /// Sets the terminal's size (already clamped).
    pub fn resize(&self, size: TermSize) -> Result<(), Refusal> {
        pty::resize(self.master.get_ref(), size).map_err(|err| {
            Refusal::new(
                ErrorCode::Internal,
                format!("resizing terminal {}: {err}", self.id),
            )
        })?;
        self.lock().size = size;
        Ok(())
    }

    fn ended(&self) -> Refusal {
        Refusal::new(
            ErrorCode::NotRunning,
            format!("terminal {} has ended", self.id),
        )
    }

    /// Sends the session's output from a new reader's start (the replay) until the shell
    /// is over and everything kept was sent; returns the final RESPONSE. Data goes out
    /// only against `credit`, and the pump waits for this reader, so a client that stops
    /// granting credit stops the terminal being read.
    pub async fn stream(
        &self,
        credit: &Credit,
        tx: &FrameSender,
        channel: u32,
    ) -> Result<Response, Refusal> {
        let reader = self.lock().output.attach();
        let _detach = Detach {
            terminal: self,
            reader,
        };
        let attached = nexus_agent_proto::Event::TermAttached {
            terminal: self.info(),
        };
        send(tx, Frame::json(FrameType::Event, channel, &attached)).await?;
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let (data, finished) = {
                let mut state = self.lock();
                let allowed = credit.available().min(MAX_DATA_CHUNK);
                let data = state.output.take(reader, allowed);
                if let Some((_, bytes)) = &data {
                    credit.spend(bytes.len());
                }
                let at_end = state.output.cursor(reader) == Some(state.output.end());
                (data, state.exit.filter(|_| at_end))
            };
            let idle = data.is_none();
            if let Some((offset, bytes)) = data {
                self.notify_drained();
                send(tx, Frame::data(FrameType::Stdout, channel, offset, &bytes)).await?;
            }
            if let Some(exit) = finished {
                return Ok(Response::TermExited { exit });
            }
            if idle {
                tokio::select! {
                    _ = changed.changed() => {}
                    () = credit.granted() => {}
                }
            }
        }
    }
}

/// Detaches a reader however its stream ends (finished, cancelled, aborted).
struct Detach<'a> {
    terminal: &'a Terminal,
    reader: u64,
}

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        self.terminal.lock().output.detach(self.reader);
        self.terminal.notify_drained();
    }
}

/// Moves bytes from the terminal into the session's output until end of file (every
/// holder of the terminal closed it) or until the session is closed, reading only as
/// much as [`TermOutput::room`] allows.
pub async fn pump(terminal: Arc<Terminal>) {
    let mut buf = vec![0u8; PUMP_CHUNK];
    let mut drained = terminal.drained.subscribe();
    let mut closed = terminal.closed.subscribe();
    loop {
        drained.borrow_and_update();
        if *closed.borrow_and_update() {
            break;
        }
        let room = {
            let mut state = terminal.lock();
            let room = state.output.room();
            let blocked = room == 0;
            let flipped = state.output.blocked != blocked;
            state.output.blocked = blocked;
            drop(state);
            if flipped {
                terminal.notify_changed();
            }
            room
        };
        if room == 0 {
            tokio::select! {
                changed = drained.changed() => if changed.is_err() { break },
                _ = closed.changed() => {}
            }
            continue;
        }
        let mut ready = tokio::select! {
            ready = terminal.master.readable() => match ready {
                Ok(ready) => ready,
                Err(err) => {
                    tracing::warn!(id = %terminal.id, error = %err, "waiting for terminal output failed");
                    break;
                }
            },
            _ = closed.changed() => continue,
        };
        match ready
            .try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf[..room]).map_err(Into::into))
        {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                terminal.lock().output.accept(&buf[..n]);
                terminal.notify_changed();
            }
            // EIO: the last holder of the terminal closed it.
            Ok(Err(err)) if err.raw_os_error() == Some(libc::EIO) => break,
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(err)) => {
                tracing::warn!(id = %terminal.id, error = %err, "reading terminal output failed");
                break;
            }
            Err(_would_block) => {}
        }
    }
    terminal.lock().eof = true;
    terminal.notify_changed();
}

/// Watches a session from start to exit: once the shell is reaped, waits for the
/// terminal's end of file (at most `linger` while no reader holds the output back;
/// background jobs may keep it open) before making the exit final.
pub async fn supervise(terminal: Arc<Terminal>, linger: Duration) {
    let mut changed = terminal.changed.subscribe();
    let leader = loop {
        changed.borrow_and_update();
        if let Some(leader) = terminal.lock().leader {
            break leader;
        }
        if changed.changed().await.is_err() {
            return;
        }
    };
    let mut linger_until = tokio::time::Instant::now() + linger;
    loop {
        changed.borrow_and_update();
        let (eof, blocked) = {
            let state = terminal.lock();
            (state.eof, state.output.blocked)
        };
        if eof {
            break;
        }
        if blocked {
            linger_until = linger_until.max(tokio::time::Instant::now() + linger);
            let _ = changed.changed().await;
            continue;
        }
        tokio::select! {
            _ = changed.changed() => {}
            () = tokio::time::sleep_until(linger_until) => break,
        }
    }
    let exit = TermExit {
        exit_code: leader.code,
        signal: leader.signal,
    };
    {
        let mut state = terminal.lock();
        state.output.discard = true;
        state.output.shrink();
        state.exit = Some(exit);
    }
    tracing::info!(id = %terminal.id, pid = terminal.pid, %exit, "terminal shell exited");
    terminal.notify_changed();
    terminal.notify_drained();
}

fn internal(err: impl std::fmt::Display) -> Refusal {
    Refusal::new(ErrorCode::Internal, format!("terminal i/o failed: {err}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
