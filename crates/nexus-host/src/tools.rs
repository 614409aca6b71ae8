//! Finding host programs and running them with a deadline, so no probe can hang.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a probe waits for a program before killing it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Searched when `PATH` is unset (the same default as glibc's `execvp`, plus the sbin dirs).
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest excerpt of a program's output kept in errors and reports.
const MAX_EXCERPT: usize = 300;

/// A program could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not on `PATH` (bare name) or not an executable file (path).
    #[error("{} not found", .program.display())]
    NotFound {
        /// The name or path asked for.
        program: PathBuf,
    },
    /// `fork`/`exec` failed.
    #[error("cannot start {}", .program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the child failed.
    #[error("cannot wait for {}", .program.display())]
    Wait {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program did not finish in time and was killed with its process group.
    #[error("{} did not finish within {}s and was killed", .program.display(), .timeout.as_secs_f32())]
    TimedOut {
        /// The program.
        program: PathBuf,
        /// The deadline it missed.
        timeout: Duration,
    },
    /// The program exited unsuccessfully.
    #[error("{} failed ({status}){}", .program.display(), excerpt_suffix(.stderr))]
    Failed {
        /// The program.
        program: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// Its standard error (or output), on one line, trimmed.
        stderr: String,
    },
}

/// A program found on this host and the first line of its `--version` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolVersion {
    /// Where the program is.
    pub path: PathBuf,
    /// First non-empty line it printed, e.g. `bubblewrap 0.8.0`.
    pub version: String,
}

/// Resolves `program` like `execvp` does: a name with a `/` is taken as a path, a bare
/// name is searched on `PATH`. Returns the path only if it is an executable file.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return is_executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| FALLBACK_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Runs `program args...` and returns the first line it prints (stdout, else stderr).
pub fn version(program: &Path, args: &[&str], timeout: Duration) -> Result<ToolVersion, ToolError> {
    let path = find_program(program).ok_or_else(|| ToolError::NotFound {
        program: program.to_path_buf(),
    })?;
    let mut command = Command::new(&path);
    command.args(args);
    let output = run_with_timeout(command, timeout)?;
    if !output.status.success() {
        return Err(failed(&path, &output));
    }
    let first_line = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(|line| one_line(line, MAX_EXCERPT))
    };
    let version = first_line(&output.stdout)
        .or_else(|| first_line(&output.stderr))
        .unwrap_or_else(|| "(no version output)".to_owned());
    Ok(ToolVersion { path, version })
}

/// Runs a command with stdin closed and its output captured, killing its whole process
/// group if it outlives `timeout`. A non-zero exit is not an error here: see the status.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Result<Output, ToolError> {
    let program = PathBuf::from(command.get_program());
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so a timeout also kills whatever the program started.
        .process_group(0);
    let mut child = command.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ToolError::NotFound {
            program: program.clone(),
        },
        _ => ToolError::Spawn {
            program: program.clone(),
            source,
        },
    })?;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // The child is not reaped yet, so its pid still names its process group.
                let pgid = nix::unistd::Pid::from_raw(
                    i32::try_from(child.id()).expect("pids fit in pid_t"),
                );
                // Failure means the group is already gone, which is what we want.
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(ToolError::TimedOut { program, timeout });
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(source) => return Err(ToolError::Wait { program, source }),
        }
    };
    // A grandchild may keep the pipes open after the child exits: do not wait for it
    // past the deadline (plus a little grace for the last bytes).
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left.max(Duration::from_millis(100)))
            .unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// The QEMU system emulator for this machine's architecture, e.g. `qemu-system-x86_64`.
pub fn qemu_program() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i386",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        other => other,
    };
    format!("qemu-system-{arch}")
}

/// Builds [`ToolError::Failed`] from an unsuccessful run, preferring stderr as the excerpt.
pub(crate) fn failed(program: &Path, output: &Output) -> ToolError {
    let text = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        &output.stderr
    } else {
        &output.stdout
    };
    ToolError::Failed {
        program: program.to_path_buf(),
        status: output.status,
        stderr: one_line(&String::from_utf8_lossy(text), MAX_EXCERPT),
    }
}

/// Squeezes text onto one line: trims it, joins non-empty lines with ` | ` and cuts it
/// to `max` characters with a trailing `…`.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn excerpt_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buffer = Vec::new();
            // A read error leaves what was read so far, which is all we can report.
            let _ = pipe.read_to_end(&mut buffer);
            let _ = tx.send(buffer);
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_by_path() {
        let sh = find_program(Path::new("sh")).expect("every Linux host has sh on PATH");
        assert!(sh.is_absolute());
        assert_eq!(find_program(&sh), Some(sh.clone()));
        assert_eq!(find_program(Path::new("nexus-no-such-program")), None);
        // Not executable: a directory, and a regular file without the x bit.
        assert_eq!(find_program(Path::new("/")), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").expect("write");
        assert_eq!(find_program(&plain), None);
    }

    #[test]
    fn version_reads_the_first_non_empty_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("tool");
        crate::test_support::write_script(&script, "echo\necho '  tool 1.2.3  '\necho more");
        let found = version(&script, &["--version"], DEFAULT_TIMEOUT).expect("runs");
        assert_eq!(found.version, "tool 1.2.3");
        assert_eq!(found.path, script);
    }

    #[test]
    fn failures_carry_the_exit_status_and_stderr() {
        let error = version(
            Path::new("sh"),
            &["-c", "echo 'bad thing\nhappened' >&2; exit 3"],
            DEFAULT_TIMEOUT,
        )
        .expect_err("exit 3");
        let ToolError::Failed { stderr, status, .. } = &error else {
            panic!("expected Failed, got {error:?}");
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr, "bad thing | happened");
        assert!(
            error
                .to_string()
                .ends_with("(exit status: 3): bad thing | happened")
        );
    }

    #[test]
    fn a_hanging_program_is_killed_at_the_deadline_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let started = Instant::now();
        let mut command = Command::new("sh");
        // The background sleep holds the pipes open: the group kill must reach it too.
        command.args(["-c", "sleep 30 & echo $! > \"$1\"; wait", "sh"]);
        command.arg(&pid_file);
        let error = run_with_timeout(command, Duration::from_millis(300)).expect_err("times out");
        assert!(matches!(error, ToolError::TimedOut { .. }), "{error:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        let pid = std::fs::read_to_string(&pid_file).expect("the shell wrote the pid");
        let stat = format!("/proc/{}/stat", pid.trim());
        // Gone, or a zombie waiting for its new parent to reap it.
        let dead = || {
            std::fs::read_to_string(&stat).map_or(true, |text| {
                text.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !dead() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(), "the background child survived the timeout");
    }

    #[test]
    fn missing_program_is_not_found() {
        let error = run_with_timeout(
            Command::new("/nonexistent/nexus-tool"),
            Duration::from_secs(1),
        )
        .expect_err("missing");
        assert!(matches!(error, ToolError::NotFound { .. }), "{error:?}");
    }

    #[test]
    fn one_line_joins_and_truncates() {
        assert_eq!(one_line("  a \n\n b\n", 50), "a | b");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("", 4), "");
    }

    #[test]
    fn qemu_program_names_this_architecture() {
        let name = qemu_program();
        assert!(name.starts_with("qemu-system-"));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(name, "qemu-system-x86_64");
        }
    }
}
