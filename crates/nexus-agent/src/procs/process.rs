//! One process the agent started: its record, the pumps that move its pipes into its
//! [`Output`], and the supervisor that enforces its timeout and decides when it has exited.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nexus_agent_proto::{ExitInfo, ProcessId, ProcessInfo, ProcessState, StreamKind};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::Table;
use super::ring::{Output, PUMP_CHUNK};

/// How the leader of a process group ended, from `waitpid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderExit {
    /// Exit status, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// When it was reaped.
    pub at: Instant,
}

impl LeaderExit {
    /// Decodes a raw `waitpid` status.
    pub fn from_raw(status: libc::c_int, at: Instant) -> Self {
        if libc::WIFSIGNALED(status) {
            Self {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
                at,
            }
        } else {
            Self {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
                at,
            }
        }
    }
}

/// The mutable part of a process record.
#[derive(Debug)]
pub struct ProcState {
    /// Its output.
    pub output: Output,
    /// Set by the reaper.
    pub leader: Option<LeaderExit>,
    /// The agent killed it for its timeout.
    pub timed_out: bool,
    /// Set once, when the process is over: the leader was reaped and its output collected.
    pub exit: Option<ExitInfo>,
}

/// A process the agent started (the leader of its own session and process group).
#[derive(Debug)]
pub struct Process {
    /// The agent's id.
    pub id: ProcessId,
    /// The leader's pid, also the process group id.
    pub pid: i32,
    /// What was run.
    pub argv: Vec<String>,
    /// Milliseconds since the Unix epoch at start.
    pub started_at_ms: u64,
    started: Instant,
    timeout: Option<Duration>,
    state: Mutex<ProcState>,
    /// Bumped when output, end-of-file, the leader's status or the exit changes.
    pub changed: watch::Sender<u64>,
    /// Bumped when readers move or detach, so blocked pumps look at their room again.
    pub drained: watch::Sender<u64>,
    /// The write end of its stdin, while open.
    pub stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
}

impl Process {
    /// A record for a just-started process.
    pub fn new(
        id: ProcessId,
        pid: i32,
        argv: Vec<String>,
        output: Output,
        timeout: Option<Duration>,
        stdin: Option<pipe::Sender>,
    ) -> Self {
        let started_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            id,
            pid,
            argv,
            started_at_ms,
            started: Instant::now(),
            timeout,
            state: Mutex::new(ProcState {
                output,
                leader: None,
                timed_out: false,
                exit: None,
            }),
            changed: watch::Sender::new(0),
            drained: watch::Sender::new(0),
            stdin: tokio::sync::Mutex::new(stdin),
        }
    }

    /// Locks the mutable state. A panic while holding it cannot leave it inconsistent in a
    /// way worse than losing the process, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, ProcState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Wakes everything watching the output or the exit.
    pub fn notify_changed(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes pumps waiting for room.
    pub fn notify_drained(&self) {
        self.drained.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Called by the reaper (under the table lock) with the leader's status.
    pub fn leader_exited(&self, exit: LeaderExit) {
        self.lock().leader = Some(exit);
        self.notify_changed();
    }

    /// How `list` shows it.
    pub fn info(&self) -> ProcessInfo {
        let exit = self.lock().exit.clone();
        ProcessInfo {
            id: self.id,
            pid: u32::try_from(self.pid).unwrap_or(0),
            argv: self.argv.clone(),
            state: if exit.is_some() {
                ProcessState::Exited
            } else {
                ProcessState::Running
            },
            started_at_ms: self.started_at_ms,
            exit,
        }
    }

    /// The exit, once final.
    pub fn exit(&self) -> Option<ExitInfo> {
        self.lock().exit.clone()
    }

    /// Waits until the process is over.
    pub async fn wait(&self) -> ExitInfo {
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            if let Some(exit) = self.exit() {
                return exit;
            }
            if changed.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen while we borrow it.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Moves bytes from one of the process's pipes into its output until end-of-file,
/// reading only as much as [`Output::room`] allows: when a reader is behind, the pipe
/// stays full and the writer blocks.
pub async fn pump(process: Arc<Process>, stream: StreamKind, mut pipe: pipe::Receiver) {
    let mut buf = vec![0u8; PUMP_CHUNK];
    let mut drained = process.drained.subscribe();
    loop {
        drained.borrow_and_update();
        let room = {
            let mut state = process.lock();
            let room = state.output.room(stream);
            let blocked = room == 0;
            let flipped = state.output.blocked[super::ring::index(stream)] != blocked;
            state.output.blocked[super::ring::index(stream)] = blocked;
            drop(state);
            if flipped {
                process.notify_changed();
            }
            room
        };
        if room == 0 {
            if drained.changed().await.is_err() {
                break;
            }
            continue;
        }
        match pipe.read(&mut buf[..room]).await {
            Ok(0) => break,
            Ok(n) => {
                process.lock().output.accept(stream, &buf[..n]);
                process.notify_changed();
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::warn!(id = %process.id, ?stream, error = %err, "reading output failed");
                break;
            }
        }
    }
    process.lock().output.stream_mut(stream).eof = true;
    process.notify_changed();
}

/// Watches one process from start to exit: kills its group at the timeout, and once the
/// leader is reaped, waits for the pipes to reach end-of-file (at most `linger` while
/// nobody holds them back; descendants may keep them open) before making the exit final.
pub async fn supervise(table: Arc<Table>, process: Arc<Process>, linger: Duration) {
    let mut changed = process.changed.subscribe();
    let deadline = process
        .timeout
        .map(|t| tokio::time::Instant::from_std(process.started + t));
    let mut timeout_fired = false;
    let leader = loop {
        changed.borrow_and_update();
        if let Some(leader) = process.lock().leader {
            break leader;
        }
        let timer = async {
            match deadline {
                Some(deadline) if !timeout_fired => tokio::time::sleep_until(deadline).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed.changed() => {}
            () = timer => {
                timeout_fired = true;
                if table.signal_group(&process, libc::SIGKILL) {
                    process.lock().timed_out = true;
                    tracing::info!(id = %process.id, pid = process.pid, "timed out, group killed");
                }
            }
        }
    };

    let mut linger_until = tokio::time::Instant::now() + linger;
    loop {
        changed.borrow_and_update();
        let (eof, blocked) = {
            let state = process.lock();
            (
                state.output.all_eof(),
                state.output.blocked.iter().any(|b| *b),
            )
        };
        if eof {
            break;
        }
        if blocked {
            // A reader holds the output back: the pipes are not idle, do not give up on
            // them; count the linger from when the reader catches up.
            linger_until = linger_until.max(tokio::time::Instant::now() + linger);
            let _ = changed.changed().await;
            continue;
        }
        tokio::select! {
            _ = changed.changed() => {}
            () = tokio::time::sleep_until(linger_until) => {
                tracing::debug!(id = %process.id, "pipes still open after the leader exited; not waiting");
                break;
            }
        }
    }

    {
        let mut state = process.lock();
        let exit = ExitInfo {
            exit_code: leader.code,
            signal: leader.signal,
            timed_out: state.timed_out,
            output_truncated: state.output.truncated,
            duration_ms: u64::try_from(leader.at.duration_since(process.started).as_millis())
                .unwrap_or(u64::MAX),
            stdout_bytes: state.output.stream(StreamKind::Stdout).written(),
            stderr_bytes: state.output.stream(StreamKind::Stderr).written(),
        };
        // From now on the record is final: late output from lingering descendants is
        // drained and dropped so they never block on a full pipe.
        state.output.discard_all = true;
        state.output.shrink();
        state.exit = Some(exit);
    }
    process.notify_changed();
    process.notify_drained();
    table.prune_exited();
}
