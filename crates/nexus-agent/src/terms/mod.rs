//! Terminal sessions (protocol version 3): login shells on pseudo-terminals that belong
//! to the agent, not to a connection. Each is drained into a bounded ring while nobody
//! is attached (so the shell never blocks), replayed to whoever attaches, and streamed
//! with the same credit flow control as process output.
//!
//! Module map: [`pty`] (opening the pair, starting the shell, signalling a session),
//! [`output`] (the ring and its readers), [`session`] (a session: pump, supervisor,
//! input, resize, the attached stream).

pub mod output;
pub mod pty;
pub mod session;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nexus_agent_proto::terminal::{TermCloseRequest, TermOpenRequest};
use nexus_agent_proto::{ErrorCode, Request, Response, TermExit, TerminalId, TerminalInfo};

pub use session::Terminal;

use crate::Agent;
use crate::conn::FrameSender;
use crate::ops::Credit;
use crate::procs::{Leader, Refusal, Table};

/// Most sessions whose shell is still running; more opens are refused with `busy`.
pub const MAX_LIVE_TERMINALS: usize = 64;

/// Ended sessions kept (with their last output) until closed; the oldest are forgotten
/// beyond this.
pub const MAX_ENDED_TERMINALS: usize = 16;

/// How long after the shell's exit the agent waits for the terminal's end of file.
const LINGER: Duration = Duration::from_millis(500);

/// How long a close waits for the shell after SIGKILL before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Every session the agent runs or still remembers.
#[derive(Debug)]
pub struct Terminals {
    table: Arc<Table>,
    sessions: Mutex<BTreeMap<TerminalId, Arc<Terminal>>>,
    next_id: AtomicU64,
}

impl Terminals {
    /// No sessions; shells are started through `table` (the reaping rule).
    pub fn new(table: Arc<Table>) -> Arc<Self> {
        Arc::new(Self {
            table,
            sessions: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<TerminalId, Arc<Terminal>>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The session `id`.
    pub fn get(&self, id: TerminalId) -> Result<Arc<Terminal>, Refusal> {
        self.lock().get(&id).cloned().ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownTerminal,
                format!("no terminal session {id}"),
            )
        })
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<TerminalInfo> {
        let sessions: Vec<_> = self.lock().values().cloned().collect();
        sessions.iter().map(|t| t.info()).collect()
    }

    /// Opens a pseudo-terminal and starts a login shell on it.
    pub fn open(self: &Arc<Self>, request: &TermOpenRequest) -> Result<TerminalInfo, Refusal> {
        let live = self.lock().values().filter(|t| t.exit().is_none()).count();
        if live >= MAX_LIVE_TERMINALS {
            return Err(Refusal::new(
                ErrorCode::Busy,
                format!("{live} terminal sessions are open; close one first"),
            ));
        }
        let size = request.size.clamp();
        let pair = pty::open(size)?;
        let config = &self.table.config;
        let mut command = pty::command(&pair.slave, &request.env, &config.workdir, &config.env)?;
        let id = TerminalId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let master = pair.master;
        let terminal = self.table.start_leader(move || {
            let pid = pty::start(&mut command)?;
            let terminal = Terminal::new(id, pid, master, size, output::TERM_WINDOW)
                .map(Arc::new)
                .map_err(|err| {
                    // The shell runs already: end it rather than leave it unmanaged.
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    Refusal::new(
                        ErrorCode::Internal,
                        format!("cannot register the terminal of pid {pid}: {err}"),
                    )
                })?;
            Ok((Leader::Terminal(Arc::clone(&terminal)), terminal))
        })?;
        // Our copy of the terminal's other side must go, or its end of file never comes.
        drop(pair.slave);
        self.lock().insert(id, Arc::clone(&terminal));
        tracing::info!(%id, pid = terminal.pid, cols = size.cols, rows = size.rows, "terminal opened");
        tokio::spawn(session::pump(Arc::clone(&terminal)));
        tokio::spawn(self.clone().watch(Arc::clone(&terminal)));
        Ok(terminal.info())
    }

    /// Supervises a session, then forgets the oldest ended ones beyond the limit.
    async fn watch(self: Arc<Self>, terminal: Arc<Terminal>) {
        session::supervise(terminal, LINGER).await;
        let mut sessions = self.lock();
        let ended: Vec<TerminalId> = sessions
            .values()
            .filter(|t| t.exit().is_some())
            .map(|t| t.id)
            .collect();
        let excess = ended.len().saturating_sub(MAX_ENDED_TERMINALS);
        for id in &ended[..excess] {
            if let Some(old) = sessions.remove(id) {
                old.close();
                tracing::debug!(%id, "forgot an old ended terminal");
            }
        }
    }

    /// Ends session `id`: SIGHUP to every process of its session, SIGKILL after `grace`
    /// to what is left; forgets it and returns how the shell ended.
    pub async fn close(&self, request: &TermCloseRequest) -> Result<TermExit, Refusal> {
        let terminal = self.get(request.id)?;
        let exit = match terminal.exit() {
            Some(exit) => exit,
            None => {
                let sid = terminal.pid;
                self.table.signal_leader_group(sid, libc::SIGHUP);
                pty::signal_session(sid, libc::SIGHUP);
                let grace = Duration::from_millis(request.grace_ms);
                match tokio::time::timeout(grace, terminal.wait()).await {
                    Ok(exit) => {
                        // Jobs that ignored the hangup go too (the session id cannot have
                        // been reused while they live).
                        pty::signal_session(sid, libc::SIGKILL);
                        exit
                    }
                    Err(_) => {
                        self.table.signal_leader_group(sid, libc::SIGKILL);
                        pty::signal_session(sid, libc::SIGKILL);
                        // Closed first so the exit does not wait for the terminal's end of
                        // file, which a process outside the session could hold back.
                        terminal.close();
                        tokio::time::timeout(KILL_WAIT, terminal.wait())
                            .await
                            .map_err(|_| {
                                Refusal::new(
                                    ErrorCode::Internal,
                                    format!(
                                        "the shell of terminal {} did not exit after SIGKILL",
                                        request.id
                                    ),
                                )
                            })?
                    }
                }
            }
        };
        terminal.close();
        self.lock().remove(&request.id);
        tracing::info!(id = %request.id, %exit, "terminal closed");
        Ok(exit)
    }
}

/// Runs one `term_*` request; `credit` is set for `term_attach`.
pub async fn execute(
    agent: &Arc<Agent>,
    tx: &FrameSender,
    channel: u32,
    request: Request,
    credit: Option<Arc<Credit>>,
) -> Result<Response, Refusal> {
    let terminals = &agent.terminals;
    match request {
        Request::TermOpen(request) => Ok(Response::TermOpened {
            terminal: terminals.open(&request)?,
        }),
        Request::TermAttach(request) => {
            let terminal = terminals.get(request.id)?;
            let credit = credit.ok_or_else(|| {
                Refusal::new(ErrorCode::Internal, "term_attach without its credit")
            })?;
            terminal.stream(&credit, tx, channel).await
        }
        Request::TermResize(request) => {
            terminals.get(request.id)?.resize(request.size.clamp())?;
            Ok(Response::Done)
        }
        Request::TermClose(request) => Ok(Response::TermExited {
            exit: terminals.close(&request).await?,
        }),
        Request::TermList => Ok(Response::Terminals {
            terminals: terminals.list(),
        }),
        other => Err(Refusal::new(
            ErrorCode::Internal,
            format!("{} is not a terminal operation", other.op_name()),
        )),
    }
}
