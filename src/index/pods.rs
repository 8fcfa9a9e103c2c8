//! The Pod → Service map: which Services list each Pod, so a Pod's weight
//! label re-merges only those.
//!
//! Owns [`PodServices`] and the walk from a slice to its Pods. It counts
//! mentions and nothing else: weights themselves live in the writer, and
//! nothing here merges or publishes.

use std::collections::HashMap;

use super::change::PodKey;
use super::objects::{ServiceKey, SliceObject};

/// The Services whose slices list a Pod, each with the number of slices
/// that do: nearly always one Service, stored without a map of its own.
#[derive(Debug)]
pub(super) enum PodServices {
    One(ServiceKey, u32),
    Many(HashMap<ServiceKey, u32>),
}

impl PodServices {
    pub(super) fn add(&mut self, service: &ServiceKey) {
        match self {
            PodServices::One(key, count) if key == service => *count += 1,
            PodServices::One(key, count) => {
                let many = HashMap::from([(key.clone(), *count), (service.clone(), 1)]);
                *self = PodServices::Many(many);
            }
            PodServices::Many(counts) => *counts.entry(service.clone()).or_default() += 1,
        }
    }

    /// Takes one slice's mention of `service` away; true when none is left.
    pub(super) fn remove(&mut self, service: &ServiceKey) -> bool {
        match self {
            PodServices::One(key, count) => {
                if key == service {
                    *count -= 1;
                }
                *count == 0
            }
            PodServices::Many(counts) => {
                if let Some(count) = counts.get_mut(service) {
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(service);
                    }
                }
                counts.is_empty()
            }
        }
    }

    pub(super) fn keys(&self) -> Vec<ServiceKey> {
        match self {
            PodServices::One(key, _) => vec![key.clone()],
            PodServices::Many(counts) => counts.keys().cloned().collect(),
        }
    }
}

pub(super) fn add_pods(
    by_pod: &mut HashMap<PodKey, PodServices>,
    slice: &SliceObject,
    service: &ServiceKey,
) {
    for pod in pods_of(slice) {
        match by_pod.get_mut(&pod) {
            Some(services) => services.add(service),
            None => {
                by_pod.insert(pod, PodServices::One(service.clone(), 1));
            }
        }
    }
}

pub(super) fn pods_of(slice: &SliceObject) -> impl Iterator<Item = PodKey> + '_ {
    slice.endpoints.iter().filter_map(|endpoint| {
        let target = endpoint.target_ref.as_ref().filter(|t| &*t.kind == "Pod")?;
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| slice.key.namespace.clone());
        Some((namespace, target.name.clone()))
    })
}

#[cfg(test)]
mod tests {
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::{Change, Index, PodKey, Scope, SliceKey};

    #[test]
    fn pod_labels_override_slice_weights_and_come_and_go() {
        use crate::index::objects::TargetRef;
        let index = Index::default();
        let mut pod_endpoint = endpoint("10.0.0.1");
        pod_endpoint.target_ref = Some(TargetRef {
            kind: "Pod".into(),
            namespace: Some("ns".into()),
            name: "web-0".into(),
        });
        let mut weighted = slice("a", "web", 80, vec![pod_endpoint, endpoint("10.0.0.2")]);
        weighted.weight = Some(7);
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(weighted),
        ]);
        let weights = |index: &Index| -> Vec<u32> {
            index
                .load()
                .get("ns", "web")
                .unwrap()
                .endpoints
                .iter()
                .map(|e| e.weight)
                .collect()
        };
        assert_eq!(weights(&index), [7, 7]);
        let pod: PodKey = ("ns".into(), "web-0".into());
        index.apply([Change::SetPodWeight(pod.clone(), Some(300))]);
        assert_eq!(weights(&index), [300, 7]);
        index.replace_pod_weights(&Scope::All, vec![], "pods");
        assert_eq!(weights(&index), [7, 7]);
    }

    #[test]
    fn a_pod_weight_reaches_every_service_listing_the_pod_whenever_it_came() {
        use crate::index::objects::TargetRef;
        let index = Index::default();
        let pod_endpoint = |ip: &str| {
            let mut endpoint = endpoint(ip);
            endpoint.target_ref = Some(TargetRef {
                kind: "Pod".into(),
                namespace: None,
                name: "shared-0".into(),
            });
            endpoint
        };
        // Before any weight exists (the Pod index is built lazily).
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplyService(service("api")),
            Change::ApplySlice(slice("w", "web", 80, vec![pod_endpoint("10.0.0.1")])),
        ]);
        let pod: PodKey = ("ns".into(), "shared-0".into());
        index.apply([Change::SetPodWeight(pod.clone(), Some(5))]);
        // After: a second Service's slice lists the same Pod.
        index.apply([Change::ApplySlice(slice(
            "a",
            "api",
            80,
            vec![pod_endpoint("10.0.0.1")],
        ))]);
        let weight_in = |name: &str| index.load().get("ns", name).unwrap().endpoints[0].weight;
        assert_eq!((weight_in("web"), weight_in("api")), (5, 5));
        index.apply([Change::SetPodWeight(pod.clone(), Some(9))]);
        assert_eq!((weight_in("web"), weight_in("api")), (9, 9));
        // One Service lets go of the Pod; the other still follows it.
        index.apply([Change::DeleteSlice(SliceKey {
            namespace: "ns".into(),
            name: "w".into(),
        })]);
        index.apply([Change::SetPodWeight(pod, None)]);
        assert_eq!(weight_in("api"), crate::index::DEFAULT_WEIGHT);
    }
}
