//! Prometheus metrics: request counts and latency by route and status, build info and
//! process metrics, served as text at `/metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::state::AppState;

/// The daemon's metric registry and the series it records itself.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    egress: IntCounterVec,
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
        }
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
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
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
    }
}
