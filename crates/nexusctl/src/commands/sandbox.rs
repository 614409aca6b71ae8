//! `nexusctl sandbox create|list|inspect|start|stop|pause|resume|fork|delete` (and
//! `network|netlog`, in [`super::network`]; `stats`, in [`super::stats`]).

use std::fmt::Write;

use nexus_api::{CreateSandboxRequest, LimitsBody, MountBody, NetworkPolicyBody, SandboxInfo};
use nexus_client::Client;

use crate::cli::{CreateArgs, SandboxCommand, SandboxShape};
use crate::output::{Color, Output, age, human_bytes, human_duration, plain_table, render_table};

/// Runs one `sandbox` subcommand.
pub async fn run(client: &Client, command: SandboxCommand, out: Output) -> anyhow::Result<()> {
    match command {
        SandboxCommand::Create(args) => create(client, *args, out).await,
        SandboxCommand::List => list(client, out).await,
        SandboxCommand::Inspect { sandbox } => {
            let info = client.sandbox(&sandbox).await?;
            if out.json {
                out.json(&info)
            } else {
                out.text(&inspect_text(&info, out))
            }
        }
        SandboxCommand::Start { sandbox } => {
            state_change(client.start_sandbox(&sandbox).await?, out)
        }
        SandboxCommand::Stop { sandbox } => state_change(client.stop_sandbox(&sandbox).await?, out),
        SandboxCommand::Pause { sandbox } => {
            state_change(client.pause_sandbox(&sandbox).await?, out)
        }
        SandboxCommand::Resume { sandbox } => {
            state_change(client.resume_sandbox(&sandbox).await?, out)
        }
        SandboxCommand::Fork { sandbox, new_name } => {
            let info = client.fork_sandbox(&sandbox, &new_name).await?;
            if out.json {
                out.json(&info)
            } else {
                out.text(&format!(
                    "{} {} (forked from {sandbox})\n",
                    info.name, info.state
                ))
            }
        }
        SandboxCommand::Delete {
            sandbox,
            force,
            keep_workspace,
        } => {
            client
                .delete_sandbox(&sandbox, force, keep_workspace)
                .await?;
            if out.json {
                out.json(&serde_json::json!({ "deleted": sandbox }))
            } else {
                out.text(&format!("{sandbox} deleted\n"))
            }
        }
        SandboxCommand::Stats(args) => super::stats::run(client, args, out).await,
        SandboxCommand::Network(args) => super::network::policy(client, args, out).await,
        SandboxCommand::Netlog(args) => super::network::log(client, args, out).await,
    }
}

/// The create request of a sandbox shape.
pub fn create_request(
    name: Option<String>,
    shape: SandboxShape,
    start: bool,
) -> CreateSandboxRequest {
    CreateSandboxRequest {
        name,
        image: shape.image,
        driver: shape.driver,
        env: shape.env.into_iter().collect(),
        labels: shape.labels.into_iter().collect(),
        limits: LimitsBody {
            memory_mib: shape.memory,
            cpus: shape.cpus,
            pids: shape.pids,
            tmp_mib: shape.tmp,
        },
        ttl_seconds: shape.ttl.map(|t| t.as_secs().max(1)),
        start: Some(start),
        workspace: shape.workspace,
        mounts: shape
            .mounts
            .into_iter()
            .map(|(workspace, path)| MountBody { workspace, path })
            .collect(),
        // No flag: the daemon's default policy.
        network: (!shape.allow.is_empty() || !shape.deny.is_empty()).then_some(NetworkPolicyBody {
            allow: shape.allow,
            deny: shape.deny,
        }),
    }
}

/// Prints a sandbox's new state after start, stop, pause or resume.
fn state_change(info: SandboxInfo, out: Output) -> anyhow::Result<()> {
    if out.json {
        out.json(&info)
    } else {
        out.text(&format!("{} {}\n", info.name, info.state))
    }
}

async fn create(client: &Client, args: CreateArgs, out: Output) -> anyhow::Result<()> {
    let info = client
        .create_sandbox(&create_request(args.name, args.shape, !args.no_start))
        .await?;
    if out.json {
        return out.json(&info);
    }
    let mut text = format!("{} {} ({})\n", info.name, info.state, info.id);
    if let Some(isolation) = &info.isolation {
        for limit in isolation.limits.iter().filter(|l| !l.enforced) {
            let _ = writeln!(
                text,
                "{}",
                out.paint(
                    &format!(
                        "warning: {} limit not enforced: {}",
                        limit.name, limit.detail
                    ),
                    Color::Red
                )
            );
        }
        if !isolation.isolated {
            let _ = writeln!(
                text,
                "{}",
                out.paint(
                    "warning: host driver: this sandbox is NOT isolated",
                    Color::Red
                )
            );
        }
    }
    out.text(&text)
}

async fn list(client: &Client, out: Output) -> anyhow::Result<()> {
    let sandboxes = client.list_sandboxes().await?;
    if out.json {
        return out.json(&serde_json::json!({ "sandboxes": sandboxes }));
    }
    if sandboxes.is_empty() {
        return out.text("no sandboxes; create one with `nexusctl sandbox create`\n");
    }
    let mut table = plain_table(&["NAME", "ID", "STATE", "DRIVER", "IMAGE", "AGE"]);
    for s in &sandboxes {
        let state = if s.driver == "host" {
            format!("{} (unisolated)", s.state)
        } else {
            s.state.clone()
        };
        table.add_row([
            s.name.clone(),
            s.id.clone(),
            state,
            s.driver.clone(),
            s.image.clone(),
            age(&s.created_at),
        ]);
    }
    out.text(&render_table(table))
}

fn inspect_text(info: &SandboxInfo, out: Output) -> String {
    let mut text = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(
            text,
            "{}{value}",
            out.paint(&format!("{label:<16}"), Color::Dim)
        );
    };
    row("Name", info.name.clone());
    row("Id", info.id.clone());
    row(
        "State",
        match &info.crash_reason {
            Some(reason) => format!("{} ({reason})", info.state),
            None => info.state.clone(),
        },
    );
    row("Driver", info.driver.clone());
    row("Image", info.image.clone());
    if let Some(workspace) = &info.workspace {
        row("Workspace", format!("{workspace} at /workspace"));
    }
    for mount in &info.mounts {
        row(
            "Mount",
            format!("{} at {} (read-only)", mount.workspace, mount.path),
        );
    }
    row("Created", info.created_at.clone());
    if let Some(started) = &info.started_at {
        row("Started", started.clone());
    }
    if let Some(ttl) = info.ttl_seconds {
        row("TTL", human_duration(ttl));
    }
    let limits = &info.limits;
    let mut parts = Vec::new();
    if let Some(m) = limits.memory_mib {
        parts.push(format!("memory {m} MiB"));
    }
    if let Some(c) = limits.cpus {
        parts.push(format!("cpus {c}"));
    }
    if let Some(p) = limits.pids {
        parts.push(format!("pids {p}"));
    }
    if let Some(t) = limits.tmp_mib {
        parts.push(format!("/tmp {t} MiB"));
    }
    row(
        "Limits",
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        },
    );
    for (k, v) in &info.env {
        row("Env", format!("{k}={v}"));
    }
    for (k, v) in &info.labels {
        row("Label", format!("{k}={v}"));
    }
    if let Some(u) = &info.usage {
        if let Some(m) = u.memory_bytes {
            let peak = u
                .memory_peak_bytes
                .map(|p| format!(" (peak {})", human_bytes(p)))
                .unwrap_or_default();
            row("Memory", format!("{}{peak}", human_bytes(m)));
        }
        if let Some(p) = u.pids {
            row("Processes", p.to_string());
        }
        if let Some(k) = u.oom_kills.filter(|k| *k > 0) {
            row("OOM kills", out.paint(&k.to_string(), Color::Red));
        }
    }
    match &info.isolation {
        None => row("Isolation", "(not running)".into()),
        Some(i) => {
            row(
                "Isolation",
                if i.isolated {
                    "isolated".into()
                } else {
                    out.paint("NONE (host driver)", Color::Red)
                },
            );
            row(
                "  namespaces",
                if i.namespaces.is_empty() {
                    "none".into()
                } else {
                    i.namespaces.join(", ")
                },
            );
            row("  seccomp", yes_no(i.seccomp));
            row("  capabilities", i.capabilities.clone());
            row("  no_new_privs", yes_no(i.no_new_privs));
            if let (Some(inside), Some(host)) = (i.uid_inside, i.uid_host) {
                row("  uid", format!("{inside} inside, {host} on the host"));
            }
            for l in &i.limits {
                let mark = if l.enforced {
                    out.paint("enforced", Color::Green)
                } else {
                    out.paint("NOT enforced", Color::Red)
                };
                row(
                    &format!("  {}", l.name),
                    format!("{} {mark}: {}", l.requested, l.detail),
                );
            }
            for w in &i.warnings {
                row("  warning", w.clone());
            }
        }
    }
    text
}

fn yes_no(value: bool) -> String {
    if value { "yes".into() } else { "no".into() }
}
