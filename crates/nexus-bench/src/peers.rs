//! The peers Nexus is compared with, each timed as a whole process: `fork+exec` of
//! `/bin/true` (the floor), a plain `bwrap` sandbox, and `podman run` / `podman exec`
//! when podman and a local image are present (this machine has no network to pull one).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::report::{Group, Operation};
use crate::stats::Samples;

/// `fork_exec_true`: spawning `/bin/true` and waiting for it.
pub async fn fork_exec_true(n: usize) -> Operation {
    blocking("fork_exec_true", move || {
        Ok(time_runs(n, || Command::new("/bin/true")))
    })
    .await
}

/// `bwrap_spawn`: a plain unprivileged bubblewrap sandbox running `true`.
pub async fn bwrap_spawn(n: usize) -> Operation {
    let Some(bwrap) = which("bwrap") else {
        return Operation::skipped("bwrap_spawn", Group::Peer, "bwrap is not installed".into());
    };
    blocking("bwrap_spawn", move || {
        Ok(time_runs(n, || {
            let mut cmd = Command::new(&bwrap);
            // The same sandboxed `true` as the doctor's check: namespaces, no Nexus.
            cmd.args(nexus_host::bwrap::SMOKE_TEST_ARGS);
            cmd
        }))
    })
    .await
}

/// `podman_run` and `podman_exec` with the runc runtime (crun refuses cgroup hybrids),
/// or both skipped with the reason.
pub async fn podman(n: usize) -> [Operation; 2] {
    let names = ["podman_run", "podman_exec"];
    let skip =
        |reason: String| names.map(|name| Operation::skipped(name, Group::Peer, reason.clone()));
    let Some(podman) = which("podman") else {
        return skip("podman is not installed".into());
    };
    let image = match local_image(&podman) {
        Ok(Some(image)) => image,
        Ok(None) => {
            return skip("podman has no local image (`podman images -q` is empty) and there is no network to pull one".into());
        }
        Err(e) => return skip(format!("cannot list podman images: {e:#}")),
    };
    let run = {
        let (podman, image) = (podman.clone(), image.clone());
        blocking("podman_run", move || {
            check(Command::new(&podman).args(["run", "--rm", "--runtime", "runc", &image, "true"]))
                .context("podman run of `true` fails")?;
            Ok(time_runs(n, || {
                let mut cmd = Command::new(&podman);
                cmd.args(["run", "--rm", "--runtime", "runc", &image, "true"]);
                cmd
            }))
        })
        .await
    };
    let exec = blocking("podman_exec", move || podman_exec(&podman, &image, n)).await;
    [run, exec]
}

/// Starts one long-lived container, times `podman exec CTR true`, removes it.
fn podman_exec(podman: &Path, image: &str, n: usize) -> anyhow::Result<Samples> {
    let output = Command::new(podman)
        .args(["run", "-d", "--runtime", "runc", image, "sleep", "3600"])
        .stderr(Stdio::piped())
        .output()
        .context("cannot run podman")?;
    if !output.status.success() {
        bail!(
            "podman run -d {image} sleep 3600 failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let container = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let exec = || {
        let mut cmd = Command::new(podman);
        cmd.args(["exec", &container, "true"]);
        cmd
    };
    let samples = check(&mut exec())
        .context("podman exec of `true` fails")
        .map(|()| time_runs(n, exec));
    let _ = Command::new(podman)
        .args(["rm", "-f", "-t", "0", &container])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    samples
}

/// The first local image, if any.
fn local_image(podman: &Path) -> anyhow::Result<Option<String>> {
    let output = Command::new(podman)
        .args(["images", "-q"])
        .stderr(Stdio::piped())
        .output()
        .context("cannot run podman images")?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned))
}

/// Runs a blocking measurement off the async runtime.
async fn blocking(
    name: &'static str,
    work: impl FnOnce() -> anyhow::Result<Samples> + Send + 'static,
) -> Operation {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(samples)) => Operation::measured(name, Group::Peer, samples),
        Ok(Err(e)) => Operation::skipped(name, Group::Peer, format!("{e:#}")),
        Err(e) => Operation::skipped(name, Group::Peer, format!("measurement panicked: {e}")),
    }
}

/// One untimed warm-up run, then `n` timed runs of the command `make` builds.
fn time_runs(n: usize, make: impl Fn() -> Command) -> Samples {
    let mut samples = Samples::default();
    let _ = check(&mut make());
    for _ in 0..n {
        let mut cmd = make();
        let start = Instant::now();
        let result = check(&mut cmd);
        samples.record(start.elapsed(), result);
    }
    samples
}

/// Runs a command with no input or output and requires success.
fn check(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} ended with {status}", cmd.get_program());
    }
    Ok(())
}

/// The first executable called `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
