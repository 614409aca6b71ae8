//! `SandboxService`: the sandbox lifecycle and process operations, over a `Store`, the
//! drivers and the in-sandbox agents. Every state change is persisted before it is
//! reported; every failure halfway through undoes what it made.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_agent_proto::{AgentClient, CompletedProcess, OutputStream, ProcessHandle, ProtoError};

use crate::NetworkSpec;
use crate::clock::Clock;
use crate::driver::{Driver, DriverError, Isolation};
use crate::sandbox::{
    DriverKind, Limits, Sandbox, SandboxId, SandboxName, SandboxSpec, SandboxState,
};
use crate::storage::{ImageBuilder, ImageStorage, QuotaStatus, StorageFault, WorkspaceStorage};
use crate::store::{RuntimeUpdate, Store, StoreError, Transition};
use crate::workspace::{Workspace, WorkspaceId};

mod builds;
mod images;
#[cfg(test)]
mod images_tests;
mod maintenance;
mod network;
use network::validate_network;
#[cfg(test)]
mod network_tests;
mod pause;
mod pool;
#[cfg(test)]
mod pool_tests;
mod processes;
mod restore;
#[cfg(test)]
mod restore_tests;
mod stats;
mod terminals;
#[cfg(test)]
mod tests;
mod workspaces;
#[cfg(test)]
mod workspaces_tests;

pub use builds::{BUILD_CANCEL_WAIT, BuildCancel, RunningBuild};
pub use images::{BuildImage, BuildPlan, ImageView, ImportImage};
pub use pool::{MAX_POOL_SIZE, PoolProfile, PoolStatus, WarmPoolTasks};
pub use restore::{RestoredWorkspace, RestoredWriter};
pub use stats::{LiveStats, StatsSample};
pub use terminals::{AttachedTerminal, TERMINAL_CLOSE_GRACE};
pub use workspaces::{CreateWorkspace, WorkspaceView};

/// The built-in image: the host's own `/`, read-only.
pub use crate::image::HOST_IMAGE;

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Whether sandboxes may use the `host` driver (no isolation).
    pub allow_host_driver: bool,
    /// Driver used when a request names none.
    pub default_driver: DriverKind,
    /// Size of `/tmp` when a request sets none, MiB.
    pub default_tmp_mib: u64,
    /// Time processes get between SIGTERM and SIGKILL when a sandbox stops.
    pub stop_grace: Duration,
    /// How long a starting sandbox's agent may take to answer.
    pub agent_ready_timeout: Duration,
    /// The network policy of sandboxes whose request sets none.
    pub default_network: NetworkSpec,
    /// The warm pool's profiles (see `service::pool`); none by default.
    pub warm_pool: Vec<PoolProfile>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            allow_host_driver: false,
            default_driver: DriverKind::Bwrap,
            default_tmp_mib: 512,
            stop_grace: Duration::from_secs(5),
            agent_ready_timeout: Duration::from_secs(10),
            default_network: NetworkSpec::default(),
            warm_pool: Vec::new(),
        }
    }
}

/// A create request before validation (the shape of the API's, without its types).
#[derive(Debug, Clone, Default)]
pub struct CreateSandbox {
    /// Requested name, or generated.
    pub name: Option<String>,
    /// Image, or `host`.
    pub image: Option<String>,
    /// Driver name, or the default.
    pub driver: Option<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Limits.
    pub limits: Limits,
    /// Seconds after start when it is stopped.
    pub ttl_seconds: Option<u64>,
    /// Start it right away.
    pub start: bool,
    /// The workspace to mount read-write at `/workspace`, by id or name: an existing one,
    /// or a new one made under that name (and kept after the sandbox). `None`: a fresh
    /// workspace owned by the sandbox and deleted with it.
    pub workspace: Option<String>,
    /// Other workspaces (by id or name) mounted read-only, and where.
    pub mounts: Vec<MountRequest>,
    /// What it may reach on the network; `None` for the configured default.
    pub network: Option<NetworkSpec>,
}

/// A read-only mount of another workspace, as requested.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    /// The workspace, by id or name.
    pub workspace: String,
    /// The absolute path inside the sandbox.
    pub path: String,
}

/// A sandbox plus what only a running one has.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxView {
    /// The stored sandbox.
    pub sandbox: Sandbox,
    /// Its isolation, while it has processes.
    pub isolation: Option<Isolation>,
}

/// A process started by [`SandboxService::exec`], with its live output.
#[derive(Debug)]
pub struct StartedProcess {
    /// The sandbox it runs in.
    pub sandbox: Sandbox,
    /// The process.
    pub handle: ProcessHandle,
    /// Its output, from the first byte, ending with the exit.
    pub output: OutputStream,
    oom_before: Option<u64>,
}

/// A finished command plus what the cgroup says about it.
#[derive(Debug, Clone)]
pub struct CommandResult {
    /// Output and exit.
    pub completed: CompletedProcess,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// Errors of the service, each mapping to one API error code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No sandbox has this id or name.
    #[error("no sandbox {0:?}; `nexusctl sandbox list` shows the existing ones")]
    NotFound(String),
    /// A field of the request is invalid; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The name is in use.
    #[error("a sandbox named {0:?} already exists; choose another name or delete that one")]
    NameTaken(String),
    /// The sandbox must be running for this.
    #[error(
        "sandbox {name} is {state}, not running; start it with `nexusctl sandbox start {name}`"
    )]
    NotRunning {
        /// Its name.
        name: String,
        /// Its state.
        state: SandboxState,
    },
    /// The sandbox is paused; nothing that needs its agent can run.
    #[error("sandbox {name} is paused; resume it with `nexusctl sandbox resume {name}`")]
    Paused {
        /// Its name.
        name: String,
    },
    /// The sandbox's state does not allow this.
    #[error("{0}")]
    Conflict(String),
    /// No workspace has this id or name.
    #[error("no workspace {0:?}; `nexusctl workspace list` shows the existing ones")]
    WorkspaceNotFound(String),
    /// The workspace name is in use.
    #[error("a workspace named {0:?} already exists; choose another name or delete that one")]
    WorkspaceNameTaken(String),
    /// The workspace is used in a way that does not allow this; the message says by whom.
    #[error("{0}")]
    WorkspaceInUse(String),
    /// The workspace has no such snapshot.
    #[error("{0}")]
    SnapshotNotFound(String),
    /// No image has this id or name; the message lists the existing ones.
    #[error("{0}")]
    ImageNotFound(String),
    /// The image name is in use.
    #[error("an image named {0:?} already exists; choose another name or delete that one")]
    ImageNameTaken(String),
    /// The image is used by sandboxes; the message names them.
    #[error("{0}")]
    ImageInUse(String),
    /// Building an image failed; nothing was recorded. The message has the tool's output.
    #[error("{0}")]
    ImageBuildFailed(String),
    /// A build of the image's name is under way (or too far along to cancel); the
    /// message says how to cancel it.
    #[error("{0}")]
    ImageBuildInProgress(String),
    /// No build of this image name is under way; the message says what there is.
    #[error("{0}")]
    ImageBuildNotFound(String),
    /// The build was cancelled; its processes are gone and nothing was recorded.
    #[error("{0}")]
    ImageBuildCancelled(String),
    /// Workspace storage failed.
    #[error(transparent)]
    Storage(StorageFault),
    /// The driver cannot be used here.
    #[error(transparent)]
    DriverUnavailable(DriverError),
    /// The driver failed.
    #[error(transparent)]
    Driver(DriverError),
    /// The agent failed or refused.
    #[error("the sandbox's agent failed")]
    Agent(#[source] ProtoError),
    /// The store failed.
    #[error("the state store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NameTaken { name } => Self::NameTaken(name),
            StoreError::StateChanged {
                id,
                expected,
                found,
            } => Self::Conflict(format!(
                "sandbox {id} changed state meanwhile: expected {expected}, found {found}; retry"
            )),
            StoreError::WorkspaceNameTaken { name } => Self::WorkspaceNameTaken(name),
            StoreError::WorkspaceNotFound { id } => Self::WorkspaceNotFound(id.to_string()),
            StoreError::WorkspaceInUse { .. } => Self::WorkspaceInUse(err.to_string()),
            StoreError::ImageNameTaken { name } => Self::ImageNameTaken(name),
            StoreError::ImageInUse { .. } => Self::ImageInUse(err.to_string()),
            StoreError::SnapshotNameTaken { .. } | StoreError::GenerationChanged { .. } => {
                Self::Conflict(err.to_string())
            }
            other => Self::Store(other),
        }
    }
}

/// See [`SandboxService::running_agent`].
#[derive(Debug, Default)]
struct HotAgents {
    entries: HashMap<String, (Sandbox, AgentClient)>,
    /// Bumped by every change of any sandbox record: an entry read from the store before
    /// a change is not inserted after it.
    epoch: u64,
}

/// The sandbox lifecycle.
#[derive(Debug)]
pub struct SandboxService {
    store: Arc<dyn Store>,
    drivers: HashMap<DriverKind, Arc<dyn Driver>>,
    storage: Arc<dyn WorkspaceStorage>,
    /// Image trees; `None` until [`SandboxService::with_images`]: only `host` exists.
    images: Option<Arc<dyn ImageStorage>>,
    /// Builds images; `None` until [`SandboxService::with_builder`].
    builder: Option<Arc<dyn ImageBuilder>>,
    /// The image builds under way, one per name (see `service::builds`).
    builds: Arc<builds::Builds>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    agents: Mutex<HashMap<SandboxId, AgentClient>>,
    /// Running sandboxes by the id or name callers used, with their agent: the hot path
    /// of exec and file operations, which then need no store read. Dropped for a sandbox
    /// by every change of its record (state, policy, deletion), so it never outlives
    /// `Running`.
    hot: Mutex<HotAgents>,
    quotas: Mutex<HashMap<WorkspaceId, QuotaStatus>>,
    isolation: Mutex<HashMap<SandboxId, Isolation>>,
    /// One lifecycle operation per sandbox at a time.
    locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    /// Sandboxes started ahead of need.
    pool: pool::WarmPool,
}

impl SandboxService {
    /// A service over these parts.
    pub fn new(
        store: Arc<dyn Store>,
        drivers: Vec<Arc<dyn Driver>>,
        storage: Arc<dyn WorkspaceStorage>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            pool: pool::WarmPool::new(&config.warm_pool),
            store,
            drivers: drivers.into_iter().map(|d| (d.kind(), d)).collect(),
            storage,
            images: None,
            builder: None,
            builds: Arc::default(),
            clock,
            config,
            agents: Mutex::default(),
            hot: Mutex::default(),
            quotas: Mutex::default(),
            isolation: Mutex::default(),
            locks: Mutex::default(),
        }
    }

    /// The same service with image trees kept in `images`, so images can be imported,
    /// built and used.
    #[must_use]
    pub fn with_images(mut self, images: Arc<dyn ImageStorage>) -> Self {
        self.images = Some(images);
        self
    }

    /// The same service able to build images with `builder`.
    #[must_use]
    pub fn with_builder(mut self, builder: Arc<dyn ImageBuilder>) -> Self {
        self.builder = Some(builder);
        self
    }

    /// Validates a request, records the sandbox and, when asked, starts it. Nothing is
    /// left behind when any step fails. A request that matches a warm-pool profile gets
    /// a sandbox of the pool instead (see `service::pool`).
    pub async fn create(&self, request: CreateSandbox) -> Result<SandboxView, ServiceError> {
        self.create_with(request, SandboxId::generate(), None).await
    }

    /// [`Self::create`] with the id chosen, and optionally a workspace already made for
    /// the sandbox (owned by `id`; deleted if the create fails).
    async fn create_with(
        &self,
        request: CreateSandbox,
        id: SandboxId,
        prepared: Option<Workspace>,
    ) -> Result<SandboxView, ServiceError> {
        let validated = match self.validate(request.clone()) {
            Ok(spec) => self.check_image(spec).await,
            Err(err) => Err(err),
        };
        let mut spec = match validated {
            Ok(spec) => spec,
            Err(err) => {
                if let Some(workspace) = &prepared {
                    self.discard_workspace(workspace).await;
                }
                return Err(err);
            }
        };
        let driver = self.driver(spec.driver)?;
        driver
            .check_available()
            .map_err(ServiceError::DriverUnavailable)?;
        if prepared.is_none()
            && let Some(view) = self.claim_from_pool(&request, &spec).await?
        {
            return Ok(view);
        }
        let now = self.clock.now();
        spec.mounts = self.resolve_mounts(&request.mounts).await?;
        let (workspace, made) = match prepared {
            Some(workspace) => (workspace, true),
            None => {
                self.attach_workspace(request.workspace.as_deref(), &id, &spec.name)
                    .await?
            }
        };
        spec.workspace = Some(workspace.id.clone());
        let sandbox = Sandbox {
            id,
            spec,
            // A sandbox started at once is recorded `starting` (one write less on the
            // way to `running`): `created` would never be seen.
            state: if request.start {
                SandboxState::Starting
            } else {
                SandboxState::Created
            },
            crash_reason: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            runtime: None,
        };
        self.record(&sandbox, &workspace, made).await?;
        // A warm-pool sandbox's own creation is the pool's business ("warm pool sandbox
        // ready" says it); its placeholder name means nothing to a reader of the log.
        if sandbox.spec.name.is_placeholder() {
            tracing::debug!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "warm pool sandbox created");
        } else {
            tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, driver = %sandbox.spec.driver, workspace = %workspace.name, "sandbox created");
        }
        if !request.start {
            return Ok(SandboxView {
                sandbox,
                isolation: None,
            });
        }
        self.start_or_roll_back(sandbox, &workspace, made).await
    }

    /// Records a new sandbox; when that fails, discards its workspace if `made` for it.
    async fn record(
        &self,
        sandbox: &Sandbox,
        workspace: &Workspace,
        made: bool,
    ) -> Result<(), ServiceError> {
        if let Err(err) = self.store.insert_sandbox(sandbox).await {
            if made {
                self.discard_workspace(workspace).await;
            }
            return Err(err.into());
        }
        Ok(())
    }

    /// Starts a just-recorded sandbox (recorded `starting`, or `created`); when that
    /// fails, removes every trace of it (and its workspace if `made` for it).
    async fn start_or_roll_back(
        &self,
        sandbox: Sandbox,
        workspace: &Workspace,
        made: bool,
    ) -> Result<SandboxView, ServiceError> {
        let driver = self.driver(sandbox.spec.driver)?;
        let started = if sandbox.state == SandboxState::Starting {
            self.launch(sandbox.clone()).await
        } else {
            self.start_locked(sandbox.clone()).await
        };
        match started {
            Ok(view) => Ok(view),
            Err(err) => {
                // Roll back: the driver removed what it made; remove the record too.
                if let Err(e) = driver.destroy(&sandbox).await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cleanup after a failed create failed");
                }
                if let Err(e) = self.store.delete_sandbox(&sandbox.id).await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cannot remove the record of a failed create");
                } else if made {
                    self.discard_workspace(workspace).await;
                }
                Err(err)
            }
        }
    }

    /// The sandbox with this id or name.
    pub async fn get(&self, id_or_name: &str) -> Result<SandboxView, ServiceError> {
        let sandbox = self.find(id_or_name).await?;
        Ok(self.view(sandbox))
    }

    /// Every sandbox, oldest first (those waiting in the warm pool are nobody's yet).
    pub async fn list(&self) -> Result<Vec<SandboxView>, ServiceError> {
        Ok(self
            .store
            .list_sandboxes()
            .await?
            .into_iter()
            .filter(|s| !s.spec.name.is_placeholder())
            .map(|s| self.view(s))
            .collect())
    }

    /// Starts a created, stopped or crashed sandbox.
    pub async fn start(&self, id_or_name: &str) -> Result<SandboxView, ServiceError> {
        let sandbox = self.find(id_or_name).await?;
        let lock = self.lock(&sandbox.id);
        let _guard = lock.lock().await;
        let sandbox = self.reload(&sandbox.id).await?;
        if sandbox.state == SandboxState::Running {
            return Ok(self.view(sandbox));
        }
        self.start_locked(sandbox).await
    }

    /// Stops a running sandbox: SIGTERM to its processes, SIGKILL after the grace period.
    pub async fn stop(&self, id_or_name: &str) -> Result<SandboxView, ServiceError> {
        let sandbox = self.find(id_or_name).await?;
        let lock = self.lock(&sandbox.id);
        let _guard = lock.lock().await;
        let sandbox = self.reload(&sandbox.id).await?;
        match sandbox.state {
            SandboxState::Stopped | SandboxState::Created | SandboxState::Crashed => {
                Ok(self.view(sandbox))
            }
            _ => self.stop_locked(sandbox).await.map(|s| self.view(s)),
        }
    }

    /// Deletes a sandbox and every trace of it. A running one needs `force`. The
    /// workspace made for it goes too unless `keep_workspace`; a workspace it was given
    /// by name always stays.
    pub async fn delete(
        &self,
        id_or_name: &str,
        force: bool,
        keep_workspace: bool,
    ) -> Result<(), ServiceError> {
        let sandbox = self.find(id_or_name).await?;
        let lock = self.lock(&sandbox.id);
        let _guard = lock.lock().await;
        let mut sandbox = self.reload(&sandbox.id).await?;
        if matches!(
            sandbox.state,
            SandboxState::Running
                | SandboxState::Paused
                | SandboxState::Starting
                | SandboxState::Stopping
        ) {
            if !force {
                return Err(ServiceError::Conflict(format!(
                    "sandbox {} is {}; stop it first or delete with --force",
                    sandbox.spec.name, sandbox.state
                )));
            }
            sandbox = self.stop_locked(sandbox).await?;
        }
        self.driver(sandbox.spec.driver)?
            .destroy(&sandbox)
            .await
            .map_err(ServiceError::Driver)?;
        self.cool(&sandbox.id);
        self.store.delete_sandbox(&sandbox.id).await?;
        self.cool(&sandbox.id);
        self.forget_runtime(&sandbox.id);
        self.release_workspace(&sandbox, keep_workspace).await;
        self.locks
            .lock()
            .expect("lock map is never poisoned")
            .remove(&sandbox.id);
        tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "sandbox deleted");
        Ok(())
    }

    fn validate(&self, request: CreateSandbox) -> Result<SandboxSpec, ServiceError> {
        let name = match request.name {
            Some(name) => SandboxName::parse(&name).map_err(ServiceError::Invalid)?,
            None => SandboxName::generate(),
        };
        // Whether a named image exists is checked by `check_image`, which can ask the store.
        let image = request.image.unwrap_or_else(|| HOST_IMAGE.to_owned());
        let driver = match request.driver {
            Some(name) => DriverKind::parse(&name).ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "driver {name:?} is unknown; use \"bwrap\" or \"host\""
                ))
            })?,
            None => self.config.default_driver,
        };
        if driver == DriverKind::Host && !self.config.allow_host_driver {
            return Err(ServiceError::DriverUnavailable(DriverError::Disabled {
                driver,
                reason: "it gives no isolation at all; set `allow_host_driver: true` in nexus.yaml to allow it".into(),
            }));
        }
        for key in request.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(ServiceError::Invalid(format!(
                    "env key {key:?} is invalid: it must be non-empty, without '=' or NUL"
                )));
            }
        }
        if request.env.values().any(|v| v.contains('\0')) {
            return Err(ServiceError::Invalid(
                "env values must not contain NUL bytes".into(),
            ));
        }
        let mut limits = request.limits;
        limits.tmp_mib = limits.tmp_mib.or(Some(self.config.default_tmp_mib));
        limits.validate().map_err(ServiceError::Invalid)?;
        if let Some(ttl) = request.ttl_seconds
            && ttl == 0
        {
            return Err(ServiceError::Invalid(
                "ttl_seconds must be at least 1".into(),
            ));
        }
        let network = request
            .network
            .unwrap_or_else(|| self.config.default_network.clone());
        validate_network(&network)?;
        Ok(SandboxSpec {
            name,
            image,
            driver,
            env: request.env,
            labels: request.labels,
            limits,
            ttl_seconds: request.ttl_seconds,
            workspace: None,
            mounts: Vec::new(),
            network,
        })
    }

    async fn start_locked(&self, sandbox: Sandbox) -> Result<SandboxView, ServiceError> {
        if !sandbox.state.can_become(SandboxState::Starting) {
            return Err(ServiceError::Conflict(format!(
                "sandbox {} is {} and cannot be started",
                sandbox.spec.name, sandbox.state
            )));
        }
        let driver = self.driver(sandbox.spec.driver)?;
        driver
            .check_available()
            .map_err(ServiceError::DriverUnavailable)?;
        let sandbox = self
            .transition(&sandbox, SandboxState::Starting, None, RuntimeUpdate::Keep)
            .await?;
        self.launch(sandbox).await
    }

    /// Starts a sandbox recorded `starting`: the driver's start, the runtime handle
    /// recorded, the agent's handshake, `running`.
    async fn launch(&self, sandbox: Sandbox) -> Result<SandboxView, ServiceError> {
        let driver = self.driver(sandbox.spec.driver)?;
        let mounts = self.mounts(&sandbox).await?;
        let started = match driver.start(&sandbox, &mounts).await {
            Ok(started) => started,
            Err(err) => {
                self.transition(
                    &sandbox,
                    SandboxState::Crashed,
                    Some(err.to_string()),
                    RuntimeUpdate::Clear,
                )
                .await?;
                return Err(ServiceError::Driver(err));
            }
        };
        // Record the handle at once, so a daemon that dies now can still find the sandbox;
        // the agent's handshake goes on meanwhile (it is used only once that is done).
        let with_runtime = Sandbox {
            runtime: Some(started.runtime.clone()),
            ..sandbox.clone()
        };
        let (recorded, connected) = tokio::join!(
            self.transition(
                &sandbox,
                SandboxState::Starting,
                None,
                RuntimeUpdate::Set(started.runtime.clone()),
            ),
            tokio::time::timeout(self.config.agent_ready_timeout, self.connect(&with_runtime)),
        );
        let sandbox = match recorded {
            Ok(sandbox) => sandbox,
            Err(err) => {
                if let Err(e) = driver
                    .stop(&sandbox, &started.runtime, Duration::ZERO)
                    .await
                {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cleanup after a failed start failed");
                }
                return Err(err);
            }
        };
        let agent = match connected {
            Ok(Ok(agent)) => agent,
            Ok(Err(err)) => {
                return Err(self
                    .fail_start(&sandbox, &started.runtime, err.to_string())
                    .await);
            }
            Err(_) => {
                let reason = format!(
                    "its agent did not answer within {:?}",
                    self.config.agent_ready_timeout
                );
                return Err(self.fail_start(&sandbox, &started.runtime, reason).await);
            }
        };
        let sandbox = self
            .transition(&sandbox, SandboxState::Running, None, RuntimeUpdate::Keep)
            .await?;
        self.remember(&sandbox, agent, started.isolation);
        if sandbox.spec.name.is_placeholder() {
            tracing::debug!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "warm pool sandbox running");
        } else {
            tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "sandbox running");
        }
        Ok(self.view(sandbox))
    }

    async fn fail_start(&self, sandbox: &Sandbox, runtime: &str, reason: String) -> ServiceError {
        let driver = match self.driver(sandbox.spec.driver) {
            Ok(d) => d,
            Err(e) => return e,
        };
        if let Err(e) = driver.stop(sandbox, runtime, Duration::ZERO).await {
            tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cleanup after a failed start failed");
        }
        if let Err(e) = self
            .transition(
                sandbox,
                SandboxState::Crashed,
                Some(reason.clone()),
                RuntimeUpdate::Clear,
            )
            .await
        {
            return e;
        }
        ServiceError::Driver(DriverError::Start { reason })
    }

    async fn stop_locked(&self, sandbox: Sandbox) -> Result<Sandbox, ServiceError> {
        self.thaw_for_stop(&sandbox).await;
        let sandbox = if sandbox.state == SandboxState::Stopping {
            sandbox
        } else {
            self.transition(&sandbox, SandboxState::Stopping, None, RuntimeUpdate::Keep)
                .await?
        };
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        let agent = self
            .agents
            .lock()
            .expect("agent map is never poisoned")
            .get(&sandbox.id)
            .cloned();
        if let Some(agent) = agent
            && let Err(e) = agent.terminate_all(self.config.stop_grace).await
        {
            tracing::debug!(sandbox_id = %sandbox.id, error = %e, "agent-led termination failed; the driver kills what is left");
        }
        let driver = self.driver(sandbox.spec.driver)?;
        if !runtime.is_empty() {
            driver
                .stop(&sandbox, &runtime, self.config.stop_grace)
                .await
                .map_err(ServiceError::Driver)?;
        }
        self.forget_runtime(&sandbox.id);
        let sandbox = self
            .transition(&sandbox, SandboxState::Stopped, None, RuntimeUpdate::Clear)
            .await?;
        tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "sandbox stopped");
        Ok(sandbox)
    }

    async fn running_agent(
        &self,
        id_or_name: &str,
    ) -> Result<(Sandbox, AgentClient), ServiceError> {
        let epoch = {
            let hot = self.hot.lock().expect("hot map is never poisoned");
            if let Some(found) = hot
                .entries
                .get(id_or_name)
                .filter(|(_, agent)| !agent.is_closed())
            {
                return Ok(found.clone());
            }
            hot.epoch
        };
        let (sandbox, agent) = self.running_agent_from_store(id_or_name).await?;
        let mut hot = self.hot.lock().expect("hot map is never poisoned");
        // A record changed since the read (a transition racing with this call) must not
        // see a stale entry come back.
        if hot.epoch == epoch {
            hot.entries
                .insert(id_or_name.to_owned(), (sandbox.clone(), agent.clone()));
        }
        Ok((sandbox, agent))
    }

    /// [`Self::running_agent`] without the hot map.
    async fn running_agent_from_store(
        &self,
        id_or_name: &str,
    ) -> Result<(Sandbox, AgentClient), ServiceError> {
        let sandbox = self.find(id_or_name).await?;
        if sandbox.state == SandboxState::Paused {
            return Err(ServiceError::Paused {
                name: sandbox.spec.name.to_string(),
            });
        }
        if sandbox.state != SandboxState::Running {
            return Err(ServiceError::NotRunning {
                name: sandbox.spec.name.to_string(),
                state: sandbox.state,
            });
        }
        let cached = self
            .agents
            .lock()
            .expect("agent map is never poisoned")
            .get(&sandbox.id)
            .cloned();
        if let Some(agent) = cached.filter(|a| !a.is_closed()) {
            return Ok((sandbox, agent));
        }
        let agent = self.connect(&sandbox).await?;
        self.agents
            .lock()
            .expect("agent map is never poisoned")
            .insert(sandbox.id.clone(), agent.clone());
        Ok((sandbox, agent))
    }

    async fn connect(&self, sandbox: &Sandbox) -> Result<AgentClient, ServiceError> {
        let driver = self.driver(sandbox.spec.driver)?;
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        let stream = driver
            .connect(sandbox, &runtime)
            .await
            .map_err(ServiceError::Driver)?;
        let (client, info) = tokio::time::timeout(
            self.config.agent_ready_timeout,
            AgentClient::handshake(stream),
        )
        .await
        .map_err(|_| {
            ServiceError::Driver(DriverError::Connect {
                reason: "the agent did not complete the handshake".into(),
            })
        })?
        .map_err(ServiceError::Agent)?;
        tracing::debug!(sandbox_id = %sandbox.id, agent_version = %info.agent_version, "connected to agent");
        Ok(client)
    }

    fn remember(&self, sandbox: &Sandbox, agent: AgentClient, isolation: Isolation) {
        self.agents
            .lock()
            .expect("agent map is never poisoned")
            .insert(sandbox.id.clone(), agent);
        self.isolation
            .lock()
            .expect("isolation map is never poisoned")
            .insert(sandbox.id.clone(), isolation);
    }

    /// Drops a sandbox's entries from the hot map: its record is changing.
    fn cool(&self, id: &SandboxId) {
        let mut hot = self.hot.lock().expect("hot map is never poisoned");
        hot.epoch += 1;
        hot.entries.retain(|_, (sandbox, _)| &sandbox.id != id);
    }

    fn forget_runtime(&self, id: &SandboxId) {
        self.agents
            .lock()
            .expect("agent map is never poisoned")
            .remove(id);
        self.isolation
            .lock()
            .expect("isolation map is never poisoned")
            .remove(id);
    }

    fn view(&self, sandbox: Sandbox) -> SandboxView {
        let isolation = self
            .isolation
            .lock()
            .expect("isolation map is never poisoned")
            .get(&sandbox.id)
            .cloned();
        SandboxView { sandbox, isolation }
    }

    async fn transition(
        &self,
        sandbox: &Sandbox,
        to: SandboxState,
        crash_reason: Option<String>,
        runtime: RuntimeUpdate,
    ) -> Result<Sandbox, ServiceError> {
        let transition = Transition {
            id: sandbox.id.clone(),
            from: sandbox.state,
            to,
            at: self.clock.now(),
            crash_reason,
            runtime,
        };
        // Before the write (no new entry from here on) and after it (none read meanwhile).
        self.cool(&sandbox.id);
        let result = self.store.transition_sandbox(&transition).await;
        self.cool(&sandbox.id);
        Ok(result?)
    }

    /// The user's sandbox with this id or name: one waiting in the warm pool is found
    /// by neither (its placeholder name does not even parse as a name).
    async fn find(&self, id_or_name: &str) -> Result<Sandbox, ServiceError> {
        let found = match SandboxId::parse(id_or_name) {
            Some(id) => self.store.sandbox(&id).await?,
            None => match SandboxName::parse(id_or_name) {
                Ok(name) => self.store.sandbox_by_name(&name).await?,
                Err(_) => None,
            },
        };
        found
            .filter(|s| !s.spec.name.is_placeholder())
            .ok_or_else(|| ServiceError::NotFound(id_or_name.to_owned()))
    }

    async fn reload(&self, id: &SandboxId) -> Result<Sandbox, ServiceError> {
        self.store
            .sandbox(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))
    }

    fn driver(&self, kind: DriverKind) -> Result<Arc<dyn Driver>, ServiceError> {
        self.drivers.get(&kind).cloned().ok_or_else(|| {
            ServiceError::DriverUnavailable(DriverError::Unavailable {
                driver: kind,
                reason: "this daemon was built without it".into(),
            })
        })
    }

    fn lock(&self, id: &SandboxId) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("lock map is never poisoned")
            .entry(id.clone())
            .or_default()
            .clone()
    }
}
