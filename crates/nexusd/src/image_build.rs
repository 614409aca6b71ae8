//! Image builds with mmdebstrap: a Debian suite plus packages into an empty directory,
//! every line of the tool's output forwarded as progress.
//!
//! mmdebstrap forks apt, dpkg, maintainer scripts and more. It runs as the leader of a
//! process group of its own and, where the host allows, in a cgroup of its own (a
//! [`BuildCgroup`] under `<our cgroup>/nexus-builds/<instance>/`, joined between fork and
//! exec, so nothing it forks is outside). Both are what gets killed: at a cancel (the
//! group gets SIGTERM, then everything SIGKILL after [`KILL_GRACE`]), at the end of every
//! build (whatever outlived the tool), and when the build's future is dropped. The cgroup
//! also holds the processes that left the group with `setsid`, and outlives a daemon
//! killed with SIGKILL: the next start kills what is in it
//! ([`ImageBuilder::stop_leftovers`](nexus_core::ImageBuilder::stop_leftovers)). Where
//! there is no cgroup (a daemon that is not root and has no delegated cgroup), the
//! process group alone is killed. The leader is reaped only after the last signal to the
//! group, so the group id cannot have been reused by then.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nexus_sandbox::cgroups::{BuildCgroup, BuildCgroups, CgroupError};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::storage::chain;

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
    /// Where each build gets its cgroup; `None` where the host offers none.
    cgroups: Option<BuildCgroups>,
}

impl Mmdebstrap {
    /// A builder running `program` (a path, or a name looked up on the `PATH`), whose
    /// builds are stopped by process group alone until [`Self::with_cgroups`].
    pub fn new(program: PathBuf) -> Self {
        Self {
            program,
            cgroups: None,
        }
    }

    /// Runs every build in a cgroup of its own among `cgroups`, and sweeps them at startup.
    pub fn with_cgroups(mut self, cgroups: BuildCgroups) -> Self {
        self.cgroups = Some(cgroups);
        self
    }

    /// [`Self::with_cgroups`] with the best place this host offers for the builds of the
    /// daemon whose data is in `data_dir`; without one, says once (at info) that builds
    /// are stopped by process group alone.
    pub fn with_detected_cgroups(self, data_dir: &Path) -> Self {
        match BuildCgroups::detect(&instance(data_dir)) {
            Ok(cgroups) => {
                tracing::debug!(cgroups = %cgroups.home().display(), hierarchy = %cgroups.hierarchy(), "image builds run in cgroups of their own");
                self.with_cgroups(cgroups)
            }
            Err(error) => {
                tracing::info!(reason = %error, "image builds run without cgroups: their processes are stopped by process group alone, which a process leaving it with setsid escapes, and a daemon killed with SIGKILL leaves them running");
                self
            }
        }
    }
}

/// The name of this daemon's directory of build cgroups: a digest of its data directory,
/// so that daemons sharing a cgroup never sweep each other's builds, and a restarted one
/// finds its own.
pub fn instance(data_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(data_dir.as_os_str().as_bytes());
    format!("data-{}", hex::encode(&digest[..8]))
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
        let cgroup = self.cgroup_for_build().await;
        let (mut child, cgroup) = match spawn(&program, suite, packages, dest, cgroup.as_ref()) {
            Ok(child) => (child, cgroup),
            Err(error) => {
                let Some(cgroup) = cgroup else {
                    return Err(format!("cannot run {}: {error}", program.display()));
                };
                // The kernel refused the join (or the tool cannot run at all, which the
                // second attempt reports): without the cgroup the build still runs.
                tracing::warn!(cgroup = %cgroup.path().display(), %error, "cannot start mmdebstrap in its cgroup; it runs without, stopped by process group alone");
                destroy(cgroup).await;
                let child = spawn(&program, suite, packages, dest, None)
                    .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
                (child, None)
            }
        };
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or("mmdebstrap ended before it could be watched")?;
        // Declared after `child`, so it is dropped first: the group dies while the
        // leader is still unreaped.
        let mut processes = BuildProcesses::new(pid, cgroup);
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
            processes.signal_group(Signal::SIGTERM);
            let _ = tokio::time::timeout(KILL_GRACE, exited(pid)).await;
        }
        // Whatever is left goes: processes that outlived the tool, or all of them when
        // SIGTERM was not enough.
        processes.kill_all().await;
        let status = child.wait().await;
        processes.reaped();
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

    async fn stop_leftovers(&self) -> Result<usize, String> {
        let Some(cgroups) = self.cgroups.clone() else {
            return Ok(0);
        };
        let swept = tokio::task::spawn_blocking(move || cgroups.sweep())
            .await
            .map_err(|e| format!("the task sweeping build cgroups failed: {e}"))?
            .map_err(|e| chain(&e))?;
        let mut failures = Vec::new();
        for leftover in &swept {
            let killed = leftover
                .processes
                .iter()
                .map(|(pid, name)| format!("{pid} ({name})"))
                .collect::<Vec<_>>()
                .join(", ");
            let cgroup = leftover.path.display();
            match &leftover.result {
                Ok(()) => {
                    tracing::info!(%cgroup, %killed, "killed the processes of an image build the previous run left running, and removed its cgroup");
                }
                Err(error) => {
                    let error = chain(error);
                    tracing::warn!(%cgroup, %killed, %error, "cannot end an image build the previous run left running");
                    failures.push(format!("{cgroup}: {error}"));
                }
            }
        }
        if failures.is_empty() {
            Ok(swept.len())
        } else {
            Err(failures.join("; "))
        }
    }
}

impl Mmdebstrap {
    /// A new cgroup for one build, or `None` (said at warn) when this host has build
    /// cgroups but making one failed.
    async fn cgroup_for_build(&self) -> Option<BuildCgroup> {
        let cgroups = self.cgroups.clone()?;
        let name = format!("build-{:016x}", rand::random::<u64>());
        match tokio::task::spawn_blocking(move || cgroups.create(&name)).await {
            Ok(Ok(cgroup)) => Some(cgroup),
            Ok(Err(error)) => {
                tracing::warn!(error = %chain(&error), "cannot create an image build's cgroup; it runs without, stopped by process group alone");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "the task creating an image build's cgroup failed");
                None
            }
        }
    }
}

/// Starts mmdebstrap, in `cgroup` when given, as the leader of a new process group.
fn spawn(
    program: &Path,
    suite: &str,
    packages: &[String],
    dest: &Path,
    cgroup: Option<&BuildCgroup>,
) -> std::io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(program);
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
    if let Some(cgroup) = cgroup {
        // Race-free: the child writes itself into the cgroup after fork and before exec,
        // so the tool is in it before it can fork anything.
        cgroup.join_at_spawn(command.as_std_mut());
    }
    command.spawn()
}

/// Every process of one build: its tool's process group and, where the host allows, its
/// cgroup (which also holds those that left the group). Dropped, it SIGKILLs them all.
#[derive(Debug)]
struct BuildProcesses {
    /// The leader's pid, which is the group's id; `None` once the leader is reaped.
    pgid: Option<Pid>,
    /// `None` once destroyed.
    cgroup: Option<BuildCgroup>,
}

impl BuildProcesses {
    fn new(pgid: Pid, cgroup: Option<BuildCgroup>) -> Self {
        Self {
            pgid: Some(pgid),
            cgroup,
        }
    }

    /// Signals every process of the group.
    fn signal_group(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // Failure means the group is already empty, which is what we want.
            let _ = killpg(pgid, signal);
        }
    }

    /// SIGKILLs the group, then every process in the cgroup, waits until the cgroup is
    /// empty and removes it.
    async fn kill_all(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if let Some(cgroup) = self.cgroup.take() {
            destroy(cgroup).await;
        }
    }

    /// The leader is reaped: its pid, and so the group's id, may name others from now on.
    fn reaped(&mut self) {
        self.pgid = None;
    }
}

impl Drop for BuildProcesses {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
        let Some(cgroup) = self.cgroup.take() else {
            return;
        };
        if let Err(error) = cgroup.kill_once() {
            tracing::warn!(cgroup = %cgroup.path().display(), error = %chain(&error), "cannot kill the processes of a dropped image build");
        }
        // Waiting for them to end and removing the cgroup block, which a future's drop
        // must not; a thread finishes it (if the daemon exits first, its next start does).
        let spawned = std::thread::Builder::new()
            .name("build-cgroup".into())
            .spawn(move || report_destroyed(&cgroup, cgroup.destroy()));
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the thread removing a dropped image build's cgroup; the next start removes it");
        }
    }
}

/// Kills what is left in `cgroup` and removes it, off the async threads.
async fn destroy(cgroup: BuildCgroup) {
    let done = tokio::task::spawn_blocking(move || {
        let result = cgroup.destroy();
        report_destroyed(&cgroup, result);
    })
    .await;
    if let Err(error) = done {
        tracing::warn!(%error, "the task removing an image build's cgroup failed");
    }
}

fn report_destroyed(cgroup: &BuildCgroup, result: Result<(), CgroupError>) {
    if let Err(error) = result {
        tracing::warn!(cgroup = %cgroup.path().display(), error = %chain(&error), "cannot end every process of an image build or remove its cgroup; the next start retries");
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

    /// A stand-in for mmdebstrap that writes its pid into `tool`, double-forks a
    /// `setsid sleep 1000`, which leaves the build's process group and session, writes
    /// that pid into `escaped`, and waits on a `sleep 1000` of its own.
    fn escaping_stand_in(dir: &Path) -> PathBuf {
        let script = dir.join("fake-mmdebstrap");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 if [ \"$1\" = --version ]; then echo 'mmdebstrap 0.0-fake'; exit 0; fi\n\
                 echo $$ > {dir}/tool\n\
                 echo 'I: fake bootstrap'\n\
                 ( setsid sh -c 'echo $$ > {dir}/escaped.tmp && mv {dir}/escaped.tmp {dir}/escaped; exec sleep 1000' </dev/null >/dev/null 2>&1 & )\n\
                 sleep 1000 &\n\
                 wait\n",
                dir = dir.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script
    }

    /// Build cgroups for a test-only daemon instance, or `None` (said loudly) where this
    /// machine has none.
    #[allow(
        clippy::print_stderr,
        reason = "a skipped test must say so in the test output"
    )]
    fn test_cgroups(test: &str) -> Option<BuildCgroups> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIP: {test}: build cgroups need root");
            return None;
        }
        match BuildCgroups::detect(&format!("test-{}-{test}", std::process::id())) {
            Ok(cgroups) => Some(cgroups),
            Err(error) => {
                eprintln!("SKIP: {test}: no build cgroup on this machine: {error}");
                None
            }
        }
    }

    /// Kills the escaped process whatever happens to the test, and the tool's process
    /// group with it once known, so a failure leaves nothing running.
    struct Reaper(i32, Option<Pid>);

    impl Drop for Reaper {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0), Signal::SIGKILL);
            if let Some(group) = self.1 {
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
    }

    /// Removes a test's build cgroups whatever happens to it.
    struct Sweep(BuildCgroups);

    impl Drop for Sweep {
        fn drop(&mut self) {
            let _ = self.0.sweep();
        }
    }

    /// Waits for the escaped pid; checks that it left the build's process group.
    async fn escaped(dir: &Path) -> (i32, Reaper) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pid: i32 = loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("escaped")) {
                break text.trim().parse().expect("a pid");
            }
            assert!(std::time::Instant::now() < deadline, "nothing escaped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let reaper = Reaper(pid, None);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("alive");
        let (_, rest) = stat.rsplit_once(") ").expect("a stat line");
        let pgrp: i32 = rest
            .split_whitespace()
            .nth(2)
            .expect("pgrp")
            .parse()
            .expect("a number");
        assert_eq!(pgrp, pid, "it leads a group (and session) of its own");
        (pid, reaper)
    }

    /// Regression: a process that left a build's process group with `setsid` outlived
    /// the build's cancel. Fails when the tool is not put in its cgroup.
    #[tokio::test]
    async fn a_cancel_kills_a_process_that_left_the_group_through_the_build_cgroup() {
        let Some(cgroups) = test_cgroups("cancel") else {
            return;
        };
        let _sweep = Sweep(cgroups.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let builder = Mmdebstrap::new(escaping_stand_in(dir.path())).with_cgroups(cgroups.clone());
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dest = dir.path().join("dest");
        let build = tokio::spawn({
            let cancel = cancel.clone();
            async move { builder.build("bookworm", &[], &dest, tx, cancel).await }
        });
        while rx.recv().await.expect("progress") != "I: fake bootstrap" {}
        let (pid, _reaper) = escaped(dir.path()).await;
        assert!(cgroups.home().is_dir(), "the build has its cgroup");

        cancel.cancel();
        let result = tokio::time::timeout(KILL_GRACE * 3, build)
            .await
            .expect("the build returns soon after a cancel")
            .expect("join");
        assert_eq!(result, Err("cancelled".to_owned()));
        assert!(
            gone(pid),
            "the process {pid} that left the group outlived its cancelled build"
        );
        assert!(
            !cgroups.home().exists(),
            "{} is left over",
            cgroups.home().display()
        );
    }

    /// The same through a dropped build future: the cgroup is killed at once and removed
    /// by a thread soon after.
    #[tokio::test]
    async fn a_dropped_build_kills_a_process_that_left_the_group() {
        let Some(cgroups) = test_cgroups("drop") else {
            return;
        };
        let _sweep = Sweep(cgroups.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let builder = Mmdebstrap::new(escaping_stand_in(dir.path())).with_cgroups(cgroups.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dest = dir.path().join("dest");
        let build = tokio::spawn(async move {
            builder
                .build("bookworm", &[], &dest, tx, CancellationToken::new())
                .await
        });
        while rx.recv().await.expect("progress") != "I: fake bootstrap" {}
        let (pid, _reaper) = escaped(dir.path()).await;
        build.abort();
        assert!(build.await.expect_err("aborted").is_cancelled());
        assert!(
            gone(pid),
            "the process {pid} that left the group outlived its dropped build"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cgroups.home().exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !cgroups.home().exists(),
            "{} is left over",
            cgroups.home().display()
        );
    }

    /// A build whose daemon died (its future neither finished nor dropped) leaves its
    /// processes in its cgroup; the next start's `stop_leftovers` kills them all and
    /// removes the cgroup. Fails when the startup sweep is removed.
    #[tokio::test]
    async fn the_next_start_kills_a_build_its_killed_daemon_left_running() {
        let Some(cgroups) = test_cgroups("leftover") else {
            return;
        };
        let _sweep = Sweep(cgroups.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let builder = Mmdebstrap::new(escaping_stand_in(dir.path())).with_cgroups(cgroups.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dest = dir.path().join("dest");
        let mut build =
            Box::pin(builder.build("bookworm", &[], &dest, tx, CancellationToken::new()));
        let started = async { while rx.recv().await.expect("progress") != "I: fake bootstrap" {} };
        tokio::select! {
            result = &mut build => panic!("the build ended: {result:?}"),
            () = started => {}
        }
        let (pid, mut reaper) = escaped(dir.path()).await;
        let tool: i32 = std::fs::read_to_string(dir.path().join("tool"))
            .expect("the tool's pid")
            .trim()
            .parse()
            .expect("a pid");
        reaper.1 = Some(Pid::from_raw(tool));
        // The daemon dies: nothing of the build runs its cleanup.
        std::mem::forget(build);

        let restarted = Mmdebstrap::new(dir.path().join("unused")).with_cgroups(cgroups.clone());
        assert_eq!(restarted.stop_leftovers().await, Ok(1));
        assert!(
            gone(pid),
            "the escaped process {pid} survived the next start"
        );
        assert!(
            !cgroups.home().exists(),
            "{} is left over",
            cgroups.home().display()
        );
        assert!(gone(tool), "the tool {tool} survived the next start");
        assert_eq!(restarted.stop_leftovers().await, Ok(0));
    }
}
