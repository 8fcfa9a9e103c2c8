//! The writer state: every object the sources handed in, raw, and the
//! served view each Service merges to.
//!
//! Owns [`Writer`]: the Services, slices and Pod weights, the slice and Pod
//! maps that say what a change touches, and the revision counter. It runs
//! only under the index's writer lock; it never publishes a snapshot or
//! wakes a waiter (that is `publish`), and readers never see it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::change::PodKey;
use super::merge::{MergeContext, ServedService, merge};
use super::objects::{ServiceKey, ServiceObject, SliceKey, SliceObject};
use super::pods::{PodServices, add_pods, pods_of};
use super::share::share_unchanged;
use super::topology::Locality;

#[derive(Default)]
pub(super) struct Writer {
    pub(super) services: HashMap<ServiceKey, ServiceObject>,
    pub(super) slices: HashMap<SliceKey, SliceObject>,
    /// The names of each Service's slices, sorted. (A Vec: most Services
    /// have one slice, and a set would allocate a node of eleven.)
    pub(super) slices_by_service: HashMap<ServiceKey, Vec<Arc<str>>>,
    /// Source parts (e.g. "services", "endpointslices/shop") that have not
    /// completed their first list yet.
    pub(super) unsynced_parts: HashSet<String>,
    pub(super) any_part_registered: bool,
    /// Seeded from a snapshot on disk: synced (stale) before any part has
    /// listed; the parts' first lists replace the seeded objects.
    pub(super) seeded: bool,
    pub(super) revision_counter: u64,
    pub(super) locality: Locality,
    /// Pod `kubedisco.io/weight` labels: namespace → Pod name → weight.
    pub(super) pod_weights: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
    /// Which Services each Pod's endpoints belong to, so a label change
    /// re-merges only those. It costs an entry per endpoint, so it is built
    /// when the first Pod weight arrives (most agents never see one) and
    /// kept from then on.
    pub(super) services_by_pod: Option<HashMap<PodKey, PodServices>>,
}

impl Writer {
    pub(super) fn set_pod_weight(
        &mut self,
        pod: PodKey,
        weight: Option<u32>,
        touched: &mut BTreeSet<ServiceKey>,
    ) {
        let (namespace, name) = pod;
        let changed = match weight {
            Some(weight) => {
                let pods = self.pod_weights.entry(namespace.clone()).or_default();
                pods.insert(name.clone(), weight) != Some(weight)
            }
            None => {
                let removed = self
                    .pod_weights
                    .get_mut(&namespace)
                    .and_then(|pods| pods.remove(&name))
                    .is_some();
                if self
                    .pod_weights
                    .get(&namespace)
                    .is_some_and(HashMap::is_empty)
                {
                    self.pod_weights.remove(&namespace);
                }
                removed
            }
        };
        if weight.is_some() && self.services_by_pod.is_none() {
            let mut by_pod = HashMap::new();
            for slice in self.slices.values() {
                if let Some(service) = slice.service_key() {
                    add_pods(&mut by_pod, slice, &service);
                }
            }
            self.services_by_pod = Some(by_pod);
        }
        if changed
            && let Some(services) = self
                .services_by_pod
                .as_ref()
                .and_then(|by_pod| by_pod.get(&(namespace, name)))
        {
            touched.extend(services.keys());
        }
    }

    pub(super) fn insert_service(
        &mut self,
        service: ServiceObject,
        touched: &mut BTreeSet<ServiceKey>,
    ) {
        touched.insert(service.key.clone());
        self.services.insert(service.key.clone(), service);
    }

    pub(super) fn remove_service(&mut self, key: &ServiceKey, touched: &mut BTreeSet<ServiceKey>) {
        if self.services.remove(key).is_some() {
            touched.insert(key.clone());
        }
    }

    pub(super) fn insert_slice(&mut self, slice: SliceObject, touched: &mut BTreeSet<ServiceKey>) {
        // The served views built from the old slice point into it: sharing
        // its unchanged endpoints keeps them from being held twice (by the
        // snapshot and by the writer) when a re-list or an update changed
        // nothing served.
        let slice = match self.slices.get(&slice.key) {
            Some(old) => share_unchanged(old, slice),
            None => slice,
        };
        self.remove_slice(&slice.key, touched);
        if let Some(service) = slice.service_key() {
            let names = self.slices_by_service.entry(service.clone()).or_default();
            if let Err(at) = names.binary_search(&slice.key.name) {
                names.insert(at, slice.key.name.clone());
            }
            if let Some(by_pod) = &mut self.services_by_pod {
                add_pods(by_pod, &slice, &service);
            }
            touched.insert(service);
        }
        self.slices.insert(slice.key.clone(), slice);
    }

    pub(super) fn remove_slice(&mut self, key: &SliceKey, touched: &mut BTreeSet<ServiceKey>) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        if let Some(service) = old.service_key() {
            if let Some(by_pod) = &mut self.services_by_pod {
                for pod in pods_of(&old) {
                    if let Some(services) = by_pod.get_mut(&pod)
                        && services.remove(&service)
                    {
                        by_pod.remove(&pod);
                    }
                }
            }
            if let Some(names) = self.slices_by_service.get_mut(&service) {
                if let Ok(at) = names.binary_search(&key.name) {
                    names.remove(at);
                }
                if names.is_empty() {
                    self.slices_by_service.remove(&service);
                }
            }
            touched.insert(service);
        }
    }

    /// The served view of one Service, or None when it is not served.
    pub(super) fn build(&self, key: &ServiceKey) -> Option<ServedService> {
        let service = self.services.get(key).filter(|s| s.is_served())?;
        let names = self.slices_by_service.get(key);
        let slices = names.into_iter().flatten().filter_map(|name| {
            self.slices.get(&SliceKey {
                namespace: key.namespace.clone(),
                name: name.clone(),
            })
        });
        let pod_weight =
            |namespace: &str, name: &str| self.pod_weights.get(namespace)?.get(name).copied();
        let context = MergeContext {
            locality: &self.locality,
            pod_weight: &pod_weight,
        };
        Some(merge(service, slices, 0, &context))
    }
}

#[cfg(test)]
mod tests {
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::testing::ips;
    use crate::index::{Change, Index, SliceKey};

    #[test]
    fn an_endpoint_moving_between_slices_stays_served() {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(slice("a", "web", 80, vec![endpoint("10.0.0.1")])),
        ]);
        // The controller adds it to b before removing it from a.
        index.apply([Change::ApplySlice(slice(
            "b",
            "web",
            80,
            vec![endpoint("10.0.0.1")],
        ))]);
        assert_eq!(ips(&index, "web"), ["10.0.0.1"]);
        index.apply([Change::DeleteSlice(SliceKey {
            namespace: "ns".into(),
            name: "a".into(),
        })]);
        assert_eq!(ips(&index, "web"), ["10.0.0.1"]);
    }

    #[test]
    fn only_headless_or_exposed_services_are_served() {
        let index = Index::default();
        let mut cluster_ip = service("plain");
        cluster_ip.headless = false;
        let mut exposed = service("exposed");
        exposed.headless = false;
        exposed.exposed = true;
        index.apply([
            Change::ApplyService(cluster_ip),
            Change::ApplyService(exposed),
        ]);
        assert!(index.load().get("ns", "plain").is_none());
        assert!(index.load().get("ns", "exposed").is_some());
    }
}
