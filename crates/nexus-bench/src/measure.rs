//! The Nexus side of the benchmark: create→running, delete, exec of `true` through the
//! API and through `nexusctl`, pause and resume, idle memory per sandbox, and many sandboxes at once.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nexus_api::SandboxInfo;
use serde::Serialize;

use crate::daemon::{Binaries, Daemon};
use crate::lab::Lab;
use crate::memory;
use crate::report::{Group, Operation};
use crate::stats::{Samples, Summary};

/// How much to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Iterations of each latency measurement.
    pub iterations: usize,
    /// Iterations of the heavy ones: big transfers, workspace snapshots, restores, forks.
    pub heavy_iterations: usize,
    /// Size of the file downloaded and uploaded, in MiB.
    pub transfer_mib: u64,
    /// Size of the big file in the measured workspace, in MiB.
    pub workspace_mib: u64,
    /// Small files in the measured workspace.
    pub small_files: usize,
    /// Sandboxes kept idle for the memory measurement.
    pub idle: usize,
    /// Sandboxes created at once.
    pub many: usize,
    /// How many creates (and execs, deletes) run concurrently in the `many` step and in
    /// the fills of the density curve.
    pub concurrency: usize,
    /// Sandboxes existing at once at each point of the density curve, smallest first.
    pub curve_levels: Vec<usize>,
    /// Creates timed at each point of the density curve.
    pub curve_probes: usize,
}

/// Creates and deletes `n` sandboxes one after the other: `create_running` and `delete`.
pub async fn create_and_delete(lab: &Lab, n: usize) -> [Operation; 2] {
    let mut create = Samples::default();
    let mut delete = Samples::default();
    // One untimed round first: the daemon's first sandbox pays one-time costs.
    if let Ok(info) = lab.create_running().await {
        let _ = lab.delete(&info.id).await;
    }
    for _ in 0..n {
        let start = Instant::now();
        let result = lab.create_running().await;
        if let Some(info) = create.record(start.elapsed(), result) {
            let start = Instant::now();
            let result = lab.delete(&info.id).await;
            delete.record(start.elapsed(), result);
        }
    }
    [
        Operation::measured("create_running", Group::Nexus, create),
        Operation::measured("delete", Group::Nexus, delete),
    ]
}

/// `exec_true_api` and `nexusctl_exec_true`, both on one running sandbox.
pub async fn exec_true(lab: &Lab, daemon: &Daemon, bins: &Binaries, n: usize) -> [Operation; 2] {
    let names = ["exec_true_api", "nexusctl_exec_true"];
    let target = match lab.create_running().await {
        Ok(info) => info,
        Err(e) => {
            let reason = format!("cannot create the sandbox to exec in: {e:#}");
            return names.map(|name| Operation::skipped(name, Group::Nexus, reason.clone()));
        }
    };
    let mut api = Samples::default();
    for i in 0..n + 3 {
        let start = Instant::now();
        let result = lab.exec_true(&target.id).await;
        // The first three warm the connection and the agent up.
        if i >= 3 {
            api.record(start.elapsed(), result);
        }
    }
    let mut cli = Samples::default();
    for i in 0..=n {
        let start = Instant::now();
        let result = nexusctl_exec(&bins.nexusctl, daemon, &target.id).await;
        if i >= 1 {
            cli.record(start.elapsed(), result);
        }
    }
    let _ = lab.delete(&target.id).await;
    [
        Operation::measured(names[0], Group::Nexus, api),
        Operation::measured(names[1], Group::Nexus, cli),
    ]
}

/// `pause` and `resume` through the API, alternately, on one running sandbox with a
/// process in it.
pub async fn pause_resume(lab: &Lab, n: usize) -> [Operation; 2] {
    let names = ["pause", "resume"];
    let target = match lab.create_running().await {
        Ok(info) => info,
        Err(e) => {
            let reason = format!("cannot create the sandbox to pause: {e:#}");
            return names.map(|name| Operation::skipped(name, Group::Nexus, reason.clone()));
        }
    };
    let mut pause = Samples::default();
    let mut resume = Samples::default();
    for _ in 0..n {
        let start = Instant::now();
        let result = lab
            .client
            .pause_sandbox(&target.id)
            .await
            .map_err(anyhow::Error::from);
        if pause.record(start.elapsed(), result).is_none() {
            break;
        }
        let start = Instant::now();
        let result = lab
            .client
            .resume_sandbox(&target.id)
            .await
            .map_err(anyhow::Error::from);
        if resume.record(start.elapsed(), result).is_none() {
            break;
        }
    }
    let _ = lab.delete(&target.id).await;
    [
        Operation::measured(names[0], Group::Nexus, pause),
        Operation::measured(names[1], Group::Nexus, resume),
    ]
}

/// Host memory of idle sandboxes and the daemon's growth while they exist.
#[derive(Debug, Clone, Serialize)]
pub struct IdleMemory {
    /// Sandboxes asked for.
    pub requested: usize,
    /// Sandboxes that ran and were measured.
    pub measured: usize,
    /// Creates that failed.
    pub create_errors: usize,
    /// Pss per sandbox, in MiB.
    pub per_sandbox: Option<Summary>,
    /// Memory charged to each sandbox's memory cgroup, in MiB.
    pub cgroup_per_sandbox: Option<Summary>,
    /// Mean host processes per sandbox.
    pub processes_per_sandbox: f64,
    /// How the processes were found (`cgroup`, `uid` or both).
    pub found_by: String,
    /// Daemon RSS before the sandboxes were created, in MiB.
    pub daemon_rss_before_mib: Option<f64>,
    /// Daemon RSS while they were idle, in MiB.
    pub daemon_rss_after_mib: Option<f64>,
    /// Daemon RSS growth divided by the sandboxes, in MiB.
    pub daemon_growth_per_sandbox_mib: Option<f64>,
    /// The first create failure.
    pub first_error: Option<String>,
}

/// Creates `k` sandboxes, lets them idle for a second, measures, deletes them.
pub async fn idle_memory(lab: &Lab, daemon_pid: u32, k: usize) -> ([Operation; 2], IdleMemory) {
    let rss_before = memory::rss_kib(daemon_pid);
    let mut creates = Samples::default();
    let mut sandboxes: Vec<SandboxInfo> = Vec::new();
    for _ in 0..k {
        let start = Instant::now();
        let result = lab.create_running().await;
        sandboxes.extend(creates.record(start.elapsed(), result));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = memory::rss_kib(daemon_pid);
    let usage = memory::measure(&sandboxes);
    for sandbox in &sandboxes {
        let _ = lab.delete(&sandbox.id).await;
    }

    let mib: Vec<f64> = usage.iter().map(|u| u.pss_kib as f64 / 1024.0).collect();
    let per_sandbox = Summary::of(&mib, "MiB");
    let charged: Vec<f64> = usage
        .iter()
        .filter_map(|u| u.cgroup_kib)
        .map(|kib| kib as f64 / 1024.0)
        .collect();
    let cgroup_per_sandbox = Summary::of(&charged, "MiB");
    let mut found_by: Vec<&str> = usage.iter().map(|u| u.found_by).collect();
    found_by.sort_unstable();
    found_by.dedup();
    let processes = usage.iter().map(|u| u.processes).sum::<usize>();
    let to_mib = |kib: u64| kib as f64 / 1024.0;
    let growth = match (rss_before, rss_after) {
        (Some(b), Some(a)) if !sandboxes.is_empty() => {
            Some((a as f64 - b as f64) / 1024.0 / sandboxes.len() as f64)
        }
        _ => None,
    };
    let idle = IdleMemory {
        requested: k,
        measured: usage.len(),
        create_errors: creates.errors,
        per_sandbox: per_sandbox.clone(),
        cgroup_per_sandbox: cgroup_per_sandbox.clone(),
        processes_per_sandbox: processes as f64 / usage.len().max(1) as f64,
        found_by: found_by.join("+"),
        daemon_rss_before_mib: rss_before.map(to_mib),
        daemon_rss_after_mib: rss_after.map(to_mib),
        daemon_growth_per_sandbox_mib: growth,
        first_error: creates.first_error.clone(),
    };
    let pss = Operation {
        name: "idle_memory_per_sandbox".into(),
        group: Group::Nexus,
        summary: per_sandbox,
        errors: creates.errors,
        first_error: creates.first_error,
        skipped: None,
        note: None,
    };
    let cgroup = Operation {
        name: "idle_cgroup_charge_per_sandbox".into(),
        group: Group::Nexus,
        skipped: cgroup_per_sandbox
            .is_none()
            .then(|| "no memory cgroup found for the sandboxes".to_owned()),
        summary: cgroup_per_sandbox,
        errors: 0,
        first_error: None,
        note: None,
    };
    ([pss, cgroup], idle)
}

/// What happened when many sandboxes were created at once.
#[derive(Debug, Clone, Serialize)]
pub struct Many {
    /// Sandboxes asked for.
    pub count: usize,
    /// Requests in flight at a time.
    pub concurrency: usize,
    /// Creates that failed.
    pub create_errors: usize,
    /// Wall time of all creates, in seconds.
    pub create_total_s: f64,
    /// Execs of `true` that failed.
    pub exec_errors: usize,
    /// Wall time of all execs, in seconds.
    pub exec_total_s: f64,
    /// Deletes that failed.
    pub delete_errors: usize,
    /// Wall time of all deletes, in seconds.
    pub delete_total_s: f64,
}

/// Creates `m` sandboxes `concurrency` at a time, runs `true` in each, deletes them all.
pub async fn many(lab: &Lab, m: usize, concurrency: usize) -> ([Operation; 3], Many) {
    let concurrency = concurrency.max(1);

    let started = Instant::now();
    let results: Vec<(Duration, anyhow::Result<SandboxInfo>)> = futures::stream::iter(0..m)
        .map(|_| timed(lab.create_running()))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let create_total = started.elapsed();
    let mut creates = Samples::default();
    let ids: Vec<String> = results
        .into_iter()
        .filter_map(|(elapsed, result)| creates.record(elapsed, result).map(|info| info.id))
        .collect();

    let started = Instant::now();
    let mut execs = Samples::default();
    let results: Vec<(Duration, anyhow::Result<()>)> = futures::stream::iter(&ids)
        .map(|id| timed(lab.exec_true(id)))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let exec_total = started.elapsed();
    for (elapsed, result) in results {
        execs.record(elapsed, result);
    }

    let started = Instant::now();
    let mut deletes = Samples::default();
    let results: Vec<(Duration, anyhow::Result<()>)> = futures::stream::iter(&ids)
        .map(|id| timed(lab.delete(id)))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let delete_total = started.elapsed();
    for (elapsed, result) in results {
        deletes.record(elapsed, result);
    }

    let summary = Many {
        count: m,
        concurrency,
        create_errors: creates.errors,
        create_total_s: create_total.as_secs_f64(),
        exec_errors: execs.errors,
        exec_total_s: exec_total.as_secs_f64(),
        delete_errors: deletes.errors,
        delete_total_s: delete_total.as_secs_f64(),
    };
    let operations = [
        Operation::measured("many_create_running", Group::Nexus, creates),
        Operation::measured("many_exec_true_api", Group::Nexus, execs),
        Operation::measured("many_delete", Group::Nexus, deletes),
    ];
    (operations, summary)
}

/// `nexusctl exec ID -- true` as a whole process, told where the daemon is by its
/// environment only.
async fn nexusctl_exec(nexusctl: &Path, daemon: &Daemon, id: &str) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(nexusctl)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", daemon.config_home())
        .env("XDG_CONFIG_HOME", daemon.config_home())
        .env("NEXUS_URL", &daemon.url)
        .env("NEXUS_TOKEN", &daemon.token)
        .args(["exec", id, "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "nexusctl exec {id} -- true: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

async fn timed<T>(work: impl Future<Output = T>) -> (Duration, T) {
    let start = Instant::now();
    let value = work.await;
    (start.elapsed(), value)
}
