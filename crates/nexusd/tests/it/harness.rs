//! A real `nexusd` process on an ephemeral port with its own temporary XDG directories.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Temporary XDG directories a daemon (or several, in turn) can use.
pub struct Dirs {
    pub root: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.root.path().join(sub)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.path("config").join("nexus")
    }

    pub fn token_file(&self) -> PathBuf {
        self.config_dir().join("token")
    }

    pub fn db_file(&self) -> PathBuf {
        self.path("state").join("nexus").join("nexus.db")
    }

    /// A `nexusd` command with this environment and nothing inherited that could leak in.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexusd"));
        self.environment(&mut cmd);
        cmd
    }

    /// [`Dirs::command`] run as `uid` (group `uid`, no supplementary groups) through
    /// `setpriv`; the caller must be root.
    pub fn command_as(&self, uid: u32) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_nexusd"));
        self.environment(&mut cmd);
        cmd
    }

    fn environment(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("NEXUS_AGENT_PATH", agent_binary())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        std::fs::create_dir_all(self.config_dir()).expect("mkdir");
        let path = self.config_dir().join("nexus.yaml");
        std::fs::write(&path, text).expect("write config");
        path
    }
}

impl Drop for Dirs {
    /// Sandboxes outlive their daemon by design; a test must not leave them behind.
    fn drop(&mut self) {
        // Writable layers of sandboxes on images (root daemon): their overlay mounts.
        if let Ok(layers) = std::fs::read_dir(self.path("data").join("nexus").join("sandboxes")) {
            for entry in layers.filter_map(Result::ok) {
                let merged = entry.path().join("layer").join("root");
                let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let Ok(entries) = std::fs::read_dir(self.path("run").join("nexus").join("sandboxes"))
        else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = std::fs::read_to_string(entry.path().join("init.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            // The sandbox's cgroup directories, wherever the daemon's own cgroup is.
            for dir in cgroup_dirs_named(&id) {
                // A sandbox whose start was cut off has processes but no init.pid yet.
                let procs = std::fs::read_to_string(Path::new(&dir).join("cgroup.procs"));
                for pid in procs.iter().flat_map(|p| p.lines()) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                for _ in 0..50 {
                    if std::fs::remove_dir(&dir).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// A running daemon whose stderr (JSON log lines) is collected.
pub struct Daemon {
    child: Child,
    pub addr: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `nexusd --listen 127.0.0.1:0 --log-format json` and waits until it listens.
    pub fn start(dirs: &Dirs) -> Self {
        Self::start_with(dirs, &["--listen", "127.0.0.1:0"])
    }

    pub fn start_with(dirs: &Dirs, args: &[&str]) -> Self {
        let mut cmd = dirs.command();
        cmd.args(args).args(["--log-format", "json"]);
        Self::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn nexusd");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Self { child, addr, logs },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                panic!(
                    "nexusd did not start ({status}); log:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("log lock").join("\n")
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("kill");
    }

    /// Waits for exit and returns the status with the whole log.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread drain the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "nexusd did not exit; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: asserts a clean exit.
    pub fn stop(self) -> String {
        self.signal(Signal::SIGTERM);
        let (status, logs) = self.wait();
        assert!(
            status.success(),
            "nexusd exited with {status}; log:\n{logs}"
        );
        logs
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `nexusd` to completion (for start-up failures) and returns status and stderr.
pub fn run_to_exit(mut cmd: Command) -> (ExitStatus, String) {
    let output = cmd.output().expect("run nexusd");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn listening_addr(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    (fields.get("message")?.as_str()? == "listening")
        .then(|| fields.get("addr")?.as_str().map(str::to_owned))?
}

pub fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("token file")
        .trim()
        .to_owned()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The in-sandbox agent binary the daemon under test uses; built on demand when only
/// this package's tests were built.
pub fn agent_binary() -> PathBuf {
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT
        .get_or_init(|| {
            let nexusd = PathBuf::from(env!("CARGO_BIN_EXE_nexusd"));
            let agent = nexusd.with_file_name("nexus-agent");
            if !agent.exists() {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "-p", "nexus-agent", "--bin", "nexus-agent"])
                    .status()
                    .expect("run cargo build -p nexus-agent");
                assert!(status.success(), "cannot build nexus-agent");
            }
            assert!(agent.exists(), "nexus-agent missing at {}", agent.display());
            agent
        })
        .clone()
}

/// An authenticated JSON client of one daemon.
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(daemon: &Daemon, dirs: &Dirs) -> Self {
        Self {
            base: daemon.url(""),
            token: read_token(&dirs.token_file()),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, json)
    }

    /// POST that may never be answered (the daemon is about to be killed): no panic.
    pub async fn post_unanswered(&self, path: &str, body: serde_json::Value) -> Option<u16> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a sandbox and asserts it runs.
    pub async fn create(&self, body: serde_json::Value) -> serde_json::Value {
        let (status, json) = self.post("/v1/sandboxes", body).await;
        assert_eq!(status, 201, "create failed: {json}");
        assert_eq!(json["state"], "running", "{json}");
        json
    }

    /// Runs a shell command line in a sandbox and returns the exec result.
    pub async fn sh(&self, sandbox: &str, script: &str) -> serde_json::Value {
        let (status, json) = self
            .post(
                &format!("/v1/sandboxes/{sandbox}/exec"),
                serde_json::json!({"argv": ["sh", "-c", script], "timeout_ms": 60000}),
            )
            .await;
        assert_eq!(status, 200, "exec failed: {json}");
        json
    }

    /// The raw body of a streamed exec in the binary form.
    pub async fn exec_stream_binary(&self, sandbox: &str, argv: &[&str]) -> (u16, String, Vec<u8>) {
        self.streamed_exec(sandbox, argv, Some(nexus_api::exec_stream::MEDIA_TYPE))
            .await
    }

    /// The raw bytes of a streamed exec.
    pub async fn exec_stream(&self, sandbox: &str, argv: &[&str]) -> (u16, String, String) {
        let (status, content_type, body) = self.streamed_exec(sandbox, argv, None).await;
        let text = String::from_utf8(body).expect("an NDJSON body is UTF-8");
        (status, content_type, text)
    }

    /// Status, content type and body of a streamed exec, asking for `accept` if given.
    async fn streamed_exec(
        &self,
        sandbox: &str,
        argv: &[&str],
        accept: Option<&str>,
    ) -> (u16, String, Vec<u8>) {
        let mut request = self
            .http
            .post(format!("{}/v1/sandboxes/{sandbox}/exec", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"argv": argv, "stream": true}));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let res = request.send().await.expect("request");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        (
            status,
            content_type,
            res.bytes().await.expect("body").to_vec(),
        )
    }
}

/// Says loudly that a test cannot run here, so it is counted as skipped by a reader of the
/// log rather than passing silently.
#[allow(clippy::print_stderr)] // a skip must be seen in the test output
pub fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
}

/// Whether bubblewrap can run sandboxes on this host (the test suite's setup installs it).
pub fn bwrap_usable() -> bool {
    Command::new("bwrap")
        .args([
            "--unshare-all",
            "--unshare-user",
            "--ro-bind",
            "/",
            "/",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every cgroup directory called `name`, in every hierarchy, wherever the daemon's own
/// cgroup is (none when `find` cannot run).
pub fn cgroup_dirs_named(name: &str) -> Vec<String> {
    let output = Command::new("find")
        .args([
            "/sys/fs/cgroup",
            "-maxdepth",
            "8",
            "-type",
            "d",
            "-name",
            name,
        ])
        .output();
    output
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
