//! `FakeDriver`: a driver that starts nothing, answered by a fake agent speaking just
//! enough of the protocol (handshake, ping, terminate-all) for lifecycle tests.
//! `replace_workspace` changes the recorded workspace of a live sandbox, or is told to be
//! unsupported or to fail.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use nexus_agent_proto::handshake::accept_handshake;
use nexus_agent_proto::{
    AgentInfo, ErrorCode, Frame, FrameCodec, FrameType, Pong, Request, Response,
    SUPPORTED_VERSIONS, TerminateReport,
};
use tokio_util::codec::Framed;

use crate::driver::{
    AgentStream, Driver, DriverError, Isolation, SandboxMounts, Started, Usage, WorkspaceSwap,
};
use crate::sandbox::{DriverKind, Sandbox, SandboxId};

/// How [`FakeDriver`] answers `replace_workspace`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FakeReplace {
    /// The live sandbox's workspace becomes the new tree (as a root daemon's bwrap).
    #[default]
    Supported,
    /// [`DriverError::Unsupported`] (as a driver that cannot change a running sandbox).
    Unsupported,
    /// [`DriverError::Failed`], the old tree still in place.
    Failing,
}

/// A driver whose sandboxes are records in memory.
#[derive(Debug, Default)]
pub struct FakeDriver {
    replace: Mutex<FakeReplace>,
    fail_start: AtomicBool,
    unavailable: AtomicBool,
    alive: Mutex<HashSet<SandboxId>>,
    paused: Mutex<HashSet<SandboxId>>,
    mounts: Mutex<HashMap<SandboxId, SandboxMounts>>,
    calls: Mutex<Vec<String>>,
    terminations: Arc<Mutex<HashMap<SandboxId, usize>>>,
    usage: Mutex<Usage>,
    fail_hostname: AtomicBool,
    hostnames: Mutex<HashMap<SandboxId, String>>,
    start_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl FakeDriver {
    /// Makes `start` fail (or succeed again).
    pub fn set_fail_start(&self, fail: bool) {
        self.fail_start.store(fail, Ordering::SeqCst);
    }

    /// Holds every `start` from now on (after it is counted in [`Self::starts`]) until
    /// the returned gate has a permit for it; each start takes one.
    pub fn hold_starts(&self) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *self.start_gate.lock().expect("fake lock") = Some(gate.clone());
        gate
    }

    /// How `replace_workspace` answers from now on.
    pub fn set_replace(&self, replace: FakeReplace) {
        *self.replace.lock().expect("fake lock") = replace;
    }

    /// Makes `set_hostname` fail (or succeed again).
    pub fn set_fail_hostname(&self, fail: bool) {
        self.fail_hostname.store(fail, Ordering::SeqCst);
    }

    /// The host name `set_hostname` last gave the sandbox, if it was called.
    pub fn hostname_of(&self, id: &SandboxId) -> Option<String> {
        self.hostnames.lock().expect("fake lock").get(id).cloned()
    }

    /// How many sandboxes were started so far (failed starts included).
    pub fn starts(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.starts_with("start "))
            .count()
    }

    /// Makes `check_available` fail (or succeed again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// What `usage` answers for every sandbox from now on.
    pub fn set_usage(&self, usage: Usage) {
        *self.usage.lock().expect("fake lock") = usage;
    }

    /// Kills a sandbox behind the service's back.
    pub fn kill(&self, id: &SandboxId) {
        self.alive.lock().expect("fake lock").remove(id);
    }

    /// What the sandbox was last started with (its workspace as last replaced).
    pub fn mounts_of(&self, id: &SandboxId) -> Option<SandboxMounts> {
        self.mounts.lock().expect("fake lock").get(id).cloned()
    }

    /// Whether the sandbox's processes are frozen.
    pub fn is_paused(&self, id: &SandboxId) -> bool {
        self.paused.lock().expect("fake lock").contains(id)
    }

    /// Every call so far, as `method id`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("fake lock").clone()
    }

    /// How many times the agent of `id` was asked to terminate its processes.
    pub fn terminations(&self, id: &SandboxId) -> usize {
        self.terminations
            .lock()
            .expect("fake lock")
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    fn record(&self, call: &str, id: &SandboxId) {
        self.calls
            .lock()
            .expect("fake lock")
            .push(format!("{call} {id}"));
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Bwrap
    }

    fn check_available(&self) -> Result<(), DriverError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(DriverError::Unavailable {
                driver: DriverKind::Bwrap,
                reason: "fake: told so".into(),
            });
        }
        Ok(())
    }

    async fn start(
        &self,
        sandbox: &Sandbox,
        mounts: &SandboxMounts,
    ) -> Result<Started, DriverError> {
        self.record("start", &sandbox.id);
        let gate = self.start_gate.lock().expect("fake lock").clone();
        if let Some(gate) = gate {
            gate.acquire()
                .await
                .expect("the fake's start gate is never closed")
                .forget();
        }
        self.mounts
            .lock()
            .expect("fake lock")
            .insert(sandbox.id.clone(), mounts.clone());
        if self.fail_start.load(Ordering::SeqCst) {
            return Err(DriverError::Start {
                reason: "fake: told to fail".into(),
            });
        }
        self.alive
            .lock()
            .expect("fake lock")
            .insert(sandbox.id.clone());
        Ok(Started {
            runtime: sandbox.id.to_string(),
            isolation: Isolation {
                isolated: true,
                ..Isolation::default()
            },
        })
    }

    async fn connect(&self, sandbox: &Sandbox, _runtime: &str) -> Result<AgentStream, DriverError> {
        if !self.alive.lock().expect("fake lock").contains(&sandbox.id) {
            return Err(DriverError::Connect {
                reason: "fake: not running".into(),
            });
        }
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(fake_agent(
            theirs,
            self.terminations.clone(),
            sandbox.id.clone(),
        ));
        Ok(Box::new(ours))
    }

    async fn is_alive(&self, runtime: &str) -> bool {
        SandboxId::parse(runtime)
            .is_some_and(|id| self.alive.lock().expect("fake lock").contains(&id))
    }

    fn isolation(&self, _sandbox: &Sandbox, _runtime: &str) -> Isolation {
        Isolation {
            isolated: true,
            ..Isolation::default()
        }
    }

    async fn usage(&self, _runtime: &str) -> Usage {
        *self.usage.lock().expect("fake lock")
    }

    async fn set_paused(
        &self,
        sandbox: &Sandbox,
        _runtime: &str,
        paused: bool,
    ) -> Result<(), DriverError> {
        self.record(if paused { "pause" } else { "resume" }, &sandbox.id);
        let mut set = self.paused.lock().expect("fake lock");
        if paused {
            set.insert(sandbox.id.clone());
        } else {
            set.remove(&sandbox.id);
        }
        Ok(())
    }

    async fn set_network(
        &self,
        sandbox: &Sandbox,
        _runtime: &str,
        kill_existing: bool,
    ) -> Result<(), DriverError> {
        let call = if kill_existing {
            "network-kill"
        } else {
            "network"
        };
        self.record(call, &sandbox.id);
        Ok(())
    }

    async fn set_hostname(
        &self,
        sandbox: &Sandbox,
        _runtime: &str,
        hostname: &str,
    ) -> Result<(), DriverError> {
        self.record("hostname", &sandbox.id);
        if self.fail_hostname.load(Ordering::SeqCst) {
            return Err(DriverError::Failed {
                what: format!("rename the host of {}", sandbox.spec.name),
                reason: "fake: told to fail".into(),
            });
        }
        self.hostnames
            .lock()
            .expect("fake lock")
            .insert(sandbox.id.clone(), hostname.to_owned());
        Ok(())
    }

    async fn replace_workspace(
        &self,
        sandbox: &Sandbox,
        _runtime: &str,
        tree: &Path,
    ) -> Result<WorkspaceSwap, DriverError> {
        let what = || format!("replace the workspace of {}", sandbox.spec.name);
        match *self.replace.lock().expect("fake lock") {
            FakeReplace::Supported => {}
            FakeReplace::Unsupported => {
                return Err(DriverError::Unsupported {
                    driver: DriverKind::Bwrap,
                    what: what(),
                    reason: "fake: told so".into(),
                });
            }
            FakeReplace::Failing => {
                self.record("replace-failed", &sandbox.id);
                return Err(DriverError::Failed {
                    what: what(),
                    reason: "fake: told to fail".into(),
                });
            }
        }
        if !self.alive.lock().expect("fake lock").contains(&sandbox.id) {
            return Err(DriverError::Failed {
                what: what(),
                reason: "fake: not running".into(),
            });
        }
        let mut mounts = self.mounts.lock().expect("fake lock");
        let mounts = mounts.entry(sandbox.id.clone()).or_default();
        if mounts.workspace.as_deref() == Some(tree) {
            return Ok(WorkspaceSwap::AlreadyThere);
        }
        mounts.workspace = Some(tree.to_path_buf());
        self.record("replace", &sandbox.id);
        Ok(WorkspaceSwap::Replaced)
    }

    async fn adopted(&self, sandbox: &Sandbox, _runtime: &str) {
        self.record("adopted", &sandbox.id);
    }

    async fn stop(
        &self,
        sandbox: &Sandbox,
        _runtime: &str,
        _grace: Duration,
    ) -> Result<(), DriverError> {
        self.record("stop", &sandbox.id);
        if self.is_paused(&sandbox.id) {
            return Err(DriverError::Cleanup {
                reason: "fake: stopped while frozen".into(),
            });
        }
        self.alive.lock().expect("fake lock").remove(&sandbox.id);
        Ok(())
    }

    async fn destroy(&self, sandbox: &Sandbox) -> Result<(), DriverError> {
        self.record("destroy", &sandbox.id);
        self.alive.lock().expect("fake lock").remove(&sandbox.id);
        Ok(())
    }
}

async fn fake_agent(
    stream: tokio::io::DuplexStream,
    terminations: Arc<Mutex<HashMap<SandboxId, usize>>>,
    id: SandboxId,
) {
    let mut framed = Framed::new(stream, FrameCodec::new());
    let info = |version| AgentInfo {
        protocol_version: version,
        agent_version: "fake".into(),
        pid: 1,
        uid: 1000,
        pid1: true,
        subreaper: false,
        dumpable: false,
        window_bytes: 0,
    };
    if accept_handshake(&mut framed, SUPPORTED_VERSIONS, info)
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(frame)) = framed.next().await {
        if frame.kind != FrameType::Request {
            continue;
        }
        let response = match frame.parse::<Request>() {
            Ok(Request::Ping) => Response::Pong {
                pong: Pong {
                    pid: 1,
                    uptime_ms: 0,
                    dumpable: false,
                    running: 0,
                },
            },
            Ok(Request::TerminateAll { .. }) => {
                *terminations
                    .lock()
                    .expect("fake lock")
                    .entry(id.clone())
                    .or_insert(0) += 1;
                Response::Terminated {
                    report: TerminateReport::default(),
                }
            }
            _ => Response::Error {
                code: ErrorCode::BadRequest,
                message: "fake agent: not supported".into(),
            },
        };
        if framed
            .send(Frame::json(FrameType::Response, frame.channel, &response))
            .await
            .is_err()
        {
            return;
        }
    }
}
