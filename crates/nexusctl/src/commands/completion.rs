//! `nexusctl completion SHELL`: a completion script for bash, zsh or fish.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionShell};
use crate::output::Output;

/// Prints the completion script to stdout.
pub fn run(shell: CompletionShell, out: Output) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        "nexusctl",
        &mut script,
    );
    // `nxc` is the same program: complete it too.
    let mut alias = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        "nxc",
        &mut alias,
    );
    script.extend_from_slice(&alias);
    out.text(&String::from_utf8_lossy(&script))
}
