//! `nexusctl sandbox stats`: a sandbox's CPU, memory, processes, block I/O and OOM kills,
//! once or live (`--watch`), as a table or JSON.

use std::fmt::Write;

use nexus_api::SandboxStats;
use nexus_client::Client;

use crate::cli::StatsArgs;
use crate::output::{Color, Output, human_bytes, human_duration, plain_table, render_table};

/// Runs `sandbox stats`.
///
/// - `--json`: one sample, as the API returns it (no waiting).
/// - table: two samples `--interval` apart, so CPU % can be shown.
/// - `--watch`: a sample every `--interval` until Ctrl-C (or `--count` samples): the
///   table redrawn, or one JSON line per sample.
pub async fn run(client: &Client, args: StatsArgs, out: Output) -> anyhow::Result<()> {
    if !args.watch {
        let first = client.sandbox_stats(&args.sandbox).await?;
        if out.json {
            return out.json(&first);
        }
        tokio::time::sleep(args.interval).await;
        let second = client.sandbox_stats(&args.sandbox).await?;
        return out.text(&stats_text(&second, Some(&first), out));
    }
    let mut previous: Option<SandboxStats> = None;
    let mut taken = 0u64;
    loop {
        let sample = client.sandbox_stats(&args.sandbox).await?;
        if out.json {
            out.json_line(&sample)?;
        } else {
            out.redraw(&stats_text(&sample, previous.as_ref(), out), taken == 0)?;
        }
        taken += 1;
        if args.count.is_some_and(|count| taken >= count) {
            return Ok(());
        }
        previous = Some(sample);
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The table of one sample; CPU % needs the sample before it.
fn stats_text(stats: &SandboxStats, previous: Option<&SandboxStats>, out: Output) -> String {
    let mut table = plain_table(&[
        "NAME",
        "STATE",
        "CPU %",
        "CPU TIME",
        "MEMORY",
        "PEAK",
        "PIDS",
        "IO READ",
        "IO WRITE",
        "OOM KILLS",
    ]);
    let dash = || "-".to_owned();
    let cpu_percent = previous
        .and_then(|p| stats.cpu_percent_since(p))
        .map_or_else(dash, |pct| format!("{pct:.1}%"));
    let with_limit = |value: String, limit: Option<String>| match limit {
        Some(limit) => format!("{value} / {limit}"),
        None => value,
    };
    let memory = stats.memory_bytes.map_or_else(dash, |m| {
        with_limit(human_bytes(m), stats.memory_limit_bytes.map(human_bytes))
    });
    let pids = stats.pids.map_or_else(dash, |p| {
        with_limit(p.to_string(), stats.pids_limit.map(|l| l.to_string()))
    });
    let io = |bytes: Option<u64>, ops: Option<u64>| match (bytes, ops) {
        (Some(bytes), Some(ops)) => format!("{} ({ops} ops)", human_bytes(bytes)),
        (Some(bytes), None) => human_bytes(bytes),
        _ => dash(),
    };
    table.add_row([
        stats.name.clone(),
        stats.state.clone(),
        cpu_percent,
        stats.cpu_usec.map_or_else(dash, cpu_time),
        memory,
        stats.memory_peak_bytes.map_or_else(dash, human_bytes),
        pids,
        io(stats.io_read_bytes, stats.io_read_ops),
        io(stats.io_write_bytes, stats.io_write_ops),
        stats.oom_kills.map_or_else(dash, |k| {
            if k > 0 {
                out.paint(&k.to_string(), Color::Red)
            } else {
                k.to_string()
            }
        }),
    ]);
    let mut text = render_table(table);
    if !stats.unmeasured.is_empty() {
        let _ = writeln!(
            text,
            "{}",
            out.paint(
                &format!("not measured on this host: {}", stats.unmeasured.join(", ")),
                Color::Dim
            )
        );
    }
    text
}

/// CPU time for people: `0.42s` under a minute, `5m 2s` above.
fn cpu_time(usec: u64) -> String {
    if usec < 60_000_000 {
        format!("{:.2}s", usec as f64 / 1e6)
    } else {
        human_duration(usec / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SandboxStats {
        SandboxStats {
            id: "sb-0123456789abcdef".into(),
            name: "web".into(),
            state: "running".into(),
            timestamp: "2025-01-01T12:00:01.000Z".into(),
            timestamp_ms: 1_735_732_801_000,
            cpu_usec: Some(1_500_000),
            cpu_user_usec: Some(1_000_000),
            cpu_system_usec: Some(500_000),
            memory_bytes: Some(12 << 20),
            memory_peak_bytes: Some(20 << 20),
            memory_limit_bytes: Some(256 << 20),
            pids: Some(3),
            pids_limit: None,
            io_read_bytes: None,
            io_write_bytes: None,
            io_read_ops: None,
            io_write_ops: None,
            oom_kills: Some(0),
            unmeasured: [
                "io_read_bytes",
                "io_write_bytes",
                "io_read_ops",
                "io_write_ops",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    #[test]
    fn the_table_shows_cpu_percent_limits_and_what_is_unmeasured() {
        let second = sample();
        let mut first = sample();
        first.cpu_usec = Some(1_000_000);
        first.timestamp_ms -= 1000;
        let out = Output {
            json: false,
            color: false,
        };
        insta::assert_snapshot!(stats_text(&second, Some(&first), out), @r"
        NAME  STATE    CPU %  CPU TIME  MEMORY                PEAK      PIDS  IO READ  IO WRITE  OOM KILLS
        web   running  50.0%  1.50s     12.0 MiB / 256.0 MiB  20.0 MiB  3     -        -         0
        not measured on this host: io_read_bytes, io_write_bytes, io_read_ops, io_write_ops
        ");
        assert!(
            stats_text(&second, None, out).contains("  -  "),
            "no CPU % from one sample"
        );
    }

    #[test]
    fn cpu_time_reads_like_a_duration() {
        assert_eq!(cpu_time(420_000), "0.42s");
        assert_eq!(cpu_time(302_000_000), "5m 2s");
    }
}
