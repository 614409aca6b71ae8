//! Micro benchmark of the agent over a Unix socket: ping round trips and `run(["true"])`
//! round trips (spawn, stream, exit, forget). Prints percentiles; asserts nothing.
//!
//! ```text
//! cargo build -p nexus-agent --release --bin nexus-agent
//! cargo run -p nexus-agent --release --example bench [-- PINGS RUNS]
//! ```
//!
//! The agent binary is found beside the example's directory (`target/<profile>/`), or at
//! `$NEXUS_AGENT_BIN`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nexus_agent_proto::{AgentClient, ExecRequest};
use tokio::net::UnixStream;

fn agent_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NEXUS_AGENT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the example")?;
    let profile_dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .context("the example is not in target/<profile>/examples")?;
    let binary = profile_dir.join("nexus-agent");
    if !binary.exists() {
        bail!(
            "{} not found: build it first (cargo build -p nexus-agent --bin nexus-agent, same profile) or set NEXUS_AGENT_BIN",
            binary.display()
        );
    }
    Ok(binary)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[expect(clippy::print_stdout, reason = "a benchmark's output is its result")]
fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(1);
    println!(
        "{name:<12} n={:<5} p50={:>9.1?} p99={:>9.1?} mean={:>9.1?} max={:>9.1?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        mean,
        samples.last().copied().unwrap_or_default(),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let pings: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(300), |a| a.parse())?;

    let dir = tempfile::tempdir().context("temporary directory")?;
    let socket = dir.path().join("agent.sock");
    let mut agent = Command::new(agent_binary()?)
        .arg("--listen")
        .arg(&socket)
        .env("NEXUS_AGENT_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .context("starting nexus-agent")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(&socket).await {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(err) => return Err(err).context("connecting to the agent"),
        }
    };
    let (client, _) = AgentClient::handshake(stream).await?;

    for _ in 0..100 {
        client.ping().await?;
    }
    let mut samples = Vec::with_capacity(pings);
    for _ in 0..pings {
        let start = Instant::now();
        client.ping().await?;
        samples.push(start.elapsed());
    }
    report("ping", samples);

    for _ in 0..20 {
        client.run(ExecRequest::new(["true"])).await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let done = client.run(ExecRequest::new(["true"])).await?;
        samples.push(start.elapsed());
        if done.exit.exit_code != Some(0) {
            bail!("true failed: {:?}", done.exit);
        }
    }
    report("run(true)", samples);

    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let handle = client.exec(ExecRequest::new(["true"])).await?;
        handle.wait().await?;
        samples.push(start.elapsed());
        handle.forget().await?;
    }
    report("exec+wait", samples);

    let _ = agent.kill();
    let _ = agent.wait();
    Ok(())
}
