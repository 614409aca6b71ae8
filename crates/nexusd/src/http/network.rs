//! `/v1/sandboxes/{id}/network...`: changing a sandbox's egress policy, and reading or
//! following its network log.
//!
//! Following (`follow=true`) streams NDJSON: the retained entries after `after` first,
//! then new ones as the proxy records them, in id order, without duplicates. The live
//! subscription is taken before the backlog is read, and live entries at or below the
//! last id sent are skipped. A follower that falls behind the live channel re-reads the
//! log from its last id (only entries the log itself already dropped, by its count and
//! age bounds, are lost). The stream ends when the client goes away or the sandbox is
//! deleted (checked every [`GONE_CHECK`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use nexus_api::{
    ErrorBody, ErrorCode, NetworkLog, NetworkLogEntry, SandboxInfo, SetNetworkRequest,
};
use nexus_core::SandboxId;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::convert::sandbox_info;
use super::error::ApiError;
use super::json::ApiJson;
use crate::netlog::LogEntry;
use crate::state::AppState;

/// Entries per page when no `limit` is given.
pub const DEFAULT_LOG_LIMIT: usize = 1000;
/// The largest `limit` accepted.
pub const MAX_LOG_LIMIT: usize = 10_000;
/// How often a follower checks that its sandbox still exists.
pub const GONE_CHECK: Duration = Duration::from_secs(1);

/// Replaces a sandbox's network policy (both lists). New connections follow it at once;
/// open ones are cut too with `kill_existing`. A bad rule is refused with 400 naming it,
/// and the old policy stays.
#[utoipa::path(
    patch,
    path = "/v1/sandboxes/{id}/network",
    tag = "network",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = SetNetworkRequest,
    responses(
        (status = 200, description = "The sandbox with its new policy", body = SandboxInfo),
        (status = 400, description = "A rule is malformed (the message names it); nothing changed", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    )
)]
pub async fn set(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetNetworkRequest>,
) -> Result<Json<SandboxInfo>, ApiError> {
    let network = nexus_core::NetworkSpec {
        allow: body.allow,
        deny: body.deny,
    };
    let view = state
        .sandboxes
        .set_network(&id, network, body.kill_existing)
        .await?;
    Ok(Json(sandbox_info(view)))
}

/// Query of `GET .../network/log`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only entries with a larger id (the `id` of the last entry already seen).
    pub after: Option<u64>,
    /// Most entries, 1 to 10000 [default: 1000]. Not used with `follow`.
    pub limit: Option<usize>,
    /// Keep the response open and stream entries as NDJSON as they come [default: false].
    #[serde(default)]
    pub follow: bool,
}

/// The sandbox's connection attempts, oldest first: a page as JSON, or (with
/// `follow=true`) one `NetworkLogEntry` per line, live, until the client disconnects or
/// the sandbox is deleted.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/network/log",
    tag = "network",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id or name"), LogQuery),
    responses(
        (status = 200, description = "A page of entries, or with `follow` one `NetworkLogEntry` per line", content(
            (NetworkLog = "application/json"),
            (NetworkLogEntry = "application/x-ndjson"),
        )),
        (status = 400, description = "A query parameter is invalid (the message names it)", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    )
)]
pub async fn log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "bad query parameter {}; accepted: after=ID, limit=1..={MAX_LOG_LIMIT}, follow=true|false",
                rejection
                    .body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
            ),
        )
    })?;
    let limit = match query.limit {
        None => DEFAULT_LOG_LIMIT,
        Some(limit @ 1..=MAX_LOG_LIMIT) => limit,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("limit must be between 1 and {MAX_LOG_LIMIT}, not {other}"),
            ));
        }
    };
    let sandbox = state.sandboxes.get(&id).await?.sandbox.id;
    if !query.follow {
        let entries = state
            .netlog
            .entries(sandbox.as_str(), query.after, limit)
            .iter()
            .map(log_entry)
            .collect();
        return Ok(Json(NetworkLog { entries }).into_response());
    }
    let follower = Follower::new(state, sandbox, query.after.unwrap_or(0));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(follower.lines()),
    )
        .into_response())
}

/// A log entry as the API shows it.
pub fn log_entry(entry: &LogEntry) -> NetworkLogEntry {
    let r = &entry.record;
    NetworkLogEntry {
        id: entry.id,
        time: humantime::format_rfc3339_millis(r.started_at.max(UNIX_EPOCH)).to_string(),
        sandbox_id: r.sandbox.clone(),
        via: r.via.as_str().to_owned(),
        host: r.host.clone(),
        port: r.port,
        address: r.address.map(|a| a.to_string()),
        decision: r.decision.as_str().to_owned(),
        rule: r.rule.clone(),
        error: r.error.clone(),
        bytes_up: r.bytes_up,
        bytes_down: r.bytes_down,
        duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Entries read from the log per step while catching up.
const CATCH_UP_PAGE: usize = 1000;

/// The state of one `follow=true` response.
struct Follower {
    state: AppState,
    sandbox: SandboxId,
    live: broadcast::Receiver<Arc<LogEntry>>,
    /// Entries read from the log, not yet sent.
    pending: VecDeque<LogEntry>,
    /// Whether the log may hold entries above `last` that the live channel will not
    /// deliver (at the start, and after falling behind it).
    catching_up: bool,
    /// The id of the last entry sent (or the `after` asked for).
    last: u64,
    gone_check: tokio::time::Interval,
}

impl Follower {
    /// Subscribes first, so nothing recorded while the backlog is read is missed.
    fn new(state: AppState, sandbox: SandboxId, after: u64) -> Self {
        let live = state.netlog.subscribe();
        let mut gone_check = tokio::time::interval(GONE_CHECK);
        gone_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            state,
            sandbox,
            live,
            pending: VecDeque::new(),
            catching_up: true,
            last: after,
            gone_check,
        }
    }

    /// The NDJSON lines, one entry each.
    fn lines(
        self,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, std::convert::Infallible>> + Send {
        futures::stream::unfold(self, |mut follower| async move {
            let entry = follower.next().await?;
            let mut line =
                serde_json::to_vec(&log_entry(&entry)).expect("log entries always serialize");
            line.push(b'\n');
            Some((Ok(line), follower))
        })
    }

    /// The next entry to send; `None` once the sandbox is gone (or the log shut down).
    async fn next(&mut self) -> Option<LogEntry> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                self.last = entry.id;
                return Some(entry);
            }
            if self.catching_up {
                self.pending = self
                    .state
                    .netlog
                    .entries(self.sandbox.as_str(), Some(self.last), CATCH_UP_PAGE)
                    .into();
                self.catching_up = !self.pending.is_empty();
                continue;
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(entry) => {
                        if entry.id > self.last && entry.record.sandbox == self.sandbox.as_str() {
                            self.last = entry.id;
                            return Some((*entry).clone());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(sandbox_id = %self.sandbox, missed, "network log follower fell behind; re-reading the log");
                        self.catching_up = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.gone_check.tick() => {
                    if self.gone().await {
                        return None;
                    }
                }
            }
        }
    }

    /// Whether the sandbox was deleted. A store that does not answer is not proof: the
    /// follower carries on and asks again later.
    async fn gone(&self) -> bool {
        match self.state.store.sandbox(&self.sandbox).await {
            Ok(found) => found.is_none(),
            Err(e) => {
                tracing::debug!(sandbox_id = %self.sandbox, error = %e, "cannot check whether a followed sandbox still exists");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use nexus_core::Store;
    use nexus_core::testing::MemoryStore;
    use nexus_net::audit::{AuditSink, ConnectionRecord, Decision, Via};

    use super::*;

    fn record(sandbox: &str, port: u16) -> ConnectionRecord {
        ConnectionRecord {
            // Now: the log drops entries older than its age bound.
            started_at: SystemTime::now(),
            sandbox: sandbox.into(),
            via: Via::Transparent,
            host: Some("pypi.org".into()),
            port,
            address: Some("[2001:db8::1]:443".parse().expect("address")),
            decision: Decision::Allowed,
            rule: "allow pypi.org:443".into(),
            error: None,
            bytes_up: 10,
            bytes_down: 20,
            duration: Duration::from_micros(1_500_900),
        }
    }

    /// A state whose store holds one sandbox; returns the state and the sandbox's id.
    async fn state_with_sandbox() -> (AppState, SandboxId) {
        let store = Arc::new(MemoryStore::default());
        let sandbox = nexus_core::testing::contract::sandbox("web", 0, None, Vec::new());
        store.insert_sandbox(&sandbox).await.expect("insert");
        let state = crate::http::tests::state(store);
        (state, sandbox.id)
    }

    async fn next_ids(follower: &mut Follower, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let entry = tokio::time::timeout(Duration::from_secs(5), follower.next())
                .await
                .expect("an entry comes")
                .expect("the stream goes on");
            ids.push(entry.id);
        }
        ids
    }

    #[test]
    fn a_log_entry_shows_rfc3339_millis_the_address_and_milliseconds() {
        let mut record = record("sb-1", 443);
        record.started_at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let shown = log_entry(&LogEntry { id: 7, record });
        assert_eq!(shown.time, "2023-11-14T22:13:20.123Z");
        assert_eq!(shown.via, "transparent");
        assert_eq!(shown.address.as_deref(), Some("[2001:db8::1]:443"));
        assert_eq!(shown.decision, "allowed");
        assert_eq!(shown.duration_ms, 1500);
        assert_eq!((shown.id, shown.bytes_up, shown.bytes_down), (7, 10, 20));
    }

    #[tokio::test]
    async fn following_sends_the_backlog_after_the_cursor_then_live_entries_once_each() {
        let (state, id) = state_with_sandbox().await;
        let sb = id.as_str();
        for port in 1..=3 {
            state.netlog.record(record(sb, port)); // ids 1..=3
            state.netlog.record(record("sb-other", port)); // ids 4..=6 interleaved
        }
        let mut follower = Follower::new(state.clone(), id.clone(), 1);
        // Recorded after subscribing but before the backlog is read: seen once, not twice.
        state.netlog.record(record(sb, 4));
        assert_eq!(next_ids(&mut follower, 3).await, [3, 5, 7]);
        state.netlog.record(record("sb-other", 5));
        state.netlog.record(record(sb, 6));
        assert_eq!(next_ids(&mut follower, 1).await, [9]);
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_rereads_the_log_without_gaps() {
        let (state, id) = state_with_sandbox().await;
        let sb = id.as_str();
        let mut follower = Follower::new(state.clone(), id.clone(), 0);
        state.netlog.record(record(sb, 1));
        assert_eq!(next_ids(&mut follower, 1).await, [1]);
        // Caught up: now waiting on the live channel.
        let waiting = tokio::time::timeout(Duration::from_millis(50), follower.next()).await;
        assert!(waiting.is_err(), "nothing new yet");
        // More than the live channel holds, before the follower reads any of it.
        let total: u16 = 6000;
        for port in 0..total {
            state.netlog.record(record(sb, port));
        }
        let ids = next_ids(&mut follower, usize::from(total)).await;
        assert_eq!(ids, (2..=u64::from(total) + 1).collect::<Vec<_>>());
        state.netlog.record(record(sb, 1));
        assert_eq!(next_ids(&mut follower, 1).await, [u64::from(total) + 2]);
    }

    #[tokio::test]
    async fn following_ends_when_the_sandbox_is_deleted() {
        let (state, id) = state_with_sandbox().await;
        let mut follower = Follower::new(state.clone(), id.clone(), 0);
        state.store.delete_sandbox(&id).await.expect("delete");
        let end = tokio::time::timeout(GONE_CHECK * 5, follower.next())
            .await
            .expect("the stream ends soon after the delete");
        assert!(end.is_none());
    }
}
