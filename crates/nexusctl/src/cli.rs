//! The `nexusctl` command line: noun-verb commands, global flags shared by all.

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

/// Drive the Nexus daemon: sandboxes for AI agents on your own machines.
#[derive(Debug, Parser)]
#[command(name = "nexusctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Daemon address [default: config file, else http://127.0.0.1:9600].
    #[arg(long, env = "NEXUS_URL", global = true, value_name = "URL")]
    pub url: Option<String>,

    /// API token [default: config file, else the daemon's token file on this host].
    #[arg(
        long,
        env = "NEXUS_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show daemon health and its database.
    Status,
    /// Show client and server versions.
    Version,
    /// Check what this host can enforce (no daemon needed).
    Doctor,
    /// Create, list, inspect, start, stop, pause, resume and delete sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Run a command in a running sandbox, streaming its output; exits with its exit code.
    Exec(ExecArgs),
    /// Create a throwaway sandbox, run a command in it, delete it; exits with its exit code.
    Run(RunArgs),
    /// Background processes in a sandbox: start, list, logs, wait, kill.
    #[command(subcommand)]
    Process(ProcessCommand),
    /// Print a shell completion script, e.g. `nexusctl completion bash > ~/.local/share/bash-completion/completions/nexusctl`.
    Completion {
        /// The shell to complete for.
        shell: CompletionShell,
    },
}

/// Shells we generate completions for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

impl From<CompletionShell> for Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

/// `nexusctl sandbox ...`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox (and start it, unless --no-start).
    Create(CreateArgs),
    /// List sandboxes.
    #[command(alias = "ls")]
    List,
    /// Show everything about a sandbox, including its isolation report.
    Inspect {
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Start a created, stopped or crashed sandbox.
    Start {
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Stop a sandbox (SIGTERM, then SIGKILL after a grace period); its workspace is kept.
    Stop {
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Freeze every process of a running sandbox; memory is kept, no CPU is used.
    Pause {
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Let a paused sandbox's processes continue.
    Resume {
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Delete a sandbox and every trace of it.
    #[command(alias = "rm")]
    Delete {
        /// Sandbox name or id.
        sandbox: String,
        /// Delete it even if it is running.
        #[arg(long, short)]
        force: bool,
    },
}

/// What a new sandbox looks like.
#[derive(Debug, Clone, Args)]
pub struct SandboxShape {
    /// Image of the root filesystem [default: host].
    #[arg(long)]
    pub image: Option<String>,
    /// Isolation driver: bwrap (default) or host.
    #[arg(long)]
    pub driver: Option<String>,
    /// Environment variable of every process, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Label, KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Memory limit in MiB.
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// CPU quota in cores, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum processes and threads.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Size of /tmp in MiB.
    #[arg(long, value_name = "MIB")]
    pub tmp: Option<u64>,
    /// Stop the sandbox after this long, e.g. 30m.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<std::time::Duration>,
}

/// `nexusctl sandbox create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name [default: generated].
    pub name: Option<String>,
    #[command(flatten)]
    pub shape: SandboxShape,
    /// Only record it; start it later with `sandbox start`.
    #[arg(long)]
    pub no_start: bool,
}

/// How a command runs.
#[derive(Debug, Clone, Args)]
pub struct CommandArgs {
    /// Working directory inside the sandbox [default: /workspace].
    #[arg(long, short = 'w')]
    pub cwd: Option<String>,
    /// Kill the command after this long, e.g. 30s.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Pass this program's stdin to the command (read to the end first).
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// The command and its arguments (no shell: use `sh -c '...'` for one).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `nexusctl exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// Extra environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    #[command(flatten)]
    pub command: CommandArgs,
}

/// `nexusctl run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub shape: SandboxShape,
    #[command(flatten)]
    pub command: CommandArgs,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 5m, 1h)"))
}

/// `nexusctl process ...`
#[derive(Debug, Subcommand)]
pub enum ProcessCommand {
    /// Start a command in the background; prints its process id.
    Start {
        /// Sandbox name or id.
        sandbox: String,
        /// Working directory inside the sandbox [default: /workspace].
        #[arg(long, short = 'w')]
        cwd: Option<String>,
        /// Kill it after this long, e.g. 10m.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// List running processes and exited ones not yet waited for.
    #[command(alias = "ls")]
    List {
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Print a process's output (following it until it exits), from an offset if given.
    Logs {
        /// Sandbox name or id.
        sandbox: String,
        /// Process id (from `process start` or `process list`).
        process: u64,
        /// Skip this many bytes of stdout (to resume after a dropped connection).
        #[arg(long, default_value_t = 0)]
        stdout_offset: u64,
        /// Skip this many bytes of stderr.
        #[arg(long, default_value_t = 0)]
        stderr_offset: u64,
    },
    /// Wait for a process to end; exits with its exit code.
    Wait {
        /// Sandbox name or id.
        sandbox: String,
        /// Process id.
        process: u64,
    },
    /// Send a signal to a process's whole process group [default: TERM].
    Kill {
        /// Sandbox name or id.
        sandbox: String,
        /// Process id.
        process: u64,
        /// Signal number.
        #[arg(long, short, default_value_t = 15)]
        signal: i32,
    },
}
