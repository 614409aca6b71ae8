//! [`AgentClient`]: the host side of the protocol. A cheap, cloneable handle; two background
//! tasks own the connection (one reads and routes frames to channels, one writes), so any
//! number of operations run at once on one connection.

mod fs;
mod routing;
mod terminal;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use routing::Shared;
pub(crate) use routing::{Channel, Incoming};

use crate::stream::{CompletedProcess, OutputEvent, OutputStream};
use crate::{
    AgentInfo, Attach, ErrorCode, Event, ExecRequest, ExitInfo, Frame, FrameCodec, FrameType,
    MAX_DATA_CHUNK, OutputOffsets, Pong, ProcessId, ProcessInfo, ProtoError, Request, Response,
    SUPPORTED_VERSIONS, TerminateReport, handshake,
};

/// Flow-control window of an output stream: bytes the agent may send before the client
/// has consumed any. Half of it is granted back each time half has been consumed. 1 MiB,
/// the agent's default window of kept output: with 256 KiB a stream of `head -c 1G
/// /dev/zero` stalled on credit often enough to cost a fifth of its throughput.
pub const DEFAULT_OUTPUT_WINDOW: u32 = 1024 * 1024;

/// Flow-control window of a file read or tar download (1 MiB): larger than the output
/// window, since file transfers are bulk.
pub const DEFAULT_FILE_WINDOW: u32 = 1024 * 1024;

/// Settings of a connection.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Protocol versions offered in HELLO.
    pub versions: RangeInclusive<u16>,
    /// The name the agent logs for this client.
    pub client_name: String,
    /// Flow-control window of each output stream.
    pub output_window: u32,
    /// Flow-control window of each file read and tar download.
    pub file_window: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            versions: SUPPORTED_VERSIONS,
            client_name: concat!("nexus-agent-proto/", env!("CARGO_PKG_VERSION")).to_owned(),
            output_window: DEFAULT_OUTPUT_WINDOW,
            file_window: DEFAULT_FILE_WINDOW,
        }
    }
}

/// A connection to an agent. Clones share the connection, which closes when the last
/// clone (and every [`ProcessHandle`] and [`OutputStream`] made from it) is dropped.
/// Processes never depend on the connection: they keep running when it closes.
#[derive(Clone, Debug)]
pub struct AgentClient {
    shared: Arc<Shared>,
}

/// A started process: its ids plus the client, for convenience.
#[derive(Clone, Debug)]
pub struct ProcessHandle {
    /// The agent's id of the process.
    pub id: ProcessId,
    /// Its pid (and process group id) in the agent's PID namespace.
    pub pid: u32,
    client: AgentClient,
}

impl AgentClient {
    /// Handshakes over `stream` with the default options.
    pub async fn handshake<S>(stream: S) -> Result<(AgentClient, AgentInfo), ProtoError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::handshake_with(stream, ClientOptions::default()).await
    }

    /// Handshakes over `stream`, then starts the tasks that own it.
    pub async fn handshake_with<S>(
        stream: S,
        options: ClientOptions,
    ) -> Result<(AgentClient, AgentInfo), ProtoError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut framed = Framed::new(stream, FrameCodec::new());
        let info = handshake::client_handshake(
            &mut framed,
            options.versions.clone(),
            &options.client_name,
        )
        .await?;
        let window = options.output_window.max(MAX_DATA_CHUNK as u32);
        let file_window = options.file_window.max(MAX_DATA_CHUNK as u32);
        let shared = Shared::start(framed, info.clone(), window, file_window);
        Ok((AgentClient { shared }, info))
    }

    /// What the agent said about itself in the handshake.
    pub fn info(&self) -> &AgentInfo {
        &self.shared.info
    }

    /// Whether the connection is gone; every call fails with [`ProtoError::Closed`] then.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Round trip to the agent.
    pub async fn ping(&self) -> Result<Pong, ProtoError> {
        match self.call(&Request::Ping).await? {
            Response::Pong { pong } => Ok(pong),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a process and returns at once. Its output is kept (a recent window of it
    /// once nobody reads) until [`AgentClient::forget`].
    pub async fn exec(&self, request: ExecRequest) -> Result<ProcessHandle, ProtoError> {
        let request = Request::Exec {
            process: request,
            attach: None,
        };
        match self.call(&request).await? {
            Response::Started { id, pid } => Ok(self.handle(id, pid)),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a process with an output stream attached from its first byte, so nothing is
    /// lost however fast it writes (the stream's flow control holds the process back).
    pub async fn exec_attached(
        &self,
        request: ExecRequest,
    ) -> Result<(ProcessHandle, OutputStream), ProtoError> {
        let window = self.shared.output_window;
        let mut channel = self.shared.open_output(window)?;
        let request = Request::Exec {
            process: request,
            attach: Some(Attach { credit: window }),
        };
        channel.send(Frame::json(FrameType::Request, channel.id, &request))?;
        let frame = channel.recv().await?;
        match frame.kind {
            FrameType::Event => match frame.parse::<Event>()? {
                Event::Started { id, pid } => {
                    Ok((self.handle(id, pid), OutputStream::new(channel, window)))
                }
                other => Err(ProtoError::Protocol(format!(
                    "expected a started event, got {other:?}"
                ))),
            },
            FrameType::Response => {
                channel.finished = true;
                Err(response_error(frame.response()?))
            }
            other => Err(ProtoError::Protocol(format!(
                "unexpected {other:?} frame before the process started"
            ))),
        }
    }

    /// Streams the output of process `id` from the offsets `from`, live, ending with
    /// [`OutputEvent::Exit`]. Bytes no longer in the agent's window are reported as
    /// [`OutputEvent::Skipped`].
    pub async fn output(
        &self,
        id: ProcessId,
        from: OutputOffsets,
    ) -> Result<OutputStream, ProtoError> {
        let window = self.shared.output_window;
        let channel = self.shared.open_output(window)?;
        let request = Request::Output {
            id,
            from,
            credit: window,
        };
        channel.send(Frame::json(FrameType::Request, channel.id, &request))?;
        Ok(OutputStream::new(channel, window))
    }

    /// Waits until process `id` has finished.
    pub async fn wait(&self, id: ProcessId) -> Result<ExitInfo, ProtoError> {
        match self.call(&Request::Wait { id }).await? {
            Response::Exited { exit } => Ok(exit),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a process to completion and collects its output (at most `max_output_bytes`
    /// of stdout and stderr together; `exit.output_truncated` tells when more was
    /// written). The process's record is forgotten afterwards.
    pub async fn run(&self, request: ExecRequest) -> Result<CompletedProcess, ProtoError> {
        let cap = request.max_output_bytes;
        let (handle, mut stream) = self.exec_attached(request).await?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let exit = loop {
            let event = stream.next().await.ok_or(ProtoError::Closed)??;
            let room = cap.saturating_sub((stdout.len() + stderr.len()) as u64);
            let room = usize::try_from(room).unwrap_or(usize::MAX);
            let (buf, bytes) = match event {
                OutputEvent::Stdout { bytes, .. } => (&mut stdout, bytes),
                OutputEvent::Stderr { bytes, .. } => (&mut stderr, bytes),
                OutputEvent::Skipped { .. } => continue,
                OutputEvent::Exit(exit) => break exit,
            };
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        };
        drop(stream);
        if let Err(err) = self.forget(handle.id).await {
            tracing::debug!(id = %handle.id, error = %err, "forgetting a finished run failed");
        }
        Ok(CompletedProcess {
            id: handle.id,
            stdout,
            stderr,
            exit,
        })
    }

    /// Sends `signal` to process `id`'s whole process group.
    pub async fn signal(&self, id: ProcessId, signal: i32) -> Result<(), ProtoError> {
        self.call_done(&Request::Signal { id, signal }).await
    }

    /// Writes `data` to process `id`'s stdin; returns once the pipe has taken all of it
    /// (so a process that does not read holds the writer back).
    pub async fn write_stdin(&self, id: ProcessId, data: &[u8]) -> Result<(), ProtoError> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            let mut channel = self.shared.open()?;
            channel.send(Frame::data(FrameType::Stdin, channel.id, id.0, chunk))?;
            expect_done(channel.response().await?)?;
        }
        Ok(())
    }

    /// Closes process `id`'s stdin (it reads end-of-file).
    pub async fn close_stdin(&self, id: ProcessId) -> Result<(), ProtoError> {
        self.call_done(&Request::CloseStdin { id }).await
    }

    /// Every process the agent knows, oldest first.
    pub async fn list(&self) -> Result<Vec<ProcessInfo>, ProtoError> {
        match self.call(&Request::List).await? {
            Response::Processes { processes } => Ok(processes),
            other => Err(unexpected(&other)),
        }
    }

    /// Drops the record and kept output of exited process `id`.
    pub async fn forget(&self, id: ProcessId) -> Result<(), ProtoError> {
        self.call_done(&Request::Forget { id }).await
    }

    /// SIGTERMs every running process group, SIGKILLs those still running after `grace`,
    /// and returns once all have exited.
    pub async fn terminate_all(&self, grace: Duration) -> Result<TerminateReport, ProtoError> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        match self.call(&Request::TerminateAll { grace_ms }).await? {
            Response::Terminated { report } => Ok(report),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `request` on a new channel and returns its RESPONSE; an error response becomes
    /// [`ProtoError::Remote`].
    async fn call(&self, request: &Request) -> Result<Response, ProtoError> {
        let mut channel = self.shared.open()?;
        channel.send(Frame::json(FrameType::Request, channel.id, request))?;
        match channel.response().await? {
            Response::Error { code, message } => Err(ProtoError::Remote { code, message }),
            response => Ok(response),
        }
    }

    async fn call_done(&self, request: &Request) -> Result<(), ProtoError> {
        expect_done(self.call(request).await?)
    }

    fn handle(&self, id: ProcessId, pid: u32) -> ProcessHandle {
        ProcessHandle {
            id,
            pid,
            client: self.clone(),
        }
    }
}

impl ProcessHandle {
    /// The client this handle uses.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// See [`AgentClient::output`].
    pub async fn output(&self, from: OutputOffsets) -> Result<OutputStream, ProtoError> {
        self.client.output(self.id, from).await
    }

    /// See [`AgentClient::wait`].
    pub async fn wait(&self) -> Result<ExitInfo, ProtoError> {
        self.client.wait(self.id).await
    }

    /// See [`AgentClient::signal`].
    pub async fn signal(&self, signal: i32) -> Result<(), ProtoError> {
        self.client.signal(self.id, signal).await
    }

    /// See [`AgentClient::write_stdin`].
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ProtoError> {
        self.client.write_stdin(self.id, data).await
    }

    /// See [`AgentClient::close_stdin`].
    pub async fn close_stdin(&self) -> Result<(), ProtoError> {
        self.client.close_stdin(self.id).await
    }

    /// See [`AgentClient::forget`].
    pub async fn forget(&self) -> Result<(), ProtoError> {
        self.client.forget(self.id).await
    }
}

pub(crate) fn closed_error(reason: Option<(ErrorCode, String)>) -> ProtoError {
    match reason {
        Some((code, message)) => ProtoError::Fatal { code, message },
        None => ProtoError::Closed,
    }
}

pub(crate) fn response_error(response: Response) -> ProtoError {
    match response {
        Response::Error { code, message } => ProtoError::Remote { code, message },
        other => unexpected(&other),
    }
}

fn unexpected(response: &Response) -> ProtoError {
    ProtoError::Protocol(format!("unexpected response {response:?}"))
}

fn expect_done(response: Response) -> Result<(), ProtoError> {
    match response {
        Response::Done => Ok(()),
        other => Err(response_error(other)),
    }
}

#[cfg(test)]
mod tests {
    use futures::SinkExt;
    use tokio::io::DuplexStream;

    use super::*;
    use crate::handshake::accept_handshake;
    use crate::{ConnectionError, OutputOffsets};

    type Agent = Framed<DuplexStream, FrameCodec>;

    fn info(version: u16) -> AgentInfo {
        AgentInfo {
            protocol_version: version,
            agent_version: "fake".into(),
            pid: 7,
            uid: 0,
            pid1: false,
            subreaper: true,
            dumpable: false,
            window_bytes: 1024,
        }
    }

    /// A client connected to a scripted fake agent.
    async fn fake(window: u32) -> (AgentClient, Agent) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut agent = Framed::new(b, FrameCodec::new());
        let options = ClientOptions {
            output_window: window,
            ..ClientOptions::default()
        };
        let (client, accepted) = tokio::join!(
            AgentClient::handshake_with(a, options),
            accept_handshake(&mut agent, SUPPORTED_VERSIONS, info)
        );
        accepted.unwrap();
        (client.unwrap().0, agent)
    }

    async fn next_frame(agent: &mut Agent) -> Frame {
        tokio::time::timeout(Duration::from_secs(5), agent.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap()
    }

    /// Answers the `fs_read` REQUEST that `agent` receives next with 1 KiB of data and,
    /// when `finish`, its RESPONSE.
    async fn answer_read(agent: &mut Agent, finish: bool) -> u32 {
        let request = next_frame(agent).await;
        assert_eq!(request.kind, FrameType::Request);
        let stat = crate::fs::FileStat {
            path: "f".into(),
            file_type: crate::fs::FileType::File,
            size: 1024,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ms: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            symlink_target: None,
            sha256: None,
        };
        let start = Event::FsReadStart(crate::fs::FileReadInfo {
            stat,
            offset: 0,
            length: 1024,
        });
        let channel = request.channel;
        agent
            .send(Frame::json(FrameType::Event, channel, &start))
            .await
            .unwrap();
        agent
            .send(Frame::data(FrameType::FileData, channel, 0, &[7; 1024]))
            .await
            .unwrap();
        if finish {
            let done = Response::FsReadDone { bytes: 1024 };
            agent
                .send(Frame::json(FrameType::Response, channel, &done))
                .await
                .unwrap();
        }
        channel
    }

    /// Reads the 1 KiB `answer_read` sends, stopping at its last byte as an HTTP body of
    /// known length does, after the RESPONSE (if any) had time to arrive.
    async fn read_known_length(client: &AgentClient) {
        let (info, mut stream) = client.fs_read("f", 0, None).await.unwrap();
        let mut got = 0;
        while got < info.length {
            got += stream.next().await.unwrap().unwrap().len() as u64;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_read_dropped_after_its_answer_arrived_sends_no_cancel() {
        let (client, mut agent) = fake(1024).await;
        let (_, channel) = tokio::join!(read_known_length(&client), answer_read(&mut agent, true));
        // The next frame the agent sees is the next request, not a CANCEL of `channel`.
        let ping = tokio::spawn(async move { client.ping().await });
        let next = next_frame(&mut agent).await;
        assert_eq!(
            (next.kind, next.channel == channel),
            (FrameType::Request, false),
            "{next:?}"
        );
        ping.abort();
    }

    #[tokio::test]
    async fn a_read_dropped_before_its_answer_sends_cancel() {
        let (client, mut agent) = fake(1024).await;
        let (_, channel) = tokio::join!(read_known_length(&client), answer_read(&mut agent, false));
        let next = next_frame(&mut agent).await;
        assert_eq!((next.kind, next.channel), (FrameType::Cancel, channel));
    }

    fn exited(code: i32) -> Response {
        Response::Exited {
            exit: ExitInfo {
                exit_code: Some(code),
                signal: None,
                timed_out: false,
                output_truncated: false,
                duration_ms: 1,
                stdout_bytes: 0,
                stderr_bytes: 0,
            },
        }
    }

    #[tokio::test]
    async fn concurrent_calls_get_their_own_answers_in_any_order() {
        let (client, mut agent) = fake(DEFAULT_OUTPUT_WINDOW).await;
        let calls = async { tokio::join!(client.wait(ProcessId(1)), client.wait(ProcessId(2))) };
        let agent_side = async {
            let mut requests = Vec::new();
            for _ in 0..2 {
                let frame = next_frame(&mut agent).await;
                let Request::Wait { id } = frame.parse().unwrap() else {
                    panic!("expected wait");
                };
                requests.push((frame.channel, id));
            }
            // Answer in reverse order, each with its own process id as the exit code.
            for (channel, id) in requests.into_iter().rev() {
                let answer = exited(i32::try_from(id.0).unwrap());
                agent
                    .send(Frame::json(FrameType::Response, channel, &answer))
                    .await
                    .unwrap();
            }
        };
        let ((first, second), ()) = tokio::join!(calls, agent_side);
        assert_eq!(first.unwrap().exit_code, Some(1));
        assert_eq!(second.unwrap().exit_code, Some(2));
    }

    #[tokio::test]
    async fn output_credit_is_granted_as_consumed_and_cancel_sent_on_drop() {
        let window = 128 * 1024;
        let (client, mut agent) = fake(window).await;
        let mut stream = client
            .output(ProcessId(1), OutputOffsets::START)
            .await
            .unwrap();
        let request = next_frame(&mut agent).await;
        let channel = request.channel;
        assert_eq!(
            request.parse::<Request>().unwrap(),
            Request::Output {
                id: ProcessId(1),
                from: OutputOffsets::START,
                credit: window
            }
        );
        // The whole window, in two frames.
        for i in 0..2u64 {
            let chunk = vec![i as u8; MAX_DATA_CHUNK];
            let offset = i * MAX_DATA_CHUNK as u64;
            agent
                .send(Frame::data(FrameType::Stdout, channel, offset, &chunk))
                .await
                .unwrap();
        }
        // Nothing consumed: no credit comes back.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), agent.next())
                .await
                .is_err()
        );
        let first = stream.next().await.unwrap().unwrap();
        assert!(matches!(first, OutputEvent::Stdout { offset: 0, .. }));
        let credit = next_frame(&mut agent).await;
        assert_eq!(credit.kind, FrameType::Credit);
        assert_eq!(credit.credit_grant().unwrap(), MAX_DATA_CHUNK as u32);
        drop(stream);
        let cancel = next_frame(&mut agent).await;
        assert_eq!((cancel.kind, cancel.channel), (FrameType::Cancel, channel));
    }

    #[tokio::test]
    async fn output_beyond_the_granted_credit_is_a_protocol_violation() {
        let window = MAX_DATA_CHUNK as u32;
        let (client, mut agent) = fake(window).await;
        let mut stream = client
            .output(ProcessId(1), OutputOffsets::START)
            .await
            .unwrap();
        let channel = next_frame(&mut agent).await.channel;
        let chunk = vec![0u8; MAX_DATA_CHUNK];
        for offset in [0, MAX_DATA_CHUNK as u64] {
            agent
                .send(Frame::data(FrameType::Stdout, channel, offset, &chunk))
                .await
                .unwrap();
        }
        assert!(stream.next().await.unwrap().is_ok(), "the credited frame");
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(
            matches!(&err, ProtoError::Fatal { code: ErrorCode::ProtocolError, message }
                if message.contains("credit")),
            "{err:?}"
        );
        assert!(client.is_closed());
    }

    #[tokio::test]
    async fn an_error_frame_fails_pending_and_later_calls() {
        let (client, mut agent) = fake(DEFAULT_OUTPUT_WINDOW).await;
        let pending = client.ping();
        let agent_side = async {
            next_frame(&mut agent).await;
            let error = ConnectionError {
                code: ErrorCode::Internal,
                message: "going away".into(),
                agent_min: None,
                agent_max: None,
            };
            agent
                .send(Frame::json(FrameType::Error, 0, &error))
                .await
                .unwrap();
        };
        let (result, ()) = tokio::join!(pending, agent_side);
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent closed the connection: internal: going away"
        );
        assert!(matches!(client.ping().await, Err(ProtoError::Fatal { .. })));
    }

    #[tokio::test]
    async fn stdin_is_sent_raw_in_chunks_each_acknowledged() {
        let (client, mut agent) = fake(DEFAULT_OUTPUT_WINDOW).await;
        let data: Vec<u8> = (0..MAX_DATA_CHUNK + 10).map(|i| (i % 256) as u8).collect();
        let writer = client.write_stdin(ProcessId(9), &data);
        let agent_side = async {
            let mut received = Vec::new();
            for _ in 0..2 {
                let frame = next_frame(&mut agent).await;
                assert_eq!(frame.kind, FrameType::Stdin);
                let (id, bytes) = frame.split_data().unwrap();
                assert_eq!(id, 9);
                received.extend_from_slice(&bytes);
                agent
                    .send(Frame::json(
                        FrameType::Response,
                        frame.channel,
                        &Response::Done,
                    ))
                    .await
                    .unwrap();
            }
            received
        };
        let (result, received) = tokio::join!(writer, agent_side);
        result.unwrap();
        assert_eq!(received, data);
    }
}
