//! The command tools: `run_command` (foreground with progress and cancellation, or in
//! the background), `process_output` and `process_kill`.
//!
//! Choices made here:
//! - A command line runs under `/bin/sh -c` in the sandbox: the sandbox is the boundary,
//!   so shell syntax is the model's to use.
//! - A command that ran and exited non-zero is a normal result (its exit code is in it);
//!   `isError` is for calls that failed: a timeout, a cancellation, a sandbox that is gone.
//! - A foreground command is killed (its whole process group) when its call is
//!   cancelled, when it times out, and when the call is abandoned (the client went away):
//!   a guard kills it when the call's future is dropped. Background processes live on
//!   until they end or `process_kill`.
//! - While a foreground command runs, a client that sent a progress token gets a
//!   `notifications/progress` every second with the seconds elapsed and the last line of
//!   output.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use nexus_agent_proto::{
    ExecRequest, ExitInfo, OutputEvent, OutputOffsets, ProcessHandle, ProcessId, ProtoError,
};
use rmcp::model::{JsonObject, ProgressNotificationParam};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Family, Hints, Scope, ToolCtx, ToolDef, ToolError, ToolOutput, parse, service_error};
use crate::mcp::binding::Profile;
use crate::mcp::compact::{STREAM_BUDGET, head_tail};

/// Default time a foreground command may take.
const DEFAULT_TIMEOUT_SECONDS: u64 = 120;
/// Longest time a command may be given.
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;
/// Output recorded of one command (stdout and stderr together); the rest is discarded.
const MAX_RECORDED_OUTPUT: u64 = 8 * 1024 * 1024;
/// How long `process_output` waits at most.
const MAX_WAIT_SECONDS: u64 = 60;
/// How long `process_output` collects already-written output when not asked to wait.
const SETTLE: Duration = Duration::from_millis(200);

/// The tools of this module.
pub fn defs() -> Vec<ToolDef> {
    vec![
        ToolDef::new::<RunArgs, CommandReport>(
            "run_command",
            "Run a shell command",
            "Run a shell command line (sh -c) inside the sandbox, in /workspace unless cwd is given, and return its exit code, stdout and stderr (long output keeps its head and tail). \
For servers and jobs longer than the timeout, set background: true and read the output later with process_output.",
            Profile::Execution,
            Scope::Sandbox,
            Family::Commands,
            Hints::DESTRUCTIVE,
        ),
        ToolDef::new::<OutputArgs, CommandReport>(
            "process_output",
            "Read a background process's output",
            "Return the output a background process (started by run_command with background: true) wrote since the given offsets, and whether it is still running. \
Pass back next_stdout_offset and next_stderr_offset to read only what is new; set wait_seconds to wait for it to finish.",
            Profile::Execution,
            Scope::Sandbox,
            Family::Commands,
            Hints::READ_ONLY,
        ),
        ToolDef::new::<KillArgs, KillReport>(
            "process_kill",
            "Stop a background process",
            "Send a signal (KILL by default, or TERM, INT, HUP) to a background process and everything it started.",
            Profile::Execution,
            Scope::Sandbox,
            Family::Commands,
            Hints::DESTRUCTIVE_IDEMPOTENT,
        ),
    ]
}

/// Runs the tool `name` of this module.
pub async fn call(
    name: &str,
    ctx: &ToolCtx<'_>,
    args: JsonObject,
) -> Result<ToolOutput, ToolError> {
    match name {
        "run_command" => run_command(ctx, parse(args)?).await,
        "process_output" => process_output(ctx, parse(args)?).await,
        "process_kill" => process_kill(ctx, parse(args)?).await,
        other => Err(ToolError::new(format!("tool not found: {other}"))),
    }
}

/// Arguments of `run_command`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// The command line, run with `sh -c`, e.g. `cargo test 2>&1 | tail -n 50`.
    pub command: String,
    /// Working directory inside the sandbox [default: /workspace].
    #[serde(default)]
    pub cwd: Option<String>,
    /// Seconds before the command and everything it started are killed [default: 120, at most 3600].
    /// In background mode there is no limit unless this is given.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Start it and return at once with a process_id; read its output with process_output [default: false].
    #[serde(default)]
    pub background: bool,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Arguments of `process_output`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputArgs {
    /// The process_id run_command returned.
    pub process_id: u64,
    /// Skip the stdout bytes before this offset (the previous call's next_stdout_offset) [default: 0].
    #[serde(default)]
    pub stdout_offset: u64,
    /// Skip the stderr bytes before this offset (the previous call's next_stderr_offset) [default: 0].
    #[serde(default)]
    pub stderr_offset: u64,
    /// Wait up to this many seconds for the process to finish [default: 0, at most 60].
    #[serde(default)]
    pub wait_seconds: u64,
}

/// Arguments of `process_kill`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KillArgs {
    /// The process_id run_command returned.
    pub process_id: u64,
    /// The signal [default: KILL].
    #[serde(default)]
    pub signal: KillSignal,
}

/// Signals `process_kill` sends.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum KillSignal {
    /// Ends it at once.
    #[default]
    Kill,
    /// Asks it to end.
    Term,
    /// Like Ctrl-C.
    Int,
    /// Hang-up.
    Hup,
}

impl KillSignal {
    fn name(self) -> &'static str {
        match self {
            KillSignal::Kill => "KILL",
            KillSignal::Term => "TERM",
            KillSignal::Int => "INT",
            KillSignal::Hup => "HUP",
        }
    }

    fn number(self) -> i32 {
        match self {
            KillSignal::Kill => libc::SIGKILL,
            KillSignal::Term => libc::SIGTERM,
            KillSignal::Int => libc::SIGINT,
            KillSignal::Hup => libc::SIGHUP,
        }
    }
}

/// What a command did, or has done so far.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct CommandReport {
    /// The process's id in the sandbox, for process_output and process_kill.
    pub process_id: u64,
    /// Still running (background processes).
    pub running: bool,
    /// Its exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// It was killed because it ran past its timeout.
    pub timed_out: bool,
    /// The memory limit killed it.
    pub oom_killed: bool,
    /// How long it ran, once it ended.
    pub duration_ms: Option<u64>,
    /// Its standard output (head and tail when long).
    pub stdout: String,
    /// Its standard error (head and tail when long).
    pub stderr: String,
    /// Bytes left out of this result (the middle of long output, or output no longer kept).
    pub omitted_bytes: u64,
    /// Where the next process_output call should start reading stdout.
    pub next_stdout_offset: u64,
    /// Where the next process_output call should start reading stderr.
    pub next_stderr_offset: u64,
}

/// What `process_kill` did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KillReport {
    /// The process signalled.
    pub process_id: u64,
    /// The signal sent.
    pub signal: KillSignal,
}

async fn run_command(ctx: &ToolCtx<'_>, args: RunArgs) -> Result<ToolOutput, ToolError> {
    if args.command.trim().is_empty() {
        return Err(ToolError::new(
            "invalid argument `command`: it is empty; give a shell command line",
        ));
    }
    let timeout = match args.timeout_seconds {
        Some(0) => {
            return Err(ToolError::new(
                "invalid argument `timeout_seconds`: must be at least 1",
            ));
        }
        Some(t) if t > MAX_TIMEOUT_SECONDS => {
            return Err(ToolError::new(format!(
                "invalid argument `timeout_seconds`: at most {MAX_TIMEOUT_SECONDS}; for longer jobs use background: true without a timeout"
            )));
        }
        Some(t) => Some(t),
        None if args.background => None,
        None => Some(DEFAULT_TIMEOUT_SECONDS),
    };
    let request = ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), args.command],
        env: args.env,
        cwd: args.cwd,
        stdin: false,
        timeout_ms: timeout.map(|t| t * 1000),
        max_output_bytes: MAX_RECORDED_OUTPUT,
    };
    let sandboxes = &ctx.state.sandboxes;
    if args.background {
        let handle = sandboxes
            .start_process(&ctx.sandbox, request)
            .await
            .map_err(|e| service_error(ctx, e))?;
        let report = CommandReport {
            process_id: handle.id.0,
            running: true,
            ..CommandReport::default()
        };
        let text = format!(
            "started in the background as process {}; read its output with process_output, stop it with process_kill",
            handle.id.0
        );
        return Ok(ToolOutput::new(text, &report));
    }
    let mut process = sandboxes
        .exec(&ctx.sandbox, request, None)
        .await
        .map_err(|e| service_error(ctx, e))?;
    let guard = KillOnDrop(Some(process.handle.clone()));
    let progress = ctx.request.meta.get_progress_token();
    let started = tokio::time::Instant::now();
    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut output = Collected::default();
    let exit = loop {
        tokio::select! {
            event = process.output.next() => match event {
                Some(Ok(event)) => {
                    if let Some(exit) = output.add(event) {
                        break exit;
                    }
                }
                Some(Err(e)) => return Err(lost(ctx, e)),
                None => return Err(lost(ctx, ProtoError::Closed)),
            },
            () = ctx.request.ct.cancelled() => {
                // The guard kills the process group as this returns.
                return Err(ToolError::new("cancelled: the command was killed"));
            }
            _ = ticker.tick(), if progress.is_some() => {
                if let Some(token) = &progress {
                    let elapsed = started.elapsed().as_secs_f64().floor();
                    let mut param = ProgressNotificationParam::new(token.clone(), elapsed);
                    if let Some(line) = output.last_line() {
                        param = param.with_message(line);
                    }
                    if let Err(e) = ctx.request.peer.notify_progress(param).await {
                        tracing::debug!(error = %e, "progress notification not delivered");
                    }
                }
            }
        }
    };
    guard.disarm();
    let oom_killed = sandboxes.oom_killed(&process, &exit).await;
    let handle = process.handle.clone();
    tokio::spawn(async move {
        if let Err(e) = handle.forget().await {
            tracing::debug!(error = %e, "forgetting a finished process failed");
        }
    });
    let report = output.report(process.handle.id.0, Some(&exit), oom_killed);
    let text = render(&report, Some(&exit));
    if exit.timed_out {
        let message = format!(
            "timed out after {} s: the command and everything it started were killed. Raise timeout_seconds (up to {MAX_TIMEOUT_SECONDS}) or run it with background: true and poll process_output.\n{text}",
            timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS)
        );
        return Err(ToolError {
            message,
            structured: serde_json::to_value(&report).ok(),
        });
    }
    Ok(ToolOutput::new(text, &report))
}

async fn process_output(ctx: &ToolCtx<'_>, args: OutputArgs) -> Result<ToolOutput, ToolError> {
    if args.wait_seconds > MAX_WAIT_SECONDS {
        return Err(ToolError::new(format!(
            "invalid argument `wait_seconds`: at most {MAX_WAIT_SECONDS}; call again to wait longer"
        )));
    }
    let from = OutputOffsets {
        stdout: args.stdout_offset,
        stderr: args.stderr_offset,
    };
    let mut stream = ctx
        .state
        .sandboxes
        .process_output(&ctx.sandbox, ProcessId(args.process_id), from)
        .await
        .map_err(|e| service_error(ctx, e))?;
    let wait = if args.wait_seconds == 0 {
        SETTLE
    } else {
        Duration::from_secs(args.wait_seconds)
    };
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    let mut output = Collected {
        stdout_next: args.stdout_offset,
        stderr_next: args.stderr_offset,
        ..Collected::default()
    };
    let exit = loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(event)) => {
                    if let Some(exit) = output.add(event) {
                        break Some(exit);
                    }
                }
                Some(Err(ProtoError::Remote { message, .. })) => {
                    return Err(ToolError::new(format!(
                        "no process {} in this sandbox ({message}); run_command with background: true returns process ids",
                        args.process_id
                    )));
                }
                Some(Err(e)) => return Err(lost(ctx, e)),
                None => break None,
            },
            () = &mut deadline => break None,
            () = ctx.request.ct.cancelled() => break None,
        }
    };
    let report = output.report(args.process_id, exit.as_ref(), false);
    let text = render(&report, exit.as_ref());
    Ok(ToolOutput::new(text, &report))
}

async fn process_kill(ctx: &ToolCtx<'_>, args: KillArgs) -> Result<ToolOutput, ToolError> {
    ctx.state
        .sandboxes
        .signal_process(
            &ctx.sandbox,
            ProcessId(args.process_id),
            args.signal.number(),
        )
        .await
        .map_err(|e| match e {
            nexus_core::service::ServiceError::Agent(ProtoError::Remote { message, .. }) => {
                ToolError::new(format!(
                    "no running process {} in this sandbox ({message})",
                    args.process_id
                ))
            }
            other => service_error(ctx, other),
        })?;
    let report = KillReport {
        process_id: args.process_id,
        signal: args.signal,
    };
    let text = format!(
        "sent SIG{} to process {}",
        args.signal.name(),
        args.process_id
    );
    Ok(ToolOutput::new(text, &report))
}

/// Kills a foreground command's process group if its call ends before the command does.
struct KillOnDrop(Option<ProcessHandle>);

impl KillOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            tokio::spawn(async move {
                if let Err(e) = handle.signal(libc::SIGKILL).await {
                    tracing::debug!(error = %e, "killing an abandoned command failed");
                }
                if let Err(e) = handle.forget().await {
                    tracing::debug!(error = %e, "forgetting an abandoned command failed");
                }
            });
        }
    }
}

/// Output gathered from a process's stream.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_next: u64,
    stderr_next: u64,
    skipped: u64,
}

impl Collected {
    /// Takes one event; the exit, when this was it.
    fn add(&mut self, event: OutputEvent) -> Option<ExitInfo> {
        match event {
            OutputEvent::Stdout { offset, bytes } => {
                self.stdout.extend_from_slice(&bytes);
                self.stdout_next = offset + bytes.len() as u64;
            }
            OutputEvent::Stderr { offset, bytes } => {
                self.stderr.extend_from_slice(&bytes);
                self.stderr_next = offset + bytes.len() as u64;
            }
            OutputEvent::Skipped { bytes, .. } => self.skipped += bytes,
            OutputEvent::Exit(exit) => return Some(exit),
        }
        None
    }

    /// The last non-empty line written, for progress messages.
    fn last_line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(if self.stderr.len() > self.stdout.len() {
            &self.stderr
        } else {
            &self.stdout
        });
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.chars().take(200).collect())
    }

    fn report(self, process_id: u64, exit: Option<&ExitInfo>, oom_killed: bool) -> CommandReport {
        let (stdout, cut_out) = head_tail(&String::from_utf8_lossy(&self.stdout), STREAM_BUDGET);
        let (stderr, cut_err) = head_tail(&String::from_utf8_lossy(&self.stderr), STREAM_BUDGET);
        CommandReport {
            process_id,
            running: exit.is_none(),
            exit_code: exit.and_then(|e| e.exit_code),
            signal: exit.and_then(|e| e.signal),
            timed_out: exit.is_some_and(|e| e.timed_out),
            oom_killed,
            duration_ms: exit.map(|e| e.duration_ms),
            stdout,
            stderr,
            omitted_bytes: (cut_out + cut_err) as u64 + self.skipped,
            next_stdout_offset: self.stdout_next,
            next_stderr_offset: self.stderr_next,
        }
    }
}

/// The report as the model reads it.
fn render(report: &CommandReport, exit: Option<&ExitInfo>) -> String {
    let mut text = match exit {
        None => format!("process {} is still running", report.process_id),
        Some(exit) => match (exit.exit_code, exit.signal) {
            (Some(code), _) => format!("exit code {code} ({} ms)", exit.duration_ms),
            (None, Some(signal)) => format!("killed by signal {signal} ({} ms)", exit.duration_ms),
            (None, None) => format!("ended ({} ms)", exit.duration_ms),
        },
    };
    if report.oom_killed {
        text.push_str("; killed by the memory limit");
    }
    if exit.is_some_and(|e| e.output_truncated) {
        text.push_str("; output beyond 8 MiB was discarded");
    }
    if !report.stdout.is_empty() {
        text.push_str("\nstdout:\n");
        text.push_str(&report.stdout);
    }
    if !report.stderr.is_empty() {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("stderr:\n");
        text.push_str(&report.stderr);
    }
    if report.stdout.is_empty() && report.stderr.is_empty() {
        text.push_str("\n(no output)");
    }
    text
}

fn lost(ctx: &ToolCtx<'_>, e: ProtoError) -> ToolError {
    tracing::warn!(error = %e, "lost a command's output stream");
    ToolError::new(format!(
        "lost contact with sandbox {:?} while the command ran; check that it is still running",
        ctx.sandbox
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitInfo {
        ExitInfo {
            exit_code: Some(code),
            signal: None,
            timed_out: false,
            output_truncated: false,
            duration_ms: 5,
            stdout_bytes: 0,
            stderr_bytes: 0,
        }
    }

    #[test]
    fn collected_output_tracks_offsets_and_renders() {
        let mut c = Collected {
            stdout_next: 10,
            ..Collected::default()
        };
        assert!(
            c.add(OutputEvent::Stdout {
                offset: 10,
                bytes: "hello\n".into()
            })
            .is_none()
        );
        c.add(OutputEvent::Stderr {
            offset: 0,
            bytes: "oops\n".into(),
        });
        assert_eq!(c.last_line().as_deref(), Some("hello"));
        let done = c.add(OutputEvent::Exit(exit(3))).expect("exit");
        let report = c.report(7, Some(&done), false);
        assert_eq!(report.next_stdout_offset, 16);
        assert_eq!(report.next_stderr_offset, 5);
        assert_eq!(report.exit_code, Some(3));
        assert!(!report.running);
        let text = render(&report, Some(&done));
        assert!(text.starts_with("exit code 3 (5 ms)"), "{text}");
        assert!(
            text.contains("stdout:\nhello\n") && text.contains("stderr:\noops\n"),
            "{text}"
        );
    }

    #[test]
    fn run_arguments_are_checked_by_name() {
        let args: JsonObject =
            serde_json::from_value(serde_json::json!({"command": 5})).expect("object");
        let err = parse::<RunArgs>(args).expect_err("wrong type");
        assert!(err.message.contains("`command`"), "{}", err.message);
        let args: JsonObject =
            serde_json::from_value(serde_json::json!({"command": "ls", "timeout": 5}))
                .expect("object");
        let err = parse::<RunArgs>(args).expect_err("unknown field");
        assert!(err.message.contains("timeout"), "{}", err.message);
        let args: JsonObject =
            serde_json::from_value(serde_json::json!({"process_id": 1, "signal": "TERM"}))
                .expect("object");
        let kill = parse::<KillArgs>(args).expect("valid");
        assert_eq!(kill.signal.number(), libc::SIGTERM);
    }
}
