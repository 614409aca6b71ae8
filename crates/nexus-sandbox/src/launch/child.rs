//! Forking and exec'ing bwrap with exact control over what the child inherits: its
//! cgroup (joined before exec), session, credentials, file descriptors, signal state
//! and environment.
//!
//! `std::process::Command` is not used because its exec-error pipe may take the very fd
//! numbers (3, 4, 5) the sandbox's descriptors must land on, and because its `uid`/`gid`
//! switch runs before `pre_exec`, when writing to root-owned `cgroup.procs` is still
//! needed. The child between `fork` and `execve` only makes raw syscalls on memory
//! prepared by the parent (no allocation, no locks), as POSIX requires after forking a
//! multi-threaded process.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// The first descriptor number used for staging, above every fixed target.
const STAGING_FLOOR: RawFd = 10;
/// A failure report: stage, errno.
const REPORT_LEN: usize = 5;

/// What the child does before becoming bwrap.
#[derive(Debug)]
pub(super) struct ChildSetup {
    /// The program to exec.
    pub program: CString,
    /// Its arguments, `argv[0]` included.
    pub argv: Vec<CString>,
    /// Its whole environment.
    pub envp: Vec<CString>,
    /// `cgroup.procs` files to write the child's pid into, as root, before anything else.
    pub procs: Vec<CString>,
    /// Becomes fd 0.
    pub stdin: OwnedFd,
    /// Becomes fds 1 and 2.
    pub output: OwnedFd,
    /// Each descriptor is placed at the given number; everything else is closed on exec.
    pub fds: Vec<(OwnedFd, RawFd)>,
    /// Switch to this uid and gid (same number) before exec.
    pub user: Option<u32>,
    /// The supplementary groups to have then (replacing the daemon's); only with `user`.
    pub groups: Vec<libc::gid_t>,
    /// A network namespace to join (as root, before dropping to `user`); bwrap then keeps
    /// it. The descriptor stays the parent's (close-on-exec).
    pub netns: Option<RawFd>,
    /// A mount namespace to join (as root, after the network namespace): the one holding
    /// the sandbox's assembled root (see [`super::template`]). `None`: the daemon's.
    pub mount_ns: Option<RawFd>,
    /// With `mount_ns`: where to mount the sandbox's own `devpts` instance, in a copy of
    /// that namespace made for this child alone.
    pub devpts: Option<CString>,
}

/// Which step of the child failed, with `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SpawnFailure {
    /// The step.
    pub stage: Stage,
    /// `errno` of the failing call.
    pub errno: Errno,
}

/// The steps of the child, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Preparing descriptors in the parent, or `fork` itself.
    Prepare,
    /// `setsid`.
    Session,
    /// Joining the cgroup.
    Cgroup,
    /// Joining the network namespace.
    Network,
    /// Joining the mount namespace of the root tree.
    Root,
    /// Placing file descriptors.
    Descriptors,
    /// Dropping to the host uid.
    Credentials,
    /// `execve` of bwrap.
    Exec,
}

impl Stage {
    /// What the step does, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare the child",
            Stage::Session => "start a new session",
            Stage::Cgroup => "join the sandbox cgroup",
            Stage::Network => "join the sandbox's network namespace",
            Stage::Root => "join the mount namespace of the sandbox's root and mount its /dev/pts",
            Stage::Descriptors => "set up file descriptors",
            Stage::Credentials => "switch to the sandbox's host uid",
            Stage::Exec => "execute bwrap",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Stage {
        [
            Stage::Prepare,
            Stage::Session,
            Stage::Cgroup,
            Stage::Network,
            Stage::Root,
            Stage::Descriptors,
            Stage::Credentials,
            Stage::Exec,
        ]
        .get(usize::from(code))
        .copied()
        .unwrap_or(Stage::Exec)
    }
}

/// Forks, sets the child up and execs the program; returns the child's pid once the
/// exec succeeded, or the step that failed (the child is then reaped).
pub(super) fn spawn(setup: ChildSetup) -> Result<libc::pid_t, SpawnFailure> {
    let prepare = |errno| SpawnFailure {
        stage: Stage::Prepare,
        errno,
    };
    // Stage every descriptor above the fixed targets so no dup2 clobbers another. The
    // originals are closed here: a leftover write end of the report pipe would keep
    // the parent waiting forever.
    let stdin = stage_fd(setup.stdin).map_err(prepare)?;
    let output = stage_fd(setup.output).map_err(prepare)?;
    let mut fds = Vec::with_capacity(setup.fds.len());
    for (fd, target) in setup.fds {
        if !(3..STAGING_FLOOR).contains(&target) {
            return Err(prepare(Errno::EBADF));
        }
        fds.push((stage_fd(fd).map_err(prepare)?, target));
    }
    let (report_read, report_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(prepare)?;
    let report_write = stage_fd(report_write).map_err(prepare)?;

    let argv = null_terminated(&setup.argv);
    let envp = null_terminated(&setup.envp);
    let placements: Vec<(RawFd, RawFd)> = fds.iter().map(|(fd, t)| (fd.as_raw_fd(), *t)).collect();
    let child = Child {
        program: &setup.program,
        argv: &argv,
        envp: &envp,
        procs: &setup.procs,
        stdin: stdin.as_raw_fd(),
        output: output.as_raw_fd(),
        placements: &placements,
        user: setup.user,
        groups: &setup.groups,
        netns: setup.netns,
        mount_ns: setup.mount_ns,
        devpts: setup.devpts.as_ref(),
        report: report_write.as_raw_fd(),
    };

    // SAFETY: the child branch only calls `Child::run`, which makes async-signal-safe
    // syscalls on memory prepared above and never returns; the parent branch continues
    // normally. fork has no memory-safety preconditions of its own.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(prepare(Errno::last()));
    }
    if pid == 0 {
        child.run();
    }
    drop(report_write);
    drop((stdin, output, fds));
    match read_report(&report_read) {
        None => Ok(pid),
        Some(failure) => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Err(failure)
        }
    }
}

/// Everything the child touches, prepared by the parent.
struct Child<'a> {
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    procs: &'a [CString],
    stdin: RawFd,
    output: RawFd,
    placements: &'a [(RawFd, RawFd)],
    user: Option<u32>,
    groups: &'a [libc::gid_t],
    netns: Option<RawFd>,
    mount_ns: Option<RawFd>,
    devpts: Option<&'a CString>,
    report: RawFd,
}

impl Child<'_> {
    /// Runs in the forked child: async-signal-safe calls only, ends in exec or `_exit`.
    fn run(&self) -> ! {
        // SAFETY: here and in every unsafe block below, raw syscalls on descriptors and
        // NUL-terminated strings owned by the parent's stack frame, which the forked
        // child has an identical copy of; nothing allocates or takes a lock.
        if unsafe { libc::setsid() } < 0 {
            self.fail(Stage::Session);
        }
        // `0` names the writer itself; see `SandboxCgroup::self_join_paths`.
        let pid = b"0";
        for path in self.procs {
            // SAFETY: see above.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                self.fail(Stage::Cgroup);
            }
            // SAFETY: see above.
            let written = unsafe { libc::write(fd, pid.as_ptr().cast(), pid.len()) };
            if written < 0 {
                self.fail(Stage::Cgroup);
            }
            // SAFETY: see above.
            unsafe { libc::close(fd) };
        }
        if let Some(netns) = self.netns {
            // SAFETY: see above.
            if unsafe { libc::setns(netns, libc::CLONE_NEWNET) } < 0 {
                self.fail(Stage::Network);
            }
        }
        if let Some(mount_ns) = self.mount_ns {
            // SAFETY: see above. The child is single-threaded, as joining a mount
            // namespace requires; its root and working directory become the namespace's.
            if unsafe { libc::setns(mount_ns, libc::CLONE_NEWNS) } < 0 {
                self.fail(Stage::Root);
            }
        }
        if let Some(devpts) = self.devpts {
            // SAFETY: see above. A copy of the shared namespace for this child: the
            // devpts instance mounted in it is this sandbox's alone, and the copy's
            // mounts are private, so nothing reaches the shared one.
            let mounted = unsafe {
                libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        c"devpts".as_ptr(),
                        devpts.as_ptr(),
                        c"devpts".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NOEXEC,
                        c"newinstance,ptmxmode=0666,mode=620".as_ptr().cast(),
                    ) == 0
            };
            if !mounted {
                self.fail(Stage::Root);
            }
        }
        let standard = [(self.stdin, 0), (self.output, 1), (self.output, 2)];
        for &(source, target) in standard.iter().chain(self.placements) {
            // SAFETY: see above. dup2 clears close-on-exec on the target.
            if unsafe { libc::dup2(source, target) } < 0 {
                self.fail(Stage::Descriptors);
            }
        }
        // Everything above the placed descriptors is closed by exec (our report pipe
        // included), whatever the daemon left inheritable.
        let first_free = self
            .placements
            .iter()
            .map(|&(_, t)| t + 1)
            .fold(3, RawFd::max);
        // SAFETY: see above. Failure (Linux < 5.11) leaves only descriptors inherited
        // from a daemon that opens everything with O_CLOEXEC.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first_free as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        self.reset_signals();
        if let Some(id) = self.user {
            // SAFETY: see above. setgroups reads `groups.len()` gids from the slice, which
            // the parent prepared; an empty slice's dangling pointer is never read.
            let dropped = unsafe {
                libc::setgroups(self.groups.len(), self.groups.as_ptr()) == 0
                    && libc::setresgid(id, id, id) == 0
                    && libc::setresuid(id, id, id) == 0
            };
            if !dropped {
                self.fail(Stage::Credentials);
            }
        }
        // SAFETY: see above; argv and envp are null-terminated arrays of pointers into
        // CStrings that outlive this call.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        self.fail(Stage::Exec)
    }

    /// Default dispositions and an empty mask: ignored signals (the Rust runtime ignores
    /// SIGPIPE) and blocked ones would otherwise be inherited through exec.
    fn reset_signals(&self) {
        // SAFETY: see `run`. sigset_t is plain data, initialised by sigemptyset.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for signal in 1..libc::SIGRTMIN() {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::signal(signal, libc::SIG_DFL);
                }
            }
        }
    }

    /// Reports `stage` and errno to the parent, and exits.
    fn fail(&self, stage: Stage) -> ! {
        let mut message = [0u8; REPORT_LEN];
        message[0] = stage.code();
        message[1..5].copy_from_slice(&Errno::last_raw().to_ne_bytes());
        // SAFETY: see `run`; _exit does not run atexit handlers or flush stdio.
        unsafe {
            libc::write(self.report, message.as_ptr().cast(), message.len());
            libc::_exit(127)
        }
    }
}

/// Moves `fd` to a number at or above [`STAGING_FLOOR`], close-on-exec.
fn stage_fd(fd: OwnedFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new descriptor we own.
    let raw = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, STAGING_FLOOR) };
    if raw < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `None` when the pipe closed empty (exec succeeded), else the child's failure.
fn read_report(pipe: &OwnedFd) -> Option<SpawnFailure> {
    let mut message = [0u8; REPORT_LEN];
    let mut filled = 0;
    while filled < message.len() {
        match nix::unistd::read(pipe, &mut message[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::EINTR) => {}
            Err(errno) => {
                return Some(SpawnFailure {
                    stage: Stage::Prepare,
                    errno,
                });
            }
        }
    }
    (filled == message.len()).then(|| SpawnFailure {
        stage: Stage::from_code(message[0]),
        errno: Errno::from_raw(i32::from_ne_bytes([
            message[1], message[2], message[3], message[4],
        ])),
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn cstring(s: &str) -> CString {
        CString::new(s).expect("no NUL")
    }

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").expect("open").into()
    }

    #[test]
    fn places_descriptors_empties_the_environment_and_reports_exec_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out_path = dir.path().join("out");
        let output: OwnedFd = std::fs::File::create(&out_path).expect("create").into();
        let (marker_read, marker_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        drop(marker_read);
        let script = "ls /proc/self/fd | tr '\\n' ' '; echo; env | wc -l";
        let pid = spawn(ChildSetup {
            program: cstring("/bin/sh"),
            argv: vec![cstring("sh"), cstring("-c"), cstring(script)],
            envp: Vec::new(),
            procs: Vec::new(),
            stdin: null(),
            output: output.as_fd().try_clone_to_owned().expect("dup"),
            fds: vec![(marker_write, 3)],
            user: None,
            groups: Vec::new(),
            netns: None,
            mount_ns: None,
            devpts: None,
        })
        .expect("spawns");
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("wait");
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{status:?}"
        );
        let text = std::fs::read_to_string(&out_path).expect("read");
        let mut lines = text.lines();
        // 0-2, the placed 3, and the fd `ls` opens to list the directory.
        assert_eq!(lines.next(), Some("0 1 2 3 4 "), "{text}");
        // `env` inside sh lists only what sh itself sets (PWD, SHLVL...), never ours.
        let count: usize = lines.next().expect("count").trim().parse().expect("number");
        assert!(count <= 3, "{text}");

        let failure = spawn(ChildSetup {
            program: cstring("/nonexistent/bwrap"),
            argv: vec![cstring("bwrap")],
            envp: Vec::new(),
            procs: Vec::new(),
            stdin: null(),
            output: null(),
            fds: Vec::new(),
            user: None,
            groups: Vec::new(),
            netns: None,
            mount_ns: None,
            devpts: None,
        })
        .expect_err("no such program");
        assert_eq!(
            failure,
            SpawnFailure {
                stage: Stage::Exec,
                errno: Errno::ENOENT,
            }
        );
    }

    #[test]
    fn a_cgroup_that_cannot_be_joined_stops_the_child_before_exec() {
        let failure = spawn(ChildSetup {
            program: cstring("/bin/true"),
            argv: vec![cstring("true")],
            envp: Vec::new(),
            procs: vec![cstring("/nonexistent/cgroup.procs")],
            stdin: null(),
            output: null(),
            fds: Vec::new(),
            user: None,
            groups: Vec::new(),
            netns: None,
            mount_ns: None,
            devpts: None,
        })
        .expect_err("cannot join");
        assert_eq!(failure.stage, Stage::Cgroup);
        assert_eq!(failure.errno, Errno::ENOENT);
    }
}
