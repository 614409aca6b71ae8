//! Terminal sessions on [`AgentClient`] (protocol version 3): open, attach (with the
//! replay of what the agent kept), input, resize, close and list.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{AgentClient, expect_done, response_error, unexpected};
use crate::terminal::{
    TermAttachRequest, TermCloseRequest, TermExit, TermOpenRequest, TermResizeRequest, TermSize,
    TerminalId, TerminalInfo,
};
use crate::{
    Event, Frame, FrameType, MAX_DATA_CHUNK, ProtoError, Request, Response,
    TERMINAL_PROTOCOL_VERSION, TerminalStream,
};

impl AgentClient {
    /// Starts a login shell on a new pseudo-terminal of `size` (clamped by the agent),
    /// with `env` on top of the agent's default environment.
    pub async fn term_open(
        &self,
        size: TermSize,
        env: BTreeMap<String, String>,
    ) -> Result<TerminalInfo, ProtoError> {
        self.require_terminal("term_open")?;
        match self
            .call(&Request::TermOpen(TermOpenRequest { size, env }))
            .await?
        {
            Response::TermOpened { terminal } => Ok(terminal),
            other => Err(unexpected(&other)),
        }
    }

    /// Attaches to session `id`: returns the session as it is now, then its output as a
    /// stream that starts with the replay of what the agent kept and goes on live until
    /// the shell exits. Output is flow-controlled: a consumer that stops polling the
    /// stream stops the agent reading the terminal. Dropping the stream detaches; the
    /// session keeps running.
    pub async fn term_attach(
        &self,
        id: TerminalId,
    ) -> Result<(TerminalInfo, TerminalStream), ProtoError> {
        self.require_terminal("term_attach")?;
        let window = self.shared.output_window;
        let mut channel = self.shared.open_output(window)?;
        let request = Request::TermAttach(TermAttachRequest { id, credit: window });
        channel.send(Frame::json(FrameType::Request, channel.id, &request))?;
        let frame = channel.recv().await?;
        match frame.kind {
            FrameType::Event => match frame.parse::<Event>()? {
                Event::TermAttached { terminal } => {
                    Ok((terminal, TerminalStream::new(channel, window)))
                }
                other => Err(ProtoError::Protocol(format!(
                    "expected term_attached, got {other:?}"
                ))),
            },
            FrameType::Response => {
                channel.finished = true;
                Err(response_error(frame.response()?))
            }
            other => Err(ProtoError::Protocol(format!(
                "unexpected {other:?} frame before a terminal attached"
            ))),
        }
    }

    /// Writes `data` to session `id`'s input (what a keyboard would type); returns once
    /// the terminal took all of it.
    pub async fn term_input(&self, id: TerminalId, data: &[u8]) -> Result<(), ProtoError> {
        self.require_terminal("term_input")?;
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            let mut channel = self.shared.open()?;
            channel.send(Frame::data(FrameType::TermInput, channel.id, id.0, chunk))?;
            expect_done(channel.response().await?)?;
        }
        Ok(())
    }

    /// Changes session `id`'s size (clamped by the agent).
    pub async fn term_resize(&self, id: TerminalId, size: TermSize) -> Result<(), ProtoError> {
        self.require_terminal("term_resize")?;
        self.call_done(&Request::TermResize(TermResizeRequest { id, size }))
            .await
    }

    /// Ends session `id`: SIGHUP to its processes, SIGKILL to those left after `grace`;
    /// returns how the shell ended. The session is forgotten.
    pub async fn term_close(
        &self,
        id: TerminalId,
        grace: Duration,
    ) -> Result<TermExit, ProtoError> {
        self.require_terminal("term_close")?;
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        match self
            .call(&Request::TermClose(TermCloseRequest { id, grace_ms }))
            .await?
        {
            Response::TermExited { exit } => Ok(exit),
            other => Err(unexpected(&other)),
        }
    }

    /// Every session the agent knows (running, and ended ones not yet closed), oldest
    /// first.
    pub async fn term_list(&self) -> Result<Vec<TerminalInfo>, ProtoError> {
        self.require_terminal("term_list")?;
        match self.call(&Request::TermList).await? {
            Response::Terminals { terminals } => Ok(terminals),
            other => Err(unexpected(&other)),
        }
    }

    /// Fails unless the connection speaks terminal sessions.
    fn require_terminal(&self, op: &'static str) -> Result<(), ProtoError> {
        let negotiated = self.shared.info.protocol_version;
        if negotiated < TERMINAL_PROTOCOL_VERSION {
            return Err(ProtoError::Unsupported {
                op,
                needed: TERMINAL_PROTOCOL_VERSION,
                negotiated,
            });
        }
        Ok(())
    }
}
