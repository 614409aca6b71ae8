//! Turning an [`ExecRequest`] into a started child: argv without a shell, an environment
//! built from scratch, its own session, pipes for stdout/stderr (and stdin when asked).

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nexus_agent_proto::{ErrorCode, ExecRequest};
use nix::fcntl::{FcntlArg, fcntl};
use tokio::net::unix::pipe;

use super::Refusal;

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

/// Builds the command for `request`; refuses requests that cannot be valid.
pub fn command(
    request: &ExecRequest,
    workdir: &Path,
    base_env: &[(String, String)],
) -> Result<Command, Refusal> {
    let Some(program) = request.argv.first() else {
        return Err(Refusal::new(ErrorCode::BadRequest, "argv is empty"));
    };
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

    let mut command = Command::new(program);
    command
        .args(&request.argv[1..])
        .env_clear()
        .envs(DEFAULT_ENV)
        .envs(base_env.iter().map(|(k, v)| (k, v)))
        .envs(&request.env)
        .current_dir(request.cwd.as_deref().map_or(workdir, Path::new))
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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

/// Starts `command`. Must be called with the process table locked (see the reaping rule
/// in the module above); the returned child must never be waited for except by the reaper.
pub fn start(command: &mut Command, program: &str) -> Result<Started, Refusal> {
    let mut child = command.spawn().map_err(|err| {
        Refusal::new(
            ErrorCode::SpawnFailed,
            format!("cannot start {program:?}: {err}"),
        )
    })?;
    let pid = i32::try_from(child.id()).expect("pids fit in i32");
    let stdin = child.stdin.take().map(OwnedFd::from);
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    for fd in stdout.iter().chain(&stderr) {
        enlarge_pipe(fd);
    }
    // Dropping a std Child neither waits for nor kills it; the reaper owns its status.
    drop(child);
    let internal = |err: std::io::Error| {
        Refusal::new(
            ErrorCode::Internal,
            format!("cannot register the pipes of pid {pid}: {err}"),
        )
    };
    Ok(Started {
        pid,
        stdin: stdin
            .map(pipe::Sender::from_owned_fd)
            .transpose()
            .map_err(internal)?,
        stdout: pipe::Receiver::from_owned_fd(stdout.expect("stdout was piped"))
            .map_err(internal)?,
        stderr: pipe::Receiver::from_owned_fd(stderr.expect("stderr was piped"))
            .map_err(internal)?,
    })
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
        let code = |request: ExecRequest| command(&request, dir, &[]).map(|_| ()).unwrap_err().code;
        assert_eq!(
            code(ExecRequest::new(Vec::<String>::new())),
            ErrorCode::BadRequest
        );
        assert_eq!(code(ExecRequest::new(["a\0b"])), ErrorCode::BadRequest);
        let mut request = ExecRequest::new(["env"]);
        request.env.insert("A=B".into(), "x".into());
        assert_eq!(code(request), ErrorCode::BadRequest);
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
        let command = command(&request, Path::new("/"), &base).unwrap();
        let env: Vec<(String, Option<String>)> = command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let get = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(
            get("HOME").as_deref(),
            Some("/tmp"),
            "the request overrides defaults"
        );
        assert_eq!(get("FOO").as_deref(), Some("bar"));
        assert_eq!(get("LANG").as_deref(), Some("C.UTF-8"));
        assert_eq!(get("HTTP_PROXY").as_deref(), Some("http://127.0.0.1:3128"));
        assert_eq!(get("NO_PROXY").as_deref(), Some("mine"), "the request wins");
        assert!(get("PATH").is_some_and(|p| p.contains("/usr/bin")));
    }
}
