//! The sandbox lifecycle tools (`full` profile): create, list, delete, snapshot, fork.
//! Create, list, delete and fork reach beyond one sandbox, so sessions bound to a
//! sandbox never see them; `sandbox_snapshot` acts on the session's own sandbox.

use std::collections::BTreeMap;

use nexus_core::service::SandboxView;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Family, Hints, Scope, ToolCtx, ToolDef, ToolError, ToolOutput, parse};
use crate::http::convert;
use crate::mcp::binding::Profile;

/// The tools of this module.
pub fn defs() -> Vec<ToolDef> {
    vec![
        ToolDef::new::<CreateArgs, SandboxSummary>(
            "sandbox_create",
            "Create a sandbox",
            "Create and start a new sandbox: an isolated Linux computer with its own persistent /workspace. \
Returns its id and name; pass either as `sandbox` to the other tools. Network access is off unless allow rules are given.",
            Profile::Full,
            Scope::Host,
            Family::Sandboxes,
            Hints::ADDITIVE,
        ),
        ToolDef::new::<ListArgs, SandboxListing>(
            "sandbox_list",
            "List sandboxes",
            "List every sandbox with its id, name, state, image and workspace.",
            Profile::Full,
            Scope::Host,
            Family::Sandboxes,
            Hints::READ_ONLY,
        ),
        ToolDef::new::<DeleteArgs, Deleted>(
            "sandbox_delete",
            "Delete a sandbox",
            "Stop and delete a sandbox and everything running in it. Its workspace is deleted too unless keep_workspace is true.",
            Profile::Full,
            Scope::Host,
            Family::Sandboxes,
            Hints::DESTRUCTIVE,
        ),
        ToolDef::new::<SnapshotArgs, SnapshotSummary>(
            "sandbox_snapshot",
            "Snapshot a sandbox's workspace",
            "Save the current state of the sandbox's /workspace as a named snapshot, to fork from later or to roll back to.",
            Profile::Full,
            Scope::Sandbox,
            Family::Sandboxes,
            Hints::ADDITIVE,
        ),
        ToolDef::new::<ForkArgs, SandboxSummary>(
            "sandbox_fork",
            "Fork a sandbox",
            "Start a new sandbox on a copy of an existing sandbox's /workspace (files only, not running processes), e.g. to try several approaches in parallel.",
            Profile::Full,
            Scope::Host,
            Family::Sandboxes,
            Hints::ADDITIVE,
        ),
    ]
}

/// Runs the tool `name` of this module.
pub async fn call(
    name: &str,
    ctx: &ToolCtx<'_>,
    args: JsonObject,
) -> Result<ToolOutput, ToolError> {
    match name {
        "sandbox_create" => create(ctx, parse(args)?).await,
        "sandbox_list" => {
            let ListArgs {} = parse(args)?;
            list(ctx).await
        }
        "sandbox_delete" => delete(ctx, parse(args)?).await,
        "sandbox_snapshot" => snapshot(ctx, parse(args)?).await,
        "sandbox_fork" => fork(ctx, parse(args)?).await,
        other => Err(ToolError::new(format!("tool not found: {other}"))),
    }
}

/// Arguments of `sandbox_create`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// A unique name (letters, digits, `-`, `_`); one is generated when omitted.
    #[serde(default)]
    pub name: Option<String>,
    /// The image to run [default: host, a read-only view of the host's system].
    #[serde(default)]
    pub image: Option<String>,
    /// An existing workspace (id or name) to use as /workspace; a fresh one when omitted.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Environment variables of every process in the sandbox.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Memory limit in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// CPU limit in cores, e.g. 0.5 or 2.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Stop the sandbox after this many seconds.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Outbound connections to allow, as `host:port` rules, e.g. ["pypi.org:443", "*.github.com:443"].
    #[serde(default)]
    pub allow: Vec<String>,
}

/// Arguments of `sandbox_list` (none).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {}

/// Arguments of `sandbox_delete`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// The sandbox to delete: its id or name.
    pub sandbox: String,
    /// Keep its workspace for later sandboxes [default: false].
    #[serde(default)]
    pub keep_workspace: bool,
}

/// Arguments of `sandbox_snapshot`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotArgs {
    /// A name for the snapshot; one is generated when omitted.
    #[serde(default)]
    pub name: Option<String>,
}

/// Arguments of `sandbox_fork`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkArgs {
    /// The sandbox to copy: its id or name.
    pub sandbox: String,
    /// The new sandbox's name.
    pub name: String,
}

/// A sandbox in brief.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxSummary {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// created, starting, running, stopping, stopped, paused or crashed.
    pub state: String,
    /// Its image.
    pub image: String,
    /// The workspace mounted at /workspace.
    pub workspace: Option<String>,
    /// Allowed outbound connections.
    pub network_allow: Vec<String>,
}

/// Every sandbox.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxListing {
    /// The sandboxes, oldest first.
    pub sandboxes: Vec<SandboxSummary>,
}

/// A deleted sandbox.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether its workspace was kept.
    pub workspace_kept: bool,
}

/// A snapshot taken.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotSummary {
    /// The snapshot's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The workspace it belongs to.
    pub workspace: String,
    /// When it was taken (RFC 3339).
    pub created_at: String,
}

fn summary(view: SandboxView) -> SandboxSummary {
    let info = convert::sandbox_info(view);
    SandboxSummary {
        id: info.id,
        name: info.name,
        state: info.state,
        image: info.image,
        workspace: info.workspace,
        network_allow: info.network.allow,
    }
}

fn line(s: &SandboxSummary) -> String {
    format!(
        "{} {} {} image={} workspace={}",
        s.name,
        s.id,
        s.state,
        s.image,
        s.workspace.as_deref().unwrap_or("-")
    )
}

async fn create(ctx: &ToolCtx<'_>, args: CreateArgs) -> Result<ToolOutput, ToolError> {
    let request = nexus_api::CreateSandboxRequest {
        name: args.name,
        image: args.image,
        env: args.env,
        limits: nexus_api::LimitsBody {
            memory_mib: args.memory_mib,
            cpus: args.cpus,
            ..Default::default()
        },
        ttl_seconds: args.ttl_seconds,
        workspace: args.workspace,
        network: (!args.allow.is_empty()).then(|| nexus_api::NetworkPolicyBody {
            allow: args.allow,
            deny: Vec::new(),
        }),
        ..Default::default()
    };
    let view = ctx
        .state
        .sandboxes
        .create(convert::create_request(request))
        .await
        .map_err(|e| ToolError::new(e.to_string()))?;
    let s = summary(view);
    Ok(ToolOutput::new(format!("created sandbox {}", line(&s)), &s))
}

async fn list(ctx: &ToolCtx<'_>) -> Result<ToolOutput, ToolError> {
    let views = ctx
        .state
        .sandboxes
        .list()
        .await
        .map_err(|e| ToolError::new(e.to_string()))?;
    let sandboxes: Vec<SandboxSummary> = views.into_iter().map(summary).collect();
    let text = if sandboxes.is_empty() {
        "no sandboxes; create one with sandbox_create".to_owned()
    } else {
        sandboxes.iter().map(line).collect::<Vec<_>>().join("\n")
    };
    Ok(ToolOutput::new(text, &SandboxListing { sandboxes }))
}

async fn delete(ctx: &ToolCtx<'_>, args: DeleteArgs) -> Result<ToolOutput, ToolError> {
    let sandboxes = &ctx.state.sandboxes;
    let view = sandboxes
        .get(&args.sandbox)
        .await
        .map_err(|e| ToolError::new(e.to_string()))?;
    let id = view.sandbox.id.to_string();
    let name = view.sandbox.spec.name.to_string();
    sandboxes
        .delete(&id, true, args.keep_workspace)
        .await
        .map_err(|e| ToolError::new(e.to_string()))?;
    ctx.state.netlog.forget(&id);
    let deleted = Deleted {
        id,
        name,
        workspace_kept: args.keep_workspace,
    };
    Ok(ToolOutput::new(
        format!("deleted sandbox {} ({})", deleted.name, deleted.id),
        &deleted,
    ))
}

async fn snapshot(ctx: &ToolCtx<'_>, args: SnapshotArgs) -> Result<ToolOutput, ToolError> {
    let sandboxes = &ctx.state.sandboxes;
    let view = sandboxes
        .get(&ctx.sandbox)
        .await
        .map_err(|e| super::service_error(ctx, e))?;
    let Some(workspace) = view.sandbox.spec.workspace else {
        return Err(ToolError::new(format!(
            "sandbox {:?} has no workspace to snapshot",
            ctx.sandbox
        )));
    };
    let snapshot = sandboxes
        .snapshot_workspace(workspace.as_str(), args.name)
        .await
        .map_err(|e| ToolError::new(e.to_string()))?;
    let info = convert::snapshot_info(snapshot);
    let s = SnapshotSummary {
        id: info.id,
        name: info.name,
        workspace: info.workspace,
        created_at: info.created_at,
    };
    Ok(ToolOutput::new(
        format!("snapshot {} of workspace {} taken", s.name, s.workspace),
        &s,
    ))
}

async fn fork(ctx: &ToolCtx<'_>, args: ForkArgs) -> Result<ToolOutput, ToolError> {
    let view = ctx
        .state
        .sandboxes
        .fork_sandbox(&args.sandbox, &args.name)
        .await
        .map_err(|e| ToolError::new(e.to_string()))?;
    let s = summary(view);
    Ok(ToolOutput::new(
        format!("forked {} into sandbox {}", args.sandbox, line(&s)),
        &s,
    ))
}
