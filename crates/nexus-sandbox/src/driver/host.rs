//! The `host` driver: the agent as a plain child process with its cwd in the workspace
//! (the tree the service passes, or the legacy private directory). No namespaces, no
//! seccomp, no limits: refused unless the config allows it, and labelled unisolated
//! everywhere. With no mount namespace it cannot mount other workspaces read-only, so
//! it refuses sandboxes that ask for it rather than exposing them writable.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use nexus_core::{
    AgentStream, Driver, DriverError, DriverKind, Isolation, LimitEnforcement, Sandbox,
    SandboxMounts, Started, Usage,
};
use serde::{Deserialize, Serialize};

use super::{Layout, remove_tree};
use crate::launch::{is_alive, start_time, try_reap};

/// Runs sandboxes as plain processes.
#[derive(Debug)]
pub struct HostDriver {
    layout: Layout,
    agent: PathBuf,
}

/// What is persisted about a host sandbox.
#[derive(Debug, Serialize, Deserialize)]
struct Runtime {
    pid: u32,
    start: u64,
    socket: PathBuf,
    runtime_dir: PathBuf,
}

impl HostDriver {
    /// A host driver running `agent` with files under `layout`.
    pub fn new(layout: Layout, agent: PathBuf) -> Self {
        Self { layout, agent }
    }

    fn spawn(&self, sandbox: &Sandbox, mounts: &SandboxMounts) -> Result<Runtime, String> {
        let id = sandbox.id.as_str();
        let workspace = match &mounts.workspace {
            Some(tree) if tree.is_dir() => tree.clone(),
            Some(tree) => return Err(format!("workspace {} is not a directory", tree.display())),
            None => self
                .layout
                .ensure_workspace(id)
                .map_err(|e| format!("cannot create the workspace: {e}"))?,
        };
        let runtime_dir = self.layout.sandbox_runtime(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&runtime_dir)
            .map_err(|e| format!("cannot create {}: {e}", runtime_dir.display()))?;
        let socket = runtime_dir.join("agent.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", socket.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(runtime_dir.join("sandbox.log"))
            .map_err(|e| format!("cannot open the sandbox log: {e}"))?;
        let listen_fd = listener.as_raw_fd();
        let mut command = Command::new(&self.agent);
        command
            .args(["--listen-fd", "3", "--workdir"])
            .arg(&workspace)
            .current_dir(&workspace)
            .env_clear()
            .env("PATH", crate::bwrap::DEFAULT_PATH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // SAFETY: between fork and exec only async-signal-safe calls are made: setsid and
        // dup2 of a descriptor that is open in the parent.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::dup2(listen_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run the agent {}: {e}", self.agent.display()))?;
        let pid = child.id();
        // Not waited on here: it must outlive this daemon. `is_alive` reaps it.
        drop(child);
        drop(listener);
        let start = start_time(pid).ok_or("the agent exited at once; see sandbox.log")?;
        std::fs::write(runtime_dir.join("agent.pid"), format!("{pid}\n"))
            .map_err(|e| e.to_string())?;
        Ok(Runtime {
            pid,
            start,
            socket,
            runtime_dir,
        })
    }
}

fn parse(runtime: &str) -> Option<Runtime> {
    serde_json::from_str(runtime).ok()
}

#[async_trait]
impl Driver for HostDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Host
    }

    fn check_available(&self) -> Result<(), DriverError> {
        if !self.agent.exists() {
            return Err(DriverError::Unavailable {
                driver: DriverKind::Host,
                reason: format!(
                    "the agent binary {} does not exist; reinstall nexus or set agent_path",
                    self.agent.display()
                ),
            });
        }
        Ok(())
    }

    async fn start(
        &self,
        sandbox: &Sandbox,
        mounts: &SandboxMounts,
    ) -> Result<Started, DriverError> {
        if !mounts.read_only.is_empty() {
            return Err(DriverError::Unsupported {
                driver: DriverKind::Host,
                what: "mount other workspaces".into(),
                reason: "the host driver has no mount namespace; use the bwrap driver".into(),
            });
        }
        let runtime = match self.spawn(sandbox, mounts) {
            Ok(runtime) => runtime,
            Err(reason) => {
                let _ = remove_tree(&self.layout.sandbox_runtime(sandbox.id.as_str()));
                return Err(DriverError::Start { reason });
            }
        };
        let json = serde_json::to_string(&runtime).expect("the runtime record serializes");
        Ok(Started {
            isolation: self.isolation(sandbox, &json),
            runtime: json,
        })
    }

    async fn connect(&self, _sandbox: &Sandbox, runtime: &str) -> Result<AgentStream, DriverError> {
        let runtime = parse(runtime).ok_or(DriverError::Connect {
            reason: "no runtime record".into(),
        })?;
        super::connect_agent(&runtime.socket).await
    }

    async fn is_alive(&self, runtime: &str) -> bool {
        let Some(runtime) = parse(runtime) else {
            return false;
        };
        try_reap(runtime.pid);
        is_alive(runtime.pid, runtime.start)
    }

    fn isolation(&self, sandbox: &Sandbox, _runtime: &str) -> Isolation {
        let not_enforced = |name: &str, requested: Option<String>| {
            requested.map(|requested| LimitEnforcement {
                name: name.into(),
                requested,
                enforced: false,
                detail: "the host driver enforces no limits".into(),
            })
        };
        let l = &sandbox.spec.limits;
        Isolation {
            isolated: false,
            namespaces: Vec::new(),
            seccomp: false,
            capabilities: "those of the daemon's user".into(),
            no_new_privs: false,
            uid_inside: None,
            uid_host: Some(nix::unistd::Uid::effective().as_raw()),
            limits: [
                not_enforced("memory", l.memory_mib.map(|m| format!("{m} MiB"))),
                not_enforced("cpu", l.cpus.map(|c| format!("{c} cpus"))),
                not_enforced("pids", l.pids.map(|p| format!("{p} processes"))),
                not_enforced("tmp", l.tmp_mib.map(|t| format!("{t} MiB"))),
            ]
            .into_iter()
            .flatten()
            .collect(),
            warnings: vec![
                "host driver: NOT isolated; commands run as the daemon's user with full access to the host"
                    .into(),
            ],
            network: "unrestricted: the host driver applies no network policy (the host's own network)".into(),
        }
    }

    async fn usage(&self, _runtime: &str) -> Usage {
        Usage::default()
    }

    async fn stop(
        &self,
        _sandbox: &Sandbox,
        runtime: &str,
        _grace: Duration,
    ) -> Result<(), DriverError> {
        let Some(runtime) = parse(runtime) else {
            return Ok(());
        };
        // The service has already asked the agent to end its processes gracefully
        // (`terminate_all` with the grace period); the agent itself ignores SIGTERM.
        if is_alive(runtime.pid, runtime.start) {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(runtime.pid).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            for _ in 0..200 {
                try_reap(runtime.pid);
                if !is_alive(runtime.pid, runtime.start) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        remove_tree(&runtime.runtime_dir).map_err(|reason| DriverError::Cleanup { reason })
    }

    /// Removes the runtime files and the private data directory; never a workspace tree
    /// (the service owns those).
    async fn destroy(&self, sandbox: &Sandbox) -> Result<(), DriverError> {
        let id = sandbox.id.as_str();
        remove_tree(&self.layout.sandbox_runtime(id))
            .map_err(|reason| DriverError::Cleanup { reason })?;
        remove_tree(&self.layout.sandbox_data(id)).map_err(|reason| DriverError::Cleanup { reason })
    }
}
