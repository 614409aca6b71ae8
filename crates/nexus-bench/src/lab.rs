//! The benchmark's view of its daemon: an API client that remembers every sandbox it
//! created, so that each one is deleted at the end and leftovers can be found.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nexus_api::{CreateSandboxRequest, ExecRequest, ExecResult, OutputEncoding, SandboxInfo};
use nexus_client::Client;

/// How long a created sandbox may take to become running.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the benchmark's own daemon.
#[derive(Debug)]
pub struct Lab {
    /// The typed API client.
    pub client: Client,
    /// Every sandbox id this run has created, deleted or not.
    created: Mutex<BTreeSet<String>>,
}

impl Lab {
    /// A client of the daemon at `url`.
    pub fn new(url: &str, token: &str) -> anyhow::Result<Self> {
        let client = Client::new(url, Some(token.to_owned()))
            .with_context(|| format!("cannot make a client of {url}"))?;
        Ok(Self {
            client,
            created: Mutex::new(BTreeSet::new()),
        })
    }

    /// Creates a sandbox with the defaults (bwrap driver, `host` image, started) and
    /// returns once it is running.
    pub async fn create_running(&self) -> anyhow::Result<SandboxInfo> {
        self.create_running_with(&CreateSandboxRequest::default())
            .await
    }

    /// Creates a sandbox from `request` and returns once it is running.
    pub async fn create_running_with(
        &self,
        request: &CreateSandboxRequest,
    ) -> anyhow::Result<SandboxInfo> {
        let info = self
            .client
            .create_sandbox(request)
            .await
            .context("create failed")?;
        self.created
            .lock()
            .expect("the id set is never poisoned: no code panics holding it")
            .insert(info.id.clone());
        let deadline = Instant::now() + RUNNING_TIMEOUT;
        let mut info = info;
        loop {
            match info.state.as_str() {
                "running" => return Ok(info),
                "crashed" | "stopped" | "stopping" => bail!(
                    "sandbox {} is {} instead of running{}",
                    info.id,
                    info.state,
                    info.crash_reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                _ if Instant::now() > deadline => {
                    bail!(
                        "sandbox {} still {} after {RUNNING_TIMEOUT:?}",
                        info.id,
                        info.state
                    )
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            info = self
                .client
                .sandbox(&info.id)
                .await
                .context("inspect failed")?;
        }
    }

    /// Deletes a sandbox, running or not.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.client
            .delete_sandbox(id, true, false)
            .await
            .with_context(|| format!("delete of {id} failed"))
    }

    /// Runs `true` (non-streamed) and checks that it exited 0.
    pub async fn exec_true(&self, id: &str) -> anyhow::Result<()> {
        let result = self
            .client
            .exec(id, &true_request())
            .await
            .context("exec failed")?;
        check_success(&result)
    }

    /// Runs `sh -c script` (non-streamed, up to `timeout`) and checks that it exited 0.
    pub async fn exec_sh(&self, id: &str, script: &str, timeout: Duration) -> anyhow::Result<()> {
        let request = ExecRequest {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            ..true_request()
        };
        let result = self
            .client
            .exec(id, &request)
            .await
            .context("exec failed")?;
        check_success(&result).with_context(|| format!("sh -c {script:?}"))
    }

    /// Deletes every sandbox the daemon knows (it is ours alone). Returns how many were
    /// deleted and the failures.
    pub async fn delete_all(&self) -> (usize, Vec<String>) {
        let sandboxes = match self.client.list_sandboxes().await {
            Ok(list) => list,
            Err(e) => return (0, vec![format!("cannot list sandboxes: {e}")]),
        };
        let mut deleted = 0;
        let mut failures = Vec::new();
        for sandbox in sandboxes {
            match self.delete(&sandbox.id).await {
                Ok(()) => deleted += 1,
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        (deleted, failures)
    }

    /// Every sandbox id created in this run.
    pub fn created_ids(&self) -> BTreeSet<String> {
        self.created
            .lock()
            .expect("the id set is never poisoned: no code panics holding it")
            .clone()
    }
}

/// `["true"]`, collected, as the wire wants it.
fn true_request() -> ExecRequest {
    ExecRequest {
        argv: vec!["true".into()],
        env: Default::default(),
        cwd: None,
        stdin: None,
        timeout_ms: Some(30_000),
        max_output_bytes: None,
        encoding: OutputEncoding::Utf8,
        stream: false,
    }
}

fn check_success(result: &ExecResult) -> anyhow::Result<()> {
    match (result.status.exit_code, result.status.signal) {
        (Some(0), _) => Ok(()),
        (code, signal) => bail!(
            "the command ended with exit code {code:?}, signal {signal:?}, stderr {:?}",
            result.stderr
        ),
    }
}
