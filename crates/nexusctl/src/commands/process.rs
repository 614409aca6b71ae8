//! `nexusctl process start|list|logs|wait|kill`: background processes in a sandbox.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use nexus_api::{OutputLine, StartProcessRequest};
use nexus_client::Client;

use crate::cli::ProcessCommand;
use crate::output::{Output, write_raw};

/// Runs one `process` subcommand.
pub async fn run(client: &Client, command: ProcessCommand, out: Output) -> anyhow::Result<()> {
    match command {
        ProcessCommand::Start {
            sandbox,
            cwd,
            timeout,
            command,
        } => {
            let request = StartProcessRequest {
                argv: command,
                env: Default::default(),
                cwd,
                stdin: false,
                timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                max_output_bytes: None,
            };
            let info = client.start_process(&sandbox, &request).await?;
            if out.json {
                out.json(&info)
            } else {
                out.text(&format!("{}\n", info.id))
            }
        }
        ProcessCommand::List { sandbox } => {
            let processes = client.list_processes(&sandbox).await?;
            if out.json {
                return out.json(&serde_json::json!({ "processes": processes }));
            }
            let mut text = format!(
                "{:<6} {:<8} {:<8} {:<6} COMMAND\n",
                "ID", "PID", "STATE", "EXIT"
            );
            for p in processes {
                let exit =
                    p.exit
                        .as_ref()
                        .map_or("-".to_owned(), |e| match (e.exit_code, e.signal) {
                            (Some(code), _) => code.to_string(),
                            (None, Some(signal)) => format!("sig{signal}"),
                            _ => "?".into(),
                        });
                text.push_str(&format!(
                    "{:<6} {:<8} {:<8} {:<6} {}\n",
                    p.id,
                    p.pid,
                    p.state,
                    exit,
                    p.argv.join(" ")
                ));
            }
            out.text(&text)
        }
        ProcessCommand::Logs {
            sandbox,
            process,
            stdout_offset,
            stderr_offset,
        } => {
            let mut lines = client
                .process_output(&sandbox, process, stdout_offset, stderr_offset)
                .await?;
            while let Some(line) = lines.next().await {
                match line? {
                    OutputLine::Stdout { data, .. } => {
                        write_raw(&mut std::io::stdout().lock(), &BASE64.decode(data)?)?
                    }
                    OutputLine::Stderr { data, .. } => {
                        write_raw(&mut std::io::stderr(), &BASE64.decode(data)?)?
                    }
                    OutputLine::Skipped { stream, bytes, .. } => {
                        let _ = writeln!(
                            std::io::stderr(),
                            "nexusctl: {bytes} bytes of {stream} are no longer kept"
                        );
                    }
                    OutputLine::Exit(_) => return Ok(()),
                    OutputLine::Error { message } => {
                        anyhow::bail!("the output stream failed: {message}")
                    }
                }
            }
            Ok(())
        }
        ProcessCommand::Wait { sandbox, process } => {
            let status = client.wait_process(&sandbox, process).await?;
            if out.json {
                out.json(&status)?;
            }
            super::exec::finish(&status)
        }
        ProcessCommand::Kill {
            sandbox,
            process,
            signal,
        } => client
            .signal_process(&sandbox, process, signal)
            .await
            .map_err(Into::into),
    }
}
