//! Starting the real agent for a test: a listening socket bound in a temporary directory
//! and handed over as descriptor 3 (as nexusd does), or a path to bind.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nexus_agent_proto::{AgentClient, AgentInfo, ExecRequest, OutputEvent, OutputStream};
use tokio::net::UnixStream;

/// A running agent; killed when dropped.
pub struct TestAgent {
    child: Child,
    /// The socket clients connect to.
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    /// Starts the agent on an inherited listening socket (`--listen-fd 3`).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Same, with extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::spawn(&[], extra)
    }

    /// Starts the agent as PID 1 of a new PID namespace (as bubblewrap's `--as-pid-1`
    /// does), or `None` when this machine cannot create one.
    pub fn start_as_pid1() -> Option<Self> {
        let wrapper = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];
        let probe = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg("true")
            .stderr(Stdio::null())
            .status();
        match probe {
            Ok(status) if status.success() => Some(Self::spawn(&wrapper, &[])),
            _ => None,
        }
    }

    fn spawn(wrapper: &[&str], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("binding the socket");
        let fd = listener.as_raw_fd();
        let agent = env!("CARGO_BIN_EXE_nexus-agent");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(agent);
                command
            }
            None => Command::new(agent),
        };
        command
            .args(["--listen-fd", "3"])
            .args(extra)
            .stdin(Stdio::null())
            .env("NEXUS_AGENT_LOG", "debug");
        // SAFETY: dup2 and fcntl are async-signal-safe and touch only descriptors.
        unsafe {
            command.pre_exec(move || {
                // dup2 gives a copy without close-on-exec at 3; if the listener already
                // is 3, clear the flag instead.
                if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("starting nexus-agent");
        drop(listener);
        Self {
            child,
            socket,
            _dir: dir,
        }
    }

    /// Starts the agent binding a path itself (`--listen PATH`).
    pub fn start_on_path() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_nexus-agent"))
            .arg("--listen")
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting nexus-agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "agent never bound {socket:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            socket,
            _dir: dir,
        }
    }

    /// The agent's pid (of the wrapper, for [`TestAgent::start_as_pid1`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new connection, handshaken.
    pub async fn connect(&self) -> AgentClient {
        self.connect_info().await.0
    }

    /// A new connection and the agent's WELCOME.
    pub async fn connect_info(&self) -> (AgentClient, AgentInfo) {
        let stream = UnixStream::connect(&self.socket)
            .await
            .expect("connecting to the agent");
        AgentClient::handshake(stream)
            .await
            .expect("handshake with the agent")
    }

    /// Kills what the agent runs, then the agent.
    pub async fn shutdown(mut self) {
        let client = self.connect().await;
        client
            .terminate_all(Duration::ZERO)
            .await
            .expect("terminating processes");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request for `argv`.
pub fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest::new(argv.iter().copied())
}

/// A request running `script` with `sh -c`.
pub fn sh(script: &str) -> ExecRequest {
    req(&["sh", "-c", script])
}

/// Everything an output stream delivers, until its end.
#[derive(Debug, Default)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub skipped: Vec<OutputEvent>,
    pub exit: Option<nexus_agent_proto::ExitInfo>,
}

/// Drains `stream`, checking that offsets are contiguous.
pub async fn collect(mut stream: OutputStream, from: (u64, u64)) -> Collected {
    let mut out = Collected::default();
    let (mut at_out, mut at_err) = from;
    while let Some(event) = stream.next().await {
        match event.expect("output event") {
            OutputEvent::Stdout { offset, bytes } => {
                assert_eq!(offset, at_out, "stdout offsets are contiguous");
                at_out += bytes.len() as u64;
                out.stdout.extend_from_slice(&bytes);
            }
            OutputEvent::Stderr { offset, bytes } => {
                assert_eq!(offset, at_err, "stderr offsets are contiguous");
                at_err += bytes.len() as u64;
                out.stderr.extend_from_slice(&bytes);
            }
            skipped @ OutputEvent::Skipped {
                stream,
                offset,
                bytes,
            } => {
                match stream {
                    nexus_agent_proto::StreamKind::Stdout => {
                        assert_eq!(offset, at_out);
                        at_out += bytes;
                    }
                    nexus_agent_proto::StreamKind::Stderr => {
                        assert_eq!(offset, at_err);
                        at_err += bytes;
                    }
                }
                out.skipped.push(skipped);
            }
            OutputEvent::Exit(exit) => out.exit = Some(exit),
        }
    }
    assert!(out.exit.is_some(), "the stream ends with the exit");
    out
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A field of `/proc/<pid>/status`, if the process exists.
pub fn proc_status(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// Says loudly that a test could not check what it covers on this machine.
#[expect(
    clippy::print_stderr,
    reason = "a skipped test must say so in the test output"
)]
pub fn skipped(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}
