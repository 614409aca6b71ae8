//! Terminal sessions in running sandboxes: login shells on pseudo-terminals, run by the
//! agent, that outlive the connections attached to them. The same state checks as exec:
//! an unknown sandbox is `NotFound`, a paused one `Paused`, any other not running one
//! `NotRunning`.

use std::time::Duration;

use nexus_agent_proto::{TermExit, TermSize, TerminalId, TerminalInfo, TerminalStream};

use super::{SandboxService, ServiceError};
use crate::sandbox::Sandbox;

/// How long a closed session's processes get between SIGHUP and SIGKILL.
pub const TERMINAL_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A session attached to: its state when attaching, and its output (the replay of what
/// the agent kept, then live) until the shell exits. Dropping `output` detaches; the
/// session keeps running.
#[derive(Debug)]
pub struct AttachedTerminal {
    /// The sandbox it runs in.
    pub sandbox: Sandbox,
    /// The session as it was when attaching.
    pub terminal: TerminalInfo,
    /// Its output.
    pub output: TerminalStream,
}

impl SandboxService {
    /// Opens a session: a login shell of `size` (clamped) with the sandbox's environment.
    pub async fn open_terminal(
        &self,
        id_or_name: &str,
        size: TermSize,
    ) -> Result<(Sandbox, TerminalInfo), ServiceError> {
        let (sandbox, agent) = self.running_agent(id_or_name).await?;
        let info = agent
            .term_open(size.clamp(), sandbox.spec.env.clone())
            .await
            .map_err(ServiceError::Agent)?;
        tracing::info!(sandbox_id = %sandbox.id, terminal = %info.id, "terminal session opened");
        Ok((sandbox, info))
    }

    /// Attaches to session `terminal`; an unknown one is the agent's `unknown_terminal`.
    pub async fn attach_terminal(
        &self,
        id_or_name: &str,
        terminal: TerminalId,
    ) -> Result<AttachedTerminal, ServiceError> {
        let (sandbox, agent) = self.running_agent(id_or_name).await?;
        let (terminal, output) = agent
            .term_attach(terminal)
            .await
            .map_err(ServiceError::Agent)?;
        Ok(AttachedTerminal {
            sandbox,
            terminal,
            output,
        })
    }

    /// Types `bytes` into session `terminal`.
    pub async fn terminal_input(
        &self,
        id_or_name: &str,
        terminal: TerminalId,
        bytes: &[u8],
    ) -> Result<(), ServiceError> {
        let (_, agent) = self.running_agent(id_or_name).await?;
        agent
            .term_input(terminal, bytes)
            .await
            .map_err(ServiceError::Agent)
    }

    /// Changes session `terminal`'s size (clamped).
    pub async fn resize_terminal(
        &self,
        id_or_name: &str,
        terminal: TerminalId,
        size: TermSize,
    ) -> Result<(), ServiceError> {
        let (_, agent) = self.running_agent(id_or_name).await?;
        agent
            .term_resize(terminal, size.clamp())
            .await
            .map_err(ServiceError::Agent)
    }

    /// The sandbox's sessions, oldest first (ended ones until closed).
    pub async fn terminals(&self, id_or_name: &str) -> Result<Vec<TerminalInfo>, ServiceError> {
        let (_, agent) = self.running_agent(id_or_name).await?;
        agent.term_list().await.map_err(ServiceError::Agent)
    }

    /// Ends session `terminal` (SIGHUP, SIGKILL after [`TERMINAL_CLOSE_GRACE`]) and
    /// forgets it; returns how its shell ended.
    pub async fn close_terminal(
        &self,
        id_or_name: &str,
        terminal: TerminalId,
    ) -> Result<TermExit, ServiceError> {
        let (sandbox, agent) = self.running_agent(id_or_name).await?;
        let exit = agent
            .term_close(terminal, TERMINAL_CLOSE_GRACE)
            .await
            .map_err(ServiceError::Agent)?;
        tracing::info!(sandbox_id = %sandbox.id, %terminal, %exit, "terminal session closed");
        Ok(exit)
    }
}

#[cfg(test)]
mod tests {
    use nexus_agent_proto::{TermSize, TerminalId};

    use super::super::tests::{request, world};
    use crate::service::{CreateSandbox, ServiceError};

    #[tokio::test]
    async fn terminals_need_an_existing_running_unpaused_sandbox() {
        let w = world();
        let size = TermSize::DEFAULT;
        assert!(matches!(
            w.service
                .open_terminal("nope", size)
                .await
                .expect_err("unknown"),
            ServiceError::NotFound(_)
        ));
        assert!(matches!(
            w.service.terminals("nope").await.expect_err("unknown"),
            ServiceError::NotFound(_)
        ));
        w.service
            .create(CreateSandbox {
                start: false,
                ..request("idle")
            })
            .await
            .expect("create");
        for err in [
            w.service.open_terminal("idle", size).await.map(|_| ()),
            w.service
                .attach_terminal("idle", TerminalId(1))
                .await
                .map(|_| ()),
            w.service.terminal_input("idle", TerminalId(1), b"x").await,
            w.service.resize_terminal("idle", TerminalId(1), size).await,
            w.service.terminals("idle").await.map(|_| ()),
            w.service
                .close_terminal("idle", TerminalId(1))
                .await
                .map(|_| ()),
        ] {
            assert!(
                matches!(err, Err(ServiceError::NotRunning { .. })),
                "{err:?}"
            );
        }
        w.service.create(request("cold")).await.expect("create");
        w.service.pause("cold").await.expect("pause");
        assert!(matches!(
            w.service
                .open_terminal("cold", size)
                .await
                .expect_err("paused"),
            ServiceError::Paused { .. }
        ));
        assert!(matches!(
            w.service
                .attach_terminal("cold", TerminalId(1))
                .await
                .expect_err("paused"),
            ServiceError::Paused { .. }
        ));
        // Running again: the request reaches the agent (the fake one refuses it).
        w.service.resume("cold").await.expect("resume");
        assert!(matches!(
            w.service.terminals("cold").await.expect_err("fake agent"),
            ServiceError::Agent(_)
        ));
    }
}
