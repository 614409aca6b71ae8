//! `nexusd`: parse flags, load config, start logging, serve until a signal.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use nexus_core::paths::XdgDirs;
use nexus_host::doctor::{DefaultDriver, DoctorOptions};
use nexusd::cli::Args;
use nexusd::config::Config;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.doctor {
        return doctor(args.json);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The logger may not be up yet (a bad config file), so print directly.
            let _ = writeln!(std::io::stderr(), "Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(args, &XdgDirs::from_env())?;
    nexusd::logging::init(config.log_format, &config.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let signals = nexusd::daemon::ShutdownSignals::install()?;
        let daemon = nexusd::start(&config).await?;
        daemon.run_until_signal(signals).await
    })
}

fn doctor(json: bool) -> ExitCode {
    let report = nexus_host::doctor::run(&DoctorOptions {
        default_driver: DefaultDriver::Bwrap,
        ..DoctorOptions::default()
    });
    let text = if json {
        serde_json::to_string_pretty(&report).expect("the report serializes") + "\n"
    } else {
        use std::io::IsTerminal;
        report.render(std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal())
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
