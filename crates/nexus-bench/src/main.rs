//! `nexus-bench`: starts a private `nexusd`, measures sandbox operations and their peers
//! (plain bwrap, fork+exec, podman) in the same run, and prints the figures beside the
//! targets of issue 3. It measures and prints; it never asserts a timing.

mod args;
mod cleanup;
mod daemon;
mod lab;
mod machine;
mod measure;
mod memory;
mod peers;
mod report;
mod stats;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;

use crate::args::Args;
use crate::daemon::{Binaries, Daemon};
use crate::lab::Lab;
use crate::machine::Machine;
use crate::measure::{IdleMemory, Many, Plan};
use crate::report::{Operation, Report};

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread is plenty for a client of one local daemon, and leaves the
    // machine's cores to the daemon and the sandboxes being measured.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = args.plan();
    let bins = Binaries::locate()?;
    let machine = Machine::probe();

    progress(&format!("starting {}", bins.nexusd.display()));
    let mut daemon = Daemon::start(&bins).await?;
    let lab = Lab::new(&daemon.url, &daemon.token)?;
    let measured = tokio::select! {
        measured = measure_nexus(&lab, &daemon, &bins, plan) => Some(measured),
        _ = tokio::signal::ctrl_c() => None,
    };

    progress("deleting every sandbox and stopping nexusd");
    let mut notes = Vec::new();
    let (deleted, failures) = lab.delete_all().await;
    if deleted > 0 {
        notes.push(format!(
            "{deleted} sandbox(es) were left after the measurements and deleted at the end"
        ));
    }
    notes.extend(failures.into_iter().map(|f| format!("cleanup: {f}")));
    let stopped = daemon.stop().await;
    let mut ids = lab.created_ids();
    ids.extend(daemon.logged_sandbox_ids());
    notes.extend(cleanup::reap(&ids).await);
    drop(daemon);
    let Some((mut operations, idle, many)) = measured else {
        for note in &notes {
            progress(note);
        }
        bail!("interrupted; the sandboxes of this run are deleted and nexusd is stopped");
    };

    progress("peers: fork+exec, bwrap, podman");
    let peers = async {
        let mut peers = vec![
            peers::fork_exec_true(plan.iterations).await,
            peers::bwrap_spawn(plan.iterations).await,
        ];
        peers.extend(peers::podman(plan.iterations).await);
        peers
    };
    tokio::select! {
        peers = peers => operations.extend(peers),
        _ = tokio::signal::ctrl_c() => bail!("interrupted while measuring the peers"),
    }

    let mut report = Report {
        version: env!("CARGO_PKG_VERSION"),
        mode: args.mode(),
        machine,
        plan,
        operations,
        idle_memory: Some(idle),
        many: Some(many),
        comparisons: Vec::new(),
        targets: Vec::new(),
        notes,
        wall_s: started.elapsed().as_secs_f64(),
    };
    report.finish();
    let mut out = std::io::stdout().lock();
    report.print(&mut out).context("cannot write the report")?;
    out.flush().context("cannot write the report")?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        progress(&format!("wrote {}", path.display()));
    }
    stopped.context("nexusd did not stop cleanly")
}

/// Every Nexus measurement, in an order where each starts from an idle daemon.
async fn measure_nexus(
    lab: &Lab,
    daemon: &Daemon,
    bins: &Binaries,
    plan: Plan,
) -> (Vec<Operation>, IdleMemory, Many) {
    let n = plan.iterations;
    progress(&format!("create_running and delete, {n} times"));
    let mut operations = Vec::from(measure::create_and_delete(lab, n).await);
    progress(&format!(
        "exec `true` through the API and nexusctl, {n} times each"
    ));
    operations.extend(measure::exec_true(lab, daemon, bins, n).await);
    progress(&format!("pause and resume, {n} times each"));
    operations.extend(measure::pause_resume(lab, n).await);
    progress(&format!("idle memory of {} sandboxes", plan.idle));
    let (idle_ops, idle) = measure::idle_memory(lab, daemon.pid(), plan.idle).await;
    operations.extend(idle_ops);
    progress(&format!(
        "{} sandboxes at once, {} at a time",
        plan.many, plan.concurrency
    ));
    let (many_ops, many) = measure::many(lab, plan.many, plan.concurrency).await;
    operations.extend(many_ops);
    (operations, idle, many)
}

/// A progress line on stderr, so stdout stays the report alone.
fn progress(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "nexus-bench: {message}");
}

fn fail(error: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "nexus-bench: error: {error:#}");
    ExitCode::FAILURE
}
