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
