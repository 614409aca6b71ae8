//! Workspaces through the API (issue 4): `snapshot`, `restore` and `workspace_fork` of a
//! workspace holding one big file and many small ones, on whatever storage the daemon's
//! data directory is on (the operation note names the backend it reported).

use std::time::{Duration, Instant};

use nexus_api::CreateSandboxRequest;

use crate::lab::Lab;
use crate::measure::Plan;
use crate::report::{Group, Operation};
use crate::stats::Samples;

/// The measured workspace's name.
const WORKSPACE: &str = "bench-ws";

/// Measures snapshot, restore and fork of a filled workspace `plan.heavy_iterations`
/// times each, naming the operations with `suffix` (`""` or `"_btrfs"`). The workspace,
/// its writer sandbox, snapshots and forks are deleted afterwards.
pub async fn measure(lab: &Lab, plan: &Plan, suffix: &str) -> Vec<Operation> {
    let names = ["snapshot", "restore", "workspace_fork"].map(|name| format!("{name}{suffix}"));
    let operations = match fill_and_measure(lab, plan, &names).await {
        Ok(operations) => operations,
        Err(e) => {
            let reason = format!("cannot prepare the workspace: {e:#}");
            names
                .iter()
                .map(|name| Operation::skipped(name, Group::Nexus, reason.clone()))
                .collect()
        }
    };
    // The writer first: a workspace a sandbox mounts cannot be deleted.
    let _ = lab.delete_all().await;
    let _ = lab.client.delete_workspace(WORKSPACE).await;
    operations
}

/// Static description of what this measurement's workspace holds.
pub fn contents(plan: &Plan) -> String {
    let big = if plan.workspace_mib.is_multiple_of(1024) {
        format!("{} GiB", plan.workspace_mib / 1024)
    } else {
        format!("{} MiB", plan.workspace_mib)
    };
    format!(
        "{big} in one file + {} small files",
        thousands(plan.small_files)
    )
}

async fn fill_and_measure(
    lab: &Lab,
    plan: &Plan,
    names: &[String; 3],
) -> anyhow::Result<Vec<Operation>> {
    let request = CreateSandboxRequest {
        workspace: Some(WORKSPACE.into()),
        ..CreateSandboxRequest::default()
    };
    let writer = lab.create_running_with(&request).await?;
    let script = format!(
        "head -c {} /dev/zero > /workspace/blob && mkdir -p /workspace/small && \
         cd /workspace/small && i=0; while [ $i -lt {} ]; do echo $i > f$i; i=$((i+1)); done",
        plan.workspace_mib * 1024 * 1024,
        plan.small_files
    );
    lab.exec_sh(&writer.id, &script, Duration::from_secs(600))
        .await?;
    let backend = lab.client.workspace(WORKSPACE).await?.backend;
    let note = format!(
        "{} backend, {}, writer sandbox running",
        backend,
        contents(plan)
    );
    let n = plan.heavy_iterations;

    // The first snapshot is kept for the restores and forks; the others are deleted
    // untimed right away, so the copy backend does not fill the disk.
    let base = lab
        .client
        .snapshot_workspace(WORKSPACE, Some("base".into()))
        .await?;
    let mut snapshot = Samples::default();
    for i in 0..n {
        let start = Instant::now();
        let result = lab
            .client
            .snapshot_workspace(WORKSPACE, Some(format!("s{i}")))
            .await;
        if let Some(snap) = snapshot.record(start.elapsed(), result.map_err(Into::into)) {
            let _ = lab.client.delete_snapshot(WORKSPACE, &snap.id).await;
        }
    }

    let mut fork = Samples::default();
    for i in 0..n {
        let name = format!("{WORKSPACE}-fork-{i}");
        let start = Instant::now();
        let result = lab.client.fork_workspace(WORKSPACE, &base.id, &name).await;
        if fork
            .record(start.elapsed(), result.map_err(Into::into))
            .is_some()
        {
            let _ = lab.client.delete_workspace(&name).await;
        }
    }

    // Last, since each restore moves the writer to a new tree generation.
    let mut restore = Samples::default();
    let (mut kept, mut restarted) = (0, 0);
    for _ in 0..n {
        let start = Instant::now();
        let result = lab.client.restore_workspace(WORKSPACE, &base.id).await;
        let restored = restore.record(start.elapsed(), result.map_err(Into::into));
        match restored.and_then(|r| r.writer) {
            Some(writer) if writer.kept_running => kept += 1,
            Some(_) => restarted += 1,
            None => {}
        }
    }
    let writer = match (kept, restarted) {
        (_, 0) => "the writer kept running: its tree is swapped in",
        (0, _) => "the writer was restarted on the restored tree",
        _ => "the writer kept running in some, was restarted in others",
    };

    Ok(vec![
        Operation::measured(&names[0], Group::Nexus, snapshot).with_note(note.clone()),
        Operation::measured(&names[1], Group::Nexus, restore)
            .with_note(format!("{note} ({writer})")),
        Operation::measured(&names[2], Group::Nexus, fork).with_note(note),
    ])
}

/// `10000` as `10,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_name_sizes_as_people_write_them() {
        let plan = |workspace_mib, small_files| Plan {
            iterations: 1,
            heavy_iterations: 1,
            transfer_mib: 1,
            workspace_mib,
            small_files,
            idle: 1,
            many: 1,
            concurrency: 1,
            curve_levels: Vec::new(),
            curve_probes: 0,
        };
        assert_eq!(
            contents(&plan(256, 1_000)),
            "256 MiB in one file + 1,000 small files"
        );
        assert_eq!(
            contents(&plan(1024, 10_000)),
            "1 GiB in one file + 10,000 small files"
        );
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
