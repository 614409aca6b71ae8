//! `nexusctl status`: daemon health plus its database.

use std::fmt::Write;

use nexus_api::{HealthStatus, WarmPoolStatus};
use nexus_client::Client;

use crate::output::{Color, Output, human_bytes, human_duration};

/// Prints the daemon's status.
pub async fn run(client: &Client, out: Output) -> anyhow::Result<()> {
    // Health first: it needs no token, so "not running" and "wrong token" stay distinct.
    client.health().await?;
    let status = client.status().await?;
    if out.json {
        return out.json(&status);
    }
    let health = match status.status {
        HealthStatus::Ok => out.paint("ok", Color::Green),
        HealthStatus::Degraded => out.paint("degraded", Color::Red),
    };
    let db = &status.database;
    let mut text = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(
            text,
            "{}{value}",
            out.paint(&format!("{label:<12}"), Color::Dim)
        );
    };
    row(
        "Daemon",
        format!(
            "{health} (nexusd {}, pid {}, up {})",
            status.version,
            status.pid,
            human_duration(status.uptime_seconds)
        ),
    );
    row("Listening", status.listen.clone());
    row("Database", format!("{} ({})", db.path, db.backend));
    row("  schema", format!("version {}", db.schema_version));
    row("  tables", db.table_count.to_string());
    row("  size", human_bytes(db.size_bytes));
    row("Data", status.paths.data_dir.clone());
    row("Runtime", status.paths.runtime_dir.clone());
    if let Some(config) = &status.paths.config_file {
        row("Config", config.clone());
    }
    // Where to copy the token from, e.g. for the web console's login.
    if let Some(token) = &status.paths.token_file {
        row("Token file", token.clone());
    }
    for (i, pool) in status.warm_pool.iter().enumerate() {
        let label = if i == 0 { "Warm pool" } else { "" };
        row(label, warm_pool_line(pool));
        if let Some(error) = &pool.error {
            row(
                "",
                out.paint(&format!("  not filling: {error}"), Color::Red),
            );
        }
    }
    out.text(&text)
}

/// `host (bwrap, 512 MiB, 1 cpu, 256 pids, /tmp 512 MiB): 3/4 ready, 3.1 MiB`.
fn warm_pool_line(pool: &WarmPoolStatus) -> String {
    let l = &pool.limits;
    let mut shape = vec![pool.driver.clone()];
    if let Some(m) = l.memory_mib {
        shape.push(format!("{m} MiB"));
    }
    if let Some(c) = l.cpus {
        shape.push(format!("{c} cpu"));
    }
    if let Some(p) = l.pids {
        shape.push(format!("{p} pids"));
    }
    if let Some(t) = l.tmp_mib {
        shape.push(format!("/tmp {t} MiB"));
    }
    let rules = pool.network.allow.len() + pool.network.deny.len();
    if rules > 0 {
        shape.push(format!("{rules} network rule(s)"));
    }
    let memory = pool
        .memory_bytes
        .map_or_else(|| "memory unmeasured".to_owned(), human_bytes);
    format!(
        "{} ({}): {}/{} ready, {memory}",
        pool.image,
        shape.join(", "),
        pool.ready,
        pool.size
    )
}
