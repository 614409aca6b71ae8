//! Image builds with mmdebstrap: a Debian suite plus packages into an empty directory,
//! every line of the tool's output forwarded as progress.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc::UnboundedSender;

/// How many of the tool's last lines a failure carries.
const TAIL_LINES: usize = 15;

/// Runs `mmdebstrap --variant=apt --include=<packages> <suite> <dest>`.
#[derive(Debug, Clone)]
pub struct Mmdebstrap {
    program: PathBuf,
}

impl Default for Mmdebstrap {
    fn default() -> Self {
        Self {
            program: PathBuf::from("mmdebstrap"),
        }
    }
}

#[async_trait]
impl nexus_core::ImageBuilder for Mmdebstrap {
    async fn build(
        &self,
        suite: &str,
        packages: &[String],
        dest: &Path,
        progress: UnboundedSender<String>,
    ) -> Result<String, String> {
        let program = nexus_host::tools::find_program(&self.program).ok_or_else(|| {
            "mmdebstrap is not installed: sudo apt-get install -y mmdebstrap (scripts/install.sh does)"
                .to_owned()
        })?;
        let version = tokio::process::Command::new(&program)
            .arg("--version")
            .output()
            .await
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "mmdebstrap (unknown version)".into());
        let _ = progress.send(format!("{version}: {suite} with {}", packages.join(", ")));
        let mut command = tokio::process::Command::new(&program);
        command.arg("--variant=apt");
        if !packages.is_empty() {
            command.arg(format!("--include={}", packages.join(",")));
        }
        command
            .arg(suite)
            .arg(dest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let (tail_tx, mut tail_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = |reader: Box<dyn AsyncRead + Unpin + Send>| {
            let (progress, tail) = (progress.clone(), tail_tx.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(reader).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tail.send(line.clone());
                    let _ = progress.send(line);
                }
            })
        };
        let out = forward(Box::new(child.stdout.take().expect("stdout is piped")));
        let err = forward(Box::new(child.stderr.take().expect("stderr is piped")));
        drop(tail_tx);
        let status = child
            .wait()
            .await
            .map_err(|e| format!("cannot wait for mmdebstrap: {e}"))?;
        let _ = tokio::join!(out, err);
        let mut tail = std::collections::VecDeque::new();
        while let Ok(line) = tail_rx.try_recv() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        if status.success() {
            Ok(version)
        } else {
            Err(format!(
                "mmdebstrap exited with {status}; its last lines:\n{}",
                Vec::from(tail).join("\n")
            ))
        }
    }
}
