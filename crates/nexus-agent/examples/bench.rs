//! Micro benchmark of the agent over a Unix socket: ping round trips, `run(["true"])`
//! round trips (spawn, stream, exit, forget), 1 KiB file reads, and the throughput of a
//! 1 GiB write and read (in `$NEXUS_BENCH_DIR` when set). Prints percentiles; asserts
//! nothing.
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
use bytes::Bytes;
use futures::StreamExt;
use nexus_agent_proto::fs::WriteRequest;
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

    // Files go to $NEXUS_BENCH_DIR when set (a tmpfs measures the protocol, not the disk).
    let files =
        std::env::var_os("NEXUS_BENCH_DIR").map_or_else(|| dir.path().to_path_buf(), PathBuf::from);
    file_bench(&client, &files, pings).await?;

    let _ = agent.kill();
    let _ = agent.wait();
    Ok(())
}

/// 1 KiB reads (latency) and a 1 GiB write then read (throughput), in `dir`.
#[expect(clippy::print_stdout, reason = "a benchmark's output is its result")]
async fn file_bench(
    client: &AgentClient,
    dir: &std::path::Path,
    reads: usize,
) -> anyhow::Result<()> {
    let small = dir.join("small").to_string_lossy().into_owned();
    std::fs::write(&small, vec![7u8; 1024]).context("writing the small file")?;
    let read_small = || async {
        let (_, mut stream) = client.fs_read(&small, 0, None).await?;
        let mut n = 0;
        while let Some(chunk) = stream.next().await {
            n += chunk?.len();
        }
        anyhow::ensure!(n == 1024, "read {n} bytes");
        anyhow::Ok(())
    };
    for _ in 0..100 {
        read_small().await?;
    }
    let mut samples = Vec::with_capacity(reads);
    for _ in 0..reads {
        let start = Instant::now();
        read_small().await?;
        samples.push(start.elapsed());
    }
    report("read 1KiB", samples);

    const GIB: usize = 1024 * 1024 * 1024;
    let chunk = Bytes::from(vec![0x5au8; 1024 * 1024]);
    let body = futures::stream::iter(
        (0..GIB / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let big = dir.join("big").to_string_lossy().into_owned();
    let start = Instant::now();
    client
        .fs_write(WriteRequest::new(big.clone()), body)
        .await?;
    let elapsed = start.elapsed();
    println!(
        "write 1GiB   {:>9.1?}  {:.0} MiB/s",
        elapsed,
        1024.0 / elapsed.as_secs_f64()
    );
    let start = Instant::now();
    let (_, mut stream) = client.fs_read(&big, 0, None).await?;
    let mut n = 0usize;
    while let Some(chunk) = stream.next().await {
        n += chunk?.len();
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(n == GIB, "read back {n} bytes");
    println!(
        "read 1GiB    {:>9.1?}  {:.0} MiB/s",
        elapsed,
        1024.0 / elapsed.as_secs_f64()
    );
    std::fs::remove_file(&big).context("removing the big file")?;
    Ok(())
}
