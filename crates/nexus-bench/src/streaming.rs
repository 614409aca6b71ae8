//! Output streaming (issue 8): `head -c 1G /dev/zero` inside a sandbox, its stdout
//! streamed back through `POST /v1/sandboxes/{id}/exec` with `stream: true` and decoded
//! as a client would, in MiB/s: `exec_stream_1g` in the binary form `nexusctl exec`
//! uses, `exec_stream_ndjson_1g` in the default NDJSON form (base64 output).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use nexus_api::exec_stream::Frame;
use nexus_api::{ExecEvent, ExecRequest, ExitStatus, OutputEncoding};

use crate::lab::Lab;
use crate::measure::Plan;
use crate::report::{Group, Operation};
use crate::stats::Rates;

/// The binary form's operation (the one with the target).
pub const NAME: &str = "exec_stream_1g";
/// The NDJSON form's operation.
const NDJSON_NAME: &str = "exec_stream_ndjson_1g";

/// Streams `plan.transfer_mib` MiB of zeros from a fresh sandbox `plan.heavy_iterations`
/// times; the sandbox is deleted afterwards.
pub async fn measure(lab: &Lab, plan: &Plan) -> Vec<Operation> {
    let target = match lab.create_running().await {
        Ok(info) => info,
        Err(e) => {
            let reason = format!("cannot create the sandbox to stream from: {e:#}");
            return [NAME, NDJSON_NAME]
                .map(|name| Operation::skipped(name, Group::Nexus, reason.clone()))
                .into();
        }
    };
    let bytes = plan.transfer_mib * 1024 * 1024;
    let size = if plan.transfer_mib == 1024 {
        "1 GiB".to_owned()
    } else {
        format!("{} MiB (quick mode; 1 GiB in full mode)", plan.transfer_mib)
    };
    let mut operations = Vec::new();
    for (name, binary, form) in [
        (NAME, true, "binary frames, as `nexusctl exec` reads them"),
        (
            NDJSON_NAME,
            false,
            "NDJSON events with base64 stdout, decoded",
        ),
    ] {
        let mut rates = Rates::default();
        for _ in 0..plan.heavy_iterations {
            let start = Instant::now();
            let result = if binary {
                stream_binary(lab, &target.id, bytes).await
            } else {
                stream_ndjson(lab, &target.id, bytes).await
            };
            rates.record(bytes, start.elapsed(), result);
        }
        operations.push(
            Operation::throughput(name, Group::Nexus, &rates)
                .with_note(format!("`head -c` of {size} from /dev/zero; {form}")),
        );
    }
    let _ = lab.delete(&target.id).await;
    operations
}

/// The streamed exec of `head -c BYTES /dev/zero`.
fn zeros(bytes: u64) -> ExecRequest {
    ExecRequest {
        argv: vec![
            "head".into(),
            "-c".into(),
            bytes.to_string(),
            "/dev/zero".into(),
        ],
        env: Default::default(),
        cwd: None,
        stdin: None,
        timeout_ms: Some(u64::try_from(Duration::from_secs(600).as_millis()).unwrap_or(u64::MAX)),
        max_output_bytes: None,
        encoding: OutputEncoding::Base64,
        stream: true,
    }
}

/// The end of a stream: `head` exited 0 untruncated after all `bytes` came.
fn check_exit(status: &ExitStatus, got: u64, bytes: u64) -> anyhow::Result<()> {
    ensure!(
        status.exit_code == Some(0) && !status.output_truncated,
        "head ended with {status:?}"
    );
    ensure!(got == bytes, "{got} bytes instead of {bytes}");
    Ok(())
}

/// [`zeros`] in the binary form.
async fn stream_binary(lab: &Lab, id: &str, bytes: u64) -> anyhow::Result<()> {
    let mut frames = lab
        .client
        .exec_stream_binary(id, &zeros(bytes))
        .await
        .context("the streamed exec did not start")?;
    let mut got = 0u64;
    while let Some(frame) = frames.next().await {
        match frame.context("the stream broke off")? {
            Frame::Stdout(chunk) => got += chunk.len() as u64,
            Frame::Event(ExecEvent::Exit(status)) => return check_exit(&status, got, bytes),
            Frame::Event(ExecEvent::Error { message }) => bail!("the stream failed: {message}"),
            Frame::Stderr(_) | Frame::Event(_) => {}
        }
    }
    bail!("the stream ended without an exit after {got} bytes")
}

/// [`zeros`] in the NDJSON form, base64 decoded.
async fn stream_ndjson(lab: &Lab, id: &str, bytes: u64) -> anyhow::Result<()> {
    let mut events = lab
        .client
        .exec_stream(id, &zeros(bytes))
        .await
        .context("the streamed exec did not start")?;
    let mut got = 0u64;
    let mut buffer = Vec::new();
    while let Some(event) = events.next().await {
        match event.context("the stream broke off")? {
            ExecEvent::Stdout { data } => {
                buffer.clear();
                BASE64
                    .decode_vec(data.as_bytes(), &mut buffer)
                    .context("stdout is not base64")?;
                got += buffer.len() as u64;
            }
            ExecEvent::Exit(status) => return check_exit(&status, got, bytes),
            ExecEvent::Error { message } => bail!("the stream failed: {message}"),
            ExecEvent::Started { .. } | ExecEvent::Stderr { .. } => {}
        }
    }
    bail!("the stream ended without an exit after {got} bytes")
}
