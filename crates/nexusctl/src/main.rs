//! `nexusctl` (alias `nxc`): the command-line client of the Nexus daemon.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (from clap).

mod cli;
mod commands;
mod config;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use nexus_client::{Client, ClientError};
use nexus_core::paths::XdgDirs;

use cli::{Cli, Command};
use output::Output;

/// An error whose message was already printed (e.g. a failing doctor report).
#[derive(Debug)]
pub struct Quiet;

impl std::fmt::Display for Quiet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("already reported")
    }
}

impl std::error::Error for Quiet {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.global.json);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli, out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<Quiet>() => ExitCode::FAILURE,
        Err(err) if err.is::<commands::exec::ExitWith>() => ExitCode::from(
            err.downcast_ref::<commands::exec::ExitWith>()
                .map_or(1, |e| e.0),
        ),
        Err(err) => fail(&err),
    }
}

async fn run(cli: Cli, out: Output) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor => commands::doctor::run(out),
        Command::Completion { shell } => commands::completion::run(shell, out),
        Command::Status => commands::status::run(&connect(&cli.global)?, out).await,
        Command::Version => commands::version::run(&connect(&cli.global)?, out).await,
        Command::Sandbox(command) => {
            commands::sandbox::run(&connect(&cli.global)?, command, out).await
        }
        Command::Exec(args) => commands::exec::exec(&connect(&cli.global)?, args, out).await,
        Command::Attach(args) => commands::attach::run(&connect(&cli.global)?, args).await,
        Command::Run(args) => commands::exec::run(&connect(&cli.global)?, *args, out).await,
        Command::Process(command) => {
            commands::process::run(&connect(&cli.global)?, command, out).await
        }
        Command::Fs(command) => commands::fs::run(&connect(&cli.global)?, command, out).await,
        Command::Workspace(command) => {
            commands::workspace::run(&connect(&cli.global)?, command, out).await
        }
        Command::Mcp(cli::McpCommand::Serve(args)) => {
            let conn = config::resolve(&cli.global, &XdgDirs::from_env())?;
            commands::mcp::serve(&conn, args).await
        }
        Command::Image(command) => commands::image::run(&connect(&cli.global)?, command, out).await,
    }
}

fn connect(global: &cli::GlobalArgs) -> anyhow::Result<Client> {
    let conn = config::resolve(global, &XdgDirs::from_env())?;
    Ok(Client::new(&conn.url, conn.token)?)
}

/// Prints an error with advice on what to do next, and picks the exit code.
fn fail(err: &anyhow::Error) -> ExitCode {
    let message = match err.downcast_ref::<ClientError>() {
        Some(ClientError::Connect { addr, .. }) => format!(
            "Error: cannot connect to Nexus daemon at {addr}\n\
             The daemon does not appear to be running.\n\
             Start it: systemctl --user start nexus.service   (or: nexusd)\n"
        ),
        Some(e @ ClientError::Api { code, .. }) if code == "unauthorized" => format!(
            "Error: {e}\nGive the daemon's token with --token or NEXUS_TOKEN, or put `token:` in \
             $XDG_CONFIG_HOME/nexusctl/config.yaml; nexusd writes it to $XDG_CONFIG_HOME/nexus/token.\n"
        ),
        _ => format!("Error: {err:#}\n"),
    };
    let _ = std::io::stderr().write_all(message.as_bytes());
    ExitCode::FAILURE
}
