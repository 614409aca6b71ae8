//! The warm pool: sandboxes started ahead of need, per profile, so that a matching
//! `create` takes one (a store transaction and a host-name change) instead of waiting
//! for a start (about 18 ms, mostly bubblewrap).
//!
//! - A *profile* ([`PoolProfile`], from `warm_pool` in `nexus.yaml`) is an image, a
//!   driver, limits and a network policy, all after defaults, and a size. A create
//!   request matches a profile when it starts the sandbox, names no workspace and no
//!   mounts, and its image, driver, limits and network policy after defaults equal the
//!   profile's exactly (rule lists in the same order). Name, env, labels and TTL may be
//!   anything: the environment is applied per process, so the agent needs nothing new.
//! - A pooled sandbox is a real one, started by the normal path with its own fresh
//!   workspace and uid, and recorded in the store, so a crash orphans nothing. It and
//!   its workspace carry *placeholder names* (`0pool-<16 hex>`, see
//!   [`SandboxName::placeholder`]) that no user name can take; the placeholder is the
//!   pool marker, so the schema needs no column for it. Pooled sandboxes and their
//!   workspaces are hidden: not listed, not found by id or name, not in the metrics'
//!   sandbox series, not in an image's users.
//! - Claiming validates the request first (so it is refused exactly as a cold create
//!   would be), then renames sandbox and workspace in one store transaction (name, env,
//!   labels, TTL, and every time set to now, so the TTL counts from the claim), then asks
//!   the driver to rename the host. A pooled sandbox whose agent is gone is discarded and
//!   the next one tried; a claim that fails otherwise discards its sandbox and the
//!   request falls back to a cold create.
//! - One task per profile tops the pool up at start and after each claim, one sandbox
//!   at a time daemon-wide (a burst of cold creates is never starved of both cores).
//!   Failures are logged (a warning when the reason changes) and retried after 1 s,
//!   doubling up to a minute, never in a spin.
//! - At daemon stop, the top-ups start no more sandboxes, and the stop waits (within its
//!   timeout) for the start under way, so a stopped daemon leaves each pooled sandbox
//!   recorded whole or not begun. Cut off by the runtime's teardown instead, a start
//!   would fail against the closed store and leave its record behind.
//! - At daemon start, pooled sandboxes of the previous run are deleted (processes,
//!   cgroups, workspaces) and the pool is filled fresh: an idle sandbox is cheaper to
//!   start again than to adopt, and a fresh one is known to be clean. This includes one
//!   whose daemon was killed mid-start: its record has no runtime handle yet, but its
//!   processes are found through its cgroup, which the driver names after the id.
//!   `tick` replaces a pooled sandbox that died; it is never reported crashed.
//! - Deleting an image drains its pools first; their profiles then retry (with the
//!   backoff above) until an image of that name exists again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{CreateSandbox, SandboxService, SandboxView, ServiceError};
use crate::NetworkSpec;
use crate::sandbox::{
    DriverKind, Limits, Sandbox, SandboxId, SandboxName, SandboxSpec, SandboxState,
};
use crate::store::{PoolClaim, StoreError};
use crate::workspace::{Workspace, WorkspaceName};

/// The most sandboxes one profile may keep ready.
pub const MAX_POOL_SIZE: usize = 64;

/// The first wait after a failed top-up; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two top-up attempts that fail.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One kind of sandbox the pool keeps ready, every field after defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolProfile {
    /// The image, by name (`host` for the built-in one).
    pub image: String,
    /// The driver.
    pub driver: DriverKind,
    /// The limits, `tmp_mib` included.
    pub limits: Limits,
    /// The network policy.
    pub network: NetworkSpec,
    /// How many sandboxes to keep ready, at most [`MAX_POOL_SIZE`].
    pub size: usize,
}

/// How one profile's pool stands, for `GET /v1/status` and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    /// The profile.
    pub profile: PoolProfile,
    /// Sandboxes ready to be claimed.
    pub ready: usize,
    /// Memory the ready sandboxes use together (their cgroups' `memory.current`), bytes;
    /// `None` when the host cannot measure it.
    pub memory_bytes: Option<u64>,
    /// Why the last top-up failed, while the pool cannot be filled.
    pub error: Option<String>,
}

/// The running top-up tasks, from [`SandboxService::spawn_warm_pool`]. Dropping this
/// aborts them wherever they are; [`Self::stop`] lets a start under way finish.
#[derive(Debug)]
pub struct WarmPoolTasks {
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl WarmPoolTasks {
    /// Starts no more pooled sandboxes from now on; a start under way goes on.
    pub fn stop_starting(&self) {
        self.stop.cancel();
    }

    /// [`Self::stop_starting`], then waits up to `timeout` for the start under way, so
    /// that none is left half-made. Past `timeout` the tasks are aborted (what they
    /// leave is removed at the next daemon start). Returns whether they ended in time.
    pub async fn stop(mut self, timeout: Duration) -> bool {
        self.stop_starting();
        let ended = tokio::time::timeout(timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !ended {
            self.tasks.abort_all();
        }
        ended
    }
}

impl PoolProfile {
    /// Whether a validated create request's spec is this profile's kind of sandbox.
    fn matches(&self, spec: &SandboxSpec) -> bool {
        spec.image == self.image
            && spec.driver == self.driver
            && spec.limits == self.limits
            && spec.network == self.network
    }
}

/// Every profile's ready sandboxes, and the one-start-at-a-time gate of the top-ups.
#[derive(Debug)]
pub(super) struct WarmPool {
    slots: Vec<Arc<Slot>>,
    /// Held by each pooled start, and by an image delete while it drains and deletes.
    starting: Semaphore,
}

impl WarmPool {
    pub(super) fn new(profiles: &[PoolProfile]) -> Self {
        Self {
            slots: profiles
                .iter()
                .map(|profile| {
                    Arc::new(Slot {
                        profile: profile.clone(),
                        ready: Mutex::default(),
                        wake: Notify::new(),
                        error: Mutex::default(),
                    })
                })
                .collect(),
            starting: Semaphore::new(1),
        }
    }

    /// Takes `id` out of whichever pool holds it ready; `None` when none does (it is
    /// being started or claimed right now, or it is not pooled).
    fn take_ready(&self, id: &SandboxId) -> Option<(Arc<Slot>, Sandbox)> {
        self.slots.iter().find_map(|slot| {
            let mut ready = slot.ready();
            let at = ready.iter().position(|s| &s.id == id)?;
            ready.remove(at).map(|s| (slot.clone(), s))
        })
    }

    fn is_ready(&self, id: &SandboxId) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.ready().iter().any(|s| &s.id == id))
    }
}

/// One profile's pool.
#[derive(Debug)]
struct Slot {
    profile: PoolProfile,
    /// Running sandboxes nobody has claimed, oldest first, as recorded when they became
    /// ready (nothing changes a pooled sandbox's record until it is claimed).
    ready: Mutex<VecDeque<Sandbox>>,
    /// Wakes the top-up task: a sandbox was taken.
    wake: Notify,
    /// Why the last top-up failed; `None` after a success.
    error: Mutex<Option<String>>,
}

impl Slot {
    fn ready(&self) -> std::sync::MutexGuard<'_, VecDeque<Sandbox>> {
        self.ready.lock().expect("pool lock is never poisoned")
    }

    fn is_full(&self) -> bool {
        self.ready().len() >= self.profile.size
    }

    /// Records a failed top-up; returns whether the reason is new (worth a warning).
    fn failed(&self, reason: String) -> bool {
        let mut error = self.error.lock().expect("pool lock is never poisoned");
        let new = error.as_deref() != Some(reason.as_str());
        *error = Some(reason);
        new
    }

    /// Records a successful top-up; returns whether it ends a run of failures.
    fn succeeded(&self) -> bool {
        self.error
            .lock()
            .expect("pool lock is never poisoned")
            .take()
            .is_some()
    }
}

/// How one attempt at claiming a pooled sandbox ended.
enum Claimed {
    /// The request has its sandbox.
    Done(Box<SandboxView>),
    /// A cold create would be refused the same way; nothing was changed.
    Refused(ServiceError),
    /// The pooled sandbox was dead and is discarded: try the next one.
    Dead,
    /// Something else failed: create cold.
    Failed,
}

impl SandboxService {
    /// Deletes what is left of the previous run's pool: pooled sandboxes (processes,
    /// cgroups, records, workspaces) and pool workspaces that no sandbox uses. Call at
    /// startup, after [`Self::adopt`] and before [`Self::spawn_warm_pool`]. Returns how
    /// many sandboxes were removed.
    pub async fn remove_pool_leftovers(&self) -> Result<usize, ServiceError> {
        let mut removed = 0;
        for sandbox in self.store.list_sandboxes().await? {
            if sandbox.spec.name.is_placeholder() && !self.pool.is_ready(&sandbox.id) {
                self.discard_pooled(&sandbox).await;
                removed += 1;
            }
        }
        for workspace in self.store.list_workspaces().await? {
            if workspace.name.is_placeholder()
                && self.store.sandboxes_using(&workspace.id).await?.is_empty()
            {
                self.discard_workspace(&workspace).await;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed the warm pool of the previous run");
        }
        Ok(removed)
    }

    /// Starts one top-up task per profile; they fill the pools and keep them full until
    /// they are stopped (or dropped, or the service is).
    pub fn spawn_warm_pool(self: &Arc<Self>) -> WarmPoolTasks {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (index, slot) in self.pool.slots.iter().enumerate() {
            if slot.profile.size > 0 {
                tasks.spawn(top_up(
                    Arc::downgrade(self),
                    slot.clone(),
                    index,
                    stop.clone(),
                ));
            }
        }
        WarmPoolTasks { tasks, stop }
    }

    /// Each profile with its ready count, the memory its sandboxes use, and why it
    /// cannot be filled, if it cannot.
    pub async fn warm_pool_status(&self) -> Vec<PoolStatus> {
        let mut statuses = Vec::with_capacity(self.pool.slots.len());
        for slot in &self.pool.slots {
            let ready: Vec<Sandbox> = slot.ready().iter().cloned().collect();
            let mut memory_bytes = Some(0u64);
            for sandbox in &ready {
                let used = self.usage(sandbox).await.memory_current;
                memory_bytes = memory_bytes.zip(used).map(|(sum, m)| sum.saturating_add(m));
            }
            statuses.push(PoolStatus {
                profile: slot.profile.clone(),
                ready: ready.len(),
                memory_bytes,
                error: slot
                    .error
                    .lock()
                    .expect("pool lock is never poisoned")
                    .clone(),
            });
        }
        statuses
    }

    /// A ready pooled sandbox made into the one `request` asks for, when the request
    /// matches a profile (see the module's doc); `Ok(None)` means "create it cold". `Err`
    /// only for a refusal a cold create would give too (the name is taken).
    pub(super) async fn claim_from_pool(
        &self,
        request: &CreateSandbox,
        spec: &SandboxSpec,
    ) -> Result<Option<SandboxView>, ServiceError> {
        if !request.start || request.workspace.is_some() || !request.mounts.is_empty() {
            return Ok(None);
        }
        let Some(slot) = self
            .pool
            .slots
            .iter()
            .find(|slot| slot.profile.size > 0 && slot.profile.matches(spec))
        else {
            return Ok(None);
        };
        loop {
            let Some(pooled) = slot.ready().pop_front() else {
                tracing::debug!(image = %spec.image, "the warm pool is empty; creating cold");
                return Ok(None);
            };
            let claimed = self.claim(slot, pooled, spec).await;
            // Only now: a refill started during the claim would compete for the CPU.
            slot.wake.notify_one();
            match claimed {
                Claimed::Done(view) => return Ok(Some(*view)),
                Claimed::Refused(err) => return Err(err),
                Claimed::Dead => {}
                Claimed::Failed => return Ok(None),
            }
        }
    }

    /// Makes `pooled`, just taken from `slot`, the sandbox `spec` describes.
    async fn claim(&self, slot: &Slot, pooled: Sandbox, spec: &SandboxSpec) -> Claimed {
        let lock = self.lock(&pooled.id);
        let _guard = lock.lock().await;
        let Ok(driver) = self.driver(pooled.spec.driver) else {
            slot.ready().push_front(pooled);
            return Claimed::Failed;
        };
        let runtime = pooled.runtime.clone().unwrap_or_default();
        let connected = self
            .agents
            .lock()
            .expect("agent map is never poisoned")
            .get(&pooled.id)
            .is_some_and(|agent| !agent.is_closed());
        if !connected || !driver.is_alive(&runtime).await {
            tracing::warn!(sandbox_id = %pooled.id, "a warm pool sandbox had died; discarding it");
            self.discard_pooled(&pooled).await;
            return Claimed::Dead;
        }
        let workspace_name = match self.free_workspace_name(spec.name.as_str()).await {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!(error = %e, "cannot name a claimed workspace; creating cold");
                slot.ready().push_front(pooled);
                return Claimed::Failed;
            }
        };
        let claim = PoolClaim {
            id: pooled.id.clone(),
            name: spec.name.clone(),
            env: spec.env.clone(),
            labels: spec.labels.clone(),
            ttl_seconds: spec.ttl_seconds,
            at: self.clock.now(),
            workspace_name,
        };
        self.cool(&pooled.id);
        let claimed = self.store.claim_pooled_sandbox(&claim).await;
        self.cool(&pooled.id);
        let sandbox = match claimed {
            Ok(sandbox) => sandbox,
            Err(StoreError::NameTaken { name }) => {
                slot.ready().push_front(pooled);
                return Claimed::Refused(ServiceError::NameTaken(name));
            }
            Err(e @ StoreError::WorkspaceNameTaken { .. }) => {
                // Taken between the look-up and the claim: the cold path names it again.
                tracing::debug!(error = %e, "claiming from the warm pool lost a race; creating cold");
                slot.ready().push_front(pooled);
                return Claimed::Failed;
            }
            Err(e) => {
                tracing::warn!(sandbox_id = %pooled.id, error = %e, "claiming a warm pool sandbox failed; creating cold");
                self.discard_pooled(&pooled).await;
                return Claimed::Failed;
            }
        };
        if let Err(e) = driver
            .set_hostname(&sandbox, &runtime, sandbox.spec.name.as_str())
            .await
        {
            tracing::warn!(sandbox_id = %sandbox.id, error = %e, "renaming a claimed warm pool sandbox failed; discarding it and creating cold");
            self.discard_pooled(&sandbox).await;
            return Claimed::Failed;
        }
        tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, driver = %sandbox.spec.driver, workspace = %claim.workspace_name, from_pool = true, "sandbox created");
        tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "sandbox running");
        Claimed::Done(Box::new(self.view(sandbox)))
    }

    /// For `tick`: a pooled sandbox whose processes died is removed and replaced. One
    /// being started or claimed right now is left to that operation.
    pub(super) async fn check_pooled(&self, sandbox: &Sandbox) {
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        let alive = match self.driver(sandbox.spec.driver) {
            Ok(driver) => driver.is_alive(&runtime).await,
            Err(_) => false,
        };
        if alive && sandbox.state == SandboxState::Running {
            return;
        }
        let Some((slot, pooled)) = self.pool.take_ready(&sandbox.id) else {
            return;
        };
        tracing::warn!(sandbox_id = %pooled.id, image = %pooled.spec.image, "a warm pool sandbox died; replacing it");
        self.discard_pooled(&pooled).await;
        slot.wake.notify_one();
    }

    /// For an image delete: waits for a pooled start in progress, removes every ready
    /// sandbox on `image`, and keeps the pools from starting any until the returned
    /// permit is dropped.
    pub(super) async fn drain_pool_of_image(&self, image: &str) -> SemaphorePermit<'_> {
        let permit = self
            .pool
            .starting
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        for slot in self.pool.slots.iter().filter(|s| s.profile.image == image) {
            let drained: Vec<Sandbox> = slot.ready().drain(..).collect();
            if !drained.is_empty() {
                tracing::info!(
                    image,
                    drained = drained.len(),
                    "draining the warm pool of an image being deleted"
                );
            }
            for sandbox in drained {
                self.discard_pooled(&sandbox).await;
            }
            slot.wake.notify_one();
        }
        permit
    }

    /// Removes a sandbox of the pool (or one whose claim failed) and everything of it:
    /// processes, driver state, record and workspace. Failures are logged: what is left
    /// is removed at the next start.
    async fn discard_pooled(&self, sandbox: &Sandbox) {
        let Ok(driver) = self.driver(sandbox.spec.driver) else {
            return;
        };
        if let Some(runtime) = sandbox.runtime.as_deref().filter(|r| !r.is_empty())
            && let Err(e) = driver.stop(sandbox, runtime, Duration::ZERO).await
        {
            tracing::warn!(sandbox_id = %sandbox.id, error = %e, "stopping a warm pool sandbox failed");
        }
        self.forget_runtime(&sandbox.id);
        if let Err(e) = driver.destroy(sandbox).await {
            tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cleaning up a warm pool sandbox failed; the next start retries");
            return;
        }
        self.cool(&sandbox.id);
        let deleted = self.store.delete_sandbox(&sandbox.id).await;
        self.cool(&sandbox.id);
        match deleted {
            Ok(_) => self.release_workspace(sandbox, false).await,
            Err(e) => {
                tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cannot remove a warm pool sandbox's record; the next start retries");
            }
        }
        self.locks
            .lock()
            .expect("lock map is never poisoned")
            .remove(&sandbox.id);
    }

    /// Starts one sandbox into `slot` unless it is full or `stop` is cancelled. Returns
    /// whether one was added. Once begun, the start is not given up for `stop`.
    async fn fill_one(&self, slot: &Slot, stop: &CancellationToken) -> Result<bool, ServiceError> {
        let _permit = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(false),
            permit = self.pool.starting.acquire() => {
                permit.expect("the pool's semaphore is never closed")
            }
        };
        if slot.is_full() || stop.is_cancelled() {
            return Ok(false);
        }
        let sandbox = self.start_pooled(&slot.profile).await?;
        tracing::info!(sandbox_id = %sandbox.id, image = %sandbox.spec.image, "warm pool sandbox ready");
        slot.ready().push_back(sandbox);
        Ok(true)
    }

    /// Starts a sandbox of `profile` under placeholder names, through the normal path.
    async fn start_pooled(&self, profile: &PoolProfile) -> Result<Sandbox, ServiceError> {
        let id = SandboxId::generate();
        let spec = SandboxSpec {
            name: SandboxName::placeholder(),
            image: profile.image.clone(),
            driver: profile.driver,
            env: Default::default(),
            labels: Default::default(),
            limits: profile.limits,
            ttl_seconds: None,
            workspace: None,
            mounts: Vec::new(),
            network: profile.network.clone(),
        };
        let mut spec = self.check_image(spec).await?;
        self.driver(spec.driver)?
            .check_available()
            .map_err(ServiceError::DriverUnavailable)?;
        let now = self.clock.now();
        let mut workspace = Workspace::new(WorkspaceName::placeholder(), now);
        workspace.owner = Some(id.clone());
        self.make_workspace(&workspace).await?;
        spec.workspace = Some(workspace.id.clone());
        let sandbox = Sandbox {
            id,
            spec,
            state: SandboxState::Starting,
            crash_reason: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            runtime: None,
        };
        self.record(&sandbox, &workspace, true).await?;
        let view = self.start_or_roll_back(sandbox, &workspace, true).await?;
        Ok(view.sandbox)
    }
}

/// Keeps one profile's pool full while the service lives and `stop` is not cancelled:
/// waits for a sandbox to be taken, then starts sandboxes one at a time until the pool
/// is full again, backing off after failures.
async fn top_up(
    service: Weak<SandboxService>,
    slot: Arc<Slot>,
    index: usize,
    stop: CancellationToken,
) {
    let mut backoff = Duration::ZERO;
    while !stop.is_cancelled() {
        if slot.is_full() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = slot.wake.notified() => continue,
            }
        }
        let Some(service) = service.upgrade() else {
            return;
        };
        let result = service.fill_one(&slot, &stop).await;
        drop(service);
        match result {
            // Full, or stopping.
            Ok(false) => {}
            Ok(true) => {
                backoff = Duration::ZERO;
                if slot.succeeded() {
                    tracing::info!(profile = index, image = %slot.profile.image, "the warm pool fills again");
                }
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                let reason = e.to_string();
                if slot.failed(reason.clone()) {
                    tracing::warn!(profile = index, image = %slot.profile.image, error = %reason, retry_in = ?backoff, "cannot start a warm pool sandbox");
                } else {
                    tracing::debug!(profile = index, image = %slot.profile.image, error = %reason, retry_in = ?backoff, "cannot start a warm pool sandbox");
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}
