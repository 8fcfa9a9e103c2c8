//! Prometheus metrics, served at `/metrics`.
//!
//! Each component owns its series and registers them itself
//! ([`IndexGauges`], [`SourceMetrics`], [`DnsMetrics`], [`HttpMetrics`],
//! [`SnapshotMetrics`], [`XdsMetrics`]); this module only composes them into the process's
//! one registry, for the agent, and adds the process's own series (build
//! information, start time). No component imports it: each is handed its
//! own handle. Names follow Prometheus conventions (`kubedisco_` prefix,
//! `_total` on counters, base units in seconds).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::dns::metrics::DnsMetrics;
use crate::http::metrics::HttpMetrics;
use crate::index::IndexGauges;
use crate::source::metrics::SourceMetrics;
use crate::warmstart::SnapshotMetrics;
use crate::xds::XdsMetrics;

/// Every component's metrics, registered in one registry.
pub struct Metrics {
    /// What `/metrics` encodes (handed to the HTTP front end).
    pub registry: Arc<Registry>,
    pub index: IndexGauges,
    pub source: Arc<SourceMetrics>,
    pub dns: Arc<DnsMetrics>,
    pub http: Arc<HttpMetrics>,
    pub snapshot: Arc<SnapshotMetrics>,
    pub xds: Arc<XdsMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubedisco");
        let index = IndexGauges::register(&mut registry);
        let source = Arc::new(SourceMetrics::register(&mut registry));
        let http = Arc::new(HttpMetrics::register(&mut registry));
        register_process(&mut registry);
        let dns = Arc::new(DnsMetrics::register(&mut registry));
        let snapshot = Arc::new(SnapshotMetrics::register(&mut registry));
        let xds = Arc::new(XdsMetrics::register(&mut registry));
        Self {
            registry: Arc::new(registry),
            index,
            source,
            dns,
            http,
            snapshot,
            xds,
        }
    }
}

/// The series of the process itself, set once.
fn register_process(registry: &mut Registry) {
    let build_info = Family::<Vec<(String, String)>, Gauge>::default();
    build_info
        .get_or_create(&vec![("version".into(), crate::VERSION.into())])
        .set(1);
    registry.register("build_info", "Build information", build_info);
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
        start_time,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        text
    }

    #[test]
    fn exposition_names_the_documented_series() {
        let metrics = Metrics::new();
        metrics
            .source
            .record_api_error("endpointslices", "forbidden");
        let text = exposition(&metrics);
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

    /// The counter handed to the decoders is the one `/metrics` shows.
    #[test]
    fn invalid_weights_handed_out_are_the_exported_ones() {
        let metrics = Metrics::new();
        let invalid = metrics.source.invalid_weights.clone();
        invalid.record("endpointslice");
        let text = exposition(&metrics);
        assert!(
            text.contains("kubedisco_invalid_weights_total{source=\"endpointslice\"} 1"),
            "{text}"
        );
    }
}
