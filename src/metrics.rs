//! Prometheus metrics, served at `/metrics`.
//!
//! One registry for the process; every part records into the handles here.
//! Names follow Prometheus conventions (`kubedisco_` prefix, `_total` on
//! counters, base units in seconds).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::Arc;

use crate::connlimit::{LimiterMetrics, LimiterNames};
use crate::dns::metrics::DnsMetrics;
use crate::index::IndexGauges;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    pub resource: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of the router's route patterns (or "unmatched"): static, so
    /// counting a request allocates nothing.
    pub route: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100µs .. ~3.3s; a blocking query's wait is not in here (see http).
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub index: IndexGauges,
    pub watch_restarts: Family<ResourceLabels, Counter>,
    pub api_errors: Family<ApiErrorLabels, Counter>,
    pub source_errors: Family<SourceLabels, Counter>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub watch_streams: Gauge,
    pub build_info: Family<Vec<(String, String)>, Gauge>,
    pub start_time: Gauge<f64, AtomicU64>,
    pub dns: Arc<DnsMetrics>,
    pub invalid_weights: Family<SourceLabels, Counter>,
    /// The HTTP connection cap's series (`http_connections*`).
    pub http_connection_limits: LimiterMetrics,
    pub http_rejected: Family<ReasonLabels, Counter>,
    pub snapshot_writes: Family<ResultLabels, Counter>,
    pub snapshot_last_write: Gauge<f64, AtomicU64>,
}

/// Invalid weights are found where no handle to [`Metrics`] is passed (the
/// object converters); they count into this family, registered once.
static INVALID_WEIGHTS: std::sync::OnceLock<Family<SourceLabels, Counter>> =
    std::sync::OnceLock::new();

fn invalid_weights() -> &'static Family<SourceLabels, Counter> {
    INVALID_WEIGHTS.get_or_init(Family::default)
}

/// Counts an invalid `kubedisco.io/weight` (or default-weight) value.
pub fn record_invalid_weight(source: &str) {
    invalid_weights()
        .get_or_create(&SourceLabels {
            source: source.into(),
        })
        .inc();
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubedisco");
        let index = IndexGauges::default();
        registry.register(
            "services",
            "Services served from the index",
            index.services.clone(),
        );
        registry.register(
            "endpoints",
            "Usable endpoints over all served Services",
            index.endpoints.clone(),
        );
        registry.register(
            "synced",
            "1 once every source has completed its first full list",
            index.synced.clone(),
        );
        registry.register(
            "service_revisions",
            "Changes of a Service's served state",
            index.revisions.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last completed full list (initial or re-list)",
            index.last_sync_timestamp.clone(),
        );
        let watch_restarts = Family::default();
        registry.register(
            "watch_restarts",
            "Watches that had to re-list (410 Gone, reconnect)",
            watch_restarts.clone(),
        );
        let api_errors = Family::default();
        registry.register(
            "api_errors",
            "Errors from the Kubernetes API by resource and reason",
            api_errors.clone(),
        );
        let source_errors = Family::default();
        registry.register(
            "source_errors",
            "Errors reading a non-Kubernetes source (e.g. a broken manifest)",
            source_errors.clone(),
        );
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status code",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route (blocking waits and streams excluded)",
            http_duration.clone(),
        );
        let watch_streams = Gauge::default();
        registry.register(
            "watch_streams",
            "Open /v1/watch streams",
            watch_streams.clone(),
        );
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info
            .get_or_create(&vec![("version".into(), crate::VERSION.into())])
            .set(1);
        registry.register("build_info", "Build information", build_info.clone());
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        registry.register(
            "start_time_seconds",
            "Unix time the agent started",
            start_time.clone(),
        );
        let dns = Arc::new(DnsMetrics::register(&mut registry));
        registry.register(
            "invalid_weights",
            "Weight labels and annotations ignored because their value is invalid",
            invalid_weights().clone(),
        );
        let http_connection_limits = LimiterMetrics::register(
            &mut registry,
            &LimiterNames {
                what: "HTTP",
                cap_flag: "--http-max-connections",
                accepted: "http_connections_accepted",
                open: "http_connections",
                waiting: "http_connections_waiting",
                evicted: "http_connections_evicted",
                rejected: "http_connections_rejected",
                closed: "http_connections_closed",
            },
        );
        let http_rejected = Family::default();
        registry.register(
            "http_requests_rejected",
            "HTTP requests refused by a limit (body: a request with a body; watch_streams: --max-watch-streams reached)",
            http_rejected.clone(),
        );
        let snapshot_writes = Family::default();
        registry.register(
            "snapshot_writes",
            "Snapshot files written (--snapshot-path), by result",
            snapshot_writes.clone(),
        );
        let snapshot_last_write = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "snapshot_last_write_timestamp_seconds",
            "Unix time of the last snapshot written",
            snapshot_last_write.clone(),
        );
        Self {
            http_connection_limits,
            http_rejected,
            snapshot_writes,
            snapshot_last_write,
            invalid_weights: invalid_weights().clone(),
            dns,
            registry,
            index,
            watch_restarts,
            api_errors,
            source_errors,
            http_requests,
            http_duration,
            watch_streams,
            build_info,
            start_time,
        }
    }

    pub fn record_api_error(&self, resource: &str, reason: &str) {
        self.api_errors
            .get_or_create(&ApiErrorLabels {
                resource: resource.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn record_watch_restart(&self, resource: &str) {
        self.watch_restarts
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .inc();
    }

    pub fn record_invalid_weight(&self, source: &str) {
        record_invalid_weight(source);
    }

    pub fn record_http_rejected(&self, reason: &str) {
        self.http_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn record_snapshot_write(&self, ok: bool) {
        self.snapshot_writes
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        if ok {
            self.snapshot_last_write.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
    }

    pub fn record_source_error(&self, source: &str) {
        self.source_errors
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_documented_series() {
        let metrics = Metrics::new();
        metrics.record_api_error("endpointslices", "forbidden");
        let text = metrics.encode();
        for name in [
            "kubedisco_services ",
            "kubedisco_endpoints ",
            "kubedisco_synced ",
            "kubedisco_api_errors_total{resource=\"endpointslices\",reason=\"forbidden\"} 1",
            "kubedisco_last_sync_timestamp_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
