//! What the HTTP front end reports: requests by route and code, their
//! latency, open watch streams, refused requests and the connection cap's
//! series. Registered by the front end itself; the agent composes it with
//! the other components' metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::connlimit::{LimiterMetrics, LimiterNames};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// One of the router's route patterns (or "unmatched"): static, so
    /// counting a request allocates nothing.
    pub route: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

fn latency_histogram() -> Histogram {
    // 100µs .. ~3.3s; a blocking query's wait is not in here (see http).
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The HTTP front end's series. A default one is registered nowhere.
pub struct HttpMetrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) watch_streams: Gauge,
    /// The HTTP connection cap's series (`http_connections*`).
    pub(crate) connection_limits: LimiterMetrics,
    rejected: Family<ReasonLabels, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            watch_streams: Gauge::default(),
            connection_limits: LimiterMetrics::default(),
            rejected: Family::default(),
        }
    }
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let mut metrics = Self::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route (blocking waits and streams excluded)",
            metrics.duration.clone(),
        );
        registry.register(
            "watch_streams",
            "Open /v1/watch streams",
            metrics.watch_streams.clone(),
        );
        metrics.connection_limits = LimiterMetrics::register(
            registry,
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
        registry.register(
            "http_requests_rejected",
            "HTTP requests refused by a limit (body: a request with a body; watch_streams: --max-watch-streams reached)",
            metrics.rejected.clone(),
        );
        metrics
    }

    pub(crate) fn record_rejected(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
}
