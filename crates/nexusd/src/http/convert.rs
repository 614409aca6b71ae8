//! Conversions between the core's types and the API's wire types.

use std::time::{Duration, UNIX_EPOCH};

use nexus_agent_proto::ErrorCode as RemoteCode;
use nexus_api::{ErrorCode, IsolationReport, LimitReport, LimitsBody, SandboxInfo};
use nexus_core::service::{CreateSandbox, SandboxView, ServiceError};
use nexus_core::{Isolation, Limits, Timestamp};

use super::error::ApiError;

/// The API's create request as the service's.
pub fn create_request(body: nexus_api::CreateSandboxRequest) -> CreateSandbox {
    CreateSandbox {
        name: body.name,
        image: body.image,
        driver: body.driver,
        env: body.env,
        labels: body.labels,
        limits: Limits {
            memory_mib: body.limits.memory_mib,
            cpus: body.limits.cpus,
            pids: body.limits.pids,
            tmp_mib: body.limits.tmp_mib,
        },
        ttl_seconds: body.ttl_seconds,
        start: body.start.unwrap_or(true),
        workspace: body.workspace,
        mounts: body
            .mounts
            .into_iter()
            .map(|m| nexus_core::service::MountRequest {
                workspace: m.workspace,
                path: m.path,
            })
            .collect(),
        network: body.network.map(|n| nexus_core::NetworkSpec {
            allow: n.allow,
            deny: n.deny,
        }),
    }
}

/// One warm-pool profile as `GET /v1/status` shows it.
pub fn warm_pool_status(status: nexus_core::service::PoolStatus) -> nexus_api::WarmPoolStatus {
    let profile = status.profile;
    nexus_api::WarmPoolStatus {
        image: profile.image,
        driver: profile.driver.to_string(),
        limits: LimitsBody {
            memory_mib: profile.limits.memory_mib,
            cpus: profile.limits.cpus,
            pids: profile.limits.pids,
            tmp_mib: profile.limits.tmp_mib,
        },
        network: nexus_api::NetworkPolicyBody {
            allow: profile.network.allow,
            deny: profile.network.deny,
        },
        size: profile.size,
        ready: status.ready,
        memory_bytes: status.memory_bytes,
        error: status.error,
    }
}

/// A workspace as the API shows it.
pub fn workspace_info(view: nexus_core::service::WorkspaceView) -> nexus_api::WorkspaceInfo {
    let w = view.workspace;
    let (quota_enforced, quota_note) = match view.quota {
        Some(nexus_core::QuotaStatus::Enforced) => (Some(true), None),
        Some(nexus_core::QuotaStatus::NotEnforced(reason)) => (Some(false), Some(reason)),
        None => (None, None),
    };
    nexus_api::WorkspaceInfo {
        id: w.id.to_string(),
        name: w.name.to_string(),
        generation: w.generation,
        size_bytes: view.size_bytes,
        quota_mib: w.quota_mib,
        quota_enforced,
        quota_note,
        owner: w.owner.map(|o| o.to_string()),
        used_by: view
            .used_by
            .into_iter()
            .map(|(sandbox, read_only)| nexus_api::WorkspaceUser {
                sandbox: sandbox.to_string(),
                read_only,
            })
            .collect(),
        snapshots: view.snapshots,
        backend: view.backend.name,
        labels: w.labels,
        created_at: rfc3339(w.created_at),
        updated_at: rfc3339(w.updated_at),
    }
}

/// The answer to a restore.
pub fn restored_workspace(
    restored: nexus_core::service::RestoredWorkspace,
) -> nexus_api::RestoredWorkspace {
    nexus_api::RestoredWorkspace {
        workspace: workspace_info(restored.view),
        writer: restored.writer.map(|w| nexus_api::RestoredWriter {
            sandbox: w.sandbox.to_string(),
            kept_running: w.kept_running,
        }),
    }
}

/// A snapshot as the API shows it.
pub fn snapshot_info(s: nexus_core::Snapshot) -> nexus_api::SnapshotInfo {
    nexus_api::SnapshotInfo {
        id: s.id.to_string(),
        name: s.name.to_string(),
        workspace: s.workspace.to_string(),
        generation: s.generation,
        created_at: rfc3339(s.created_at),
    }
}

/// A sandbox as the API shows it.
pub fn sandbox_info(view: SandboxView) -> SandboxInfo {
    let SandboxView {
        sandbox: s,
        isolation,
    } = view;
    SandboxInfo {
        id: s.id.to_string(),
        name: s.spec.name.to_string(),
        image: s.spec.image,
        driver: s.spec.driver.to_string(),
        state: s.state.to_string(),
        crash_reason: s.crash_reason,
        env: s.spec.env,
        labels: s.spec.labels,
        limits: LimitsBody {
            memory_mib: s.spec.limits.memory_mib,
            cpus: s.spec.limits.cpus,
            pids: s.spec.limits.pids,
            tmp_mib: s.spec.limits.tmp_mib,
        },
        ttl_seconds: s.spec.ttl_seconds,
        workspace: s.spec.workspace.map(|w| w.to_string()),
        mounts: s
            .spec
            .mounts
            .into_iter()
            .map(|m| nexus_api::MountBody {
                workspace: m.workspace.to_string(),
                path: m.path,
            })
            .collect(),
        network: nexus_api::NetworkPolicyBody {
            allow: s.spec.network.allow,
            deny: s.spec.network.deny,
        },
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
        started_at: s.started_at.map(rfc3339),
        isolation: isolation.map(isolation_report),
        usage: None,
    }
}

/// Cgroup usage as the API shows it; `None` when the host told nothing.
pub fn usage(u: nexus_core::Usage) -> Option<nexus_api::SandboxUsage> {
    (u != nexus_core::Usage::default()).then_some(nexus_api::SandboxUsage {
        memory_bytes: u.memory_current,
        memory_peak_bytes: u.memory_peak,
        oom_kills: u.oom_kills,
        pids: u.pids_current,
        cpu_usage_usec: u.cpu_usage_usec,
    })
}

/// A stats sample as the API shows it, naming the counters the host cannot measure.
pub fn sandbox_stats(sample: nexus_core::service::StatsSample) -> nexus_api::SandboxStats {
    let nexus_core::service::StatsSample { sandbox, usage, at } = sample;
    let mut stats = nexus_api::SandboxStats {
        id: sandbox.id.to_string(),
        name: sandbox.spec.name.to_string(),
        state: sandbox.state.to_string(),
        timestamp: rfc3339(at),
        timestamp_ms: u64::try_from(at.as_millis()).unwrap_or(0),
        cpu_usec: usage.cpu_usage_usec,
        cpu_user_usec: usage.cpu_user_usec,
        cpu_system_usec: usage.cpu_system_usec,
        memory_bytes: usage.memory_current,
        memory_peak_bytes: usage.memory_peak,
        memory_limit_bytes: usage.memory_limit,
        pids: usage.pids_current,
        pids_limit: usage.pids_limit,
        io_read_bytes: usage.io_read_bytes,
        io_write_bytes: usage.io_write_bytes,
        io_read_ops: usage.io_read_ops,
        io_write_ops: usage.io_write_ops,
        oom_kills: usage.oom_kills,
        unmeasured: Vec::new(),
    };
    stats.unmeasured = stats
        .counters()
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| (*name).to_owned())
        .collect();
    stats
}

fn isolation_report(i: Isolation) -> IsolationReport {
    IsolationReport {
        isolated: i.isolated,
        namespaces: i.namespaces,
        seccomp: i.seccomp,
        capabilities: i.capabilities,
        no_new_privs: i.no_new_privs,
        uid_inside: i.uid_inside,
        uid_host: i.uid_host,
        limits: i
            .limits
            .into_iter()
            .map(|l| LimitReport {
                name: l.name,
                requested: l.requested,
                enforced: l.enforced,
                detail: l.detail,
            })
            .collect(),
        warnings: i.warnings,
        network: i.network,
    }
}

/// The agent's own words for a refused operation.
fn agent_message(err: &nexus_agent_proto::ProtoError) -> String {
    match err {
        nexus_agent_proto::ProtoError::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: Timestamp) -> String {
    let millis = u64::try_from(t.as_millis()).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let message = err.to_string();
        match err {
            ServiceError::NotFound(_) => ApiError::new(ErrorCode::SandboxNotFound, message),
            ServiceError::Invalid(_) => ApiError::new(ErrorCode::InvalidRequest, message),
            ServiceError::NameTaken(_) => ApiError::new(ErrorCode::SandboxNameTaken, message),
            ServiceError::NotRunning { .. } => ApiError::new(ErrorCode::SandboxNotRunning, message),
            ServiceError::Paused { .. } => ApiError::new(ErrorCode::SandboxPaused, message),
            ServiceError::Driver(nexus_core::DriverError::Unsupported { .. }) => {
                ApiError::new(ErrorCode::OperationUnsupported, message)
            }
            ServiceError::Conflict(_) => ApiError::new(ErrorCode::SandboxStateConflict, message),
            ServiceError::DriverUnavailable(_) => {
                ApiError::new(ErrorCode::DriverUnavailable, message)
            }
            ServiceError::Driver(nexus_core::DriverError::Start { .. }) => {
                tracing::error!(error = %message, "sandbox start failed");
                ApiError::new(ErrorCode::SandboxStartFailed, message)
            }
            ServiceError::Driver(_) => ApiError::internal(err),
            // A sandbox started by an older build has an agent without the operation.
            ServiceError::Agent(ref e @ nexus_agent_proto::ProtoError::Unsupported { .. }) => {
                ApiError::new(
                    ErrorCode::OperationUnsupported,
                    format!(
                        "the sandbox's agent is older than this daemon ({e}); stop and start the sandbox to update it"
                    ),
                )
            }
            ServiceError::Agent(ref e) => match e.remote_code() {
                Some(RemoteCode::SpawnFailed | RemoteCode::BadRequest) => {
                    ApiError::new(ErrorCode::InvalidRequest, agent_message(e))
                }
                Some(RemoteCode::UnknownProcess) => {
                    ApiError::new(ErrorCode::ProcessNotFound, agent_message(e))
                }
                Some(RemoteCode::UnknownTerminal) => {
                    ApiError::new(ErrorCode::TerminalNotFound, agent_message(e))
                }
                // Too many terminal sessions open at once.
                Some(RemoteCode::Busy) => {
                    ApiError::new(ErrorCode::SandboxStateConflict, agent_message(e))
                }
                Some(
                    RemoteCode::StillRunning | RemoteCode::NotRunning | RemoteCode::StdinClosed,
                ) => ApiError::new(ErrorCode::ProcessStateConflict, agent_message(e)),
                _ => ApiError::internal(err),
            },
            ServiceError::WorkspaceNotFound(_) => {
                ApiError::new(ErrorCode::WorkspaceNotFound, message)
            }
            ServiceError::WorkspaceNameTaken(_) => {
                ApiError::new(ErrorCode::WorkspaceNameTaken, message)
            }
            ServiceError::WorkspaceInUse(_) => ApiError::new(ErrorCode::WorkspaceInUse, message),
            ServiceError::ImageNotFound(_) => ApiError::new(ErrorCode::ImageNotFound, message),
            ServiceError::ImageNameTaken(_) => ApiError::new(ErrorCode::ImageNameTaken, message),
            ServiceError::ImageInUse(_) => ApiError::new(ErrorCode::ImageInUse, message),
            ServiceError::ImageBuildFailed(_) => {
                ApiError::new(ErrorCode::ImageBuildFailed, message)
            }
            ServiceError::ImageBuildInProgress(_) => {
                ApiError::new(ErrorCode::ImageBuildInProgress, message)
            }
            ServiceError::ImageBuildNotFound(_) => {
                ApiError::new(ErrorCode::ImageBuildNotFound, message)
            }
            ServiceError::ImageBuildCancelled(_) => {
                ApiError::new(ErrorCode::ImageBuildCancelled, message)
            }
            ServiceError::SnapshotNotFound(_) => {
                ApiError::new(ErrorCode::SnapshotNotFound, message)
            }
            ServiceError::Storage(ref fault) => match fault.kind {
                nexus_core::StorageFaultKind::NoSpace => {
                    ApiError::new(ErrorCode::InsufficientStorage, message)
                }
                _ => ApiError::internal(err),
            },
            ServiceError::Store(_) => ApiError::internal(err),
        }
    }
}
