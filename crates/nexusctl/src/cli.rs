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
    /// Open an interactive shell in a running sandbox (detach with Ctrl-P Ctrl-Q).
    Attach(AttachArgs),
    /// Create a throwaway sandbox, run a command in it, delete it; exits with its exit code.
    Run(Box<RunArgs>),
    /// Background processes in a sandbox: start, list, logs, wait, kill.
    #[command(subcommand)]
    Process(ProcessCommand),
    /// Persistent workspaces: create, list, inspect, delete, snapshot, restore, fork.
    #[command(subcommand, alias = "ws")]
    Workspace(WorkspaceCommand),
    /// Files of a running sandbox: cat, write, ls, stat, rm, mkdir, mv, cp, watch.
    #[command(subcommand)]
    Fs(FsCommand),
    /// Images sandboxes start from: list, inspect, import, build, delete.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Serve MCP on stdio for a desktop MCP client, bridged to the daemon's `/mcp`.
    #[command(subcommand)]
    Mcp(McpCommand),
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
    Create(Box<CreateArgs>),
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
    /// Start a copy of a sandbox on a snapshot of its workspace (files, not memory).
    Fork {
        /// Sandbox name or id.
        sandbox: String,
        /// Name of the new sandbox.
        #[arg(long = "as", value_name = "NEW")]
        new_name: String,
    },
    /// Delete a sandbox and every trace of it.
    #[command(alias = "rm")]
    Delete {
        /// Sandbox name or id.
        sandbox: String,
        /// Delete it even if it is running.
        #[arg(long, short)]
        force: bool,
        /// Keep the workspace made for it, as a workspace of its own.
        #[arg(long)]
        keep_workspace: bool,
    },
    /// Show a running sandbox's CPU, memory, processes and I/O (--watch to follow them).
    Stats(StatsArgs),
    /// Show a sandbox's network policy, or change it: a list given replaces the old one,
    /// a list not given is kept.
    Network(NetworkArgs),
    /// Print a sandbox's connection attempts (the network log), oldest first.
    Netlog(NetlogArgs),
}

/// `nexusctl sandbox stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// Redraw every --interval until Ctrl-C; with --json, print one JSON line per sample.
    #[arg(long, short)]
    pub watch: bool,
    /// Time between the two samples CPU % is computed from, and between redraws.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub interval: std::time::Duration,
    /// With --watch, stop after N samples.
    #[arg(long, value_name = "N", requires = "watch", value_parser = parse_limit)]
    pub count: Option<u64>,
}

/// `nexusctl sandbox network`.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// Allow connections matching HOST:PORT (repeatable); replaces the allow list.
    #[arg(long = "allow", value_name = "HOST:PORT")]
    pub allow: Vec<String>,
    /// Refuse connections matching HOST:PORT (repeatable); replaces the deny list.
    #[arg(long = "deny", value_name = "HOST:PORT")]
    pub deny: Vec<String>,
    /// Empty both lists first (then --allow/--deny fill them): nothing is allowed.
    #[arg(long)]
    pub clear: bool,
    /// Also cut the sandbox's open connections (otherwise only new ones follow the policy).
    #[arg(long)]
    pub kill_existing: bool,
}

/// `nexusctl sandbox netlog`.
#[derive(Debug, Args)]
pub struct NetlogArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// Keep printing new attempts as they happen, until Ctrl-C (or the sandbox is deleted).
    #[arg(long, short)]
    pub follow: bool,
    /// Only entries after this log id (the `id` of the last one seen, from --json).
    #[arg(long, value_name = "ID")]
    pub after: Option<u64>,
    /// Print at most N entries [default: all the daemon keeps].
    #[arg(long, value_name = "N", conflicts_with = "follow", value_parser = parse_limit)]
    pub limit: Option<u64>,
}

/// `nexusctl image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images, the built-in `host` first.
    #[command(alias = "ls")]
    List,
    /// Show everything about an image.
    Inspect {
        /// Image name or id.
        image: String,
    },
    /// Copy a directory of the daemon's host into a new read-only image.
    Import {
        /// The directory (absolute, or relative to this shell's directory).
        dir: std::path::PathBuf,
        /// The image's name.
        #[arg(long)]
        name: String,
    },
    /// Build a hermetic image from a distribution's packages (mmdebstrap), showing
    /// progress. Ctrl-C cancels the build on the daemon too.
    Build {
        /// The image's name.
        name: String,
        /// The base: debian:<suite>.
        #[arg(long, default_value = "debian:bookworm")]
        from: String,
        /// Packages to install, comma-separated (repeatable).
        #[arg(long, value_delimiter = ',')]
        packages: Vec<String>,
    },
    /// List the image builds under way.
    Builds,
    /// Cancel the build of an image: its processes are stopped, nothing is recorded.
    Cancel {
        /// The name of the image being built.
        name: String,
    },
    /// Delete an image (refused while sandboxes are on it).
    #[command(alias = "rm")]
    Delete {
        /// Image name or id.
        image: String,
    },
}

/// `nexusctl workspace ...`
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create an empty workspace.
    Create {
        /// Name [default: generated].
        name: Option<String>,
        /// Disk quota in MiB (enforced on btrfs with quotas on; reported otherwise).
        #[arg(long, value_name = "MIB")]
        quota: Option<u64>,
        /// Label, KEY=VALUE (repeatable).
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
    },
    /// List workspaces with their sizes.
    #[command(alias = "ls")]
    List,
    /// Show everything about a workspace.
    Inspect {
        /// Workspace name or id.
        workspace: String,
    },
    /// Delete a workspace and its snapshots (refused while sandboxes use it).
    #[command(alias = "rm")]
    Delete {
        /// Workspace name or id.
        workspace: String,
    },
    /// Take a read-only snapshot of a workspace.
    Snapshot {
        /// Workspace name or id.
        workspace: String,
        /// Snapshot name [default: from the time].
        #[arg(long)]
        name: Option<String>,
    },
    /// List a workspace's snapshots.
    Snapshots {
        /// Workspace name or id.
        workspace: String,
    },
    /// Delete one snapshot.
    DeleteSnapshot {
        /// Workspace name or id.
        workspace: String,
        /// Snapshot name or id.
        snapshot: String,
    },
    /// Roll a workspace back to a snapshot, in place (a running sandbox on it restarts).
    Restore {
        /// Workspace name or id.
        workspace: String,
        /// Snapshot name or id.
        snapshot: String,
    },
    /// Make a new, independent workspace from a snapshot.
    Fork {
        /// Workspace name or id.
        workspace: String,
        /// Snapshot name or id.
        snapshot: String,
        /// Name of the new workspace.
        #[arg(long = "as", value_name = "NEW")]
        new_name: String,
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
    /// Workspace at /workspace, by name or id: an existing one, or a new one made under
    /// this name; it outlives the sandbox [default: a fresh one deleted with it].
    #[arg(long, value_name = "NAME")]
    pub workspace: Option<String>,
    /// Mount another workspace read-only, WORKSPACE:/path (repeatable).
    #[arg(long = "mount", value_name = "WORKSPACE:/PATH", value_parser = parse_mount)]
    pub mounts: Vec<(String, String)>,
    /// Allow connections matching HOST:PORT (repeatable), e.g. `pypi.org:443`,
    /// `*.github.com:443`, `10.1.2.0/24:5432`; nothing is allowed by default.
    #[arg(long = "allow", value_name = "HOST:PORT")]
    pub allow: Vec<String>,
    /// Refuse connections matching HOST:PORT (repeatable), whatever `--allow` says.
    #[arg(long = "deny", value_name = "HOST:PORT")]
    pub deny: Vec<String>,
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

/// `nexusctl attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// Re-attach to this terminal session (its recent screen is replayed) instead of
    /// opening a new shell.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// The keys that detach, leaving the shell running: comma-separated `ctrl-<letter>`
    /// or single characters; empty to never detach.
    #[arg(long, value_name = "KEYS", default_value = crate::commands::attach::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
}

/// `nexusctl run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub shape: SandboxShape,
    #[command(flatten)]
    pub command: CommandArgs,
}

fn parse_mount(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((workspace, path)) if !workspace.is_empty() && path.starts_with('/') => {
            Ok((workspace.to_owned(), path.to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not WORKSPACE:/PATH, e.g. datasets:/mnt/datasets"
        )),
    }
}

fn parse_limit(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a count of at least 1")),
    }
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

/// `nexusctl fs ...`: paths inside the sandbox are absolute or relative to /workspace.
#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// Print a file's bytes (or a byte range of it).
    Cat {
        /// Sandbox name or id.
        sandbox: String,
        /// File in the sandbox.
        path: String,
        /// First byte.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Most bytes [default: to the end].
        #[arg(long)]
        length: Option<u64>,
    },
    /// Write stdin to a file (an atomic replace unless --append).
    Write {
        /// Sandbox name or id.
        sandbox: String,
        /// File in the sandbox.
        path: String,
        /// Append instead of replacing.
        #[arg(long, short)]
        append: bool,
        /// Create missing parent directories.
        #[arg(long, short)]
        parents: bool,
        /// Permission bits in octal, e.g. 644.
        #[arg(long, value_parser = parse_octal_mode)]
        mode: Option<u32>,
    },
    /// List a directory.
    #[command(alias = "list")]
    Ls {
        /// Sandbox name or id.
        sandbox: String,
        /// Directory in the sandbox.
        #[arg(default_value = "/workspace")]
        path: String,
        /// Levels to descend (1 = direct children).
        #[arg(long, default_value_t = 1)]
        depth: u32,
    },
    /// Show paths' metadata, with the SHA-256 of files up to 64 MiB.
    Stat {
        /// Sandbox name or id.
        sandbox: String,
        /// Paths in the sandbox.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Remove a file, symlink or (with -r) a directory tree.
    Rm {
        /// Sandbox name or id.
        sandbox: String,
        /// Path in the sandbox.
        path: String,
        /// Remove a non-empty directory with its content.
        #[arg(long, short)]
        recursive: bool,
    },
    /// Make a directory.
    Mkdir {
        /// Sandbox name or id.
        sandbox: String,
        /// Directory in the sandbox.
        path: String,
        /// Create missing parents; an existing directory is fine.
        #[arg(long, short)]
        parents: bool,
    },
    /// Rename a path inside the sandbox.
    Mv {
        /// Sandbox name or id.
        sandbox: String,
        /// What to move.
        from: String,
        /// Where to.
        to: String,
        /// Replace an existing destination.
        #[arg(long, short)]
        force: bool,
    },
    /// Copy a file or directory between this host and a sandbox: one side is
    /// SANDBOX:/path, the other a host path. The copy lands inside DST, which is a
    /// directory (created when missing): `fs cp ./src web:/workspace` makes
    /// /workspace/src.
    Cp {
        /// Source: a host path, or SANDBOX:/path.
        src: String,
        /// Destination directory: SANDBOX:/path, or a host path.
        dst: String,
    },
    /// Print changes under a path (one line each) until interrupted.
    Watch {
        /// Sandbox name or id.
        sandbox: String,
        /// Directory (or file) in the sandbox.
        #[arg(default_value = "/workspace")]
        path: String,
        /// Watch subdirectories too.
        #[arg(long, short)]
        recursive: bool,
    },
}

fn parse_octal_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("{text:?} is not octal permission bits such as 644")),
    }
}

/// `nexusctl mcp ...`
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Speak MCP on stdin/stdout, passing every message to the daemon's `/mcp` endpoint,
    /// so the tools run in the daemon's sandboxes. Logs go to stderr only.
    Serve(McpServeArgs),
}

/// `nexusctl mcp serve`
#[derive(Debug, Args)]
pub struct McpServeArgs {
    /// Bind the session to one sandbox (id or name): its tools take no sandbox argument
    /// and can reach nothing else.
    #[arg(long, value_name = "SANDBOX")]
    pub sandbox: Option<String>,
    /// The tools offered: minimal, coding, execution or full [default: what the token allows].
    #[arg(long, value_name = "PROFILE", value_parser = ["minimal", "coding", "execution", "full"])]
    pub profile: Option<String>,
}
