//! `nexusctl exec SB -- CMD` and `nexusctl run -- CMD`: stream a command's output and
//! exit with its exit code (128 + signal when a signal killed it, as shells do).

use std::io::{Read, Write};

use futures::StreamExt;
use nexus_api::exec_stream::Frame;
use nexus_api::{ExecEvent, ExecRequest, ExitStatus, OutputEncoding};
use nexus_client::Client;

use crate::cli::{CommandArgs, ExecArgs, RunArgs};
use crate::output::{Output, write_raw};

/// An exit code to leave the process with.
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// `nexusctl exec`.
pub async fn exec(client: &Client, args: ExecArgs, out: Output) -> anyhow::Result<()> {
    let request = request(args.env, &args.command)?;
    stream(client, &args.sandbox, &request, out).await
}

/// `nexusctl run`: create, run, delete (even when the command fails).
pub async fn run(client: &Client, args: RunArgs, out: Output) -> anyhow::Result<()> {
    let request = request(Vec::new(), &args.command)?;
    let create = super::sandbox::create_request(None, args.shape, true);
    let sandbox = client.create_sandbox(&create).await?;
    let result = stream(client, &sandbox.id, &request, out).await;
    if let Err(e) = client.delete_sandbox(&sandbox.id, true, false).await {
        let _ = writeln!(
            std::io::stderr(),
            "nexusctl: cannot delete sandbox {}: {e}",
            sandbox.name
        );
    }
    result
}

fn request(env: Vec<(String, String)>, args: &CommandArgs) -> anyhow::Result<ExecRequest> {
    let stdin = if args.interactive {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        Some(
            String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("stdin must be UTF-8 text to be passed with -i"))?,
        )
    } else {
        None
    };
    Ok(ExecRequest {
        argv: args.command.clone(),
        env: env.into_iter().collect(),
        cwd: args.cwd.clone(),
        stdin,
        timeout_ms: args
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        max_output_bytes: None,
        encoding: OutputEncoding::Utf8,
        stream: true,
    })
}

async fn stream(
    client: &Client,
    sandbox: &str,
    request: &ExecRequest,
    out: Output,
) -> anyhow::Result<()> {
    let mut frames = client.exec_stream_binary(sandbox, request).await?;
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr());
    let mut collected = (Vec::new(), Vec::new());
    while let Some(frame) = frames.next().await {
        match frame? {
            Frame::Stdout(bytes) if out.json => collected.0.extend_from_slice(&bytes),
            Frame::Stdout(bytes) => write_raw(&mut stdout, &bytes)?,
            Frame::Stderr(bytes) if out.json => collected.1.extend_from_slice(&bytes),
            Frame::Stderr(bytes) => write_raw(&mut stderr, &bytes)?,
            Frame::Event(ExecEvent::Exit(status)) => {
                if out.json {
                    drop(stdout);
                    out.json(&serde_json::json!({
                        "stdout": String::from_utf8_lossy(&collected.0),
                        "stderr": String::from_utf8_lossy(&collected.1),
                        "status": status,
                    }))?;
                } else {
                    report_limits(&status);
                }
                return finish(&status);
            }
            Frame::Event(ExecEvent::Error { message }) => {
                anyhow::bail!("the command's output stream failed: {message}")
            }
            Frame::Event(_) => {}
        }
    }
    anyhow::bail!("the daemon closed the stream before the command finished")
}

/// Says on stderr which limit bit, so it is seen where the user looks.
fn report_limits(status: &ExitStatus) {
    let mut err = std::io::stderr();
    if status.timed_out {
        let _ = writeln!(
            err,
            "nexusctl: the command timed out after {} ms and was killed",
            status.duration_ms
        );
    }
    if status.oom_killed {
        let _ = writeln!(
            err,
            "nexusctl: the command was killed by the out-of-memory killer (the sandbox's memory limit)"
        );
    }
    if status.output_truncated {
        let _ = writeln!(
            err,
            "nexusctl: output beyond the cap was discarded (output_truncated)"
        );
    }
}

/// Ok for exit code 0; otherwise the code to leave with (128 + signal when a signal
/// killed the process, as shells do).
pub fn finish(status: &ExitStatus) -> anyhow::Result<()> {
    let code = match (status.exit_code, status.signal) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
        (None, None) => 1,
    };
    if code == 0 {
        Ok(())
    } else {
        Err(ExitWith(code).into())
    }
}
