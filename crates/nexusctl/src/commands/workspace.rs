//! `nexusctl workspace create|list|inspect|delete|snapshot|snapshots|delete-snapshot|restore|fork`.

use std::fmt::Write;

use nexus_api::{CreateWorkspaceRequest, WorkspaceInfo};
use nexus_client::Client;

use crate::cli::WorkspaceCommand;
use crate::output::{Output, age, human_bytes, plain_table, render_table};

/// Runs one `workspace` subcommand.
pub async fn run(client: &Client, command: WorkspaceCommand, out: Output) -> anyhow::Result<()> {
    match command {
        WorkspaceCommand::Create {
            name,
            quota,
            labels,
        } => {
            let info = client
                .create_workspace(&CreateWorkspaceRequest {
                    name,
                    quota_mib: quota,
                    labels: labels.into_iter().collect(),
                })
                .await?;
            if out.json {
                return out.json(&info);
            }
            let mut text = format!("{} created ({})\n", info.name, info.id);
            if let Some(note) = &info.quota_note {
                let _ = writeln!(text, "note: the quota is not enforced: {note}");
            }
            out.text(&text)
        }
        WorkspaceCommand::List => {
            let list = client.list_workspaces().await?;
            if out.json {
                return out.json(&list);
            }
            if list.workspaces.is_empty() {
                return out
                    .text("no workspaces; create one with `nexusctl workspace create NAME`\n");
            }
            let mut table = plain_table(&["NAME", "ID", "SIZE", "SNAPSHOTS", "USED BY", "AGE"]);
            for w in &list.workspaces {
                table.add_row([
                    w.name.clone(),
                    w.id.clone(),
                    w.size_bytes.map_or_else(|| "-".into(), human_bytes),
                    w.snapshots.to_string(),
                    w.used_by.len().to_string(),
                    age(&w.created_at),
                ]);
            }
            out.text(&render_table(table))
        }
        WorkspaceCommand::Inspect { workspace } => {
            let info = client.workspace(&workspace).await?;
            if out.json {
                return out.json(&info);
            }
            out.text(&inspect_text(&info))
        }
        WorkspaceCommand::Delete { workspace } => {
            client.delete_workspace(&workspace).await?;
            if out.json {
                out.json(&serde_json::json!({ "deleted": workspace }))
            } else {
                out.text(&format!("{workspace} deleted\n"))
            }
        }
        WorkspaceCommand::Snapshot { workspace, name } => {
            let snap = client.snapshot_workspace(&workspace, name).await?;
            if out.json {
                out.json(&snap)
            } else {
                out.text(&format!(
                    "{workspace}: snapshot {} ({})\n",
                    snap.name, snap.id
                ))
            }
        }
        WorkspaceCommand::Snapshots { workspace } => {
            let list = client.snapshots(&workspace).await?;
            if out.json {
                return out.json(&list);
            }
            if list.snapshots.is_empty() {
                return out.text(&format!(
                    "{workspace} has no snapshots; take one with `nexusctl workspace snapshot {workspace}`\n"
                ));
            }
            let mut table = plain_table(&["NAME", "ID", "GENERATION", "AGE"]);
            for s in &list.snapshots {
                table.add_row([
                    s.name.clone(),
                    s.id.clone(),
                    s.generation.to_string(),
                    age(&s.created_at),
                ]);
            }
            out.text(&render_table(table))
        }
        WorkspaceCommand::DeleteSnapshot {
            workspace,
            snapshot,
        } => {
            client.delete_snapshot(&workspace, &snapshot).await?;
            if out.json {
                out.json(&serde_json::json!({ "deleted": snapshot }))
            } else {
                out.text(&format!("{workspace}: snapshot {snapshot} deleted\n"))
            }
        }
        WorkspaceCommand::Restore {
            workspace,
            snapshot,
        } => {
            let restored = client.restore_workspace(&workspace, &snapshot).await?;
            if out.json {
                out.json(&restored)
            } else {
                let info = &restored.workspace;
                let writer = match &restored.writer {
                    Some(w) if w.kept_running => {
                        format!("; sandbox {} kept running on it", w.sandbox)
                    }
                    Some(w) => format!(
                        "; sandbox {} was restarted on it (its processes ended)",
                        w.sandbox
                    ),
                    None => String::new(),
                };
                out.text(&format!(
                    "{} restored to {snapshot} (generation {}){writer}\n",
                    info.name, info.generation
                ))
            }
        }
        WorkspaceCommand::Fork {
            workspace,
            snapshot,
            new_name,
        } => {
            let info = client
                .fork_workspace(&workspace, &snapshot, &new_name)
                .await?;
            if out.json {
                out.json(&info)
            } else {
                out.text(&format!(
                    "{} created from {workspace}@{snapshot} ({})\n",
                    info.name, info.id
                ))
            }
        }
    }
}

fn inspect_text(info: &WorkspaceInfo) -> String {
    let mut text = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(text, "{:<11} {value}", format!("{label}:"));
    };
    row("Name", info.name.clone());
    row("Id", info.id.clone());
    row(
        "Size",
        info.size_bytes
            .map_or_else(|| "unknown".into(), human_bytes),
    );
    row("Generation", info.generation.to_string());
    row("Snapshots", info.snapshots.to_string());
    row("Backend", info.backend.clone());
    if let Some(quota) = info.quota_mib {
        let status = match (info.quota_enforced, &info.quota_note) {
            (Some(true), _) => "enforced".to_owned(),
            (_, Some(note)) => format!("not enforced: {note}"),
            _ => "not enforced".to_owned(),
        };
        row("Quota", format!("{quota} MiB, {status}"));
    }
    match &info.owner {
        Some(owner) => row("Owner", format!("{owner} (deleted with it)")),
        None => row("Owner", "none (kept until deleted)".into()),
    }
    if info.used_by.is_empty() {
        row("Used by", "no sandbox".into());
    }
    for user in &info.used_by {
        let how = if user.read_only {
            "read-only"
        } else {
            "read-write"
        };
        row("Used by", format!("{} ({how})", user.sandbox));
    }
    row("Created", info.created_at.clone());
    text
}
