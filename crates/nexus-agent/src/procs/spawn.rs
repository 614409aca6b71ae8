//! Turning an [`ExecRequest`] into a started child: argv without a shell, an environment
//! built from scratch, its own session, pipes for stdout/stderr (and stdin when asked).
//!
//! Commands start through `posix_spawn` ([`super::posix`]), which never copies the agent's
//! page tables; that is most of what an exec round trip of a short command costs beyond
//! the command itself. Because the child runs no code of ours, the program is looked up
//! in the *child's* `PATH` here, before the call, the way `execvp` would (a file that
//! exists but is not executable is skipped, and reported if nothing else matches). One
//! difference from `execvp`: a file without a `#!` line is not handed to `/bin/sh`.
//! Terminal shells still start through [`command`] (a `std` command, forked), because
//! they need a controlling terminal set between fork and exec.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nexus_agent_proto::{ErrorCode, ExecRequest};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::net::unix::pipe;

use super::Refusal;
use super::posix::{Attributes, FileActions};

/// The environment every process starts with, before the request's own variables (which
/// override these).
pub const DEFAULT_ENV: [(&str, &str); 3] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/workspace"),
    ("LANG", "C.UTF-8"),
];

/// Signals the agent ignores; a child must get them back at their default disposition
/// (an ignored disposition survives `execve`).
const RESET_SIGNALS: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE];

/// A started child: its pid and our ends of its pipes.
#[derive(Debug)]
pub struct Started {
    /// Pid, process group id and session id at once.
    pub pid: i32,
    /// Our end of its stdin, when it is a pipe.
    pub stdin: Option<pipe::Sender>,
    /// Our end of its stdout.
    pub stdout: pipe::Receiver,
    /// Our end of its stderr.
    pub stderr: pipe::Receiver,
}

/// A checked request, everything in the form `posix_spawn` takes.
#[derive(Debug)]
pub struct Spawn {
    /// argv\[0\] as the request gave it, for messages.
    shown: String,
    /// The file to execute: argv\[0\] itself when it holds a `/`, else its match in `PATH`.
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    stdin: bool,
}

/// Checks `request` and resolves its program; refuses requests that cannot be valid.
pub fn prepare(
    request: &ExecRequest,
    workdir: &Path,
    base_env: &[(String, String)],
) -> Result<Spawn, Refusal> {
    let shown = check(request)?;
    let env = environment(request, base_env);
    let cwd = request.cwd.as_deref().map_or(workdir, Path::new);
    let program = resolve(shown, env.get("PATH").copied().unwrap_or(""), cwd)?;
    let c = |s: &str| CString::new(s).expect("checked for NUL bytes");
    Ok(Spawn {
        shown: shown.to_owned(),
        program: c(&program),
        argv: request.argv.iter().map(|a| c(a)).collect(),
        env: env.iter().map(|(k, v)| c(&format!("{k}={v}"))).collect(),
        cwd: c(&cwd.to_string_lossy()),
        stdin: request.stdin,
    })
}

/// Starts `spawn`. Must be called with the process table locked (see the reaping rule in
/// the module above); the child must never be waited for except by the reaper.
pub fn start(spawn: &Spawn) -> Result<Started, Refusal> {
    let internal = |what: &str, err: std::io::Error| {
        Refusal::new(
            ErrorCode::Internal,
            format!("cannot start {:?}: {what}: {err}", spawn.shown),
        )
    };
    let (stdout, stdout_child) = output_pipe().map_err(|e| internal("stdout pipe", e))?;
    let (stderr, stderr_child) = output_pipe().map_err(|e| internal("stderr pipe", e))?;
    let stdin = if spawn.stdin {
        let (read, write) = pipe_pair().map_err(|e| internal("stdin pipe", e))?;
        Some((write, read))
    } else {
        None
    };

    let attrs = Attributes::new(&RESET_SIGNALS).map_err(|e| internal("spawn attributes", e))?;
    let mut actions = FileActions::new().map_err(|e| internal("spawn actions", e))?;
    let added = (|| {
        match &stdin {
            Some((_, child)) => actions.dup2(child.as_raw_fd(), 0)?,
            None => actions.open(0, c"/dev/null", libc::O_RDONLY)?,
        }
        actions.dup2(stdout_child.as_raw_fd(), 1)?;
        actions.dup2(stderr_child.as_raw_fd(), 2)?;
        actions.chdir(&spawn.cwd)
    })();
    added.map_err(|e| internal("spawn actions", e))?;

    let pid = super::posix::spawn(&spawn.program, &spawn.argv, &spawn.env, &actions, &attrs)
        .map_err(|err| spawn_failed(spawn, &err))?;
    // The child has its copies; ours must go so that its exit is our end-of-file.
    drop((stdout_child, stderr_child));
    let internal = |err: std::io::Error| {
        Refusal::new(
            ErrorCode::Internal,
            format!("cannot register the pipes of pid {pid}: {err}"),
        )
    };
    Ok(Started {
        pid,
        stdin: stdin
            .map(|(ours, _child)| pipe::Sender::from_owned_fd(ours))
            .transpose()
            .map_err(internal)?,
        stdout: pipe::Receiver::from_owned_fd(stdout).map_err(internal)?,
        stderr: pipe::Receiver::from_owned_fd(stderr).map_err(internal)?,
    })
}

/// The refusal for a failed `posix_spawn`, naming the working directory when it is what
/// failed (the child's `chdir` and `execve` report the same error numbers).
fn spawn_failed(spawn: &Spawn, err: &std::io::Error) -> Refusal {
    let cwd = Path::new(spawn.cwd.to_str().unwrap_or_default());
    let message = if std::fs::metadata(cwd).is_ok_and(|m| m.is_dir()) {
        format!("cannot start {:?}: {err}", spawn.shown)
    } else {
        format!(
            "cannot start {:?}: working directory {}: {err}",
            spawn.shown,
            cwd.display()
        )
    };
    Refusal::new(ErrorCode::SpawnFailed, message)
}

/// A pipe whose two ends are close-on-exec and above the standard descriptors (so no
/// `dup2` onto 0, 1 or 2 in the child can land on another of the child's ends).
fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// An output pipe grown to [`OUTPUT_PIPE_BYTES`]: our read end and the child's write end.
fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe_pair()?;
    enlarge_pipe(&read);
    Ok((read, write))
}

/// `fd` itself when it is above 2, else a close-on-exec copy that is.
fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let copy = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: fcntl just returned this new descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Where `program` is: itself when it holds a `/` (relative paths are relative to the
/// child's working directory), else the first executable regular file named so in a
/// directory of `path` (an empty entry means the working directory).
fn resolve(program: &str, path: &str, cwd: &Path) -> Result<String, Refusal> {
    if program.contains('/') {
        return Ok(program.to_owned());
    }
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{}/{program}", dir.trim_end_matches('/'));
        let on_disk = cwd.join(&candidate);
        let Ok(meta) = std::fs::metadata(&on_disk) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if nix::unistd::access(&on_disk, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(candidate);
        }
        denied.get_or_insert(candidate);
    }
    let message = match denied {
        Some(file) => format!("cannot start {program:?}: {file} is not executable"),
        None => format!("cannot start {program:?}: no such program in PATH ({path})"),
    };
    Err(Refusal::new(ErrorCode::SpawnFailed, message))
}

/// Refuses a request that cannot be valid; returns its program.
fn check(request: &ExecRequest) -> Result<&str, Refusal> {
    let Some(program) = request.argv.first() else {
        return Err(Refusal::new(ErrorCode::BadRequest, "argv is empty"));
    };
    if program.is_empty() {
        return Err(Refusal::new(ErrorCode::BadRequest, "argv[0] is empty"));
    }
    let strings = request
        .argv
        .iter()
        .chain(request.env.keys())
        .chain(request.env.values())
        .chain(request.cwd.iter());
    if strings.into_iter().any(|s| s.contains('\0')) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "argv, env and cwd must not contain NUL bytes",
        ));
    }
    if let Some(key) = request.env.keys().find(|k| k.is_empty() || k.contains('=')) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("environment variable name {key:?} is empty or contains '='"),
        ));
    }
    Ok(program)
}

/// The child's environment: [`DEFAULT_ENV`], then the agent's own `--env`, then the
/// request's variables, each overriding the one before.
fn environment<'a>(
    request: &'a ExecRequest,
    base_env: &'a [(String, String)],
) -> BTreeMap<&'a str, &'a str> {
    let mut env: BTreeMap<&str, &str> = DEFAULT_ENV.into_iter().collect();
    env.extend(base_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    env.extend(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    env
}

/// A forked `std` command for `request`, in its own session with the ignored signals
/// reset: what terminal sessions start their shell with (they add a controlling
/// terminal).
pub fn command(
    request: &ExecRequest,
    workdir: &Path,
    base_env: &[(String, String)],
) -> Result<Command, Refusal> {
    let program = check(request)?;
    let mut command = Command::new(program);
    command
        .args(&request.argv[1..])
        .env_clear()
        .envs(environment(request, base_env))
        .current_dir(request.cwd.as_deref().map_or(workdir, Path::new))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (setsid, signal), touching no memory shared with other threads.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for signal in RESET_SIGNALS {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Capacity asked for each output pipe: a process writing a lot blocks (and wakes the
/// pump) once per MiB instead of once per 64 KiB, the default.
const OUTPUT_PIPE_BYTES: i32 = 1024 * 1024;

/// Grows an output pipe to [`OUTPUT_PIPE_BYTES`]. The kernel may refuse (a user over
/// `fs.pipe-user-pages-soft`, a lower `fs.pipe-max-size`); the pipe then keeps its size,
/// which only costs throughput.
fn enlarge_pipe(fd: &OwnedFd) {
    let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_BYTES));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_pipes_grow_to_a_mebibyte() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        let before = fcntl(&read, FcntlArg::F_GETPIPE_SZ).unwrap();
        enlarge_pipe(&read);
        let after = fcntl(&read, FcntlArg::F_GETPIPE_SZ).unwrap();
        assert_eq!((before, after), (64 * 1024, OUTPUT_PIPE_BYTES));
    }

    #[test]
    fn refuses_impossible_requests() {
        let dir = Path::new("/");
        let code = |request: ExecRequest| prepare(&request, dir, &[]).map(|_| ()).unwrap_err().code;
        assert_eq!(
            code(ExecRequest::new(Vec::<String>::new())),
            ErrorCode::BadRequest
        );
        assert_eq!(code(ExecRequest::new([""])), ErrorCode::BadRequest);
        assert_eq!(code(ExecRequest::new(["a\0b"])), ErrorCode::BadRequest);
        let mut request = ExecRequest::new(["env"]);
        request.env.insert("A=B".into(), "x".into());
        assert_eq!(code(request), ErrorCode::BadRequest);
        assert_eq!(
            code(ExecRequest::new(["no-such-program-anywhere"])),
            ErrorCode::SpawnFailed
        );
    }

    #[test]
    fn programs_are_found_in_the_childs_path_like_execvp() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&first, &second] {
            std::fs::create_dir(d).unwrap();
        }
        let file = |path: &Path, mode: u32| {
            std::fs::write(path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        file(&first.join("tool"), 0o644);
        file(&second.join("tool"), 0o755);
        std::fs::create_dir(first.join("dir")).unwrap();
        file(&second.join("dir"), 0o755);
        let path = format!("{}:{}", first.display(), second.display());
        let cwd = Path::new("/");

        // Not executable and directories are skipped; the next match wins.
        let found = resolve("tool", &path, cwd).unwrap();
        assert_eq!(found, format!("{}/tool", second.display()));
        assert_eq!(
            resolve("dir", &path, cwd).unwrap(),
            format!("{}/dir", second.display())
        );
        // A path is taken as it is, relative ones included (the child resolves them).
        assert_eq!(resolve("./x/tool", &path, cwd).unwrap(), "./x/tool");
        // Only a non-executable match: said so.
        let only_first = first.display().to_string();
        let err = resolve("tool", &only_first, cwd).unwrap_err();
        assert!(err.message.contains("is not executable"), "{}", err.message);
        // Nothing: the PATH searched is named.
        let err = resolve("nothing", &path, cwd).unwrap_err();
        assert!(err.message.contains(&path), "{}", err.message);
        // An empty entry and a relative one mean the working directory.
        assert_eq!(resolve("tool", ":", &second).unwrap(), "./tool");
        assert_eq!(resolve("tool", "b", dir.path()).unwrap(), "b/tool");
    }

    #[test]
    fn environment_is_defaults_plus_base_plus_request_only() {
        let mut request = ExecRequest::new(["env"]);
        request.env.insert("HOME".into(), "/tmp".into());
        request.env.insert("FOO".into(), "bar".into());
        request.env.insert("NO_PROXY".into(), "mine".into());
        let base = [
            ("HTTP_PROXY".to_owned(), "http://127.0.0.1:3128".to_owned()),
            ("NO_PROXY".to_owned(), "localhost".to_owned()),
        ];
        let env = environment(&request, &base);
        let get = |key: &str| env.get(key).copied();
        assert_eq!(get("HOME"), Some("/tmp"), "the request overrides defaults");
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("LANG"), Some("C.UTF-8"));
        assert_eq!(get("HTTP_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("NO_PROXY"), Some("mine"), "the request wins");
        assert!(get("PATH").is_some_and(|p| p.contains("/usr/bin")));
        assert_eq!(env.len(), 6, "{env:?}");
        let spawn = prepare(&request, Path::new("/"), &base).unwrap();
        assert!(spawn.env.iter().any(|e| e.to_bytes() == b"FOO=bar"));
    }
}
