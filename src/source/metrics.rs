//! What the sources report: API errors, re-lists, broken manifests,
//! weights ignored because their value is invalid, what the watches
//! received, and Services exposed by annotation whose slices are not
//! watched.
//!
//! Owned by the source layer and registered by it; the agent composes it
//! with the other components' metrics. It knows nothing of the index or the
//! front ends.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
///
/// It also counts the other annotation values the decoders ignore as
/// invalid (`kubedisco_invalid_annotations_total`, by annotation key: the
/// Service resilience annotations), so that every decoder gets one handle.
#[derive(Clone, Debug, Default)]
pub struct InvalidWeights(
    Family<SourceLabels, Counter>,
    Family<AnnotationLabels, Counter>,
);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnotationLabels {
    annotation: String,
}

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

    /// Counts one ignored value of annotation `key` (other than a weight).
    pub fn record_annotation(&self, key: &str) {
        self.1
            .get_or_create(&AnnotationLabels {
                annotation: key.into(),
            })
            .inc();
    }

    /// How many values of annotation `key` were ignored so far.
    #[cfg(test)]
    pub(crate) fn annotation_count(&self, key: &str) -> u64 {
        self.1
            .get_or_create(&AnnotationLabels {
                annotation: key.into(),
            })
            .get()
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
    received_objects: Family<ResourceLabels, Counter>,
    received_bytes: Family<ResourceLabels, Counter>,
    /// Services exposed by the annotation alone while only served slices
    /// are watched (see `super::unlabelled`).
    pub exposed_without_label: Gauge,
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
            "watch_objects_received",
            "Objects received by the Kubernetes watches, by resource: listed objects and watch \
             events (bookmarks not counted)",
            metrics.received_objects.clone(),
        );
        registry.register(
            "watch_bytes_received",
            "Response body bytes received by the Kubernetes lists and watches, by resource \
             (protobuf encoding only; --api-encoding json does not count them)",
            metrics.received_bytes.clone(),
        );
        registry.register(
            "services_exposed_without_label",
            "Services exposed by the kubedisco.io/expose annotation without the label of the \
             same name: with --watch-slices served their EndpointSlices are not watched, so \
             they are served without endpoints (kubectl label service NAME \
             kubedisco.io/expose=true)",
            metrics.exposed_without_label.clone(),
        );
        registry.register(
            "invalid_weights",
            "Weights ignored because their value is invalid, by the object that carried them \
             (pod: the kubedisco.io/weight label; endpointslice: the kubedisco.io/weight \
             annotation; service: the kubedisco.io/default-weight annotation)",
            metrics.invalid_weights.0.clone(),
        );
        registry.register(
            "invalid_annotations",
            "Service annotations ignored because their value is invalid, by key (the \
             kubedisco.io/outlier-* and kubedisco.io/retry-* settings; weights are counted in \
             invalid_weights)",
            metrics.invalid_weights.1.clone(),
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

    /// The counter of objects received by watches of `resource`.
    pub fn received_objects(&self, resource: &str) -> Counter {
        self.received_objects
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .clone()
    }

    /// The counter of body bytes received by watches of `resource`.
    pub fn received_bytes(&self, resource: &str) -> Counter {
        self.received_bytes
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .clone()
    }

    pub fn record_source_error(&self, source: &str) {
        self.source_errors
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }
}
