//! What the sources report: API errors, re-lists, broken manifests and
//! weights ignored because their value is invalid.
//!
//! Owned by the source layer and registered by it; the agent composes it
//! with the other components' metrics. It knows nothing of the index or the
//! front ends.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiErrorLabels {
    resource: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// `kubedisco_invalid_weights_total`: weights ignored because their value
/// is invalid, by where they were found. Handed to every decoder that reads
/// a weight (Pod labels, EndpointSlice and Service annotations); cloning
/// shares the counters. A default one counts into a family nobody exports
/// (for tests and fuzzing).
#[derive(Clone, Debug, Default)]
pub struct InvalidWeights(Family<SourceLabels, Counter>);

impl InvalidWeights {
    /// Counts one ignored value; `source` is the kind of object that
    /// carried it: `pod`, `endpointslice` or `service`.
    pub fn record(&self, source: &str) {
        self.0
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }

    /// How many values of `source` were ignored so far.
    #[cfg(test)]
    pub(crate) fn count(&self, source: &str) -> u64 {
        self.0
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .get()
    }
}

/// The source layer's series. A default one is registered nowhere.
#[derive(Clone, Debug, Default)]
pub struct SourceMetrics {
    watch_restarts: Family<ResourceLabels, Counter>,
    api_errors: Family<ApiErrorLabels, Counter>,
    source_errors: Family<SourceLabels, Counter>,
    pub invalid_weights: InvalidWeights,
}

impl SourceMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "watch_restarts",
            "Watches that had to re-list (410 Gone, reconnect)",
            metrics.watch_restarts.clone(),
        );
        registry.register(
            "api_errors",
            "Errors from the Kubernetes API by resource and reason",
            metrics.api_errors.clone(),
        );
        registry.register(
            "source_errors",
            "Errors reading a non-Kubernetes source (e.g. a broken manifest)",
            metrics.source_errors.clone(),
        );
        registry.register(
            "invalid_weights",
            "Weights ignored because their value is invalid, by the object that carried them \
             (pod: the kubedisco.io/weight label; endpointslice: the kubedisco.io/weight \
             annotation; service: the kubedisco.io/default-weight annotation)",
            metrics.invalid_weights.0.clone(),
        );
        metrics
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

    pub fn record_source_error(&self, source: &str) {
        self.source_errors
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }
}
