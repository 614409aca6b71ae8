//! A harness that launches real sandboxes (real bwrap, real cgroups, a dedicated host
//! uid) running shell payloads, and cleans them up even when a test fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nexus_sandbox::bwrap::{BwrapSpec, ImageRoot, ReadOnlyBind, plan_shadows, resolve_masks};
use nexus_sandbox::cgroups::{CgroupManager, CgroupStats, LimitReport, Limits};
use nexus_sandbox::launch::{self, HostUser, LaunchError, LaunchRequest, Launched};
use nexus_sandbox::seccomp::SeccompProgram;

/// The Python the payloads use (the pyenv shim under /root is masked in sandboxes).
pub const PYTHON: &str = "/usr/bin/python3";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Says loudly that a test could not check what it covers on this machine.
#[expect(
    clippy::print_stderr,
    reason = "a skipped test must say so in the test output"
)]
pub fn skipped(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// Everything shared by the sandboxes of one test.
pub struct Harness {
    pub bwrap: PathBuf,
    pub seccomp: SeccompProgram,
    pub cgroups: CgroupManager,
    pub root: ImageRoot,
    /// World-searchable (0711) scratch directory in /var/tmp: `data/` (workspaces) and
    /// `run/`.
    pub dir: tempfile::TempDir,
}

/// How a sandbox is started.
#[derive(Clone, Default)]
pub struct Options {
    pub limits: Limits,
    /// Defaults to 64.
    pub tmp_mib: Option<u64>,
    /// Masked besides the harness's data and runtime directories.
    pub extra_masks: Vec<PathBuf>,
    /// Defaults to a fresh workspace.
    pub workspace: Option<PathBuf>,
    /// Trees bound read-only.
    pub read_only: Vec<ReadOnlyBind>,
    /// The host uid; defaults to a fresh one from [`Harness::ids`].
    pub uid: Option<u32>,
    /// Supplementary groups of the sandbox's host user.
    pub groups: Vec<u32>,
    /// Where the launcher assembles the root (`BwrapSpec::tree`); `None`: bwrap does.
    pub tree: Option<PathBuf>,
}

/// A launched sandbox, destroyed on drop.
pub struct Running {
    pub launched: Option<Launched>,
    pub uid: u32,
    pub workspace: PathBuf,
}

/// What a finished sandbox left.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub log: String,
    pub stats: CgroupStats,
}

impl Harness {
    /// The harness, or `None` after printing why this machine cannot run the test.
    pub fn new(test: &str) -> Option<Harness> {
        if !nix::unistd::Uid::effective().is_root() {
            skipped(test, "needs root (dedicated host uids and cgroups)");
            return None;
        }
        let Some(bwrap) = ["/usr/bin/bwrap", "/bin/bwrap"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        else {
            skipped(test, "bubblewrap is not installed");
            return None;
        };
        // Not under /tmp: the sandbox's /tmp is its own tmpfs, which would hide planted
        // secrets whatever the masks do. /var/tmp is visible through the image.
        let dir = tempfile::Builder::new()
            .prefix("nexus-it-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        for sub in ["data/workspaces", "run"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::set_permissions(
            dir.path().join("data"),
            std::fs::Permissions::from_mode(0o711),
        )
        .expect("chmod");
        Some(Harness {
            bwrap,
            seccomp: SeccompProgram::native().expect("seccomp compiles"),
            cgroups: CgroupManager::detect("nexus-test"),
            root: ImageRoot::scan(Path::new("/")).expect("scan /"),
            dir,
        })
    }

    /// The mount point of launcher-assembled roots (`BwrapSpec::tree`), as a root daemon
    /// has it in its data directory.
    pub fn root_tree(&self) -> PathBuf {
        let path = self.dir.path().join("data/rootfs");
        std::fs::create_dir_all(&path).expect("mkdir rootfs");
        path
    }

    /// A fresh workspace directory under `data/workspaces`.
    pub fn workspace(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("data/workspaces").join(name);
        std::fs::create_dir_all(&path).expect("mkdir workspace");
        path
    }

    /// A unique sandbox id and host uid for this process and call (128 per process).
    pub fn ids(&self) -> (String, u32) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        (
            format!("it-{pid}-{n}"),
            // Unique among live processes (pids are), so parallel test processes never
            // share one.
            1_000_000 + pid * 128 + n % 128,
        )
    }

    /// The spec of a sandbox running `sh -c script` in `workspace`.
    pub fn spec(&self, workspace: &Path, script: &str, options: &Options, uid: u32) -> BwrapSpec {
        let mut extra = vec![self.dir.path().join("data"), self.dir.path().join("run")];
        extra.extend(options.extra_masks.iter().cloned());
        let masks = resolve_masks(&extra, uid);
        let targets: Vec<&Path> = options
            .read_only
            .iter()
            .map(|b| b.target.as_path())
            .collect();
        BwrapSpec {
            shadows: plan_shadows(&self.root, &masks, &targets).expect("mount targets"),
            root: self.root.clone(),
            masks,
            workspace: workspace.to_path_buf(),
            read_only: options.read_only.clone(),
            tmp_mib: options.tmp_mib.unwrap_or(64),
            hostname: "sandbox".into(),
            env: vec![("LANG".into(), "C.UTF-8".into())],
            agent: None,
            writable_root: false,
            joined_network: false,
            tree: options.tree.clone(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        }
    }

    /// Launches `sh -c script`; the report of enforced limits comes along.
    pub fn start(
        &self,
        script: &str,
        options: &Options,
    ) -> Result<(Running, LimitReport), LaunchError> {
        let (id, fresh) = self.ids();
        let uid = options.uid.unwrap_or(fresh);
        let workspace = options
            .workspace
            .clone()
            .unwrap_or_else(|| self.workspace(&id));
        let spec = self.spec(&workspace, script, options, uid);
        let setup = self.cgroups.create(&id, &options.limits).expect("cgroup");
        let runtime_dir = self.dir.path().join("run").join(&id);
        let request = LaunchRequest {
            bwrap: &self.bwrap,
            spec: &spec,
            seccomp: &self.seccomp,
            runtime_dir: &runtime_dir,
            user: HostUser::Dedicated(uid),
            groups: &options.groups,
            netns: None,
        };
        let launched = launch::launch(&request, setup.cgroup)?;
        Ok((
            Running {
                launched: Some(launched),
                uid,
                workspace,
            },
            setup.report,
        ))
    }

    /// Launches `sh -c script` and waits (at most a minute) for it to exit.
    pub fn run(&self, script: &str, options: &Options) -> Finished {
        let (running, _) = self.start(script, options).expect("launch");
        running.finish(Duration::from_secs(60))
    }
}

impl Running {
    pub fn launched(&self) -> &Launched {
        self.launched.as_ref().expect("not destroyed yet")
    }

    /// Waits for bwrap to exit; its exit code.
    pub fn wait(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.launched().process.try_reap() {
                return Some(code);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.launched().log_path).unwrap_or_default()
    }

    /// Waits for the payload to finish, collects its log and the cgroup's counters, and
    /// destroys the sandbox.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let code = self.wait(timeout);
        let log = self.log();
        let code = code.unwrap_or_else(|| panic!("the sandbox did not finish; log:\n{log}"));
        let stats = self.launched().cgroup.stats();
        self.destroy();
        Finished { code, log, stats }
    }

    /// Destroys the sandbox now.
    pub fn destroy(&mut self) {
        if let Some(launched) = self.launched.take() {
            launched
                .destroy(Duration::from_millis(200))
                .expect("destroy");
        }
    }

    /// Waits until `file` exists in the workspace (the payload's way to say "ready").
    pub fn wait_for_file(&self, file: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.workspace.join(file).exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(launched) = self.launched.take() {
            let _ = launched.destroy(Duration::from_millis(100));
        }
    }
}

/// Host pids of every process whose real uid is `uid`.
pub fn processes_of(uid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let real = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
        if real == Some(uid) {
            pids.push(pid);
        }
    }
    pids
}

/// The value of `field` in `/proc/<pid>/status`.
pub fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
}
