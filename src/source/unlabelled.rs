//! Services exposed by the `kubedisco.io/expose` annotation alone while the
//! agent watches only the slices it serves (`--watch-slices served`).
//!
//! The slice watch selects exposed Services' slices by the label the
//! EndpointSlice controller copies from the Service; annotations are not
//! copied. So such a Service is served, but its endpoints never arrive. It
//! must not look empty without a reason: each one is logged once, naming
//! the command that fixes it, and counted in
//! `kubedisco_services_exposed_without_label` while it stays so.

use std::collections::HashSet;

use kube::ResourceExt;
use prometheus_client::metrics::gauge::Gauge;
use tracing::warn;

use super::convert::EXPOSE_LABEL;
use super::kinds::Observe;
use super::service::LeanService;
use crate::index::objects::ServiceKey;

/// Tracks one Service watch's annotation-only Services.
pub(super) struct Unlabelled {
    /// The Services found so far, each warned about once.
    current: HashSet<ServiceKey>,
    /// During a list: the Services found in it (the list replaces
    /// `current` when done, so a Service deleted while the watch was down
    /// stops counting).
    listing: Option<HashSet<ServiceKey>>,
    /// Shared by every Service watch (one per namespace): moved by this
    /// watch's own count changes only.
    gauge: Gauge,
}

impl Unlabelled {
    pub(super) fn new(gauge: Gauge) -> Self {
        Self {
            current: HashSet::new(),
            listing: None,
            gauge,
        }
    }

    fn key(service: &LeanService) -> ServiceKey {
        ServiceKey::new(
            service.namespace().as_deref().unwrap_or("default"),
            &service.name_any(),
        )
    }

    fn add(&mut self, key: ServiceKey) {
        if self.current.contains(&key) {
            return;
        }
        warn!(
            service = %key,
            "Service exposed by the {EXPOSE_LABEL} annotation only: its EndpointSlices are not \
             watched (--watch-slices served selects them by label), so it is served without \
             endpoints; add the label: kubectl label service -n {} {} {EXPOSE_LABEL}=true",
            key.namespace,
            key.name,
        );
        self.current.insert(key);
        self.gauge.inc();
    }

    fn remove(&mut self, key: &ServiceKey) {
        if self.current.remove(key) {
            self.gauge.dec();
        }
    }
}

impl Observe<LeanService> for Unlabelled {
    fn list_started(&mut self) {
        self.listing = Some(HashSet::new());
    }

    fn seen(&mut self, service: &LeanService) {
        let key = Self::key(service);
        if !service.exposed_by_annotation_only() {
            self.remove(&key);
            return;
        }
        if let Some(listing) = &mut self.listing {
            listing.insert(key.clone());
        }
        self.add(key);
    }

    fn list_done(&mut self) {
        let Some(listed) = self.listing.take() else {
            return;
        };
        let gone: Vec<ServiceKey> = self.current.difference(&listed).cloned().collect();
        for key in &gone {
            self.remove(key);
        }
    }

    fn deleted(&mut self, service: &LeanService) {
        self.remove(&Self::key(service));
    }
}

impl Drop for Unlabelled {
    /// A watch that ends (the agent stops its source) takes its count along.
    fn drop(&mut self) {
        self.gauge.dec_by(self.current.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(
        name: &str,
        labels: serde_json::Value,
        annotations: serde_json::Value,
    ) -> LeanService {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "labels": labels, "annotations": annotations},
            "spec": {"clusterIP": "10.96.0.1"}
        }))
        .unwrap()
    }

    #[test]
    fn counts_annotation_only_services_until_labelled_deleted_or_relisted_away() {
        let gauge = Gauge::default();
        let mut unlabelled = Unlabelled::new(gauge.clone());
        let expose = serde_json::json!({"kubedisco.io/expose": "true"});
        let none = serde_json::json!({});
        let (a, b) = (
            service("a", none.clone(), expose.clone()),
            service("b", none.clone(), expose.clone()),
        );
        unlabelled.list_started();
        unlabelled.seen(&a);
        unlabelled.seen(&b);
        unlabelled.seen(&service("c", expose.clone(), expose.clone()));
        unlabelled.list_done();
        assert_eq!(gauge.get(), 2);
        // Seen again (a watch event): still one.
        unlabelled.seen(&a);
        assert_eq!(gauge.get(), 2);
        // Labelled: fixed.
        unlabelled.seen(&service("a", expose.clone(), expose.clone()));
        assert_eq!(gauge.get(), 1);
        // A re-list without b (deleted while the watch was down).
        unlabelled.list_started();
        unlabelled.list_done();
        assert_eq!(gauge.get(), 0);
        unlabelled.seen(&b);
        unlabelled.deleted(&b);
        assert_eq!(gauge.get(), 0);
        unlabelled.seen(&b);
        drop(unlabelled);
        assert_eq!(gauge.get(), 0);
    }
}
