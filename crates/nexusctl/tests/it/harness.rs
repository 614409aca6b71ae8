//! A daemon in this test process plus a `nexusctl` command wired to its directories.

use std::path::PathBuf;

use assert_cmd::Command;
use clap::Parser;
use nexus_core::paths::XdgDirs;
use nexusd::{Config, RunningDaemon};

/// Temporary XDG directories shared by the daemon and the CLI, as on one host.
pub struct Env {
    pub root: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.root.path().join(sub)
    }

    fn dirs(&self) -> XdgDirs {
        let root = self.root.path().to_path_buf();
        XdgDirs::resolve(
            move |name| match name {
                "HOME" => Some(root.join("home")),
                "XDG_CONFIG_HOME" => Some(root.join("config")),
                "XDG_STATE_HOME" => Some(root.join("state")),
                "XDG_DATA_HOME" => Some(root.join("data")),
                "XDG_RUNTIME_DIR" => Some(root.join("run")),
                _ => None,
            },
            0,
        )
    }

    /// Starts a daemon on 127.0.0.1 with an ephemeral port.
    pub async fn start_daemon(&self) -> RunningDaemon {
        let agent = agent_binary();
        let args = nexusd::cli::Args::parse_from([
            "nexusd",
            "--listen",
            "127.0.0.1:0",
            "--agent-path",
            agent.to_str().expect("utf-8 path"),
        ]);
        let config = Config::load(&args, &self.dirs()).expect("config");
        nexusd::start(&config).await.expect("daemon starts")
    }

    /// `nexusctl` with this environment, pointed at `url`.
    pub fn nexusctl(&self, url: &str) -> Command {
        let mut cmd = Command::cargo_bin("nexusctl").expect("nexusctl is built");
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("NEXUS_URL", url);
        cmd
    }

    /// `nexusctl` as a plain process with this environment, for runs that must be
    /// watched or signalled while they last.
    pub fn nexusctl_process(&self, url: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nexusctl"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("NEXUS_URL", url);
        cmd
    }
}

/// A loopback address nothing listens on.
pub fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// The in-sandbox agent, built on demand when only this package's tests were built.
pub fn agent_binary() -> PathBuf {
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT
        .get_or_init(|| {
            let nexusctl = PathBuf::from(env!("CARGO_BIN_EXE_nexusctl"));
            let agent = nexusctl.with_file_name("nexus-agent");
            if !agent.exists() {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = std::process::Command::new(cargo)
                    .args(["build", "-p", "nexus-agent", "--bin", "nexus-agent"])
                    .status()
                    .expect("run cargo build -p nexus-agent");
                assert!(status.success(), "cannot build nexus-agent");
            }
            agent
        })
        .clone()
}

/// Whether bubblewrap can run sandboxes here; tests that need it say SKIPPED otherwise.
#[allow(clippy::print_stderr)] // a skip must be seen in the test output
pub fn bwrap_usable() -> bool {
    let usable = std::process::Command::new("bwrap")
        .args([
            "--unshare-all",
            "--unshare-user",
            "--ro-bind",
            "/",
            "/",
            "true",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!(
            "SKIPPED: bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)"
        );
    }
    usable
}
