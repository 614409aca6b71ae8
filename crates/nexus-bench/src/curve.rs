//! The density curve: how create latency and memory grow as 1, 10, 100 and 1,000
//! sandboxes exist at once (quick mode stops at 100).
//!
//! For each level L, the population of running, idle sandboxes is first filled up to L
//! with untimed creates, `concurrency` at a time. Then `probes` creates are timed one
//! after the other, each deleted before the next, so the population stays at L while
//! they run: `curve_create_running_at_L` is the latency a new user sees on a host
//! already holding L sandboxes. Memory at each level, once the population has idled for
//! at least five seconds and `MemAvailable` has settled:
//! `curve_host_memory_per_sandbox_at_L` is the drop of the host's `MemAvailable` since
//! the start divided by L (everything a sandbox costs the host: processes, page tables,
//! kernel objects, the daemon's share), and the report's curve section adds the daemon's
//! RSS. Every sandbox is deleted at the end.
//!
//! The start is also read once `MemAvailable` has settled (moved less than 3 MiB over
//! five seconds, or [`SETTLE_LIMIT`] passed), and so is each point's reading. On the
//! development machine (a VM whose virtio balloon has free page reporting) memory freed
//! by the earlier steps, the workspace copies above all, comes back to `MemFree` at 7 to
//! 15 MiB/s for tens of seconds, counted in no `/proc/meminfo` category meanwhile; a
//! start read during that made every point negative (-30 MiB per sandbox at 1, -6 at
//! 10). The curve section says how long the start waited, and a memory row's note says
//! when `MemAvailable` had not settled.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::lab::Lab;
use crate::memory;
use crate::report::{Group, Operation};
use crate::stats::{Samples, Summary};

/// One point of the curve.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// Sandboxes running while the probes were timed.
    pub sandboxes: usize,
    /// Fill creates that failed (the level then holds fewer).
    pub fill_errors: usize,
    /// Wall time of filling up to this level, in seconds.
    pub fill_s: f64,
    /// Timed creates: p50 and p99, in ms.
    pub create_p50_ms: Option<f64>,
    /// The p99.
    pub create_p99_ms: Option<f64>,
    /// Host `MemAvailable` drop since the start, divided by the sandboxes, in MiB.
    pub host_mib_per_sandbox: Option<f64>,
    /// The daemon's RSS, in MiB.
    pub daemon_rss_mib: Option<f64>,
    /// Whether `MemAvailable` had settled when it was read for this point.
    pub memory_settled: bool,
}

/// The whole curve.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// Creates timed at each level.
    pub probes: usize,
    /// Concurrency of the fills.
    pub concurrency: usize,
    /// The points, smallest first.
    pub levels: Vec<Level>,
    /// Deletes at the end that failed.
    pub delete_errors: usize,
    /// Seconds waited for `MemAvailable` to settle before the start was read.
    pub baseline_wait_s: Option<f64>,
    /// Whether it had settled then.
    pub baseline_settled: bool,
}

/// Measures the curve at `levels`, timing `probes` creates at each.
pub async fn measure(
    lab: &Lab,
    daemon_pid: u32,
    levels: &[usize],
    probes: usize,
    concurrency: usize,
) -> (Vec<Operation>, Curve) {
    let concurrency = concurrency.max(1);
    let baseline = settled_mem_available().await;
    let mut population: Vec<String> = Vec::new();
    let mut operations = Vec::new();
    let mut points = Vec::new();
    for &level in levels {
        let started = Instant::now();
        let missing = level.saturating_sub(population.len());
        let results: Vec<anyhow::Result<String>> = futures::stream::iter(0..missing)
            .map(|_| async { lab.create_running().await.map(|info| info.id) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let fill_s = started.elapsed().as_secs_f64();
        let mut fill_errors = 0;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(id) => population.push(id),
                Err(e) => {
                    fill_errors += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        // Settling reads for five seconds at least, so the population idles meanwhile.
        let available = settled_mem_available().await;
        let rss = memory::rss_kib(daemon_pid);

        let mut creates = Samples::default();
        for _ in 0..probes {
            let start = Instant::now();
            let result = lab.create_running().await;
            if let Some(info) = creates.record(start.elapsed(), result) {
                let _ = lab.delete(&info.id).await;
            }
        }
        let summary = Summary::of_durations(&creates.durations);
        let host = match (&baseline, &available) {
            (Some(before), Some(now)) if !population.is_empty() => {
                Some((before.kib as f64 - now.kib as f64) / 1024.0 / population.len() as f64)
            }
            _ => None,
        };
        let unsettled: Vec<String> = [("at the start", &baseline), ("at this point", &available)]
            .into_iter()
            .filter_map(|(when, reading)| match reading {
                Some(r) if !r.settled => Some(format!(
                    "{when} MemAvailable still moved {} MiB/s after {:.0} s",
                    fmt_mib(r.moved_kib_per_s),
                    r.waited_s
                )),
                _ => None,
            })
            .collect();
        let mut create_op = Operation::measured(
            &format!("curve_create_running_at_{level}"),
            Group::Nexus,
            creates,
        );
        if fill_errors > 0 {
            create_op = create_op.with_note(format!(
                "{fill_errors} fill create(s) failed, so {} existed: {}",
                population.len(),
                first_error.unwrap_or_default()
            ));
        }
        operations.push(create_op);
        operations.push(match host.and_then(|mib| Summary::of(&[mib], "MiB")) {
            Some(summary) => Operation {
                name: format!("curve_host_memory_per_sandbox_at_{level}"),
                group: Group::Nexus,
                summary: Some(summary),
                errors: 0,
                first_error: None,
                skipped: None,
                note: (!unsettled.is_empty()).then(|| {
                    format!(
                        "{}: other memory traffic is in the figure",
                        unsettled.join("; ")
                    )
                }),
            },
            None => Operation::skipped(
                &format!("curve_host_memory_per_sandbox_at_{level}"),
                Group::Nexus,
                "MemAvailable is not readable in /proc/meminfo".to_owned(),
            ),
        });
        points.push(Level {
            sandboxes: population.len(),
            fill_errors,
            fill_s,
            create_p50_ms: summary.as_ref().map(|s| s.p50),
            create_p99_ms: summary.as_ref().map(|s| s.p99),
            host_mib_per_sandbox: host,
            daemon_rss_mib: rss.map(|kib| kib as f64 / 1024.0),
            memory_settled: available.as_ref().is_some_and(|r| r.settled),
        });
    }
    let deletes: Vec<anyhow::Result<()>> = futures::stream::iter(&population)
        .map(|id| lab.delete(id))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let curve = Curve {
        probes,
        concurrency,
        levels: points,
        delete_errors: deletes.iter().filter(|r| r.is_err()).count(),
        baseline_wait_s: baseline.as_ref().map(|r| r.waited_s),
        baseline_settled: baseline.as_ref().is_some_and(|r| r.settled),
    };
    (operations, curve)
}

/// A reading of `MemAvailable` taken once it settled, or when waiting ran out.
struct Settled {
    /// `MemAvailable`, in KiB.
    kib: u64,
    /// Whether it moved less than [`SETTLED_KIB`] over the last [`SETTLE_WINDOW`].
    settled: bool,
    /// How much it moved per second over the last window (or since the start), in KiB.
    moved_kib_per_s: u64,
    /// Seconds waited.
    waited_s: f64,
}

/// `MemAvailable` once it has moved less than [`SETTLED_KIB`] over [`SETTLE_WINDOW`]
/// seconds (read every second), or after [`SETTLE_LIMIT`] whatever it does. One quiet
/// second is not enough: memory coming back at 7 MiB/s was once still for a second.
async fn settled_mem_available() -> Option<Settled> {
    let started = Instant::now();
    let mut readings = std::collections::VecDeque::from([mem_available_kib()?]);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = mem_available_kib()?;
        readings.push_back(now);
        if readings.len() > SETTLE_WINDOW + 1 {
            readings.pop_front();
        }
        let oldest = readings.front().copied().unwrap_or(now);
        let moved = now.abs_diff(oldest);
        let settled = readings.len() > SETTLE_WINDOW && moved < SETTLED_KIB;
        if settled || started.elapsed() >= SETTLE_LIMIT {
            return Some(Settled {
                kib: now,
                settled,
                moved_kib_per_s: moved / (readings.len() as u64 - 1).max(1),
                waited_s: started.elapsed().as_secs_f64(),
            });
        }
    }
}

/// Seconds over which `MemAvailable` must stay within [`SETTLED_KIB`].
const SETTLE_WINDOW: usize = 5;

/// How far `MemAvailable` may move over [`SETTLE_WINDOW`] and still count as settled:
/// 3 MiB (an idle machine moves it by about half a MiB a second, either way).
const SETTLED_KIB: u64 = 3 * 1024;

/// The longest wait for `MemAvailable` to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// KiB as MiB, one decimal.
fn fmt_mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// `MemAvailable` of `/proc/meminfo`, in KiB.
fn mem_available_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
