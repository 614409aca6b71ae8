//! `nexusctl sandbox network|netlog`: a sandbox's egress policy and its network log.

use std::fmt::Write;

use futures::StreamExt;
use nexus_api::{NetworkLogEntry, NetworkPolicyBody, SandboxInfo, SetNetworkRequest};
use nexus_client::Client;

use crate::cli::{NetlogArgs, NetworkArgs};
use crate::output::{Color, Output, human_bytes, plain_table, render_table};

/// Entries asked for per request when reading the whole log (the daemon's maximum).
const PAGE: u64 = 10_000;

/// Shows the policy, or changes it and shows the result. Lists given replace the old
/// ones, lists not given are kept (read first; a change made by someone else between
/// the read and the write is overwritten), `--clear` empties both first.
pub async fn policy(client: &Client, args: NetworkArgs, out: Output) -> anyhow::Result<()> {
    let NetworkArgs {
        sandbox,
        allow,
        deny,
        clear,
        kill_existing,
    } = args;
    let changing = clear || kill_existing || !allow.is_empty() || !deny.is_empty();
    let info = if changing {
        let current = if clear || (!allow.is_empty() && !deny.is_empty()) {
            NetworkPolicyBody::default()
        } else {
            client.sandbox(&sandbox).await?.network
        };
        let request = SetNetworkRequest {
            allow: if allow.is_empty() && !clear {
                current.allow
            } else {
                allow
            },
            deny: if deny.is_empty() && !clear {
                current.deny
            } else {
                deny
            },
            kill_existing,
        };
        client.set_network(&sandbox, &request).await?
    } else {
        client.sandbox(&sandbox).await?
    };
    if out.json {
        out.json(&info.network)
    } else {
        out.text(&policy_text(&info, out))
    }
}

/// Prints the network log: a table, or one JSON object per line with `--json`; with
/// `--follow`, keeps printing until interrupted or the sandbox is deleted.
pub async fn log(client: &Client, args: NetlogArgs, out: Output) -> anyhow::Result<()> {
    if args.follow {
        let mut entries = client.follow_network_log(&args.sandbox, args.after).await?;
        if !out.json {
            out.text(&follow_line(&HEADER.map(str::to_owned)))?;
        }
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            if out.json {
                out.text(&json_line(&entry)?)?;
            } else {
                out.text(&follow_line(&row(&entry)))?;
            }
        }
        return Ok(());
    }
    let entries = read_all(client, &args.sandbox, args.after, args.limit).await?;
    if out.json {
        let mut text = String::new();
        for entry in &entries {
            text.push_str(&json_line(entry)?);
        }
        return out.text(&text);
    }
    if entries.is_empty() {
        return out.text(&format!(
            "no connection attempts recorded for {}\n",
            args.sandbox
        ));
    }
    let mut table = plain_table(&HEADER);
    for entry in &entries {
        table.add_row(row(entry));
    }
    out.text(&render_table(table))
}

/// Columns of the log.
/// The rule goes last: it is the one long, free-form cell.
const HEADER: [&str; 9] = [
    "TIME", "VIA", "TARGET", "ADDRESS", "DECISION", "UP", "DOWN", "DURATION", "RULE",
];

/// Widths of the columns when following (rows come one by one, so no table can size
/// them); a longer value pushes the rest of its line along.
const FOLLOW_WIDTHS: [usize; 9] = [24, 11, 30, 22, 8, 9, 9, 8, 0];

/// Reads the log page by page, up to `limit` entries.
async fn read_all(
    client: &Client,
    sandbox: &str,
    mut after: Option<u64>,
    limit: Option<u64>,
) -> anyhow::Result<Vec<NetworkLogEntry>> {
    let mut entries: Vec<NetworkLogEntry> = Vec::new();
    loop {
        let wanted = match limit {
            Some(limit) => (limit - entries.len() as u64).min(PAGE),
            None => PAGE,
        };
        if wanted == 0 {
            return Ok(entries);
        }
        let page = client
            .network_log(
                sandbox,
                after,
                Some(usize::try_from(wanted).unwrap_or(usize::MAX)),
            )
            .await?
            .entries;
        let full = page.len() as u64 == wanted;
        after = page.last().map(|e| e.id).or(after);
        entries.extend(page);
        if !full {
            return Ok(entries);
        }
    }
}

fn policy_text(info: &SandboxInfo, out: Output) -> String {
    let mut text = String::new();
    let mut row = |label: &str, value: &str| {
        let _ = writeln!(
            text,
            "{}{value}",
            out.paint(&format!("{label:<16}"), Color::Dim)
        );
    };
    if info.network.allow.is_empty() {
        row("Allow", "none (every connection is refused)");
    }
    for rule in &info.network.allow {
        row("Allow", rule);
    }
    if info.network.deny.is_empty() {
        row("Deny", "none");
    }
    for rule in &info.network.deny {
        row("Deny", rule);
    }
    match &info.isolation {
        Some(isolation) if !isolation.network.is_empty() => row("Network", &isolation.network),
        Some(_) => {}
        None => row(
            "Network",
            &format!(
                "({} sandbox: the policy applies when it starts)",
                info.state
            ),
        ),
    }
    text
}

/// One entry as table cells, in [`HEADER`] order.
fn row(entry: &NetworkLogEntry) -> [String; 9] {
    let target = match (&entry.host, &entry.address) {
        (Some(host), _) if host.contains(':') => format!("[{host}]:{}", entry.port),
        (Some(host), _) => format!("{host}:{}", entry.port),
        (None, Some(address)) => address.clone(),
        (None, None) => format!("?:{}", entry.port),
    };
    let rule = match &entry.error {
        Some(error) => format!("{} ({error})", entry.rule),
        None => entry.rule.clone(),
    };
    [
        entry.time.clone(),
        entry.via.clone(),
        target,
        entry.address.clone().unwrap_or_else(|| "-".into()),
        entry.decision.clone(),
        human_bytes(entry.bytes_up),
        human_bytes(entry.bytes_down),
        millis(entry.duration_ms),
        rule,
    ]
}

/// A followed row: cells padded to [`FOLLOW_WIDTHS`], two spaces apart.
fn follow_line(cells: &[String; 9]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(FOLLOW_WIDTHS) {
        let _ = write!(line, "{cell:<width$}  ");
    }
    format!("{}\n", line.trim_end())
}

fn json_line(entry: &NetworkLogEntry) -> anyhow::Result<String> {
    let mut line = serde_json::to_string(entry)?;
    line.push('\n');
    Ok(line)
}

/// `850ms`, `2.4s`, or minutes and seconds past a minute.
fn millis(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => crate::output::human_duration(ms / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> NetworkLogEntry {
        NetworkLogEntry {
            id: 3,
            time: "2026-01-02T03:04:05.678Z".into(),
            sandbox_id: "sb-1".into(),
            via: "connect".into(),
            host: Some("pypi.org".into()),
            port: 443,
            address: Some("151.101.0.223:443".into()),
            decision: "allowed".into(),
            rule: "allow pypi.org:443".into(),
            error: None,
            bytes_up: 2048,
            bytes_down: 10,
            duration_ms: 1234,
        }
    }

    #[test]
    fn a_row_names_the_target_by_host_and_port() {
        let cells = row(&entry());
        assert_eq!(cells[2], "pypi.org:443");
        assert_eq!(cells[3], "151.101.0.223:443");
        assert_eq!(cells[5], "2.0 KiB");
        assert_eq!(cells[7], "1.2s");
        let mut nameless = entry();
        nameless.host = None;
        nameless.error = Some("connection refused".into());
        let cells = row(&nameless);
        assert_eq!(cells[2], "151.101.0.223:443");
        assert_eq!(cells[8], "allow pypi.org:443 (connection refused)");
    }

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(millis(0), "0ms");
        assert_eq!(millis(999), "999ms");
        assert_eq!(millis(2400), "2.4s");
        assert_eq!(millis(125_000), "2m 5s");
    }

    #[test]
    fn followed_lines_keep_their_columns_and_no_trailing_blanks() {
        let header = follow_line(&HEADER.map(str::to_owned));
        let line = follow_line(&row(&entry()));
        assert!(
            header.starts_with("TIME                      VIA"),
            "{header}"
        );
        assert_eq!(header.find("VIA"), line.find("connect"));
        assert_eq!(header.find("TARGET"), line.find("pypi.org:443"));
        assert!(!line.trim_end_matches('\n').ends_with(' '));
    }
}
