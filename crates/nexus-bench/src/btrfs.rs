//! Workspaces on btrfs (issue 4): a sparse image formatted with `mkfs.btrfs` and
//! loop-mounted in a temporary directory, a second `nexusd` whose `XDG_DATA_HOME` is on
//! it, and the workspace measurements of [`crate::workspaces`] named `*_btrfs`. The
//! mount and the image are removed by a guard, whatever happens.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::cleanup;
use crate::daemon::{Binaries, Daemon};
use crate::lab::Lab;
use crate::measure::Plan;
use crate::report::{Group, Operation};
use crate::workspaces;

/// The operations measured here.
const NAMES: [&str; 3] = ["snapshot_btrfs", "restore_btrfs", "workspace_fork_btrfs"];

/// Measures the workspace operations on a fresh btrfs filesystem, or says why not
/// (each operation `skipped`), plus notes for the report.
pub async fn measure(bins: &Binaries, plan: &Plan) -> (Vec<Operation>, Vec<String>) {
    let skipped = |reason: String| {
        NAMES
            .iter()
            .map(|name| Operation::skipped(name, Group::Nexus, reason.clone()))
            .collect()
    };
    if !nix::unistd::geteuid().is_root() {
        return (
            skipped("needs root to loop-mount a btrfs image".into()),
            Vec::new(),
        );
    }
    let Some(mkfs) = which("mkfs.btrfs") else {
        return (skipped("mkfs.btrfs is not installed".into()), Vec::new());
    };
    // Room for the big file, the small ones, and the copies a failed clone could make.
    let image_mib = (plan.workspace_mib * 4).max(4096);
    let mount = match BtrfsMount::create(&mkfs, image_mib) {
        Ok(mount) => mount,
        Err(e) => {
            return (
                skipped(format!("cannot make a btrfs filesystem: {e:#}")),
                Vec::new(),
            );
        }
    };
    let (operations, notes) = on_second_daemon(bins, plan, &mount.data_home()).await;
    let notes = notes.into_iter().chain(mount.remove()).collect();
    match operations {
        Ok(operations) => (operations, notes),
        Err(e) => (skipped(format!("{e:#}")), notes),
    }
}

/// A loop-mounted btrfs image in a temporary directory, unmounted (lazily when busy)
/// and deleted on drop.
#[derive(Debug)]
struct BtrfsMount {
    dir: Option<tempfile::TempDir>,
    mountpoint: PathBuf,
    mounted: bool,
}

impl BtrfsMount {
    /// Makes a sparse image of `mib` MiB, formats and mounts it (mode 0711).
    fn create(mkfs: &Path, mib: u64) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("nexus-bench-btrfs-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let image = dir.path().join("btrfs.img");
        let mountpoint = dir.path().join("mnt");
        let mut mount = Self {
            dir: Some(dir),
            mountpoint,
            mounted: false,
        };
        let file = std::fs::File::create(&image)
            .with_context(|| format!("cannot create {}", image.display()))?;
        file.set_len(mib * 1024 * 1024)
            .with_context(|| format!("cannot size {}", image.display()))?;
        drop(file);
        run(Command::new(mkfs).arg("-q").arg(&image))?;
        std::fs::create_dir(&mount.mountpoint)
            .with_context(|| format!("cannot create {}", mount.mountpoint.display()))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount.mountpoint))?;
        mount.mounted = true;
        // The sandboxes' uids must traverse the temporary directory and the mount.
        for path in [mount.dir_path(), mount.mountpoint.clone()] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))
                .with_context(|| format!("cannot chmod 0711 {}", path.display()))?;
        }
        Ok(mount)
    }

    /// `XDG_DATA_HOME` of the daemon: the mount itself.
    fn data_home(&self) -> PathBuf {
        self.mountpoint.clone()
    }

    /// Unmounts and deletes now, returning what went wrong as notes.
    fn remove(mut self) -> Vec<String> {
        self.teardown()
    }

    fn dir_path(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|dir| dir.path().to_path_buf())
            .unwrap_or_default()
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.mounted {
            self.mounted = false;
            if let Err(e) = run(Command::new("umount").arg(&self.mountpoint)) {
                notes.push(format!("btrfs: {e:#}; unmounting lazily"));
                if let Err(e) = run(Command::new("umount").arg("-l").arg(&self.mountpoint)) {
                    notes.push(format!(
                        "btrfs: {e:#}; {} stays mounted",
                        self.mountpoint.display()
                    ));
                    // Deleting the directory would descend into the mount.
                    if let Some(dir) = self.dir.take() {
                        let _ = dir.keep();
                    }
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                notes.push(format!("btrfs: cannot remove {}: {e}", path.display()));
            }
        }
        notes
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        // Only an early return or a panic gets here with work left; `remove` empties it.
        for note in self.teardown() {
            crate::progress(&note);
        }
    }
}

/// Starts a second daemon with its data on `data_home`, measures, deletes what it made
/// and stops it. The daemon is stopped before this returns, so the mount is free.
async fn on_second_daemon(
    bins: &Binaries,
    plan: &Plan,
    data_home: &Path,
) -> (anyhow::Result<Vec<Operation>>, Vec<String>) {
    let mut daemon = match Daemon::start_with_data_home(bins, data_home).await {
        Ok(daemon) => daemon,
        Err(e) => return (Err(e.context("cannot start nexusd on btrfs")), Vec::new()),
    };
    let lab = match Lab::new(&daemon.url, &daemon.token) {
        Ok(lab) => lab,
        Err(e) => return (Err(e), Vec::new()),
    };
    let mut operations = workspaces::measure(&lab, plan, "_btrfs").await;
    for op in &mut operations {
        if let (Some(note), Some(_)) = (&op.note, &op.summary)
            && !note.starts_with("btrfs ")
        {
            op.note = Some(format!("{note}; expected the btrfs backend"));
        }
    }
    let mut notes = Vec::new();
    let (deleted, failures) = lab.delete_all().await;
    if deleted > 0 {
        notes.push(format!(
            "btrfs: {deleted} sandbox(es) were left and deleted"
        ));
    }
    notes.extend(failures.into_iter().map(|f| format!("btrfs cleanup: {f}")));
    if let Err(e) = daemon.stop().await {
        notes.push(format!("btrfs: nexusd did not stop cleanly: {e:#}"));
    }
    let mut ids = lab.created_ids();
    ids.extend(daemon.sandbox_ids());
    notes.extend(cleanup::reap(&ids).await);
    (Ok(operations), notes)
}

/// Runs a command to completion; its stderr becomes the error.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The first executable `name` on `PATH` or in the sbin directories.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
