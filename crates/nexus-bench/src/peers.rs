//! The peers Nexus is compared with, each timed as a whole process: `fork+exec` of
//! `/bin/true` (the floor), a plain `bwrap` sandbox, and `podman run` / `podman exec`
//! when podman is installed (`scripts/bench.sh` installs it). With no registry to pull
//! from, podman runs a minimal image the bench imports itself: the host's `true` and
//! `sleep` with the libraries they load, so its figures are podman's own cost.

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
    let image = {
        let podman = podman.clone();
        match tokio::task::spawn_blocking(move || bench_image(&podman)).await {
            Ok(Ok(image)) => image,
            Ok(Err(e)) => return skip(format!("cannot make podman's image: {e:#}")),
            Err(e) => return skip(format!("making podman's image panicked: {e}")),
        }
    };
    let run = {
        let (podman, image) = (podman.clone(), image.clone());
        blocking("podman_run", move || {
            check(
                Command::new(&podman)
                    .args(["run", "--rm"])
                    .args(RUN_OPTIONS)
                    .args([&image, "true"]),
            )
            .context("podman run of `true` fails")?;
            Ok(time_runs(n, || {
                let mut cmd = Command::new(&podman);
                cmd.args(["run", "--rm"])
                    .args(RUN_OPTIONS)
                    .args([&image, "true"]);
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
        .args(["run", "-d"])
        .args(RUN_OPTIONS)
        .args([image, "sleep", "3600"])
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

/// How every container is run: with runc (crun refuses hosts with a v1/v2 cgroup
/// hybrid), and with open-file and process limits below the host's. As root, podman
/// otherwise raises both to the maximum, which a host without `CAP_SYS_RESOURCE` (a
/// container host, for one) refuses, so every run would fail.
const RUN_OPTIONS: [&str; 6] = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// The image the podman peers run, imported on first use.
const BENCH_IMAGE: &str = "localhost/nexus-bench-true:latest";
/// The programs in it.
const IMAGE_PROGRAMS: [&str; 2] = ["/usr/bin/true", "/usr/bin/sleep"];

/// [`BENCH_IMAGE`], imported from the host's `true` and `sleep` and the libraries `ldd`
/// lists for them unless podman has it already.
fn bench_image(podman: &Path) -> anyhow::Result<String> {
    let exists = Command::new(podman)
        .args(["image", "exists", BENCH_IMAGE])
        .status()
        .context("cannot run podman image exists")?;
    if exists.success() {
        return Ok(BENCH_IMAGE.to_owned());
    }
    let root = tempfile::tempdir().context("cannot make a directory for the image")?;
    let mut files: Vec<PathBuf> = IMAGE_PROGRAMS.iter().map(PathBuf::from).collect();
    let ldd = Command::new("ldd")
        .args(IMAGE_PROGRAMS)
        .output()
        .context("cannot run ldd")?;
    files.extend(libraries(&String::from_utf8_lossy(&ldd.stdout)));
    for file in &files {
        let dest = root.path().join(file.strip_prefix("/").unwrap_or(file));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot make {}", parent.display()))?;
        }
        // Follow symlinks: the image gets the files they point at under their names.
        std::fs::copy(file, &dest)
            .with_context(|| format!("cannot copy {} into the image", file.display()))?;
    }
    let tarball = root.path().join("image.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["--exclude", "./image.tar", "-cf"])
        .arg(&tarball)
        .arg(".")
        .status()
        .context("cannot run tar")?;
    if !tar.success() {
        bail!("tar of the image's files ended with {tar}");
    }
    let import = Command::new(podman)
        .arg("import")
        .arg(&tarball)
        .arg(BENCH_IMAGE)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run podman import")?;
    if !import.status.success() {
        bail!(
            "podman import failed: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        );
    }
    Ok(BENCH_IMAGE.to_owned())
}

/// The libraries in `ldd`'s output: lines are `libc.so.6 => /lib/.../libc.so.6 (0x...)`
/// or `/lib64/ld-linux-x86-64.so.2 (0x...)`, under a `/usr/bin/true:` heading per
/// program when there are several; `linux-vdso.so.1 (0x...)` is no file.
fn libraries(ldd: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for line in ldd.lines().map(str::trim) {
        if line.ends_with(':') {
            continue;
        }
        let path = line.rsplit("=>").next().unwrap_or(line).trim();
        let path = path.split(" (").next().unwrap_or(path);
        if path.starts_with('/') && !found.iter().any(|f| f.as_os_str() == path) {
            found.push(PathBuf::from(path));
        }
    }
    found
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_each_library_once() {
        let ldd = "/usr/bin/true:
\tlinux-vdso.so.1 (0x00007fe50dc7a000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fe50da7d000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fe50dc7c000)
/usr/bin/sleep:
\tlinux-vdso.so.1 (0x00007ff63af1a000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007ff63ad1c000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007ff63af1c000)
";
        assert_eq!(
            libraries(ldd),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
