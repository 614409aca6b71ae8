//! Process-wide setup done once, before any thread or child exists: make the agent
//! non-dumpable, a child subreaper when it is not PID 1, deaf to the signals sandboxed code
//! may send, and keep every inherited descriptor from leaking into children.

use anyhow::Context as _;
use nix::sys::prctl;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};

/// What [`harden`] established, for the handshake.
#[derive(Clone, Copy, Debug)]
pub struct InitFacts {
    /// The agent is PID 1 of its PID namespace.
    pub pid1: bool,
    /// The agent is a child subreaper.
    pub subreaper: bool,
}

/// Signals sandboxed code might send to stop the agent; ignored. (As PID 1 of a PID
/// namespace the kernel already drops signals without a handler that come from inside;
/// ignoring them also covers the host driver, where the agent is an ordinary process.)
const IGNORED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// Applies the process-wide protections. Call before starting the runtime.
pub fn harden() -> anyhow::Result<InitFacts> {
    // First of all: nothing the agent runs may ptrace it or read /proc/<agent>/mem or fd.
    prctl::set_dumpable(false).context("prctl(PR_SET_DUMPABLE, 0)")?;

    let pid1 = std::process::id() == 1;
    if !pid1 {
        // Orphans of our processes are re-parented to us, so we reap them.
        prctl::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER, 1)")?;
    }
    let subreaper = prctl::get_child_subreaper().unwrap_or(false);

    for sig in IGNORED {
        // SAFETY: SIG_IGN is not a handler function, so no signal-safety rules apply;
        // children get the default back in their pre-exec hook.
        unsafe { signal(sig, SigHandler::SigIgn) }.with_context(|| format!("ignoring {sig}"))?;
    }

    // A starter that blocked signals (SIGCHLD above all) must not leave us deaf to them.
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context("unblocking signals")?;

    mark_inherited_fds_cloexec().context("marking inherited descriptors close-on-exec")?;
    Ok(InitFacts { pid1, subreaper })
}

/// `prctl(PR_GET_DUMPABLE)` now.
pub fn dumpable() -> bool {
    prctl::get_dumpable().unwrap_or(true)
}

/// Sets close-on-exec on every descriptor above 2 (the listening socket included, and
/// whatever the starter leaked), so children see only their own 0, 1 and 2.
fn mark_inherited_fds_cloexec() -> std::io::Result<()> {
    // The raw syscall rather than the libc wrapper, which older glibc and musl lack.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd instead.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        set_cloexec(fd);
    }
    Ok(())
}

/// Sets FD_CLOEXEC on `fd`, ignoring descriptors that are gone (such as the directory
/// handle of the /proc/self/fd walk).
pub fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on an integer descriptor has no memory-safety preconditions; a
    // closed descriptor just yields EBADF.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}
