//! A private `nexusd` for one run: temporary XDG directories, an ephemeral port, the
//! generated token, and a SIGTERM at the end (SIGKILL when dropped on an error path).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long `nexusd` may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `nexusd` may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The Nexus binaries of the same build as this benchmark.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The daemon.
    pub nexusd: PathBuf,
    /// The CLI.
    pub nexusctl: PathBuf,
    /// The in-sandbox agent.
    pub agent: PathBuf,
}

impl Binaries {
    /// Finds `nexusd`, `nexusctl` and `nexus-agent` beside this executable
    /// (`target/<profile>/`), or says how to build them.
    pub fn locate() -> anyhow::Result<Self> {
        let me = std::env::current_exe().context("cannot find this executable's path")?;
        let bins = Self {
            nexusd: me.with_file_name("nexusd"),
            nexusctl: me.with_file_name("nexusctl"),
            agent: me.with_file_name("nexus-agent"),
        };
        let missing: Vec<String> = [&bins.nexusd, &bins.nexusctl, &bins.agent]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            let profile = me
                .parent()
                .and_then(Path::file_name)
                .map_or_else(|| "release".into(), |n| n.to_string_lossy().into_owned());
            let flag = if profile == "release" {
                " --release"
            } else {
                ""
            };
            bail!(
                "missing {}; build every binary of the workspace first: cargo build{flag} --bins",
                missing.join(", ")
            );
        }
        Ok(bins)
    }
}

/// A running `nexusd` that this process started.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    dirs: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The API token it generated.
    pub token: String,
}

impl Daemon {
    /// Starts `nexusd --listen 127.0.0.1:0 --log-format json` with temporary XDG
    /// directories and waits until it listens.
    pub async fn start(bins: &Binaries) -> anyhow::Result<Self> {
        Self::start_in(bins, None, None).await
    }

    /// Like [`Daemon::start`], with `yaml` as its `nexus.yaml`.
    pub async fn start_with_config(bins: &Binaries, yaml: &str) -> anyhow::Result<Self> {
        Self::start_in(bins, None, Some(yaml)).await
    }

    /// Like [`Daemon::start`], with `XDG_DATA_HOME` (where workspaces live) at
    /// `data_home` instead of in the temporary directory, e.g. on another filesystem.
    /// It must be traversable (0711) by the sandboxes' uids.
    pub async fn start_with_data_home(bins: &Binaries, data_home: &Path) -> anyhow::Result<Self> {
        Self::start_in(bins, Some(data_home), None).await
    }

    /// Starts it with `XDG_DATA_HOME` at `data_home`, or in the temporary directory, and
    /// `config` as its `nexus.yaml`, or none.
    async fn start_in(
        bins: &Binaries,
        data_home: Option<&Path>,
        config: Option<&str>,
    ) -> anyhow::Result<Self> {
        let dirs = tempfile::Builder::new()
            .prefix("nexus-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        // Sandboxes run as their own unprivileged host uids, which must reach their
        // workspaces under XDG_DATA_HOME: traversable, never listable.
        std::fs::set_permissions(dirs.path(), std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("cannot chmod 0711 {}", dirs.path().display()))?;
        if let Some(yaml) = config {
            let config_dir = dirs.path().join("config").join("nexus");
            std::fs::create_dir_all(&config_dir)
                .with_context(|| format!("cannot create {}", config_dir.display()))?;
            let file = config_dir.join("nexus.yaml");
            std::fs::write(&file, yaml)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        let log_path = dirs.path().join("nexusd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(&bins.nexusd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dirs.path().join("home"))
            .env("XDG_CONFIG_HOME", dirs.path().join("config"))
            .env("XDG_STATE_HOME", dirs.path().join("state"))
            .env(
                "XDG_DATA_HOME",
                data_home.map_or_else(|| dirs.path().join("data"), Path::to_path_buf),
            )
            .env("XDG_RUNTIME_DIR", dirs.path().join("run"))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--agent-path")
            .arg(&bins.agent)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches only this benchmark,
            // which then deletes the sandboxes before stopping the daemon.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", bins.nexusd.display()))?;
        let mut daemon = Self {
            child,
            dirs,
            url: String::new(),
            token: String::new(),
        };
        let addr = daemon.wait_listening().await?;
        daemon.url = format!("http://{addr}");
        let token_file = daemon.config_home().join("nexus").join("token");
        daemon.token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read the token {}", token_file.display()))?
            .trim()
            .to_owned();
        Ok(daemon)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `XDG_CONFIG_HOME` of the daemon (also given to `nexusctl`).
    pub fn config_home(&self) -> PathBuf {
        self.dirs.path().join("config")
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Ids of every sandbox the daemon logged as created, including those whose create
    /// request never returned.
    pub fn logged_sandbox_ids(&self) -> BTreeSet<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(created_sandbox_id)
            .collect()
    }

    /// Every sandbox of this daemon to reap once it has stopped: the ones it logged as
    /// created or as ready in its warm pool, and any still running on its directories
    /// (a pool sandbox whose start was cut off by the stop logged neither).
    pub fn sandbox_ids(&self) -> BTreeSet<String> {
        let mut ids = self.logged_sandbox_ids();
        ids.extend(self.logged_pool_ids());
        ids.extend(crate::memory::sandboxes_mentioning(self.dirs.path()));
        ids
    }

    /// Ids of every sandbox the daemon logged as ready in its warm pool, claimed or not.
    pub fn logged_pool_ids(&self) -> BTreeSet<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| logged_id(line, "warm pool sandbox ready"))
            .collect()
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after [`STOP_TIMEOUT`]).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("cannot wait for nexusd")? {
            bail!("nexusd had exited with {status}; log:\n{}", self.log_tail());
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("cannot send SIGTERM to nexusd")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("cannot wait for nexusd")? {
                if !status.success() {
                    bail!("nexusd exited with {status}; log:\n{}", self.log_tail());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("nexusd did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dirs.path().join("nexusd.log")
    }

    /// Polls the log for `{"fields":{"message":"listening","addr":...}}`.
    async fn wait_listening(&mut self) -> anyhow::Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(listening_addr) {
                return Ok(addr);
            }
            if let Some(status) = self.child.try_wait().context("cannot wait for nexusd")? {
                bail!(
                    "nexusd exited with {status} before listening; log:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "nexusd did not listen within {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // On the normal path `stop` has reaped it and this does nothing.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address of a JSON log line saying the daemon listens.
fn listening_addr(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("addr")?.as_str().map(str::to_owned)
}

/// The sandbox id of a JSON log line saying a sandbox was created.
fn created_sandbox_id(line: &str) -> Option<String> {
    logged_id(line, "sandbox created")
}

/// The sandbox id of a JSON log line whose message is `message`.
fn logged_id(line: &str, message: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get("sandbox_id")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_gives_the_address() {
        let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"listening","addr":"127.0.0.1:4321","pid":1},"target":"nexusd"}"#;
        assert_eq!(listening_addr(line).as_deref(), Some("127.0.0.1:4321"));
        assert_eq!(
            listening_addr(r#"{"fields":{"message":"starting","addr":"x"}}"#),
            None
        );
        assert_eq!(listening_addr("not json"), None);
    }

    #[test]
    fn created_lines_give_sandbox_ids() {
        let line = r#"{"level":"INFO","fields":{"message":"sandbox created","sandbox_id":"sb-1","name":"a","driver":"bwrap"}}"#;
        assert_eq!(created_sandbox_id(line).as_deref(), Some("sb-1"));
        let running = r#"{"fields":{"message":"sandbox running","sandbox_id":"sb-1"}}"#;
        assert_eq!(created_sandbox_id(running), None);
        let pooled = r#"{"fields":{"message":"warm pool sandbox ready","sandbox_id":"sb-2"}}"#;
        assert_eq!(
            logged_id(pooled, "warm pool sandbox ready").as_deref(),
            Some("sb-2")
        );
        assert_eq!(created_sandbox_id(pooled), None);
    }
}
