//! The pseudo-terminal mechanics: opening a pair (`posix_openpt`, the peer through
//! `TIOCGPTPEER` so no path is looked up), starting a login shell on it as the leader of a
//! new session with the terminal as its controlling tty, resizing, and finding the
//! processes of a session to signal them.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nexus_agent_proto::{ErrorCode, ExecRequest, TermSize};
use nix::fcntl::OFlag;

use crate::procs::Refusal;
use crate::procs::spawn;

/// `TERM` of every session: what xterm.js and modern terminals understand.
pub const TERM: &str = "xterm-256color";

/// An open pseudo-terminal pair.
#[derive(Debug)]
pub struct Pair {
    /// The side the agent reads and writes (non-blocking, close-on-exec).
    pub master: OwnedFd,
    /// The side the shell gets as its stdin, stdout, stderr and controlling tty.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal pair of `size`.
pub fn open(size: TermSize) -> Result<Pair, Refusal> {
    let internal = |what: &str, err: nix::Error| {
        Refusal::new(
            ErrorCode::Internal,
            format!("cannot open a pseudo-terminal: {what}: {err}"),
        )
    };
    let master = nix::pty::posix_openpt(
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
    )
    .map_err(|e| internal("posix_openpt", e))?;
    nix::pty::grantpt(&master).map_err(|e| internal("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| internal("unlockpt", e))?;
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags by value and returns a new descriptor (or
    // -1); it touches no memory of ours.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if slave < 0 {
        return Err(internal("TIOCGPTPEER", nix::Error::last()));
    }
    // SAFETY: the ioctl just returned this descriptor; nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let master = OwnedFd::from(master);
    resize(&master, size).map_err(|e| internal("TIOCSWINSZ", e))?;
    Ok(Pair { master, slave })
}

/// Sets the terminal's size; the kernel sends `SIGWINCH` to its foreground job.
pub fn resize(master: &OwnedFd, size: TermSize) -> Result<(), nix::Error> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the valid pointer we pass.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// The login shell of a session: bash when the sandbox has it, else sh.
pub fn shell() -> &'static str {
    if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

/// The command of a session's login shell on `slave`: the environment of an `exec`
/// (defaults, the agent's `--env`, then `env`) plus `TERM`, cwd `workdir`, its own
/// session with the terminal as controlling tty.
pub fn command(
    slave: &OwnedFd,
    env: &BTreeMap<String, String>,
    workdir: &Path,
    base_env: &[(String, String)],
) -> Result<Command, Refusal> {
    let program = shell();
    let mut request = ExecRequest::new([program, "-l"]);
    request.env = env.clone();
    let mut command = spawn::command(&request, workdir, base_env)?;
    let stdio = || {
        slave.try_clone().map(Stdio::from).map_err(|err| {
            Refusal::new(
                ErrorCode::Internal,
                format!("cannot duplicate the terminal: {err}"),
            )
        })
    };
    command
        .env("TERM", TERM)
        .stdin(stdio()?)
        .stdout(stdio()?)
        .stderr(stdio()?);
    // SAFETY: runs between fork and exec, after `spawn::command`'s `setsid`, and calls
    // only the async-signal-safe ioctl on descriptor 0 (the terminal, set up by then).
    unsafe {
        command.pre_exec(|| {
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Starts `command` and returns the shell's pid. Must be called with the process table
/// locked (through `Table::start_leader`); the child is reaped only by the reaper.
pub fn start(command: &mut Command) -> Result<i32, Refusal> {
    let child = command.spawn().map_err(|err| {
        Refusal::new(
            ErrorCode::SpawnFailed,
            format!("cannot start the shell {:?}: {err}", command.get_program()),
        )
    })?;
    let pid = i32::try_from(child.id()).expect("pids fit in i32");
    // Dropping a std Child neither waits for nor kills it.
    drop(child);
    Ok(pid)
}

/// The pids of every process in session `sid`, read from `/proc` (the sandbox's PID
/// namespace). A session id stays taken while any member lives, so these pids cannot
/// belong to an unrelated process unless one exits and its pid is reused in between.
pub fn session_members(sid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| session_of(&stat))
                == Some(sid)
        })
        .collect()
}

/// The session id field of a `/proc/<pid>/stat` line. The command name is in
/// parentheses and may contain anything, so fields are counted after the last `)`:
/// state, ppid, pgrp, session.
fn session_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Sends `signal` to every process of session `sid`; returns how many were signalled.
pub fn signal_session(sid: i32, signal: i32) -> usize {
    session_members(sid)
        .into_iter()
        // SAFETY: kill has no memory-safety preconditions.
        .filter(|pid| unsafe { libc::kill(*pid, signal) } == 0)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_field_is_read_after_the_command_name() {
        let stat = "42 (a) b) c (d) S 1 40 41 0 -1 4194560";
        assert_eq!(session_of(stat), Some(41));
        assert_eq!(session_of("7 (sh) R 1 7 7 34816"), Some(7));
        assert_eq!(session_of("garbage"), None);
    }

    #[test]
    fn our_own_session_is_found_in_proc() {
        let sid = nix::unistd::getsid(None).expect("getsid").as_raw();
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(session_members(sid).contains(&me));
    }

    #[test]
    fn a_pair_opens_with_its_size() {
        let pair = open(TermSize { cols: 90, rows: 33 }).expect("open a pseudo-terminal");
        let mut winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` through the valid pointer we pass.
        let rc = unsafe { libc::ioctl(pair.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut winsize) };
        assert_eq!(rc, 0);
        assert_eq!((winsize.ws_col, winsize.ws_row), (90, 33));
        resize(&pair.master, TermSize { cols: 10, rows: 5 }).expect("resize");
        // SAFETY: as above.
        let rc = unsafe { libc::ioctl(pair.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut winsize) };
        assert_eq!(rc, 0);
        assert_eq!((winsize.ws_col, winsize.ws_row), (10, 5));
    }
}
