//! Prometheus metrics: request counts and latency by route and status, build info and
//! process metrics, served as text at `/metrics`, plus sandbox series read at scrape time.
//!
//! # Sandbox series
//!
//! Each scrape counts every sandbox by state (`nexus_sandboxes{state}`) and reads the
//! cgroup counters of running and paused sandboxes into series labelled only by sandbox
//! `id` and `name` (never user labels, which are unbounded). They are built into a
//! registry of their own for that scrape, so a deleted or stopped sandbox has no series
//! left. At most `metrics.max_sandboxes` sandboxes (the oldest first) get series;
//! `nexus_sandbox_series_omitted` says how many were left out. A counter the host cannot
//! measure has no series for that sandbox.
//!
//! The warm pool's sandboxes have no series of their own and are not counted in
//! `nexus_sandboxes`; each profile has `nexus_warm_pool_size`, `nexus_warm_pool_ready`
//! and (where measurable) `nexus_warm_pool_memory_bytes`, labelled by `image` and
//! `profile` (the entry's position in `warm_pool`, as two entries may share an image).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use nexus_core::service::LiveStats;
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::state::AppState;

/// The daemon's metric registry and the series it records itself.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    egress: IntCounterVec,
    max_sandboxes: usize,
}

/// Label of requests that matched no route, so unknown paths cannot blow up cardinality.
const UNMATCHED_ROUTE: &str = "unmatched";

impl Metrics {
    /// Creates the registry with build info and, on Linux, process metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "nexus_http_requests_total",
                "HTTP requests served, by route and status",
            ),
            &["method", "route", "status"],
        )
        .expect("metric definition is valid");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "nexus_http_request_duration_seconds",
                "HTTP request latency, by route and status",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("metric definition is valid");
        let build = IntGaugeVec::new(
            Opts::new(
                "nexus_build_info",
                "Build information of the running nexusd; always 1",
            ),
            &["version"],
        )
        .expect("metric definition is valid");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let egress = IntCounterVec::new(
            Opts::new(
                "nexus_network_connections_total",
                "Connection attempts of sandboxes through the policy proxy, by decision and way in",
            ),
            &["decision", "via"],
        )
        .expect("metric definition is valid");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(build),
            Box::new(egress.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry
                .register(collector)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            requests,
            latency,
            egress,
            max_sandboxes: crate::config::DEFAULT_METRICS_MAX_SANDBOXES,
        }
    }

    /// Gives per-sandbox series to at most `max` running or paused sandboxes.
    pub fn with_max_sandboxes(mut self, max: usize) -> Self {
        self.max_sandboxes = max;
        self
    }

    /// How many sandboxes get series of their own.
    pub fn max_sandboxes(&self) -> usize {
        self.max_sandboxes
    }

    /// The counter of egress attempts, for the network log to increment.
    pub fn egress_counter(&self) -> IntCounterVec {
        self.egress.clone()
    }

    /// Records one finished request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// Renders every metric plus the sandbox series of `live`, read for this scrape.
    pub fn render_with(&self, live: Option<&LiveStats>) -> String {
        let mut families = self.registry.gather();
        if let Some(live) = live {
            families.extend(sandbox_families(live));
            families.sort_by(|a, b| a.name().cmp(b.name()));
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The sandbox series of one scrape, in a registry made and dropped with it.
fn sandbox_families(live: &LiveStats) -> Vec<MetricFamily> {
    let registry = Registry::new();
    let ids = ["id", "name"];
    let gauge = |name: &str, help: &str, labels: &[&str]| {
        IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid")
    };
    let counter = |name: &str, help: &str, labels: &[&str]| {
        IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid")
    };
    let states = gauge("nexus_sandboxes", "Sandboxes by state", &["state"]);
    let omitted = IntGauge::new(
        "nexus_sandbox_series_omitted",
        "Running or paused sandboxes without series of their own, beyond metrics.max_sandboxes",
    )
    .expect("metric definition is valid");
    let cpu = CounterVec::new(
        Opts::new(
            "nexus_sandbox_cpu_seconds_total",
            "CPU time used by the sandbox since it started",
        ),
        &ids,
    )
    .expect("metric definition is valid");
    let memory = gauge(
        "nexus_sandbox_memory_bytes",
        "Memory in use by the sandbox, page cache included",
        &ids,
    );
    let peak = gauge(
        "nexus_sandbox_memory_peak_bytes",
        "Highest memory use of the sandbox since it started",
        &ids,
    );
    let memory_limit = gauge(
        "nexus_sandbox_memory_limit_bytes",
        "Memory limit of the sandbox (absent when unlimited)",
        &ids,
    );
    let pids = gauge(
        "nexus_sandbox_pids",
        "Processes and threads in the sandbox",
        &ids,
    );
    let pids_limit = gauge(
        "nexus_sandbox_pids_limit",
        "Process limit of the sandbox (absent when unlimited)",
        &ids,
    );
    let with_direction = ["id", "name", "direction"];
    let io_bytes = counter(
        "nexus_sandbox_io_bytes_total",
        "Bytes the sandbox read from or wrote to block devices",
        &with_direction,
    );
    let io_ops = counter(
        "nexus_sandbox_io_operations_total",
        "Block device operations of the sandbox, by direction",
        &with_direction,
    );
    let oom = counter(
        "nexus_sandbox_oom_kills_total",
        "Processes of the sandbox the kernel's OOM killer ended",
        &ids,
    );

    for (state, count) in &live.states {
        states
            .with_label_values(&[state.to_string().as_str()])
            .set(clamp(*count as u64));
    }
    omitted.set(clamp(live.omitted as u64));
    for sample in &live.samples {
        let id = sample.sandbox.id.to_string();
        let name = sample.sandbox.spec.name.to_string();
        let labels = [id.as_str(), name.as_str()];
        let u = &sample.usage;
        if let Some(usec) = u.cpu_usage_usec {
            cpu.with_label_values(&labels).inc_by(usec as f64 / 1e6);
        }
        for (vec, value) in [
            (&memory, u.memory_current),
            (&peak, u.memory_peak),
            (&memory_limit, u.memory_limit),
            (&pids, u.pids_current),
            (&pids_limit, u.pids_limit),
        ] {
            if let Some(value) = value {
                vec.with_label_values(&labels).set(clamp(value));
            }
        }
        for (vec, read, write) in [
            (&io_bytes, u.io_read_bytes, u.io_write_bytes),
            (&io_ops, u.io_read_ops, u.io_write_ops),
        ] {
            for (direction, value) in [("read", read), ("write", write)] {
                if let Some(value) = value {
                    vec.with_label_values(&[labels[0], labels[1], direction])
                        .inc_by(value);
                }
            }
        }
        if let Some(kills) = u.oom_kills {
            oom.with_label_values(&labels).inc_by(kills);
        }
    }
    let pool_labels = ["image", "profile"];
    let pool_size = gauge(
        "nexus_warm_pool_size",
        "Sandboxes the warm pool keeps ready, by profile",
        &pool_labels,
    );
    let pool_ready = gauge(
        "nexus_warm_pool_ready",
        "Warm pool sandboxes ready to be claimed, by profile",
        &pool_labels,
    );
    let pool_memory = gauge(
        "nexus_warm_pool_memory_bytes",
        "Memory the ready warm pool sandboxes use together, by profile",
        &pool_labels,
    );
    for (index, pool) in live.warm_pool.iter().enumerate() {
        let index = index.to_string();
        let labels = [pool.profile.image.as_str(), index.as_str()];
        pool_size
            .with_label_values(&labels)
            .set(clamp(pool.profile.size as u64));
        pool_ready
            .with_label_values(&labels)
            .set(clamp(pool.ready as u64));
        if let Some(bytes) = pool.memory_bytes {
            pool_memory.with_label_values(&labels).set(clamp(bytes));
        }
    }
    for collector in [
        Box::new(states) as Box<dyn prometheus::core::Collector>,
        Box::new(omitted),
        Box::new(cpu),
        Box::new(memory),
        Box::new(peak),
        Box::new(memory_limit),
        Box::new(pids),
        Box::new(pids_limit),
        Box::new(io_bytes),
        Box::new(io_ops),
        Box::new(oom),
        Box::new(pool_size),
        Box::new(pool_ready),
        Box::new(pool_memory),
    ] {
        registry
            .register(collector)
            .expect("each metric is registered once");
    }
    registry.gather()
}

/// A counter as a gauge value; no real counter reaches `i64::MAX`.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: times every request and records it under its route pattern.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_requests_appear_in_the_text() {
        let metrics = Metrics::new();
        metrics.observe("GET", "/v1/health", 200, 0.001);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"nexus_http_requests_total{method="GET",route="/v1/health",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("nexus_http_request_duration_seconds_bucket"));
        assert!(text.contains(r#"nexus_build_info{version=""#));
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(
            !text.contains("nexus_sandbox"),
            "no sandbox series unless read"
        );
    }

    #[test]
    fn sandbox_series_carry_only_id_and_name_and_skip_unmeasured_counters() {
        use nexus_core::service::StatsSample;
        use nexus_core::{
            DriverKind, Sandbox, SandboxId, SandboxName, SandboxSpec, SandboxState, Timestamp,
            Usage,
        };

        let sandbox = Sandbox {
            id: SandboxId::parse("sb-0123456789abcdef").expect("id"),
            spec: SandboxSpec {
                name: SandboxName::parse("web").expect("name"),
                image: "host".into(),
                driver: DriverKind::Bwrap,
                env: Default::default(),
                labels: [("team".to_owned(), "a".to_owned())].into(),
                limits: Default::default(),
                ttl_seconds: None,
                workspace: None,
                mounts: Vec::new(),
                network: Default::default(),
            },
            state: SandboxState::Running,
            crash_reason: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            started_at: None,
            runtime: None,
        };
        let live = LiveStats {
            states: SandboxState::ALL
                .iter()
                .map(|&s| (s, usize::from(s == SandboxState::Running)))
                .collect(),
            samples: vec![StatsSample {
                sandbox,
                usage: Usage {
                    cpu_usage_usec: Some(2_500_000),
                    memory_current: Some(4096),
                    io_read_bytes: Some(10),
                    io_write_bytes: Some(20),
                    ..Usage::default()
                },
                at: Timestamp(0),
            }],
            omitted: 3,
            warm_pool: vec![nexus_core::service::PoolStatus {
                profile: nexus_core::service::PoolProfile {
                    image: "host".into(),
                    driver: DriverKind::Bwrap,
                    limits: Default::default(),
                    network: Default::default(),
                    size: 4,
                },
                ready: 3,
                memory_bytes: Some(3 << 20),
                error: None,
            }],
        };
        let text = Metrics::new().render_with(Some(&live));
        let labels = r#"id="sb-0123456789abcdef",name="web""#;
        for line in [
            r#"nexus_sandboxes{state="running"} 1"#.to_owned(),
            r#"nexus_sandboxes{state="stopped"} 0"#.to_owned(),
            "nexus_sandbox_series_omitted 3".to_owned(),
            format!("nexus_sandbox_cpu_seconds_total{{{labels}}} 2.5"),
            format!("nexus_sandbox_memory_bytes{{{labels}}} 4096"),
            format!(r#"nexus_sandbox_io_bytes_total{{direction="read",{labels}}} 10"#),
            format!(r#"nexus_sandbox_io_bytes_total{{direction="write",{labels}}} 20"#),
            r#"nexus_warm_pool_size{image="host",profile="0"} 4"#.to_owned(),
            r#"nexus_warm_pool_ready{image="host",profile="0"} 3"#.to_owned(),
            format!(
                r#"nexus_warm_pool_memory_bytes{{image="host",profile="0"}} {}"#,
                3 << 20
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("team"), "user labels never become labels");
        assert!(
            !text.contains("nexus_sandbox_pids{"),
            "unmeasured: no series\n{text}"
        );
        assert!(!text.contains("nexus_sandbox_oom_kills_total{"));
    }
}
