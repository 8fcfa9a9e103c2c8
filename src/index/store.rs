//! The index's handle: what sources call to write and front ends call to
//! read.
//!
//! Sources call [`Index::apply`] and [`Index::replace`]; both run under one
//! writer lock that readers never take. Every call ends by publishing a new
//! [`Snapshot`] through an [`ArcSwap`]: readers load the current one without
//! locking, and a snapshot never changes once published. Its maps are
//! copy-on-write by shard (`ShardedMap`): a new snapshot shares every
//! shard it did not change, so publishing costs O(changed Services), not
//! O(all Services).
//!
//! A re-list arrives as one [`Index::replace`] with everything the API server
//! listed; the new state is computed aside and swapped in whole, so readers
//! never see a half-listed index.
//!
//! Owns the lock, the published pointer, the sync signals and the gauges.
//! The rules live beside it: what the writer holds (`writer`), how a
//! snapshot is built (`publish`), re-list sharing (`share`); this file only
//! sequences them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::change::{Change, Contents, PodKey, Scope, Slices};
use super::notify::Notifier;
use super::objects::{ServiceKey, ServiceObject, SliceKey, SliceObject};
use super::share::share_unchanged;
use super::topology::Locality;
use super::view::Snapshot;
use super::writer::Writer;

/// Gauges and counters the index keeps current. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct IndexGauges {
    pub services: Gauge,
    pub endpoints: Gauge,
    pub synced: Gauge,
    pub revisions: Counter,
    pub last_sync_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// The shared index handle: sources write, front ends read.
pub struct Index {
    pub(super) snapshot: ArcSwap<Snapshot>,
    pub(super) writer: Mutex<Writer>,
    pub(super) notifier: Notifier,
    pub(super) gauges: IndexGauges,
    /// Flips to true once; lets `/readyz` and startup code wait for sync.
    pub(super) synced_tx: watch::Sender<bool>,
    /// Flips to true once every declared part has listed (a seeded index is
    /// synced before that).
    pub(super) listed_tx: watch::Sender<bool>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new(IndexGauges::default())
    }
}

impl Index {
    pub(crate) fn new(gauges: IndexGauges) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            writer: Mutex::new(Writer::default()),
            notifier: Notifier::default(),
            gauges,
            synced_tx: watch::channel(false).0,
            listed_tx: watch::channel(false).0,
        }
    }

    /// The current snapshot. Lock-free; hold it only as long as one answer.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Resolves once the index has completed its first full sync.
    pub(crate) async fn wait_synced(&self) {
        let mut rx = self.synced_tx.subscribe();
        // The sender lives in self, so this cannot fail while we are borrowed.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Declares source parts that must each list once before the index is
    /// synced. Call before the sources start.
    pub fn expect_parts<I, S>(&self, parts: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut writer = self.lock_writer();
        writer.any_part_registered = true;
        writer
            .unsynced_parts
            .extend(parts.into_iter().map(Into::into));
    }

    /// Applies incremental changes and publishes one snapshot.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        let mut writer = self.lock_writer();
        let mut touched = BTreeSet::new();
        for change in changes {
            match change {
                Change::ApplyService(service) => writer.insert_service(service, &mut touched),
                Change::DeleteService(key) => writer.remove_service(&key, &mut touched),
                Change::ApplySlice(slice) => writer.insert_slice(slice, &mut touched),
                Change::DeleteSlice(key) => writer.remove_slice(&key, &mut touched),
                Change::DeleteSliceOf(key, side) => {
                    if writer.slices.get(&key).is_some_and(|old| side.covers(old)) {
                        writer.remove_slice(&key, &mut touched)
                    }
                }
                Change::SetPodWeight(pod, weight) => {
                    writer.set_pod_weight(pod, weight, &mut touched)
                }
            }
        }
        self.publish(&mut writer, touched);
    }

    /// Replaces every Service and/or slice in `scope` with the given lists (a
    /// re-list or a manifest reload) and marks `part` as synced. `None` leaves
    /// that kind untouched.
    pub fn replace(
        &self,
        scope: &Scope,
        services: Option<Vec<ServiceObject>>,
        slices: Option<Vec<SliceObject>>,
        part: &str,
    ) {
        self.replace_selected(scope, services, slices, Slices::All, part);
    }

    /// As [`Index::replace`] with slices, for a watch of one `side` of the
    /// slices: the slices in `scope` on that side are replaced, the other
    /// side's are left alone.
    pub fn replace_slices(
        &self,
        scope: &Scope,
        side: Slices,
        slices: Vec<SliceObject>,
        part: &str,
    ) {
        self.replace_selected(scope, None, Some(slices), side, part);
    }

    fn replace_selected(
        &self,
        scope: &Scope,
        services: Option<Vec<ServiceObject>>,
        slices: Option<Vec<SliceObject>>,
        side: Slices,
        part: &str,
    ) {
        let mut writer = self.lock_writer();
        let mut touched = BTreeSet::new();
        if let Some(services) = services {
            let stale: Vec<ServiceKey> = writer
                .services
                .keys()
                .filter(|key| scope.covers(&key.namespace))
                .cloned()
                .collect();
            for key in &stale {
                writer.remove_service(key, &mut touched);
            }
            for service in services {
                writer.insert_service(service, &mut touched);
            }
        }
        if let Some(slices) = slices {
            // Listed slices replace their old selves one by one (sharing
            // what did not change, see `insert_slice`); only the rest go
            // first.
            let listed: HashSet<&SliceKey> = slices.iter().map(|slice| &slice.key).collect();
            let stale: Vec<SliceKey> = writer
                .slices
                .iter()
                .filter(|(key, old)| {
                    scope.covers(&key.namespace) && side.covers(old) && !listed.contains(key)
                })
                .map(|(key, _)| key.clone())
                .collect();
            drop(listed);
            for key in &stale {
                writer.remove_slice(key, &mut touched);
            }
            for slice in slices {
                writer.insert_slice(slice, &mut touched);
            }
        }
        self.listed(&mut writer, part);
        self.publish(&mut writer, touched);
    }

    /// A slice of a list in progress, with what the index holds of it
    /// unchanged taken from the index (see [`share_unchanged`]). A source
    /// buffers a whole list before [`Index::replace`] swaps it in; so
    /// buffered, the list costs a pointer per unchanged endpoint while the
    /// old state is still served, not a second copy of everything.
    pub fn share_listed(&self, slice: SliceObject) -> SliceObject {
        let writer = self.lock_writer();
        match writer.slices.get(&slice.key) {
            Some(old) => share_unchanged(old, slice),
            None => slice,
        }
    }

    /// Where this agent runs: changes every Service's tiers, so all are
    /// merged again.
    pub(crate) fn set_locality(&self, locality: Locality) {
        let mut writer = self.lock_writer();
        writer.locality = locality;
        let touched: BTreeSet<ServiceKey> = writer.services.keys().cloned().collect();
        self.publish(&mut writer, touched);
    }

    /// `part` has listed (once more): it counts for sync, and the time is
    /// the last sync.
    fn listed(&self, writer: &mut Writer, part: &str) {
        writer.unsynced_parts.remove(part);
        self.gauges.last_sync_timestamp.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }

    /// Replaces every Pod weight in `scope` (a re-list of weighted Pods).
    pub(crate) fn replace_pod_weights(
        &self,
        scope: &Scope,
        weights: Vec<(PodKey, u32)>,
        part: &str,
    ) {
        let mut writer = self.lock_writer();
        let mut touched = BTreeSet::new();
        let stale: Vec<PodKey> = writer
            .pod_weights
            .iter()
            .filter(|(namespace, _)| scope.covers(namespace))
            .flat_map(|(namespace, pods)| pods.keys().map(|name| (namespace.clone(), name.clone())))
            .collect();
        let fresh: HashMap<PodKey, u32> = weights.into_iter().collect();
        for pod in stale {
            if !fresh.contains_key(&pod) {
                writer.set_pod_weight(pod, None, &mut touched);
            }
        }
        for (pod, weight) in fresh {
            writer.set_pod_weight(pod, Some(weight), &mut touched);
        }
        writer.unsynced_parts.remove(part);
        self.publish(&mut writer, touched);
    }

    /// A copy of every object the writer holds, for a snapshot on disk.
    pub fn export(&self) -> Contents {
        let writer = self.lock_writer();
        Contents {
            services: writer.services.values().cloned().collect(),
            slices: writer.slices.values().cloned().collect(),
            pod_weights: writer
                .pod_weights
                .iter()
                .flat_map(|(namespace, pods)| {
                    pods.iter()
                        .map(|(name, weight)| ((namespace.clone(), name.clone()), *weight))
                })
                .collect(),
            generation: writer.revision_counter,
        }
    }

    /// Loads a snapshot from disk before the sources start: the objects go
    /// through the usual merge rules and the index is synced at once. The
    /// parts declared later still list; each first list replaces what the
    /// snapshot held in its scope, as a re-list does.
    pub(crate) fn seed(&self, contents: Contents) {
        let mut writer = self.lock_writer();
        let mut touched = BTreeSet::new();
        writer.seeded = true;
        writer.revision_counter = writer.revision_counter.max(contents.generation);
        for (pod, weight) in contents.pod_weights {
            writer.set_pod_weight(pod, Some(weight), &mut touched);
        }
        for service in contents.services {
            writer.insert_service(service, &mut touched);
        }
        for slice in contents.slices {
            writer.insert_slice(slice, &mut touched);
        }
        self.publish(&mut writer, touched);
    }

    /// Resolves once every declared part has listed at least once (for a
    /// seeded index, when nothing of the snapshot is served any more
    /// unchecked).
    pub(crate) async fn wait_listed(&self) {
        let mut rx = self.listed_tx.subscribe();
        let _ = rx.wait_for(|listed| *listed).await;
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while writing cannot leave a half-published snapshot (the
        // swap is the last step), so the writer state is still usable.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::testing::ips;

    #[test]
    fn replace_swaps_in_the_new_state_at_once_and_marks_sync() {
        let index = Index::default();
        index.expect_parts(["services", "slices"]);
        index.replace(&Scope::All, Some(vec![service("web")]), None, "services");
        assert!(!index.load().synced);
        index.replace(
            &Scope::All,
            None,
            Some(vec![slice("a", "web", 80, vec![endpoint("10.0.0.1")])]),
            "slices",
        );
        assert!(index.load().synced);
        let before = index.load().get("ns", "web").unwrap().revision;
        // A re-list with the same content changes nothing readers can see.
        index.replace(
            &Scope::All,
            None,
            Some(vec![slice("a", "web", 80, vec![endpoint("10.0.0.1")])]),
            "slices",
        );
        assert_eq!(index.load().get("ns", "web").unwrap().revision, before);
        // A re-list that lost a slice removes its endpoints.
        index.replace(&Scope::All, None, Some(vec![]), "slices");
        assert!(ips(&index, "web").is_empty());
    }

    #[test]
    fn replace_in_one_namespace_leaves_others_alone() {
        let index = Index::default();
        let mut other = service("web");
        other.key = ServiceKey::new("other", "web");
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplyService(other),
        ]);
        index.replace(
            &Scope::Namespace("ns".into()),
            Some(vec![]),
            None,
            "services/ns",
        );
        assert!(index.load().get("ns", "web").is_none());
        assert!(index.load().get("other", "web").is_some());
    }

    /// The slice watches of `--watch-slices served`: each side's re-list
    /// replaces its own slices only, and a slice that moved to the other
    /// side is not deleted by its old side's late DELETED event.
    #[test]
    fn each_side_of_the_slices_replaces_only_its_own() {
        let index = Index::default();
        let side = |name: &str, ip: &str, headless: bool| {
            let mut s = slice(name, "web", 80, vec![endpoint(ip)]);
            s.headless_label = headless;
            s
        };
        index.apply([Change::ApplyService(service("web"))]);
        let headless = || vec![side("h", "10.0.0.1", true)];
        let exposed = || vec![side("e", "10.0.0.2", false)];
        index.replace_slices(&Scope::All, Slices::Headless, headless(), "h");
        index.replace_slices(&Scope::All, Slices::NotHeadless, exposed(), "e");
        assert_eq!(ips(&index, "web"), ["10.0.0.1", "10.0.0.2"]);
        index.replace_slices(&Scope::All, Slices::Headless, headless(), "h");
        assert_eq!(ips(&index, "web"), ["10.0.0.1", "10.0.0.2"]);
        index.replace_slices(&Scope::All, Slices::NotHeadless, vec![], "e");
        assert_eq!(ips(&index, "web"), ["10.0.0.1"]);

        // "h" loses its label: the other side's ADDED comes first.
        index.apply([Change::ApplySlice(side("h", "10.0.0.3", false))]);
        let key = SliceKey {
            namespace: "ns".into(),
            name: "h".into(),
        };
        index.apply([Change::DeleteSliceOf(key.clone(), Slices::Headless)]);
        assert_eq!(ips(&index, "web"), ["10.0.0.3"]);
        index.apply([Change::DeleteSliceOf(key, Slices::NotHeadless)]);
        assert!(ips(&index, "web").is_empty());
    }

    #[test]
    fn locality_tiers_endpoints() {
        use crate::index::topology::DefaultTopology;
        let index = Index::default();
        let mut here = endpoint("10.0.0.1");
        here.zone = Some("zone-a".into());
        let mut there = endpoint("10.0.0.2");
        there.zone = Some("zone-b".into());
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(slice("a", "web", 80, vec![here, there])),
        ]);
        let before = index.load().get("ns", "web").unwrap().revision;
        index.set_locality(Locality {
            zone: Some("zone-a".into()),
            default_topology: DefaultTopology::Zone,
            ..Locality::default()
        });
        let snapshot = index.load();
        let web = snapshot.get("ns", "web").unwrap();
        let priorities: Vec<u32> = web.endpoints.iter().map(|e| e.priority).collect();
        assert_eq!(priorities, [0, 1]);
        assert!(web.revision > before);
    }
}
