//! `nexus-bench`: starts a private `nexusd`, measures sandbox operations and their peers
//! (plain bwrap, fork+exec, podman) in the same run, and prints the figures beside the
//! targets of issue 3 (and of issues 4, 5 and 8, marked so). It measures and prints; it
//! never asserts a timing.
//!
//! # Files and workspaces (issue 4)
//!
//! - **File API** (`file_api`), on one running sandbox through `nexus-client`'s file
//!   methods: `file_read_1k` (`read_file` of 1 KiB), `file_write_1k` (`write_file`, an
//!   atomic replace), `file_stat_100` (`stat_files` of 100 paths in one call, files
//!   written 200 ms before so their hashes are remembered) and `file_stat_100_fresh`
//!   (the same with every file touched just before, so every file is hashed), and
//!   `file_download_1g` / `file_upload_1g` (`read_file_stream` / `write_file_stream` in
//!   1 MiB chunks) as MiB/s. Quick mode moves 256 MiB instead of 1 GiB and the note says
//!   so. For MiB/s rows the percentiles are of the rate, so `max` is the fastest attempt.
//! - **Output streaming** (`streaming`): `head -c` of the same size from `/dev/zero` in a
//!   fresh sandbox, its stdout streamed through a streamed exec, as MiB/s:
//!   `exec_stream_1g` in the binary form `nexusctl exec` reads, `exec_stream_ndjson_1g`
//!   in the default NDJSON form (base64 stdout, decoded).
//! - **Workspaces** (`workspaces`): a sandbox on workspace `bench-ws` fills it by exec
//!   (`head -c … /dev/zero > blob` plus small files: 256 MiB + 1,000 quick, 1 GiB + 10,000
//!   full); then `snapshot`, `workspace_fork` (fork deleted after each) and `restore`
//!   (which swaps the tree in under the running writer) of one base snapshot, through
//!   the API. These run on the daemon's own data directory; the note names the backend
//!   the daemon reported (`copy` on ext4, `reflink` on XFS, `btrfs`).
//! - **btrfs** (`btrfs`): as root with `mkfs.btrfs`, a sparse image (4 GiB or more) is
//!   formatted and loop-mounted in a temporary directory, a second `nexusd` keeps its
//!   `XDG_DATA_HOME` there, and the same three run as `snapshot_btrfs`, `restore_btrfs`,
//!   `workspace_fork_btrfs`. That daemon is stopped and the image unmounted (lazily when
//!   busy) and deleted afterwards, by a guard even on errors. Otherwise they are skipped
//!   with the reason. Their targets (≤ 50 ms for 1 GiB) are judged in full mode only.
//!
//! # MCP (issue 6)
//!
//! After the file API, `mcp` opens an MCP session over Streamable HTTP bound to a fresh
//! sandbox (the official Rust client, as an agent would) and times `tools/call` of
//! `file_read` on 1 KiB and of `run_command` with `true`; the report sets them beside
//! `file_read_1k` and `exec_true_api` through REST, measured in the same run.
//!
//! # Network egress (issue 5)
//!
//! Last, as root (otherwise skipped: the proxy makes a network namespace), `egress` runs
//! `nexus-net`'s policy proxy in the bench itself, attached to a fresh network namespace
//! as nexusd attaches it to a sandbox's, with an audit sink that drops the records (so
//! without the daemon's network log). Servers on the host's loopback, started by the
//! bench, echo one byte or send zeros. Each connect row is 10 untimed then 200 (quick) or
//! 1,000 (full) connects, each timed until one byte has been echoed back:
//! `net_connect_direct` (peer: from the host's namespace straight to the server),
//! `net_connect_transparent` (from inside the namespace to the synthetic address its
//! resolver gives `bench.test`, captured by the nftables rules) and `net_connect_proxy`
//! (inside, `CONNECT bench.test:PORT` to `127.0.0.1:3128`, the `200` head read, then the
//! byte). `net_download_direct` (peer) and `net_download_transparent` read 1 GiB (256 MiB
//! quick) per connection with a 1 MiB buffer, as MiB/s. The connect rows stand beside
//! the direct one in the peers table; the transparent download has a target of
//! ≥ 1024 MiB/s.
//!
//! # Density curve (issue 8)
//!
//! After `many`, on the same daemon, `curve` measures how create latency and memory grow
//! with the sandboxes that exist at once: 1, 10 and 100 in quick mode, then 1,000 in full
//! mode (`--curve-max N`: the powers of ten up to N, and N). At each point the population
//! of running, idle sandboxes is filled up to it with untimed creates, `--concurrency` at
//! a time, and kept; then `curve_create_running_at_L` times 10 (quick) or 100 (full)
//! creates one after the other, each deleted before the next, so L sandboxes exist while
//! each runs. `curve_host_memory_per_sandbox_at_L` is the drop of the host's
//! `MemAvailable` since the curve started, divided by L (processes, page tables, kernel
//! objects and the daemon's share alike). Both readings wait until `MemAvailable` has
//! settled (less than 3 MiB over five seconds, two minutes at most): on a VM memory freed
//! by the earlier steps can come back for tens of seconds, which made the figures
//! negative; the start typically waits 20 to 40 s in quick mode. The report's `curve:`
//! section adds the daemon's RSS and each fill's wall time and errors; every sandbox is
//! deleted at the end. Two targets come from it: create p99 ≤ 50 ms with 1,000 idle
//! sandboxes (judged only when the curve reached 1,000, so not in quick mode), and an
//! idle overhead ≤ 3 MiB per sandbox at the largest point (judged from 100 sandboxes
//! and with `MemAvailable` settled: it is the whole host's figure, which moves by a few
//! MiB on its own).
//!
//! # Warm pool (issue 8)
//!
//! After the main daemon stops, `pooled` starts another whose `nexus.yaml` keeps two
//! default sandboxes ready and times `create_running_pooled`: the `create_running`
//! request, each time once the pool is full again, noting how many creates the pool
//! served and the memory its full complement of sandboxes uses.
//!
//! Heavy operations (transfers, snapshots, restores, forks, downloads) run
//! `heavy_iterations` times: at most 5 in quick mode, 10 in full mode.

mod args;
mod btrfs;
mod cleanup;
mod curve;
mod daemon;
mod egress;
mod file_api;
mod lab;
mod machine;
mod mcp;
mod measure;
mod memory;
mod peers;
mod pooled;
mod report;
mod stats;
mod streaming;
mod workspaces;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;

use crate::args::Args;
use crate::curve::Curve;
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
        measured = measure_nexus(&lab, &daemon, &bins, &plan) => Some(measured),
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
    ids.extend(daemon.sandbox_ids());
    notes.extend(cleanup::reap(&ids).await);
    drop(daemon);
    let Some((mut operations, idle, many, curve)) = measured else {
        for note in &notes {
            progress(note);
        }
        bail!("interrupted; the sandboxes of this run are deleted and nexusd is stopped");
    };

    progress(&format!(
        "create_running from a warm pool of 2, {} times",
        plan.iterations
    ));
    tokio::select! {
        (pooled_op, pooled_notes) = pooled::measure(&bins, plan.iterations) => {
            operations.push(pooled_op);
            notes.extend(pooled_notes);
        }
        _ = tokio::signal::ctrl_c() => bail!("interrupted while measuring the warm pool"),
    }

    progress(&format!(
        "workspaces on btrfs: snapshot, fork and restore, {} times each",
        plan.heavy_iterations
    ));
    tokio::select! {
        (btrfs_ops, btrfs_notes) = btrfs::measure(&bins, &plan) => {
            operations.extend(btrfs_ops);
            notes.extend(btrfs_notes);
        }
        _ = tokio::signal::ctrl_c() => bail!("interrupted while measuring workspaces on btrfs"),
    }

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

    progress(&format!(
        "egress: {} connects direct, captured and through CONNECT; {} MiB down direct and through the proxy, {} times each",
        egress::connects(&plan),
        plan.transfer_mib,
        plan.heavy_iterations
    ));
    tokio::select! {
        egress = egress::measure(&plan) => operations.extend(egress),
        _ = tokio::signal::ctrl_c() => bail!("interrupted while measuring network egress"),
    }

    let mut report = Report {
        version: env!("CARGO_PKG_VERSION"),
        mode: args.mode(),
        machine,
        plan,
        operations,
        idle_memory: Some(idle),
        many: Some(many),
        curve: Some(curve),
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
    plan: &Plan,
) -> (Vec<Operation>, IdleMemory, Many, Curve) {
    let n = plan.iterations;
    progress(&format!("create_running and delete, {n} times"));
    let mut operations = Vec::from(measure::create_and_delete(lab, n).await);
    progress(&format!(
        "exec `true` through the API and nexusctl, {n} times each"
    ));
    operations.extend(measure::exec_true(lab, daemon, bins, n).await);
    progress(&format!("pause and resume, {n} times each"));
    operations.extend(measure::pause_resume(lab, n).await);
    progress(&format!(
        "file API: 1 KiB reads, writes, stats of 100 files, {n} times each; {} MiB down and up, {} times each",
        plan.transfer_mib, plan.heavy_iterations
    ));
    operations.extend(file_api::measure(lab, plan).await);
    progress(&format!(
        "output streaming: `head -c` of {} MiB from /dev/zero through a streamed exec, {} times",
        plan.transfer_mib, plan.heavy_iterations
    ));
    operations.extend(streaming::measure(lab, plan).await);
    progress(&format!(
        "MCP over HTTP: tools/call of file_read (1 KiB) and run_command `true`, {n} times each"
    ));
    operations.extend(mcp::measure(lab, &daemon.url, &daemon.token, n).await);
    progress(&format!(
        "workspaces ({}): snapshot, fork and restore, {} times each",
        workspaces::contents(plan),
        plan.heavy_iterations
    ));
    operations.extend(workspaces::measure(lab, plan, "").await);
    progress(&format!("idle memory of {} sandboxes", plan.idle));
    let (idle_ops, idle) = measure::idle_memory(lab, daemon.pid(), plan.idle).await;
    operations.extend(idle_ops);
    progress(&format!(
        "{} sandboxes at once, {} at a time",
        plan.many, plan.concurrency
    ));
    let (many_ops, many) = measure::many(lab, plan.many, plan.concurrency).await;
    operations.extend(many_ops);
    progress(&format!(
        "density curve at {} sandboxes at once (filled {} at a time), {} creates timed at each",
        list(&plan.curve_levels),
        plan.concurrency,
        plan.curve_probes
    ));
    let (curve_ops, curve) = curve::measure(
        lab,
        daemon.pid(),
        &plan.curve_levels,
        plan.curve_probes,
        plan.concurrency,
    )
    .await;
    operations.extend(curve_ops);
    (operations, idle, many, curve)
}

/// `1, 10 and 100`.
fn list(levels: &[usize]) -> String {
    let names: Vec<String> = levels.iter().map(ToString::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// A progress line on stderr, so stdout stays the report alone.
fn progress(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "nexus-bench: {message}");
}

fn fail(error: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "nexus-bench: error: {error:#}");
    ExitCode::FAILURE
}
