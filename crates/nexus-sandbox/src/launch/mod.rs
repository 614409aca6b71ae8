//! Starting a sandbox for real: bwrap spawned inside the sandbox's cgroup, as its own
//! unprivileged host uid, detached from the daemon, with the agent's listening socket,
//! the seccomp program and nothing else inherited; and stopping or destroying it.
//!
//! What the child does between `fork` and `exec` (in [`child`]'s order):
//! 1. `setsid`: a new session, so the daemon's terminal signals never reach it;
//! 2. moves itself into every directory of the sandbox cgroup, still as root,
//!    so bwrap and everything it forks are accounted and limited from the first
//!    instruction (an unprivileged uid could not write root-owned cgroup files on v1);
//!    Then, still as root, it joins the sandbox's network namespace when the daemon made
//!    one, and, when the spec has a [`BwrapSpec::tree`], the mount namespace in which
//!    that root is assembled ([`template`]: assembled once per plan by [`tree`], planned
//!    by [`crate::bwrap::plan_tree`]), of which it makes a copy of its own to mount the
//!    sandbox's `/dev/pts` in;
//! 3. stdin from `/dev/null`, stdout and stderr appended to `sandbox.log` in the runtime
//!    dir (not pipes to the daemon: the sandbox must outlive it), the listening socket
//!    at [`LISTEN_FD`], the seccomp memfd at [`SECCOMP_FD`], bwrap's info pipe at
//!    [`INFO_FD`]; every other descriptor is closed on exec;
//! 4. default signal dispositions and an empty signal mask;
//! 5. as root: `setgroups` (the groups of the trees it mounts read-only, usually none:
//!    see [`ids`]), `setresgid`, `setresuid` to the sandbox's host uid, so bwrap is
//!    unprivileged and maps uid 1000 inside to that uid;
//! 6. `execve` of bwrap with an empty environment (bwrap's environment is readable by
//!    the sandbox's host uid; the daemon's, with its token, must not be).
//!
//! [`launch`] returns once the sandbox's command has been exec'd (bwrap's setup
//! succeeded), or fails having removed everything it made: runtime files, processes and
//! the cgroup.
//!
//! Cost (`launch_timings`, release build, this 2-core machine): [`launch`] returns after
//! about 7.8 ms p50 with the shared tree and `/dev` in it, 11.3 ms when the tree was
//! assembled for each launch, 13.7 ms with bwrap making every mount. Joining the cgroup in step 2 is
//! nearly free: the child writes `0` (itself) into `tasks` on v1, which moves one thread
//! without taking the kernel's `cgroup_threadgroup_rwsem` for writing (Linux 6.0+). Writing
//! a pid to `cgroup.procs` instead waits for an RCU grace period after a quiet spell:
//! measured here, p50 9.6 ms against 0.6 ms for the `tasks` write (20 fresh v1 memory
//! cgroups each, a forked child timing its own write). On v2 the write goes to
//! `cgroup.procs`; v2 mounted with `favordynmods` avoids the wait, and so would spawning
//! straight into the cgroup with `clone3(CLONE_INTO_CGROUP)` (not done yet).

mod child;
mod hostname;
mod ids;
mod process;
pub mod record;
mod runtime;
mod swap;
mod template;
mod tree;
mod workspace;

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

pub use self::hostname::{HostnameError, set_hostname};
pub use self::ids::{HostIds, HostUser, TreeOwners, supplementary_groups};
pub use self::process::{SandboxProcess, StopOutcome, is_alive, start_time, stop, try_reap};
use self::runtime::{create_runtime_dir, log_tail, read_child_pid};
pub use self::swap::{SwapError, replace_workspace};
pub use self::workspace::prepare_workspace;
use crate::bwrap::{
    BwrapSpec, DEVPTS, SpecError, SpecFds, TreeOp, build_args, plan_tree, unreachable_ancestor,
};
use crate::cgroups::{CgroupError, SandboxCgroup};
use crate::seccomp::{SeccompError, SeccompProgram};

/// The agent's listening socket, as numbered in the sandbox.
pub const LISTEN_FD: RawFd = 3;
/// The seccomp program, as numbered in bwrap (bwrap closes it after loading).
pub const SECCOMP_FD: RawFd = 4;
/// bwrap's `--info-fd` (bwrap closes it after writing).
pub const INFO_FD: RawFd = 5;
/// The agent socket's file name in the runtime dir.
pub const SOCKET_NAME: &str = "agent.sock";
/// The log file's name in the runtime dir.
pub const LOG_NAME: &str = "sandbox.log";
/// How long [`launch`] waits for bwrap to set the sandbox up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything [`launch`] needs.
#[derive(Debug)]
pub struct LaunchRequest<'a> {
    /// The bwrap binary.
    pub bwrap: &'a Path,
    /// The sandbox.
    pub spec: &'a BwrapSpec,
    /// The seccomp program, loaded by bwrap just before it execs the command.
    pub seccomp: &'a SeccompProgram,
    /// The sandbox's own runtime directory, host-only; created here (mode 0700) and
    /// holding [`SOCKET_NAME`] and [`LOG_NAME`]. Its parents are created if missing.
    pub runtime_dir: &'a Path,
    /// The host user to run as.
    pub user: HostUser,
    /// Its supplementary groups ([`supplementary_groups`] of the read-only mounts);
    /// ignored for [`HostUser::Current`], which keeps the daemon's.
    pub groups: &'a [u32],
    /// The network namespace to start in (with [`BwrapSpec::joined_network`]); joined by
    /// the child as root before it drops to the host uid. `None`: bwrap makes one.
    pub netns: Option<std::os::fd::BorrowedFd<'a>>,
}

/// A started sandbox.
#[derive(Debug)]
pub struct Launched {
    /// Its processes (persist this to adopt it after a restart).
    pub process: SandboxProcess,
    /// Its cgroup, which it runs in.
    pub cgroup: SandboxCgroup,
    /// The agent's listening socket on the host: connect here.
    pub socket_path: PathBuf,
    /// bwrap's and the command's stdout and stderr.
    pub log_path: PathBuf,
    /// The runtime directory.
    pub runtime_dir: PathBuf,
}

/// Starting or stopping a sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The spec is invalid.
    #[error("invalid sandbox spec")]
    Spec(#[from] SpecError),
    /// The seccomp program could not be handed over.
    #[error("cannot prepare the seccomp filter")]
    Seccomp(#[from] SeccompError),
    /// A cgroup operation failed.
    #[error("cgroup operation failed")]
    Cgroup(#[from] CgroupError),
    /// The workspace is missing or not a directory.
    #[error("workspace {path} is not a directory")]
    Workspace {
        /// The workspace.
        path: PathBuf,
        /// Why, if a call failed.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Something bwrap must bind does not exist.
    #[error("{what} {path} does not exist")]
    Missing {
        /// `agent`, `image root` or `read-only mount source`.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The sandbox's host uid cannot reach something bwrap must open.
    #[error(
        "{what} {path} is out of reach of the sandbox's host uid {uid}: {blocked_by} is not \
         searchable (chmod o+x it, or move the {what} elsewhere)"
    )]
    Unreachable {
        /// `workspace`, `agent`, `image root` or `read-only mount source`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The directory that blocks it.
        blocked_by: PathBuf,
        /// The uid.
        uid: u32,
    },
    /// The workspace could not be given to the sandbox's host uid.
    #[error("cannot hand {path} to uid {uid}")]
    Chown {
        /// The file.
        path: PathBuf,
        /// The uid.
        uid: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime directory or a file in it could not be made.
    #[error("cannot create {path}")]
    Runtime {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket path does not fit in `sockaddr_un` (108 bytes).
    #[error("socket path {0} is longer than 107 bytes: use a shorter runtime directory")]
    SocketPathTooLong(PathBuf),
    /// The child failed before bwrap ran.
    #[error("cannot {stage}")]
    Spawn {
        /// The step that failed.
        stage: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A step of assembling the sandbox's root failed.
    #[error("cannot assemble the sandbox's root: cannot {step}")]
    Root {
        /// The step.
        step: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// bwrap exited before the command started.
    #[error("bwrap failed ({status}): {log}")]
    BwrapFailed {
        /// Its exit status.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// bwrap did not start the command in time.
    #[error("the sandbox did not start within {0:?}")]
    StartTimeout(Duration),
    /// A process survived SIGKILL.
    #[error("process {pid} is still running after SIGKILL")]
    StillRunning {
        /// Its pid.
        pid: u32,
    },
    /// The runtime directory could not be removed.
    #[error("cannot remove {path}")]
    Cleanup {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The owners of workspace trees could not be read.
    #[error("cannot read the owner of {path}")]
    OwnerScan {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No host uid is free.
    #[error("every host uid in {start}..={end} is in use")]
    IdsExhausted {
        /// First uid of the range.
        start: u32,
        /// Last uid of the range.
        end: u32,
    },
    /// The configured uid range is unusable.
    #[error("invalid host uid range {start}..={end}: it must be non-empty and exclude 0 and 65534")]
    InvalidIdRange {
        /// First uid.
        start: u32,
        /// Last uid.
        end: u32,
    },
}

/// Starts the sandbox described by `request` in `cgroup`.
///
/// On failure everything made for it is gone: its processes, its runtime directory and
/// `cgroup` (which is why it is taken by value).
pub fn launch(request: &LaunchRequest<'_>, cgroup: SandboxCgroup) -> Result<Launched, LaunchError> {
    let runtime_existed = request.runtime_dir.exists();
    match start(request, &cgroup) {
        Ok(process) => Ok(Launched {
            process,
            cgroup,
            socket_path: request.runtime_dir.join(SOCKET_NAME),
            log_path: request.runtime_dir.join(LOG_NAME),
            runtime_dir: request.runtime_dir.to_path_buf(),
        }),
        Err(error) => {
            if let Err(cleanup) = cgroup.kill_all().and_then(|()| cgroup.remove()) {
                tracing::warn!(error = %cleanup, "cannot remove the cgroup of a failed launch");
            }
            if !runtime_existed {
                let _ = std::fs::remove_dir_all(request.runtime_dir);
            }
            Err(error)
        }
    }
}

/// Stops the sandbox (see [`stop`]), removes its cgroup and its runtime directory.
pub fn destroy(
    process: &SandboxProcess,
    cgroup: &SandboxCgroup,
    runtime_dir: &Path,
    grace: Duration,
) -> Result<StopOutcome, LaunchError> {
    let outcome = stop(process, cgroup, grace)?;
    cgroup.remove()?;
    match std::fs::remove_dir_all(runtime_dir) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(LaunchError::Cleanup {
                path: runtime_dir.to_path_buf(),
                source,
            });
        }
        _ => {}
    }
    Ok(outcome)
}

impl Launched {
    /// [`destroy`] for a sandbox this daemon launched.
    pub fn destroy(&self, grace: Duration) -> Result<StopOutcome, LaunchError> {
        destroy(&self.process, &self.cgroup, &self.runtime_dir, grace)
    }
}

/// The launch itself; [`launch`] cleans up after it on failure.
fn start(
    request: &LaunchRequest<'_>,
    cgroup: &SandboxCgroup,
) -> Result<SandboxProcess, LaunchError> {
    let spec = request.spec;
    let args = build_args(
        spec,
        SpecFds {
            seccomp: SECCOMP_FD,
            info: Some(INFO_FD),
        },
    )?;
    let uid = request.user.uid();
    match request.user {
        HostUser::Dedicated(uid) => prepare_workspace(&spec.workspace, uid)?,
        HostUser::Current if !spec.workspace.is_dir() => {
            return Err(LaunchError::Workspace {
                path: spec.workspace.clone(),
                source: None,
            });
        }
        HostUser::Current => {}
    }
    let tree_ops: Vec<TreeOp> = match &spec.tree {
        Some(tree) if !spec.writable_root => plan_tree(spec, tree),
        _ => Vec::new(),
    };
    let mut reachable = vec![
        ("workspace", spec.workspace.as_path()),
        ("image root", &spec.root.path),
    ];
    if let Some(tree) = spec.tree.as_deref().filter(|_| !tree_ops.is_empty()) {
        reachable.push(("root tree mount point", tree));
    }
    reachable.extend(spec.agent.as_deref().map(|agent| ("agent", agent)));
    reachable.extend(
        spec.read_only
            .iter()
            .map(|bind| ("read-only mount source", bind.source.as_path())),
    );
    for (what, path) in reachable {
        if !path.exists() {
            return Err(LaunchError::Missing {
                what,
                path: path.to_path_buf(),
            });
        }
        if let Some(blocked_by) = unreachable_ancestor(path, uid) {
            return Err(LaunchError::Unreachable {
                what,
                path: path.to_path_buf(),
                blocked_by,
                uid,
            });
        }
    }

    let root_ns = if tree_ops.is_empty() {
        None
    } else {
        Some(template::namespace(&tree_ops)?)
    };
    let runtime = create_runtime_dir(request.runtime_dir)?;
    let seccomp = request.seccomp.to_memfd()?;
    let (info_read, info_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| spawn_error("prepare the child", errno))?;
    let mut argv = vec![cstring(request.bwrap.as_os_str().as_bytes())];
    argv.extend(args.iter().map(|arg| cstring(arg.as_bytes())));
    let procs = cgroup
        .self_join_paths()
        .iter()
        .map(|path| cstring(path.as_os_str().as_bytes()))
        .collect();
    let setup = child::ChildSetup {
        program: cstring(request.bwrap.as_os_str().as_bytes()),
        argv,
        envp: Vec::new(),
        procs,
        stdin: File::open("/dev/null")
            .map_err(|source| LaunchError::Runtime {
                path: "/dev/null".into(),
                source,
            })?
            .into(),
        output: runtime
            .log
            .try_clone()
            .map_err(|source| LaunchError::Runtime {
                path: runtime.log_path.clone(),
                source,
            })?
            .into(),
        fds: vec![
            (OwnedFd::from(runtime.listener), LISTEN_FD),
            (seccomp, SECCOMP_FD),
            (info_write, INFO_FD),
        ],
        user: match request.user {
            HostUser::Dedicated(uid) => Some(uid),
            HostUser::Current => None,
        },
        groups: request.groups.to_vec(),
        netns: request.netns.map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd)),
        mount_ns: root_ns.as_deref().map(AsRawFd::as_raw_fd),
        devpts: root_ns
            .as_ref()
            .and(spec.tree.as_ref())
            .map(|tree| cstring(tree.join(DEVPTS).as_os_str().as_bytes())),
    };
    let bwrap_pid = child::spawn(setup)
        .map_err(|failure| spawn_error(failure.stage.describe(), failure.errno))?;
    let bwrap_pid = u32::try_from(bwrap_pid).expect("fork returns a positive pid");
    let bwrap_start = process::start_time(bwrap_pid);
    let mut recorded = SandboxProcess {
        bwrap_pid,
        // Our child: it is at worst a zombie, whose stat is still there.
        bwrap_start: bwrap_start.unwrap_or_default(),
        init_pid: 0,
        init_start: 0,
    };
    write_record(request.runtime_dir, &recorded);

    let failed = |log: &mut File| {
        let status = wait_for_exit(bwrap_pid);
        LaunchError::BwrapFailed {
            status,
            log: log_tail(log),
        }
    };
    let mut log = runtime.log;
    let Some(init_pid) = read_child_pid(&info_read) else {
        return Err(failed(&mut log));
    };
    let init_start = process::start_time(init_pid);
    recorded.init_pid = init_pid;
    recorded.init_start = init_start.unwrap_or_default();
    write_record(request.runtime_dir, &recorded);
    // bwrap's child execs the command once the sandbox is set up: its name changes. A
    // command that already exited (and was reaped by bwrap) has no stat left.
    let started = init_start.is_none()
        || process::wait_until(START_TIMEOUT, || {
            process::stat(init_pid)
                .is_none_or(|stat| stat.comm != "bwrap" || matches!(stat.state, 'Z' | 'X'))
        });
    let process = recorded;
    if !started {
        kill_process(&process);
        wait_for_exit(bwrap_pid);
        return Err(LaunchError::StartTimeout(START_TIMEOUT));
    }
    if !process.is_alive() {
        // The command may have run and exited already; only bwrap's own failure counts.
        let tail = log_tail(&mut log);
        if tail.lines().any(|line| line.starts_with("bwrap: ")) {
            let status = wait_for_exit(bwrap_pid);
            return Err(LaunchError::BwrapFailed { status, log: tail });
        }
    }
    Ok(process)
}

/// Writes the launch record ([`record`]); a failure only costs the next start's
/// clean-up after a crash of this daemon, so it is logged, not fatal.
fn write_record(runtime_dir: &Path, process: &SandboxProcess) {
    if let Err(error) = record::write(runtime_dir, process) {
        tracing::warn!(%error, dir = %runtime_dir.display(), "cannot write the launch record");
    }
}

/// Waits (blocking, bounded) for our child `pid` to exit; its status as text.
fn wait_for_exit(pid: u32) -> String {
    let mut status = None;
    process::wait_until(START_TIMEOUT, || {
        status = try_reap(pid);
        status.is_some()
    });
    match status {
        Some(code) if code > 128 => format!("killed by signal {}", code - 128),
        Some(code) => format!("exit code {code}"),
        None => "still running".to_owned(),
    }
}

fn kill_process(process: &SandboxProcess) {
    for pid in [process.init_pid, process.bwrap_pid] {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn spawn_error(stage: &'static str, errno: Errno) -> LaunchError {
    LaunchError::Spawn {
        stage,
        source: std::io::Error::from_raw_os_error(errno as i32),
    }
}

/// Arguments and paths never contain NUL: they come from `OsString`s and paths, and
/// [`BwrapSpec::validate`] refuses NUL in the environment.
fn cstring(bytes: &[u8]) -> CString {
    CString::new(bytes).unwrap_or_else(|_| CString::from(c"\u{FFFD}"))
}
