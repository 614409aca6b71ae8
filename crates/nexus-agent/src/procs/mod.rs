//! The process table: starting processes, reaping every child (ours and orphans) without
//! ever losing one of our own exit statuses, signalling process groups, and the records
//! kept for re-attaching.
//!
//! The reaping rule: only [`Table::reap`] ever calls `waitpid`, always as `waitpid(-1,
//! WNOHANG)` and always under the table lock; [`Table::spawn`] holds that same lock from
//! the spawn until the new pid is registered. So a child that exits at once is reaped only
//! after it is known, and its status reaches its record; any pid not registered is an
//! orphan. Nothing else (no `std::process::Child::wait`, no `tokio::process`) waits.
//! Terminal sessions' shells are leaders too ([`Leader::Terminal`], started through
//! [`Table::start_leader`]), so the same rule covers them.

mod posix;
mod process;
pub mod ring;
pub mod spawn;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nexus_agent_proto::{
    ErrorCode, ExecRequest, ProcessId, ProcessInfo, StreamKind, TerminateReport,
};

pub use process::{LeaderExit, Process};

use crate::terms::Terminal;

/// A process-group leader the agent started and has not reaped yet.
#[derive(Clone, Debug)]
pub enum Leader {
    /// A command started by `exec`.
    Process(Arc<Process>),
    /// The shell of a terminal session.
    Terminal(Arc<Terminal>),
}

impl Leader {
    /// Its pid, also its process group id.
    pub fn pid(&self) -> i32 {
        match self {
            Self::Process(process) => process.pid,
            Self::Terminal(terminal) => terminal.pid,
        }
    }

    fn exited(&self, exit: LeaderExit) {
        match self {
            Self::Process(process) => process.leader_exited(exit),
            Self::Terminal(terminal) => terminal.leader_exited(exit),
        }
    }

    async fn wait(&self) {
        match self {
            Self::Process(process) => {
                process.wait().await;
            }
            Self::Terminal(terminal) => {
                terminal.wait().await;
            }
        }
    }
}

/// Settings of the process table.
#[derive(Clone, Debug)]
pub struct TableConfig {
    /// Bytes kept per output stream for re-attaching.
    pub window: usize,
    /// Exited records kept; the oldest are forgotten beyond this.
    pub max_exited: usize,
    /// How long to wait for the pipes after the leader exited.
    pub linger: Duration,
    /// Working directory when a request names none.
    pub workdir: PathBuf,
    /// Environment every process gets on top of the defaults, below its request's
    /// (`--env`: the proxy variables of a sandbox with network egress).
    pub env: Vec<(String, String)>,
}

/// An operation refused, with its protocol error code.
#[derive(Debug)]
pub struct Refusal {
    /// Stable code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Every process the agent started and has not forgotten.
#[derive(Debug)]
pub struct Table {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// Its settings.
    pub config: TableConfig,
}

#[derive(Debug, Default)]
struct Inner {
    /// All records, by id (ids grow, so this is also the start order).
    processes: BTreeMap<ProcessId, Arc<Process>>,
    /// Leaders not reaped yet, by pid.
    leaders: HashMap<i32, Leader>,
}

impl Table {
    /// An empty table.
    pub fn new(config: TableConfig) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            next_id: AtomicU64::new(1),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Starts a process in its own session and process group. With `attach`, a reader is
    /// attached at offset 0 before any output can be read; its id is returned.
    pub fn spawn(
        self: &Arc<Self>,
        request: &ExecRequest,
        attach: bool,
    ) -> Result<(Arc<Process>, Option<u64>), Refusal> {
        let prepared = spawn::prepare(request, &self.config.workdir, &self.config.env)?;
        let id = ProcessId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut inner = self.lock();
        let started = spawn::start(&prepared)?;
        let mut output = ring::Output::new(self.config.window, request.max_output_bytes);
        let reader = if attach {
            Some(output.attach([0, 0]).expect("offset 0 is always valid"))
        } else {
            None
        };
        let process = Arc::new(Process::new(
            id,
            started.pid,
            request.argv.clone(),
            output,
            request.timeout_ms.map(Duration::from_millis),
            started.stdin,
        ));
        inner.processes.insert(id, Arc::clone(&process));
        inner
            .leaders
            .insert(started.pid, Leader::Process(Arc::clone(&process)));
        drop(inner);
        tracing::info!(%id, pid = started.pid, argv = ?request.argv, "started");

        tokio::spawn(process::pump(
            Arc::clone(&process),
            StreamKind::Stdout,
            started.stdout,
        ));
        tokio::spawn(process::pump(
            Arc::clone(&process),
            StreamKind::Stderr,
            started.stderr,
        ));
        tokio::spawn(process::supervise(
            Arc::clone(self),
            Arc::clone(&process),
            self.config.linger,
        ));
        Ok((process, reader))
    }

    /// Runs `start` (which forks) with the table locked and registers the leader it
    /// returns before the lock is released, so the reaper cannot collect that child
    /// before it is known (the reaping rule above).
    pub fn start_leader<T>(
        &self,
        start: impl FnOnce() -> Result<(Leader, T), Refusal>,
    ) -> Result<T, Refusal> {
        let mut inner = self.lock();
        let (leader, value) = start()?;
        inner.leaders.insert(leader.pid(), leader);
        Ok(value)
    }

    /// Reaps every child that has exited: statuses of our leaders go to their records,
    /// orphans are just collected.
    pub fn reap(&self) {
        let mut inner = self.lock();
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid only writes the status through the valid pointer we pass.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                let exit = LeaderExit::from_raw(status, Instant::now());
                match inner.leaders.remove(&pid) {
                    Some(leader) => {
                        tracing::debug!(pid, ?exit, "leader reaped");
                        leader.exited(exit);
                    }
                    None => tracing::debug!(pid, "reaped an orphan"),
                }
                continue;
            }
            if pid == 0 {
                break;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => break,
                _ => {
                    tracing::warn!(error = %std::io::Error::last_os_error(), "waitpid failed");
                    break;
                }
            }
        }
    }

    /// Sends `signal` to the process group of `process` if its leader has not been reaped
    /// (so the group id cannot belong to anyone else yet). Returns whether it was sent.
    pub fn signal_group(&self, process: &Process, signal: i32) -> bool {
        self.signal_leader_group(process.pid, signal)
    }

    /// Sends `signal` to the process group led by `pid` if that leader is ours and not
    /// reaped yet. Returns whether it was sent.
    pub fn signal_leader_group(&self, pid: i32, signal: i32) -> bool {
        let inner = self.lock();
        if !inner.leaders.contains_key(&pid) {
            return false;
        }
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(-pid, signal) };
        drop(inner);
        if rc != 0 {
            tracing::debug!(pid, signal, error = %std::io::Error::last_os_error(), "kill failed");
        }
        rc == 0
    }

    /// The record of `id`.
    pub fn get(&self, id: ProcessId) -> Result<Arc<Process>, Refusal> {
        self.lock()
            .processes
            .get(&id)
            .cloned()
            .ok_or_else(|| Refusal::new(ErrorCode::UnknownProcess, format!("no process {id}")))
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let processes: Vec<_> = self.lock().processes.values().cloned().collect();
        processes.iter().map(|p| p.info()).collect()
    }

    /// Processes not yet exited.
    pub fn running(&self) -> u32 {
        let processes: Vec<_> = self.lock().processes.values().cloned().collect();
        let running = processes.iter().filter(|p| p.exit().is_none()).count();
        u32::try_from(running).unwrap_or(u32::MAX)
    }

    /// Drops the record of an exited process.
    pub fn forget(&self, id: ProcessId) -> Result<(), Refusal> {
        let process = self.get(id)?;
        if process.exit().is_none() {
            return Err(Refusal::new(
                ErrorCode::StillRunning,
                format!("process {id} is still running"),
            ));
        }
        self.lock().processes.remove(&id);
        Ok(())
    }

    /// Forgets the oldest exited records beyond the configured number.
    pub fn prune_exited(&self) {
        let mut inner = self.lock();
        let exited: Vec<ProcessId> = inner
            .processes
            .values()
            .filter(|p| p.exit().is_some())
            .map(|p| p.id)
            .collect();
        let excess = exited.len().saturating_sub(self.config.max_exited);
        for id in &exited[..excess] {
            inner.processes.remove(id);
            tracing::debug!(%id, "forgot an old exited process");
        }
    }

    /// SIGTERMs every running process group, SIGKILLs those whose leader is still alive
    /// after `grace`, and waits (bounded) until all of them have exited.
    pub async fn terminate_all(&self, grace: Duration) -> TerminateReport {
        let targets: Vec<Leader> = self.lock().leaders.values().cloned().collect();
        let mut report = TerminateReport::default();
        for leader in &targets {
            if self.signal_leader_group(leader.pid(), libc::SIGTERM) {
                report.signalled += 1;
            }
            // An interactive shell ignores SIGTERM; a hangup is what ends a terminal's.
            if let Leader::Terminal(_) = leader {
                self.signal_leader_group(leader.pid(), libc::SIGHUP);
            }
        }
        let leaders_gone = |targets: &[Leader]| {
            let inner = self.lock();
            targets
                .iter()
                .all(|l| !inner.leaders.contains_key(&l.pid()))
        };
        let deadline = Instant::now() + grace;
        while !leaders_gone(&targets) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for leader in &targets {
            if self.signal_leader_group(leader.pid(), libc::SIGKILL) {
                report.killed += 1;
            }
        }
        let waits = targets.iter().map(Leader::wait);
        let limit = self.config.linger + Duration::from_secs(10);
        if tokio::time::timeout(limit, futures::future::join_all(waits))
            .await
            .is_err()
        {
            tracing::warn!("some processes had not exited {limit:?} after SIGKILL");
        }
        tracing::info!(?report, "terminated all processes");
        report
    }
}
