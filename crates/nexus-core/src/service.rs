//! `SandboxService`: the sandbox lifecycle and process operations, over a `Store`, the
//! drivers and the in-sandbox agents. Every state change is persisted before it is
//! reported; every failure halfway through undoes what it made.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_agent_proto::{
    AgentClient, CompletedProcess, ExecRequest, ExitInfo, OutputEvent, OutputOffsets, OutputStream,
    ProcessHandle, ProcessId, ProcessInfo, ProtoError,
};

use crate::clock::Clock;
use crate::driver::{Driver, DriverError, Isolation, Usage};
use crate::sandbox::{
    DriverKind, Limits, Sandbox, SandboxId, SandboxName, SandboxSpec, SandboxState,
};
use crate::store::{RuntimeUpdate, Store, StoreError, Transition};

/// The only image that exists until images land: the host's own `/`, read-only.
pub const HOST_IMAGE: &str = "host";

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
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            allow_host_driver: false,
            default_driver: DriverKind::Bwrap,
            default_tmp_mib: 512,
            stop_grace: Duration::from_secs(5),
            agent_ready_timeout: Duration::from_secs(10),
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
    /// The sandbox's state does not allow this.
    #[error("{0}")]
    Conflict(String),
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
            other => Self::Store(other),
        }
    }
}

/// The sandbox lifecycle.
#[derive(Debug)]
pub struct SandboxService {
    store: Arc<dyn Store>,
    drivers: HashMap<DriverKind, Arc<dyn Driver>>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    agents: Mutex<HashMap<SandboxId, AgentClient>>,
    isolation: Mutex<HashMap<SandboxId, Isolation>>,
    /// One lifecycle operation per sandbox at a time.
    locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
}

impl SandboxService {
    /// A service over these parts.
    pub fn new(
        store: Arc<dyn Store>,
        drivers: Vec<Arc<dyn Driver>>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            store,
            drivers: drivers.into_iter().map(|d| (d.kind(), d)).collect(),
            clock,
            config,
            agents: Mutex::default(),
            isolation: Mutex::default(),
            locks: Mutex::default(),
        }
    }

    /// Validates a request, records the sandbox and, when asked, starts it. Nothing is
    /// left behind when any step fails.
    pub async fn create(&self, request: CreateSandbox) -> Result<SandboxView, ServiceError> {
        let spec = self.validate(request.clone())?;
        let driver = self.driver(spec.driver)?;
        driver
            .check_available()
            .map_err(ServiceError::DriverUnavailable)?;
        let now = self.clock.now();
        let sandbox = Sandbox {
            id: SandboxId::generate(),
            spec,
            state: SandboxState::Created,
            crash_reason: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            runtime: None,
        };
        self.store.insert_sandbox(&sandbox).await?;
        tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, driver = %sandbox.spec.driver, "sandbox created");
        if !request.start {
            return Ok(SandboxView {
                sandbox,
                isolation: None,
            });
        }
        match self.start_locked(sandbox.clone()).await {
            Ok(view) => Ok(view),
            Err(err) => {
                // Roll back: the driver removed what it made; remove the record too.
                if let Err(e) = driver.destroy(&sandbox).await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cleanup after a failed create failed");
                }
                if let Err(e) = self.store.delete_sandbox(&sandbox.id).await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cannot remove the record of a failed create");
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

    /// Every sandbox, oldest first.
    pub async fn list(&self) -> Result<Vec<SandboxView>, ServiceError> {
        Ok(self
            .store
            .list_sandboxes()
            .await?
            .into_iter()
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

    /// Deletes a sandbox and every trace of it. A running one needs `force`.
    pub async fn delete(&self, id_or_name: &str, force: bool) -> Result<(), ServiceError> {
        let sandbox = self.find(id_or_name).await?;
        let lock = self.lock(&sandbox.id);
        let _guard = lock.lock().await;
        let mut sandbox = self.reload(&sandbox.id).await?;
        if matches!(
            sandbox.state,
            SandboxState::Running | SandboxState::Starting | SandboxState::Stopping
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
        self.store.delete_sandbox(&sandbox.id).await?;
        self.forget_runtime(&sandbox.id);
        self.locks
            .lock()
            .expect("lock map is never poisoned")
            .remove(&sandbox.id);
        tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "sandbox deleted");
        Ok(())
    }

    /// Starts a command in a running sandbox with its output attached from the first
    /// byte. The sandbox's environment is the base of the command's; `stdin`, when given,
    /// is written and then closed.
    pub async fn exec(
        &self,
        id_or_name: &str,
        mut request: ExecRequest,
        stdin: Option<Vec<u8>>,
    ) -> Result<StartedProcess, ServiceError> {
        if request.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(ServiceError::Invalid(
                "argv must name a program: it is empty".into(),
            ));
        }
        let (sandbox, agent) = self.running_agent(id_or_name).await?;
        let mut env = sandbox.spec.env.clone();
        env.append(&mut request.env);
        request.env = env;
        request.stdin = stdin.is_some();
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        let oom_before = self
            .driver(sandbox.spec.driver)?
            .usage(&runtime)
            .await
            .oom_kills;
        let (handle, output) = agent
            .exec_attached(request)
            .await
            .map_err(ServiceError::Agent)?;
        if let Some(bytes) = stdin {
            // Written on the side: a process that answers before reading all its input
            // must not deadlock against us.
            let handle = handle.clone();
            tokio::spawn(async move {
                let result = async {
                    if !bytes.is_empty() {
                        handle.write_stdin(&bytes).await?;
                    }
                    handle.close_stdin().await
                };
                if let Err(e) = result.await {
                    tracing::debug!(error = %e, "writing stdin of a process failed");
                }
            });
        }
        Ok(StartedProcess {
            sandbox,
            handle,
            output,
            oom_before,
        })
    }

    /// Whether a started process that ended with `exit` was OOM-killed.
    pub async fn oom_killed(&self, process: &StartedProcess, exit: &ExitInfo) -> bool {
        let Ok(driver) = self.driver(process.sandbox.spec.driver) else {
            return false;
        };
        let runtime = process.sandbox.runtime.clone().unwrap_or_default();
        self.was_oom_kill(exit, process.oom_before, &runtime, driver.as_ref())
            .await
    }

    /// Runs a command to completion and collects its output (at most `max_output_bytes`
    /// of stdout and stderr together).
    pub async fn run(
        &self,
        id_or_name: &str,
        request: ExecRequest,
        stdin: Option<Vec<u8>>,
    ) -> Result<CommandResult, ServiceError> {
        use futures::StreamExt;
        let cap = request.max_output_bytes;
        let mut process = self.exec(id_or_name, request, stdin).await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let exit = loop {
            let event = process
                .output
                .next()
                .await
                .ok_or(ServiceError::Agent(ProtoError::Closed))?;
            let room = cap.saturating_sub((stdout.len() + stderr.len()) as u64);
            let room = usize::try_from(room).unwrap_or(usize::MAX);
            match event.map_err(ServiceError::Agent)? {
                OutputEvent::Stdout { bytes, .. } => {
                    stdout.extend_from_slice(&bytes[..bytes.len().min(room)])
                }
                OutputEvent::Stderr { bytes, .. } => {
                    stderr.extend_from_slice(&bytes[..bytes.len().min(room)])
                }
                OutputEvent::Skipped { .. } => {}
                OutputEvent::Exit(exit) => break exit,
            }
        };
        let oom_killed = self.oom_killed(&process, &exit).await;
        if let Err(e) = process.handle.forget().await {
            tracing::debug!(error = %e, "forgetting a finished process failed");
        }
        let id = process.handle.id;
        Ok(CommandResult {
            completed: CompletedProcess {
                id,
                stdout,
                stderr,
                exit,
            },
            oom_killed,
        })
    }

    /// Starts a background process; its output is kept by the agent for re-attaching.
    pub async fn start_process(
        &self,
        id_or_name: &str,
        mut request: ExecRequest,
    ) -> Result<ProcessHandle, ServiceError> {
        if request.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(ServiceError::Invalid(
                "argv must name a program: it is empty".into(),
            ));
        }
        let (sandbox, agent) = self.running_agent(id_or_name).await?;
        let mut env = sandbox.spec.env.clone();
        env.append(&mut request.env);
        request.env = env;
        agent.exec(request).await.map_err(ServiceError::Agent)
    }

    /// The processes of a running sandbox the agent still knows.
    pub async fn processes(&self, id_or_name: &str) -> Result<Vec<ProcessInfo>, ServiceError> {
        let (_, agent) = self.running_agent(id_or_name).await?;
        agent.list().await.map_err(ServiceError::Agent)
    }

    /// The output of a process from these offsets on, live, ending with its exit.
    pub async fn process_output(
        &self,
        id_or_name: &str,
        process: ProcessId,
        from: OutputOffsets,
    ) -> Result<OutputStream, ServiceError> {
        let (_, agent) = self.running_agent(id_or_name).await?;
        agent
            .output(process, from)
            .await
            .map_err(ServiceError::Agent)
    }

    /// Waits for a process to end; `true` with it when the OOM killer ended it.
    pub async fn wait_process(
        &self,
        id_or_name: &str,
        process: ProcessId,
    ) -> Result<(ExitInfo, bool), ServiceError> {
        let (sandbox, agent) = self.running_agent(id_or_name).await?;
        let exit = agent.wait(process).await.map_err(ServiceError::Agent)?;
        let driver = self.driver(sandbox.spec.driver)?;
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        // Without a count from before it started, any OOM kill in the sandbox counts.
        let oom = self
            .was_oom_kill(&exit, None, &runtime, driver.as_ref())
            .await;
        Ok((exit, oom))
    }

    /// Sends a signal to a process's whole process group.
    pub async fn signal_process(
        &self,
        id_or_name: &str,
        process: ProcessId,
        signal: i32,
    ) -> Result<(), ServiceError> {
        if !(1..=64).contains(&signal) {
            return Err(ServiceError::Invalid(format!(
                "signal must be between 1 and 64, got {signal}"
            )));
        }
        let (_, agent) = self.running_agent(id_or_name).await?;
        agent
            .signal(process, signal)
            .await
            .map_err(ServiceError::Agent)
    }

    /// Writes bytes to a process's stdin.
    pub async fn write_stdin(
        &self,
        id_or_name: &str,
        process: ProcessId,
        bytes: &[u8],
    ) -> Result<(), ServiceError> {
        let (_, agent) = self.running_agent(id_or_name).await?;
        agent
            .write_stdin(process, bytes)
            .await
            .map_err(ServiceError::Agent)
    }

    /// Closes a process's stdin.
    pub async fn close_stdin(
        &self,
        id_or_name: &str,
        process: ProcessId,
    ) -> Result<(), ServiceError> {
        let (_, agent) = self.running_agent(id_or_name).await?;
        agent
            .close_stdin(process)
            .await
            .map_err(ServiceError::Agent)
    }

    /// The agent of a running sandbox, for streaming and background processes.
    pub async fn agent(&self, id_or_name: &str) -> Result<(Sandbox, AgentClient), ServiceError> {
        self.running_agent(id_or_name).await
    }

    /// Resource usage of a sandbox, where the host can tell.
    pub async fn usage(&self, sandbox: &Sandbox) -> Usage {
        match (&sandbox.runtime, self.drivers.get(&sandbox.spec.driver)) {
            (Some(runtime), Some(driver)) => driver.usage(runtime).await,
            _ => Usage::default(),
        }
    }

    /// Whether a process that ended with `exit` was killed by the OOM killer: it died of
    /// SIGKILL and the sandbox's OOM-kill count grew while it ran.
    pub async fn was_oom_kill(
        &self,
        exit: &ExitInfo,
        before: Option<u64>,
        runtime: &str,
        driver: &dyn Driver,
    ) -> bool {
        if exit.signal != Some(9) || exit.timed_out {
            return false;
        }
        match (before, driver.usage(runtime).await.oom_kills) {
            (Some(before), Some(after)) => after > before,
            (None, Some(after)) => after > 0,
            _ => false,
        }
    }

    /// After a daemon restart: re-attaches to sandboxes whose processes survived, marks
    /// the others crashed. Returns how many were adopted.
    pub async fn adopt(&self) -> Result<usize, ServiceError> {
        let mut adopted = 0;
        for sandbox in self.store.list_sandboxes().await? {
            if !matches!(
                sandbox.state,
                SandboxState::Starting | SandboxState::Running | SandboxState::Stopping
            ) {
                continue;
            }
            let driver = self.driver(sandbox.spec.driver)?;
            let runtime = sandbox.runtime.clone().unwrap_or_default();
            let alive = !runtime.is_empty() && driver.is_alive(&runtime).await;
            let connected = if alive {
                self.connect(&sandbox).await.ok()
            } else {
                None
            };
            match (sandbox.state, connected) {
                (SandboxState::Running | SandboxState::Starting, Some(agent)) => {
                    let sandbox = if sandbox.state == SandboxState::Starting {
                        self.transition(&sandbox, SandboxState::Running, None, RuntimeUpdate::Keep)
                            .await?
                    } else {
                        sandbox
                    };
                    self.remember(&sandbox, agent, driver.isolation(&sandbox, &runtime));
                    tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "sandbox adopted");
                    adopted += 1;
                }
                (SandboxState::Stopping, _) => {
                    // It was being stopped when the daemon went away: finish the job.
                    self.stop_locked(sandbox).await?;
                }
                (_, None) => {
                    let reason = "its processes were gone when nexusd restarted".to_owned();
                    if alive && let Err(e) = driver.stop(&sandbox, &runtime, Duration::ZERO).await {
                        tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cannot clean up an unreachable sandbox");
                    }
                    tracing::warn!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, %reason, "sandbox crashed");
                    self.transition(
                        &sandbox,
                        SandboxState::Crashed,
                        Some(reason),
                        RuntimeUpdate::Clear,
                    )
                    .await?;
                }
                _ => {}
            }
        }
        Ok(adopted)
    }

    /// Stops running sandboxes whose `ttl_seconds` have passed, and marks crashed the
    /// ones whose processes died. Call periodically.
    pub async fn tick(&self) -> Result<(), ServiceError> {
        let now = self.clock.now();
        for sandbox in self.store.list_sandboxes().await? {
            if sandbox.state != SandboxState::Running {
                continue;
            }
            let expired = match (sandbox.spec.ttl_seconds, sandbox.started_at) {
                (Some(ttl), Some(started)) => {
                    now.0.saturating_sub(started.0)
                        >= i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX)
                }
                _ => false,
            };
            if expired {
                tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "ttl reached; stopping sandbox");
                if let Err(e) = self.stop(sandbox.id.as_str()).await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "stopping an expired sandbox failed");
                }
                continue;
            }
            let driver = self.driver(sandbox.spec.driver)?;
            let runtime = sandbox.runtime.clone().unwrap_or_default();
            if !driver.is_alive(&runtime).await {
                let lock = self.lock(&sandbox.id);
                let _guard = lock.lock().await;
                let Ok(current) = self.reload(&sandbox.id).await else {
                    continue;
                };
                if current.state != SandboxState::Running || driver.is_alive(&runtime).await {
                    continue;
                }
                let reason = "its init process (the agent) exited".to_owned();
                tracing::warn!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, %reason, "sandbox crashed");
                if let Err(e) = driver.stop(&current, &runtime, Duration::ZERO).await {
                    tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cleanup of a crashed sandbox failed");
                }
                self.forget_runtime(&sandbox.id);
                self.transition(
                    &current,
                    SandboxState::Crashed,
                    Some(reason),
                    RuntimeUpdate::Clear,
                )
                .await?;
            }
        }
        Ok(())
    }

    fn validate(&self, request: CreateSandbox) -> Result<SandboxSpec, ServiceError> {
        let name = match request.name {
            Some(name) => SandboxName::parse(&name).map_err(ServiceError::Invalid)?,
            None => SandboxName::generate(),
        };
        let image = request.image.unwrap_or_else(|| HOST_IMAGE.to_owned());
        if image != HOST_IMAGE {
            return Err(ServiceError::Invalid(format!(
                "image {image:?} does not exist; the available image is {HOST_IMAGE:?}"
            )));
        }
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
        Ok(SandboxSpec {
            name,
            image,
            driver,
            env: request.env,
            labels: request.labels,
            limits,
            ttl_seconds: request.ttl_seconds,
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
        let started = match driver.start(&sandbox).await {
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
        // Record the handle at once, so a daemon that dies now can still find the sandbox.
        let recorded = self
            .transition(
                &sandbox,
                SandboxState::Starting,
                None,
                RuntimeUpdate::Set(started.runtime.clone()),
            )
            .await;
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
        let agent =
            match tokio::time::timeout(self.config.agent_ready_timeout, self.connect(&sandbox))
                .await
            {
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
        tracing::info!(sandbox_id = %sandbox.id, name = %sandbox.spec.name, "sandbox running");
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
        let sandbox = self.find(id_or_name).await?;
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
        Ok(self.store.transition_sandbox(&transition).await?)
    }

    async fn find(&self, id_or_name: &str) -> Result<Sandbox, ServiceError> {
        let found = match SandboxId::parse(id_or_name) {
            Some(id) => self.store.sandbox(&id).await?,
            None => match SandboxName::parse(id_or_name) {
                Ok(name) => self.store.sandbox_by_name(&name).await?,
                Err(_) => None,
            },
        };
        found.ok_or_else(|| ServiceError::NotFound(id_or_name.to_owned()))
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
