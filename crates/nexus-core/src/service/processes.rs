//! Commands and background processes in running sandboxes, and how they ended.

use nexus_agent_proto::{
    AgentClient, CompletedProcess, ExecRequest, ExitInfo, OutputEvent, OutputOffsets, OutputStream,
    ProcessHandle, ProcessId, ProcessInfo, ProtoError,
};

use super::{CommandResult, SandboxService, ServiceError, StartedProcess};
use crate::driver::{Driver, Usage};
use crate::sandbox::Sandbox;

impl SandboxService {
    /// Starts a command in a running sandbox with its output attached from the first
    /// byte. The sandbox's environment is the base of the command's; `stdin`, when given,
    /// is written and then closed.
    pub async fn exec(
        &self,
        id_or_name: &str,
        request: ExecRequest,
        stdin: Option<Vec<u8>>,
    ) -> Result<StartedProcess, ServiceError> {
        let (sandbox, agent, mut request) = self.prepare(id_or_name, request).await?;
        request.stdin = stdin.is_some();
        let runtime = sandbox.runtime.clone().unwrap_or_default();
        let oom_before = self.driver(sandbox.spec.driver)?.oom_kills(&runtime).await;
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
        let id = process.handle.id;
        // The agent's record of the finished process goes on the side: the caller has
        // everything already and need not wait for another round trip.
        let handle = process.handle.clone();
        tokio::spawn(async move {
            if let Err(e) = handle.forget().await {
                tracing::debug!(error = %e, "forgetting a finished process failed");
            }
        });
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
        request: ExecRequest,
    ) -> Result<ProcessHandle, ServiceError> {
        let (_, agent, request) = self.prepare(id_or_name, request).await?;
        agent.exec(request).await.map_err(ServiceError::Agent)
    }

    /// What every command needs first: a program to run, the running sandbox's agent, and
    /// the sandbox's environment under the command's own.
    async fn prepare(
        &self,
        id_or_name: &str,
        mut request: ExecRequest,
    ) -> Result<(Sandbox, AgentClient, ExecRequest), ServiceError> {
        if request.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(ServiceError::Invalid(
                "argv must name a program: it is empty".into(),
            ));
        }
        let (sandbox, agent) = self.running_agent(id_or_name).await?;
        let mut env = sandbox.spec.env.clone();
        env.append(&mut request.env);
        request.env = env;
        Ok((sandbox, agent, request))
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
        match (before, driver.oom_kills(runtime).await) {
            (Some(before), Some(after)) => after > before,
            (None, Some(after)) => after > 0,
            _ => false,
        }
    }
}
