//! Create→running from the warm pool (issue 8): a second `nexusd` whose `nexus.yaml`
//! keeps [`POOL_SIZE`] default sandboxes (`host`, bwrap, default limits) ready, and
//! `create_running_pooled`, the same request as `create_running`, timed only when the
//! pool is full again, so each create can be served by it. The note says how many were
//! (their ids are ones the daemon logged as ready in its pool) and what the full pool's
//! sandboxes cost in memory (their cgroups' `memory.current`, from `GET /v1/status`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cleanup;
use crate::daemon::{Binaries, Daemon};
use crate::lab::Lab;
use crate::report::{Group, Operation};
use crate::stats::Samples;

/// The operation measured here.
const NAME: &str = "create_running_pooled";
/// Sandboxes the measured pool keeps ready.
const POOL_SIZE: usize = 2;
/// How long the pool may take to fill up again.
const REFILL_TIMEOUT: Duration = Duration::from_secs(60);

/// Measures `create_running_pooled` over `n` creates, or says why not, plus notes.
pub async fn measure(bins: &Binaries, n: usize) -> (Operation, Vec<String>) {
    let yaml = format!("warm_pool:\n  - size: {POOL_SIZE}\n");
    let mut daemon = match Daemon::start_with_config(bins, &yaml).await {
        Ok(daemon) => daemon,
        Err(e) => {
            let reason = format!("cannot start nexusd with a warm pool: {e:#}");
            return (Operation::skipped(NAME, Group::Nexus, reason), Vec::new());
        }
    };
    let lab = match Lab::new(&daemon.url, &daemon.token) {
        Ok(lab) => lab,
        Err(e) => {
            let _ = daemon.stop().await;
            return (
                Operation::skipped(NAME, Group::Nexus, format!("{e:#}")),
                Vec::new(),
            );
        }
    };
    let operation = match creates(&lab, &daemon, n).await {
        Ok(operation) => operation,
        Err(e) => Operation::skipped(NAME, Group::Nexus, format!("{e:#}")),
    };

    let mut notes = Vec::new();
    let (_, failures) = lab.delete_all().await;
    notes.extend(
        failures
            .into_iter()
            .map(|f| format!("warm pool cleanup: {f}")),
    );
    if let Err(e) = daemon.stop().await {
        notes.push(format!("warm pool: nexusd did not stop cleanly: {e:#}"));
    }
    // Sandboxes outlive their daemon, the pool's too: the ones still waiting are
    // expected leftovers, reaped without a note; the user's must have been deleted.
    let created = lab.created_ids();
    let waiting: BTreeSet<String> = daemon
        .logged_pool_ids()
        .difference(&created)
        .cloned()
        .collect();
    cleanup::reap(&waiting).await;
    let mut ids = created;
    ids.extend(daemon.sandbox_ids());
    notes.extend(
        cleanup::reap(&ids)
            .await
            .into_iter()
            .map(|note| format!("warm pool: {note}")),
    );
    (operation, notes)
}

/// Waits for a full pool, notes its memory, then times `n` creates (after one untimed),
/// each deleted untimed and followed by a wait for the pool to refill.
async fn creates(lab: &Lab, daemon: &Daemon, n: usize) -> anyhow::Result<Operation> {
    let memory = wait_full(lab).await?;
    let mut samples = Samples::default();
    let mut served = 0;
    for i in 0..=n {
        wait_full(lab).await?;
        let pooled = daemon.logged_pool_ids();
        let start = Instant::now();
        let result = lab.create_running().await;
        let elapsed = start.elapsed();
        let id = result.as_ref().ok().map(|info| info.id.clone());
        if i > 0 {
            samples.record(elapsed, result);
        }
        if let Some(id) = id {
            if i > 0 && pooled.contains(&id) {
                served += 1;
            }
            lab.delete(&id).await?;
        }
    }
    let memory = match memory {
        Some(bytes) => format!(
            "the full pool's {POOL_SIZE} sandboxes use {:.1} MiB ({:.1} MiB each)",
            mib(bytes),
            mib(bytes) / POOL_SIZE as f64
        ),
        None => "this host cannot measure the pool's memory".into(),
    };
    Ok(Operation::measured(NAME, Group::Nexus, samples).with_note(format!(
        "{served} of {n} creates served by a warm pool of {POOL_SIZE} (host image, default limits), refilled before each; {memory}"
    )))
}

/// Polls `GET /v1/status` until the pool is full; returns the memory its sandboxes use.
async fn wait_full(lab: &Lab) -> anyhow::Result<Option<u64>> {
    let deadline = Instant::now() + REFILL_TIMEOUT;
    loop {
        let status = lab
            .client
            .status()
            .await
            .context("cannot read the daemon's status")?;
        let Some(pool) = status.warm_pool.first() else {
            bail!("the daemon reports no warm pool; was nexus.yaml read?");
        };
        if pool.ready >= POOL_SIZE {
            return Ok(pool.memory_bytes);
        }
        if Instant::now() > deadline {
            bail!(
                "the warm pool did not fill within {REFILL_TIMEOUT:?} ({} of {POOL_SIZE} ready){}",
                pool.ready,
                pool.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
