//! `nexus-agent`: the program inside every sandbox (its PID 1 under bubblewrap), and the
//! only one `nexusd` talks to there. It serves the protocol of `nexus-agent-proto` on a
//! listening socket it inherits, runs processes in their own process groups, streams their
//! output with backpressure, and reaps every orphan.
//!
//! Module map: [`args`] (flags), [`init`] (non-dumpable, subreaper, ignored signals,
//! close-on-exec), [`listen`] (the socket), [`conn`] (one connection: routing frames to
//! operations), [`ops`] (the operations and output streams), [`procs`] (the process table,
//! spawning, pumps, reaping rule), [`terms`] (terminal sessions: login shells on
//! pseudo-terminals), [`reaper`] (the SIGCHLD loop), [`log`].

mod answer;
mod args;
mod conn;
mod fs;
mod init;
mod listen;
mod log;
mod ops;
mod procs;
mod reaper;
mod terms;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nexus_agent_proto::AgentInfo;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{Command, Config, Listen};
use crate::init::InitFacts;
use crate::procs::{Table, TableConfig};

/// State shared by every connection.
#[derive(Debug)]
pub struct Agent {
    /// The processes.
    pub table: Arc<Table>,
    /// The terminal sessions.
    pub terminals: Arc<terms::Terminals>,
    /// When the agent started.
    pub started: Instant,
    facts: InitFacts,
}

impl Agent {
    /// The WELCOME for protocol `version`.
    pub fn info(&self, version: u16) -> AgentInfo {
        AgentInfo {
            protocol_version: version,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uid: nix::unistd::getuid().as_raw(),
            pid1: self.facts.pid1,
            subreaper: self.facts.subreaper,
            dumpable: init::dumpable(),
            window_bytes: self.table.config.window as u64,
        }
    }
}

fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "nexus-agent: {err:#}");
            return ExitCode::from(2);
        }
    };
    let config = match command {
        Command::Run(config) => config,
        Command::Help => {
            let _ = write!(std::io::stdout(), "{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            let _ = writeln!(
                std::io::stdout(),
                "nexus-agent {}",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
    };
    log::init();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // Before the runtime exists, so no thread can race the process-wide changes.
    let facts = init::harden()?;
    // One thread: the agent's work is I/O multiplexing, and a sandbox's idle agent should
    // cost as little memory as possible.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, facts))
}

async fn serve(config: Config, facts: InitFacts) -> anyhow::Result<()> {
    let listener = match &config.listen {
        Listen::Fd(fd) => listen::from_fd(*fd)?,
        Listen::Path(path) => listen::bind(path)?,
    };
    let workdir = config.workdir.clone().unwrap_or_else(|| {
        let workspace = Path::new("/workspace");
        PathBuf::from(if workspace.is_dir() {
            "/workspace"
        } else {
            "/"
        })
    });
    let table = Table::new(TableConfig {
        window: config.window,
        max_exited: config.max_exited,
        linger: config.linger,
        workdir,
        env: config.env.clone(),
    });
    // Installed before any child exists, so no exit goes unnoticed.
    let sigchld = signal(SignalKind::child()).context("handling SIGCHLD")?;
    tokio::spawn(reaper::run(Arc::clone(&table), sigchld));
    let agent = Arc::new(Agent {
        terminals: terms::Terminals::new(Arc::clone(&table)),
        table,
        started: Instant::now(),
        facts,
    });
    tracing::info!(
        pid = std::process::id(),
        pid1 = facts.pid1,
        subreaper = facts.subreaper,
        dumpable = init::dumpable(),
        "nexus-agent {} listening",
        env!("CARGO_PKG_VERSION")
    );

    let mut peers = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                peers += 1;
                tokio::spawn(conn::serve(Arc::clone(&agent), stream, peers));
            }
            Err(err) => {
                // EMFILE and friends: wait instead of spinning; never exit (we may be PID 1).
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
