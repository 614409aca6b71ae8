//! The network log: every connection attempt of every sandbox, as the policy proxy
//! records it, kept in memory bounded by count and age, readable per sandbox, followable
//! live, counted in `/metrics`, and written to the daemon's log as it happens.
//!
//! Memory, not the database: attempts can come by the thousand per second, and the
//! record that outlives the daemon is its log output (one `egress` line per attempt,
//! at `info` for refusals and `debug` for the rest). The bounds come from `nexus.yaml`
//! (`network.log.max_records`, `network.log.max_age`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nexus_net::audit::{AuditSink, ConnectionRecord, Decision};
use tokio::sync::broadcast;

/// How many entries a slow follower may fall behind before it is told it lost some.
const FOLLOW_BUFFER: usize = 4096;

/// One entry: a record and its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Increasing across the whole log (all sandboxes), from 1; a cursor for paging.
    pub id: u64,
    /// The attempt.
    pub record: ConnectionRecord,
}

/// Bounds of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Entries kept (all sandboxes); the oldest go first.
    pub max_records: usize,
    /// Entries older than this are dropped.
    pub max_age: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_records: 100_000,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// The daemon's network log.
#[derive(Debug)]
pub struct NetLog {
    limits: LogLimits,
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<LogEntry>>,
    counter: Option<prometheus::IntCounterVec>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Arc<LogEntry>>,
    next_id: u64,
}

impl NetLog {
    /// An empty log; attempts are counted in `counter` (labels `decision`, `via`) when given.
    pub fn new(limits: LogLimits, counter: Option<prometheus::IntCounterVec>) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                next_id: 1,
            }),
            live: broadcast::channel(FOLLOW_BUFFER).0,
            counter,
        }
    }

    /// Entries of one sandbox with an id above `after`, oldest first, at most `limit`.
    pub fn entries(&self, sandbox: &str, after: Option<u64>, limit: usize) -> Vec<LogEntry> {
        let mut inner = self
            .inner
            .lock()
            .expect("network log lock is never poisoned");
        self.expire(&mut inner, SystemTime::now());
        let after = after.unwrap_or(0);
        // Ids increase along the deque: skip the older part by binary search.
        let start = inner.entries.partition_point(|e| e.id <= after);
        inner
            .entries
            .range(start..)
            .filter(|e| e.record.sandbox == sandbox)
            .take(limit)
            .map(|e| (**e).clone())
            .collect()
    }

    /// Entries as they are added, for `--follow`; filter by sandbox on the receiving side.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.live.subscribe()
    }

    /// Forgets a deleted sandbox's entries.
    pub fn forget(&self, sandbox: &str) {
        let mut inner = self
            .inner
            .lock()
            .expect("network log lock is never poisoned");
        inner.entries.retain(|e| e.record.sandbox != sandbox);
    }

    fn expire(&self, inner: &mut Inner, now: SystemTime) {
        while inner.entries.len() > self.limits.max_records {
            inner.entries.pop_front();
        }
        while let Some(front) = inner.entries.front() {
            let age = now
                .duration_since(front.record.started_at)
                .unwrap_or_default();
            if age <= self.limits.max_age {
                break;
            }
            inner.entries.pop_front();
        }
    }
}

impl AuditSink for NetLog {
    fn record(&self, record: ConnectionRecord) {
        if record.decision == Decision::Denied {
            tracing::info!(
                sandbox_id = %record.sandbox, via = record.via.as_str(), host = ?record.host,
                port = record.port, address = ?record.address, rule = %record.rule,
                "egress denied"
            );
        }
        if let Some(counter) = &self.counter {
            counter
                .with_label_values(&[record.decision.as_str(), record.via.as_str()])
                .inc();
        }
        let entry = {
            let mut inner = self
                .inner
                .lock()
                .expect("network log lock is never poisoned");
            let entry = Arc::new(LogEntry {
                id: inner.next_id,
                record,
            });
            inner.next_id += 1;
            inner.entries.push_back(entry.clone());
            self.expire(&mut inner, SystemTime::now());
            entry
        };
        // No follower is fine.
        let _ = self.live.send(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_net::audit::Via;

    fn record(sandbox: &str, port: u16, age: Duration) -> ConnectionRecord {
        ConnectionRecord {
            started_at: SystemTime::now() - age,
            sandbox: sandbox.into(),
            via: Via::Connect,
            host: Some("example.com".into()),
            port,
            address: None,
            decision: Decision::Denied,
            rule: "default deny".into(),
            error: None,
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn entries_page_per_sandbox_by_cursor() {
        let log = NetLog::new(LogLimits::default(), None);
        for port in 1..=5 {
            log.record(record("a", port, Duration::ZERO));
            log.record(record("b", port, Duration::ZERO));
        }
        let first = log.entries("a", None, 2);
        assert_eq!(
            first.iter().map(|e| e.record.port).collect::<Vec<_>>(),
            [1, 2]
        );
        let next = log.entries("a", Some(first[1].id), 10);
        assert_eq!(
            next.iter().map(|e| e.record.port).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(next.iter().all(|e| e.record.sandbox == "a"));
        log.forget("a");
        assert!(log.entries("a", None, 10).is_empty());
        assert_eq!(log.entries("b", None, 10).len(), 5);
    }

    #[test]
    fn the_log_is_bounded_by_count_and_age() {
        let log = NetLog::new(
            LogLimits {
                max_records: 3,
                max_age: Duration::from_secs(60),
            },
            None,
        );
        log.record(record("a", 1, Duration::from_secs(120)));
        assert!(log.entries("a", None, 10).is_empty(), "too old");
        for port in 2..=6 {
            log.record(record("a", port, Duration::ZERO));
        }
        let kept: Vec<_> = log
            .entries("a", None, 10)
            .iter()
            .map(|e| e.record.port)
            .collect();
        assert_eq!(kept, [4, 5, 6]);
    }

    #[tokio::test]
    async fn followers_see_new_entries() {
        let log = NetLog::new(LogLimits::default(), None);
        let mut live = log.subscribe();
        log.record(record("a", 7, Duration::ZERO));
        let entry = live.recv().await.expect("entry");
        assert_eq!(entry.record.port, 7);
        assert_eq!(entry.id, 1);
    }
}
