//! Image builds with mmdebstrap: a Debian suite plus packages into an empty directory,
//! every line of the tool's output forwarded as progress.
//!
//! mmdebstrap forks apt, dpkg, maintainer scripts and more, so it runs as the leader of a
//! process group of its own, and the group is what gets killed: at a cancel (SIGTERM,
//! then SIGKILL after [`KILL_GRACE`]), at the end of every build (whatever outlived the
//! tool), and when the build's future is dropped. The leader is reaped only after the
//! last signal to the group, so the group id cannot have been reused by then.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// How many of the tool's last lines a failure carries.
const TAIL_LINES: usize = 15;

/// How long a cancelled build's processes get between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How often the tool is checked for having exited (it is not reaped meanwhile; see
/// [`exited`]).
const EXIT_POLL: Duration = Duration::from_millis(50);

/// How long the output may take to reach its end once the tool's group is dead (a
/// process that left the group could hold the pipes open forever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// Runs `mmdebstrap --variant=apt --include=<packages> <suite> <dest>`.
#[derive(Debug, Clone)]
pub struct Mmdebstrap {
    program: PathBuf,
}

impl Mmdebstrap {
    /// A builder running `program` (a path, or a name looked up on the `PATH`).
    pub fn new(program: PathBuf) -> Self {
        Self { program }
    }
}

impl Default for Mmdebstrap {
    fn default() -> Self {
        Self::new(PathBuf::from("mmdebstrap"))
    }
}

#[async_trait]
impl nexus_core::ImageBuilder for Mmdebstrap {
    async fn build(
        &self,
        suite: &str,
        packages: &[String],
        dest: &Path,
        progress: UnboundedSender<String>,
        cancel: CancellationToken,
    ) -> Result<String, String> {
        let program = nexus_host::tools::find_program(&self.program).ok_or_else(|| {
            format!(
                "{} is not installed: sudo apt-get install -y mmdebstrap (scripts/install.sh does)",
                self.program.display()
            )
        })?;
        let version = tokio::select! {
            output = tokio::process::Command::new(&program)
                .arg("--version")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output() => output,
            () = cancel.cancelled() => return Err("cancelled".into()),
        };
        let version = version
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "mmdebstrap (unknown version)".into());
        let _ = progress.send(format!("{version}: {suite} with {}", packages.join(", ")));
        let mut command = tokio::process::Command::new(&program);
        command.arg("--variant=apt");
        if !packages.is_empty() {
            command.arg(format!("--include={}", packages.join(",")));
        }
        command
            .arg(suite)
            .arg(dest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or("mmdebstrap ended before it could be watched")?;
        // Declared after `child`, so it is dropped first: the group dies while the
        // leader is still unreaped.
        let mut group = Group::new(pid);
        let (tail_tx, mut tail_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = |reader: Box<dyn AsyncRead + Unpin + Send>| {
            let (progress, tail) = (progress.clone(), tail_tx.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(reader).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tail.send(line.clone());
                    let _ = progress.send(line);
                }
            })
        };
        let out = forward(Box::new(child.stdout.take().expect("stdout is piped")));
        let err = forward(Box::new(child.stderr.take().expect("stderr is piped")));
        drop(tail_tx);

        let cancelled = tokio::select! {
            exit = exited(pid) => {
                exit.map_err(|e| format!("cannot wait for mmdebstrap: {e}"))?;
                false
            }
            () = cancel.cancelled() => true,
        };
        if cancelled {
            tracing::info!(pid = pid.as_raw(), grace = ?KILL_GRACE, "stopping a cancelled image build's processes");
            group.signal(Signal::SIGTERM);
            let _ = tokio::time::timeout(KILL_GRACE, exited(pid)).await;
        }
        // Whatever is left of the group goes: processes that outlived the tool, or all
        // of it when SIGTERM was not enough.
        group.signal(Signal::SIGKILL);
        let status = child.wait().await;
        group.reaped();
        let status = status.map_err(|e| format!("cannot wait for mmdebstrap: {e}"))?;
        let (out_abort, err_abort) = (out.abort_handle(), err.abort_handle());
        if tokio::time::timeout(OUTPUT_DRAIN, async {
            let _ = tokio::join!(out, err);
        })
        .await
        .is_err()
        {
            tracing::warn!("an image build's output stayed open after its processes ended");
            out_abort.abort();
            err_abort.abort();
        }
        if cancelled {
            return Err("cancelled".into());
        }
        let mut tail = std::collections::VecDeque::new();
        while let Ok(line) = tail_rx.try_recv() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        if status.success() {
            Ok(version)
        } else {
            Err(format!(
                "mmdebstrap exited with {status}; its last lines:\n{}",
                Vec::from(tail).join("\n")
            ))
        }
    }
}

/// The process group of a build's tool, killed when dropped unless its leader was reaped.
#[derive(Debug)]
struct Group {
    /// The leader's pid, which is the group's id; `None` once the leader is reaped.
    pgid: Option<Pid>,
}

impl Group {
    fn new(pgid: Pid) -> Self {
        Self { pgid: Some(pgid) }
    }

    /// Signals every process of the group.
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // Failure means the group is already empty, which is what we want.
            let _ = killpg(pgid, signal);
        }
    }

    /// The leader is reaped: its pid, and so the group's id, may name others from now on.
    fn reaped(&mut self) {
        self.pgid = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Waits until the process `pid` (a child of this one) has exited, without reaping it, so
/// its pid keeps naming its process group. Polled: Tokio's child handle can only wait by
/// reaping, and a build lasts minutes, so 50 ms of latency is nothing.
async fn exited(pid: Pid) -> nix::Result<()> {
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {
                tokio::time::sleep(EXIT_POLL).await;
            }
            Ok(_) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use nexus_core::ImageBuilder;

    use super::*;

    /// A stand-in for mmdebstrap: prints its version, or a line, then starts a child that
    /// ignores SIGTERM (so only the group's SIGKILL ends it), writes both pids and waits.
    fn stand_in(dir: &Path) -> PathBuf {
        let script = dir.join("fake-mmdebstrap");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 if [ \"$1\" = --version ]; then echo 'mmdebstrap 0.0-fake'; exit 0; fi\n\
                 echo 'I: fake bootstrap'\n\
                 sh -c 'trap \"\" TERM; sleep 1000' &\n\
                 echo \"$$ $!\" > {}/pids\n\
                 wait\n",
                dir.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script
    }

    /// Whether `pid` is gone within two seconds (a zombie waiting for its reaper counts
    /// as gone): SIGKILL is delivered asynchronously, so a process killed a moment ago may
    /// still be tearing down, while one that escaped the kill (a `sleep 1000`) stays.
    fn gone(pid: i32) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !dead_now(pid) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Whether `pid` is gone now (a zombie waiting for its reaper counts as gone).
    fn dead_now(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    fn pids(dir: &Path) -> Option<(i32, i32)> {
        let text = std::fs::read_to_string(dir.join("pids")).ok()?;
        let mut it = text.split_whitespace().map(|p| p.parse().expect("a pid"));
        Some((it.next()?, it.next()?))
    }

    #[tokio::test]
    async fn a_cancel_kills_the_whole_process_group_before_the_build_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let builder = Mmdebstrap::new(stand_in(dir.path()));
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dest = dir.path().join("dest");
        let build = tokio::spawn({
            let (cancel, dest) = (cancel.clone(), dest.clone());
            async move {
                builder
                    .build("bookworm", &["git".into()], &dest, tx, cancel)
                    .await
            }
        });
        while rx.recv().await.expect("progress") != "I: fake bootstrap" {}
        let (script, child) = loop {
            if let Some(pids) = pids(dir.path()) {
                break pids;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(!dead_now(script) && !dead_now(child));
        cancel.cancel();
        let result = tokio::time::timeout(KILL_GRACE * 3, build)
            .await
            .expect("the build returns soon after a cancel")
            .expect("join");
        assert_eq!(result, Err("cancelled".to_owned()));
        assert!(gone(script), "the tool {script} outlived its build");
        assert!(
            gone(child),
            "the tool's child {child} (which ignores SIGTERM) outlived its build"
        );
    }

    #[tokio::test]
    async fn a_dropped_build_kills_its_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let builder = Mmdebstrap::new(stand_in(dir.path()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dest = dir.path().join("dest");
        let build = tokio::spawn(async move {
            builder
                .build("bookworm", &[], &dest, tx, CancellationToken::new())
                .await
        });
        while rx.recv().await.expect("progress") != "I: fake bootstrap" {}
        let (script, child) = loop {
            if let Some(pids) = pids(dir.path()) {
                break pids;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        build.abort();
        assert!(build.await.expect_err("aborted").is_cancelled());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(dead_now(script) && dead_now(child)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone(script), "the tool {script} outlived its dropped build");
        assert!(
            gone(child),
            "the tool's child {child} outlived its dropped build"
        );
    }
}
