//! The xDS front end's series: connected clients, resources watched,
//! pushes, NACKs and push latency. Registered by the agent; a default one
//! is registered nowhere (tests).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabels {
    /// listener, cluster, endpoints, route or unknown.
    pub(crate) r#type: &'static str,
}

fn push_histogram() -> Histogram {
    // 50µs to ~1.6s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

/// The xDS front end's series.
#[derive(Debug)]
pub struct XdsMetrics {
    pub(crate) clients: Gauge,
    pub(crate) watched: Family<TypeLabels, Gauge>,
    pub(crate) pushes: Family<TypeLabels, Counter>,
    pub(crate) nacks: Family<TypeLabels, Counter>,
    pub(crate) rejected: Family<TypeLabels, Counter>,
    /// From the wake-up a Service change caused to its response queued.
    pub(crate) push_latency: Histogram,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        Self {
            clients: Gauge::default(),
            watched: Family::default(),
            pushes: Family::default(),
            nacks: Family::default(),
            rejected: Family::default(),
            push_latency: push_histogram(),
        }
    }
}

impl XdsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "xds_clients",
            "Connected xDS (ADS) streams",
            metrics.clients.clone(),
        );
        registry.register(
            "xds_watched_resources",
            "Resource names the connected xDS clients watch, by type",
            metrics.watched.clone(),
        );
        registry.register(
            "xds_pushes",
            "xDS responses sent, by type",
            metrics.pushes.clone(),
        );
        registry.register(
            "xds_nacks",
            "xDS responses a client rejected (NACK), by type",
            metrics.nacks.clone(),
        );
        registry.register(
            "xds_rejected_requests",
            "xDS requests refused: unknown resource type or malformed resource name",
            metrics.rejected.clone(),
        );
        registry.register(
            "xds_push_latency_seconds",
            "From a watched Service's change to the xDS response queued",
            metrics.push_latency.clone(),
        );
        metrics
    }
}
