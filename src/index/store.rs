//! The writer side of the index and the snapshots it publishes.
//!
//! Sources call [`Index::apply`] and [`Index::replace`]; both run under one
//! writer lock that readers never take. Every call ends by publishing a new
//! [`Snapshot`] through an [`ArcSwap`]: readers load the current one without
//! locking, and a snapshot never changes once published. Its maps are
//! copy-on-write by shard ([`ShardedMap`]): a new snapshot shares every
//! shard it did not change, so publishing costs O(changed Services), not
//! O(all Services).
//!
//! A re-list arrives as one [`Index::replace`] with everything the API server
//! listed; the new state is computed aside and swapped in whole, so readers
//! never see a half-listed index.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::merge::{Endpoint, MergeContext, ServedService, merge};
use super::notify::Notifier;
use super::objects::{ServiceKey, ServiceObject, SliceEndpoint, SliceKey, SliceObject};
use super::sharded::ShardedMap;
use crate::balance::topology::Locality;

/// Deleted Services remembered for blocking queries; see [`Snapshot::tombstones`].
const MAX_TOMBSTONES: usize = 65_536;

/// What readers see: every served Service, as of one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: ShardedMap<ServiceKey, Arc<ServedService>>,
    /// True once every source part has listed its objects at least once.
    /// Before that, absence of a Service means "not known yet".
    pub synced: bool,
    /// The latest revision handed out to any Service.
    pub generation: u64,
    /// Usable endpoints over all Services.
    pub endpoint_count: usize,
    /// The revision at which each recently deleted Service went away, so a
    /// blocking query from before the deletion returns at once.
    pub tombstones: ShardedMap<ServiceKey, u64>,
    /// The same Services keyed `"<name>.<namespace>"`, the order DNS names
    /// use, so the DNS path looks a Service up from the query's bytes
    /// without building a key.
    pub by_dns_name: ShardedMap<Arc<str>, Arc<ServedService>>,
    /// Usable endpoint addresses → the Services serving them (for PTR).
    pub by_ip: AddressIndex,
}

/// Endpoint addresses → the Services serving them, IPv4 and IPv6 apart so
/// an IPv4 key takes 4 bytes, not the 17 of an `IpAddr`.
#[derive(Clone, Debug, Default)]
pub struct AddressIndex {
    v4: ShardedMap<Ipv4Addr, AddressOwners>,
    v6: ShardedMap<Ipv6Addr, AddressOwners>,
}

impl AddressIndex {
    pub fn get(&self, ip: &IpAddr) -> Option<&AddressOwners> {
        match ip {
            IpAddr::V4(ip) => self.v4.get(ip),
            IpAddr::V6(ip) => self.v6.get(ip),
        }
    }

    fn insert(&mut self, ip: IpAddr, owners: AddressOwners) {
        match ip {
            IpAddr::V4(ip) => self.v4.insert(ip, owners),
            IpAddr::V6(ip) => self.v6.insert(ip, owners),
        };
    }

    fn remove(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(ip) => self.v4.remove(ip),
            IpAddr::V6(ip) => self.v6.remove(ip),
        };
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The Services an endpoint address belongs to: nearly always one, which
/// then costs no allocation of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressOwners {
    One(ServiceKey),
    /// Sorted, two or more.
    Many(Arc<[ServiceKey]>),
}

impl AddressOwners {
    pub fn keys(&self) -> &[ServiceKey] {
        match self {
            AddressOwners::One(key) => std::slice::from_ref(key),
            AddressOwners::Many(keys) => keys,
        }
    }

    fn from_keys(mut keys: Vec<ServiceKey>) -> Option<Self> {
        match keys.len() {
            0 => None,
            1 => keys.pop().map(AddressOwners::One),
            _ => {
                keys.sort();
                Some(AddressOwners::Many(keys.into()))
            }
        }
    }
}

impl Snapshot {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<ServedService>> {
        self.services.get(&ServiceKey::new(namespace, name))
    }

    /// The revision of a Service's current state, served or not: its
    /// revision, else the revision that deleted it, else 0.
    pub fn revision_of(&self, key: &ServiceKey) -> u64 {
        match self.services.get(key) {
            Some(service) => service.revision,
            None => self.tombstones.get(key).copied().unwrap_or(0),
        }
    }

    /// Services ordered by namespace, then name.
    pub fn sorted(&self) -> Vec<&Arc<ServedService>> {
        let mut services: Vec<_> = self.services.values().collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        services
    }
}

/// One incremental change from a source.
#[derive(Clone, Debug)]
pub enum Change {
    ApplyService(ServiceObject),
    DeleteService(ServiceKey),
    ApplySlice(SliceObject),
    DeleteSlice(SliceKey),
    /// A Pod's `kubedisco.io/weight` label: Some(weight), or None when the
    /// label (or the Pod) is gone or invalid.
    SetPodWeight(PodKey, Option<u32>),
}

/// Which objects a [`Index::replace`] covers: everything a source owns, or
/// one namespace when the agent watches namespaces one by one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(Arc<str>),
}

impl Scope {
    fn covers(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(ns) => &**ns == namespace,
        }
    }
}

/// Gauges and counters the index keeps current. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct IndexGauges {
    pub services: Gauge,
    pub endpoints: Gauge,
    pub synced: Gauge,
    pub revisions: Counter,
    pub last_sync_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct Writer {
    services: HashMap<ServiceKey, ServiceObject>,
    slices: HashMap<SliceKey, SliceObject>,
    /// The names of each Service's slices, sorted. (A Vec: most Services
    /// have one slice, and a set would allocate a node of eleven.)
    slices_by_service: HashMap<ServiceKey, Vec<Arc<str>>>,
    /// Source parts (e.g. "services", "endpointslices/shop") that have not
    /// completed their first list yet.
    unsynced_parts: HashSet<String>,
    any_part_registered: bool,
    /// Seeded from a snapshot on disk: synced (stale) before any part has
    /// listed; the parts' first lists replace the seeded objects.
    seeded: bool,
    revision_counter: u64,
    locality: Locality,
    /// Pod `kubedisco.io/weight` labels: namespace → Pod name → weight.
    pod_weights: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
    /// Which Services each Pod's endpoints belong to, so a label change
    /// re-merges only those. It costs an entry per endpoint, so it is built
    /// when the first Pod weight arrives (most agents never see one) and
    /// kept from then on.
    services_by_pod: Option<HashMap<PodKey, PodServices>>,
}

/// A Pod's identity (namespace, name).
pub type PodKey = (Arc<str>, Arc<str>);

/// The Services whose slices list a Pod, each with the number of slices
/// that do: nearly always one Service, stored without a map of its own.
#[derive(Debug)]
enum PodServices {
    One(ServiceKey, u32),
    Many(HashMap<ServiceKey, u32>),
}

impl PodServices {
    fn add(&mut self, service: &ServiceKey) {
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
    fn remove(&mut self, service: &ServiceKey) -> bool {
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

    fn keys(&self) -> Vec<ServiceKey> {
        match self {
            PodServices::One(key, _) => vec![key.clone()],
            PodServices::Many(counts) => counts.keys().cloned().collect(),
        }
    }
}

fn add_pods(by_pod: &mut HashMap<PodKey, PodServices>, slice: &SliceObject, service: &ServiceKey) {
    for pod in pods_of(slice) {
        match by_pod.get_mut(&pod) {
            Some(services) => services.add(service),
            None => {
                by_pod.insert(pod, PodServices::One(service.clone(), 1));
            }
        }
    }
}

fn pods_of(slice: &SliceObject) -> impl Iterator<Item = PodKey> + '_ {
    slice.endpoints.iter().filter_map(|endpoint| {
        let target = endpoint.target_ref.as_ref().filter(|t| &*t.kind == "Pod")?;
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| slice.key.namespace.clone());
        Some((namespace, target.name.clone()))
    })
}

impl Writer {
    fn set_pod_weight(
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

    fn insert_service(&mut self, service: ServiceObject, touched: &mut BTreeSet<ServiceKey>) {
        touched.insert(service.key.clone());
        self.services.insert(service.key.clone(), service);
    }

    fn remove_service(&mut self, key: &ServiceKey, touched: &mut BTreeSet<ServiceKey>) {
        if self.services.remove(key).is_some() {
            touched.insert(key.clone());
        }
    }

    fn insert_slice(&mut self, slice: SliceObject, touched: &mut BTreeSet<ServiceKey>) {
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

    fn remove_slice(&mut self, key: &SliceKey, touched: &mut BTreeSet<ServiceKey>) {
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
    fn build(&self, key: &ServiceKey) -> Option<ServedService> {
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

/// `new` with every endpoint that `old` (the same slice, as the index
/// holds it) has unchanged taken from `old`: one pointer each instead of a
/// second copy. An unchanged slice is `old` itself.
fn share_unchanged(old: &SliceObject, mut new: SliceObject) -> SliceObject {
    if *old == new {
        return old.clone();
    }
    // Endpoints mostly keep their place; when they do not, by address.
    let mut by_address: Option<HashMap<IpAddr, &Arc<SliceEndpoint>>> = None;
    for (at, endpoint) in new.endpoints.iter_mut().enumerate() {
        let same = match old.endpoints.get(at) {
            Some(there) if there == endpoint => Some(there),
            _ => by_address
                .get_or_insert_with(|| old.endpoints.iter().map(|e| (e.address, e)).collect())
                .get(&endpoint.address)
                .copied()
                .filter(|there| *there == endpoint),
        };
        if let Some(same) = same {
            *endpoint = same.clone();
        }
    }
    new.key = old.key.clone();
    new
}

fn dns_name(key: &ServiceKey) -> Arc<str> {
    format!("{}.{}", key.name, key.namespace).into()
}

/// Updates the address map for one Service, touching only the addresses
/// that came or went: a weight change in a 10 000-endpoint Service moves
/// no address and costs nothing here.
fn reindex_addresses(
    by_ip: &mut AddressIndex,
    key: &ServiceKey,
    old: Option<&ServedService>,
    new: Option<&ServedService>,
) {
    let addresses = |service: Option<&ServedService>| -> HashSet<IpAddr> {
        service
            .map(|s| s.endpoints.iter().map(Endpoint::ip).collect())
            .unwrap_or_default()
    };
    let (before, after) = (addresses(old), addresses(new));
    for ip in before.difference(&after) {
        let Some(owners) = by_ip.get(ip) else {
            continue;
        };
        let rest: Vec<ServiceKey> = owners
            .keys()
            .iter()
            .filter(|k| *k != key)
            .cloned()
            .collect();
        match AddressOwners::from_keys(rest) {
            Some(owners) => by_ip.insert(*ip, owners),
            None => by_ip.remove(ip),
        }
    }
    for ip in after.difference(&before) {
        let mut keys: Vec<ServiceKey> = by_ip
            .get(ip)
            .map(|owners| owners.keys().to_vec())
            .unwrap_or_default();
        if !keys.contains(key) {
            keys.push(key.clone());
            if let Some(owners) = AddressOwners::from_keys(keys) {
                by_ip.insert(*ip, owners);
            }
        }
    }
}

/// The shared index handle: sources write, front ends read.
pub struct Index {
    snapshot: ArcSwap<Snapshot>,
    writer: Mutex<Writer>,
    notifier: Notifier,
    gauges: IndexGauges,
    /// Flips to true once; lets `/readyz` and startup code wait for sync.
    synced_tx: watch::Sender<bool>,
    /// Flips to true once every declared part has listed (a seeded index is
    /// synced before that).
    listed_tx: watch::Sender<bool>,
}

/// Everything the writer side holds: what a snapshot on disk saves, and
/// what [`Index::seed`] loads back (see `crate::warmstart`).
#[derive(Clone, Debug, Default)]
pub struct Contents {
    pub services: Vec<ServiceObject>,
    pub slices: Vec<SliceObject>,
    pub pod_weights: Vec<(PodKey, u32)>,
    /// The revision counter when exported; a seeded index continues above
    /// it, so revisions keep growing across a restart.
    pub generation: u64,
}

impl Default for Index {
    fn default() -> Self {
        Self::new(IndexGauges::default())
    }
}

impl Index {
    pub fn new(gauges: IndexGauges) -> Self {
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

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Resolves once the index has completed its first full sync.
    pub async fn wait_synced(&self) {
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
                .keys()
                .filter(|key| scope.covers(&key.namespace) && !listed.contains(key))
                .cloned()
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
    pub fn set_locality(&self, locality: Locality) {
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
    pub fn replace_pod_weights(&self, scope: &Scope, weights: Vec<(PodKey, u32)>, part: &str) {
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
    pub fn seed(&self, contents: Contents) {
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
    pub async fn wait_listed(&self) {
        let mut rx = self.listed_tx.subscribe();
        let _ = rx.wait_for(|listed| *listed).await;
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while writing cannot leave a half-published snapshot (the
        // swap is the last step), so the writer state is still usable.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, writer: &mut Writer, touched: BTreeSet<ServiceKey>) {
        let current = self.snapshot.load();
        let mut services = current.services.clone();
        let mut endpoint_count = current.endpoint_count;
        let mut tombstones = current.tombstones.clone();
        let mut by_dns_name = current.by_dns_name.clone();
        let mut by_ip = current.by_ip.clone();
        let mut changed: Vec<(ServiceKey, u64)> = Vec::new();
        // Debug-only data (unusable endpoints) changed without a revision.
        let mut quietly_modified = false;
        for key in touched {
            let old = services.get(&key).cloned();
            let new = match (&old, writer.build(&key)) {
                (Some(old), Some(mut new)) => {
                    if old.same_served_state(&new) {
                        if old.unusable != new.unusable {
                            new.revision = old.revision;
                            let new = Arc::new(new);
                            services.insert(key.clone(), new.clone());
                            by_dns_name.insert(dns_name(&key), new);
                            quietly_modified = true;
                        }
                        continue;
                    }
                    Some(new)
                }
                (_, new) => new,
            };
            if let Some(old) = &old {
                endpoint_count -= old.endpoints.len();
            }
            reindex_addresses(&mut by_ip, &key, old.as_deref(), new.as_ref());
            writer.revision_counter += 1;
            changed.push((key.clone(), writer.revision_counter));
            match new {
                Some(mut new) => {
                    tombstones.remove(&key);
                    new.revision = writer.revision_counter;
                    endpoint_count += new.endpoints.len();
                    let new = Arc::new(new);
                    by_dns_name.insert(dns_name(&key), new.clone());
                    services.insert(key, new);
                }
                None if old.is_some() => {
                    services.remove(&key);
                    by_dns_name.remove(&*dns_name(&key));
                    if tombstones.len() >= MAX_TOMBSTONES {
                        // Forgetting only makes an old waiter wait its full
                        // `wait` instead of returning early: bounded memory
                        // is worth more.
                        tombstones.clear();
                    }
                    tombstones.insert(key, writer.revision_counter);
                }
                None => {
                    // Neither served before nor now: nothing changed.
                    writer.revision_counter -= 1;
                    changed.pop();
                }
            }
        }
        let listed = writer.any_part_registered && writer.unsynced_parts.is_empty();
        if listed {
            self.listed_tx
                .send_if_modified(|l| !std::mem::replace(l, true));
        }
        let synced = writer.seeded || listed;
        if changed.is_empty() && !quietly_modified && synced == current.synced {
            return;
        }
        self.gauges.services.set(services.len() as i64);
        self.gauges.endpoints.set(endpoint_count as i64);
        self.gauges.synced.set(i64::from(synced));
        self.gauges.revisions.inc_by(changed.len() as u64);
        self.snapshot.store(Arc::new(Snapshot {
            services,
            synced,
            generation: writer.revision_counter,
            endpoint_count,
            tombstones,
            by_dns_name,
            by_ip,
        }));
        self.notifier
            .notify(changed.iter().map(|(key, revision)| (key, *revision)));
        if synced {
            self.synced_tx
                .send_if_modified(|s| !std::mem::replace(s, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::merge::tests::{endpoint, service, slice};

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("ns", name)
    }

    fn ips(index: &Index, name: &str) -> Vec<String> {
        index
            .load()
            .get("ns", name)
            .map(|s| s.endpoints.iter().map(|e| e.ip().to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn revision_changes_exactly_when_served_state_changes() {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(slice("a", "web", 80, vec![endpoint("10.0.0.1")])),
        ]);
        let first = index.load().get("ns", "web").unwrap().revision;
        // The same slice again: nothing served changed.
        index.apply([Change::ApplySlice(slice(
            "a",
            "web",
            80,
            vec![endpoint("10.0.0.1")],
        ))]);
        assert_eq!(index.load().get("ns", "web").unwrap().revision, first);
        // A not-ready endpoint is not served: still the same revision.
        let mut not_ready = endpoint("10.0.0.9");
        not_ready.ready = false;
        index.apply([Change::ApplySlice(slice(
            "a",
            "web",
            80,
            vec![endpoint("10.0.0.1"), not_ready],
        ))]);
        let snapshot = index.load();
        let web = snapshot.get("ns", "web").unwrap();
        assert_eq!(web.revision, first);
        assert_eq!(web.unusable.len(), 1);
        // A new ready endpoint is.
        index.apply([Change::ApplySlice(slice(
            "a",
            "web",
            80,
            vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
        ))]);
        assert!(index.load().get("ns", "web").unwrap().revision > first);
    }

    #[test]
    fn revisions_grow_across_delete_and_recreate() {
        let index = Index::default();
        index.apply([Change::ApplyService(service("web"))]);
        let first = index.load().get("ns", "web").unwrap().revision;
        index.apply([Change::DeleteService(key("web"))]);
        let snapshot = index.load();
        assert!(snapshot.get("ns", "web").is_none());
        let deleted_at = snapshot.revision_of(&key("web"));
        assert!(deleted_at > first);
        index.apply([Change::ApplyService(service("web"))]);
        assert!(index.load().get("ns", "web").unwrap().revision > deleted_at);
        assert!(index.load().get("ns", "web").unwrap().revision > first);
    }

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

    /// An index serving `ns/web` from one slice `a` of `endpoints`.
    fn serving_web(endpoints: Vec<crate::index::objects::SliceEndpoint>) -> Index {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(slice("a", "web", 80, endpoints)),
        ]);
        index
    }

    /// Every served endpoint of `name` is the writer's entry itself, not an
    /// equal copy of it.
    fn served_and_held_are_shared(index: &Index, name: &str) -> bool {
        let snapshot = index.load();
        let served = &snapshot.get("ns", name).unwrap().endpoints;
        let contents = index.export();
        served.iter().all(|endpoint| {
            contents
                .slices
                .iter()
                .flat_map(|slice| &slice.endpoints)
                .any(|held| Arc::ptr_eq(held, &endpoint.listed))
        })
    }

    #[test]
    fn a_listed_unchanged_slice_is_the_held_one_and_costs_no_second_copy() {
        let endpoints = || vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")];
        let index = serving_web(endpoints());
        let before = index.load().get("ns", "web").unwrap().clone();
        // A re-list decodes a fresh copy; buffered, it is the held one.
        let listed = index.share_listed(slice("a", "web", 80, endpoints()));
        for (listed, served) in listed.endpoints.iter().zip(&before.endpoints) {
            assert!(Arc::ptr_eq(listed, &served.listed));
        }
        let held_name = index.export().slices[0].key.name.clone();
        assert!(Arc::ptr_eq(&listed.key.name, &held_name));
        index.replace(&Scope::All, None, Some(vec![listed]), "slices");
        let after = index.load().get("ns", "web").unwrap().clone();
        assert_eq!(after.revision, before.revision);
        assert!(served_and_held_are_shared(&index, "web"));
    }

    /// Without the buffer sharing (a manifest reload, a watch update), the
    /// swap itself shares: the snapshot keeps its old served view when
    /// nothing served changed, so the writer must keep the same entries.
    #[test]
    fn an_unchanged_replace_or_update_leaves_one_copy_of_each_endpoint() {
        let endpoints = || vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")];
        let index = serving_web(endpoints());
        let relisted = slice("a", "web", 80, endpoints());
        index.replace(&Scope::All, None, Some(vec![relisted]), "slices");
        assert!(served_and_held_are_shared(&index, "web"));
        // An update that changes nothing the index keeps (a label, the
        // resourceVersion).
        index.apply([Change::ApplySlice(slice("a", "web", 80, endpoints()))]);
        assert!(served_and_held_are_shared(&index, "web"));
    }

    #[test]
    fn a_changed_slice_shares_its_unchanged_endpoints_wherever_they_moved() {
        let three = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
        let index = serving_web(three.into_iter().map(endpoint).collect());
        let held = index.export().slices[0].endpoints.clone();
        let mut changed = endpoint("10.0.0.2");
        changed.ready = false;
        // Reordered, one changed, one new.
        let reordered = vec![
            endpoint("10.0.0.3"),
            changed.clone(),
            endpoint("10.0.0.1"),
            endpoint("10.0.0.4"),
        ];
        let listed = index.share_listed(slice("a", "web", 80, reordered));
        assert!(Arc::ptr_eq(&listed.endpoints[0], &held[2]));
        assert!(!Arc::ptr_eq(&listed.endpoints[1], &held[1]));
        assert_eq!(*listed.endpoints[1], changed);
        assert!(Arc::ptr_eq(&listed.endpoints[2], &held[0]));
        assert_eq!(listed.endpoints[3].address.to_string(), "10.0.0.4");
        index.replace(&Scope::All, None, Some(vec![listed]), "slices");
        assert_eq!(ips(&index, "web"), ["10.0.0.1", "10.0.0.3", "10.0.0.4"]);
        assert!(served_and_held_are_shared(&index, "web"));
    }

    #[test]
    fn a_relist_still_drops_what_was_not_listed() {
        let index = serving_web(vec![endpoint("10.0.0.1")]);
        let other = slice("b", "web", 80, vec![endpoint("10.0.0.2")]);
        index.apply([Change::ApplySlice(other)]);
        let listed = index.share_listed(slice("a", "web", 80, vec![endpoint("10.0.0.1")]));
        index.replace(&Scope::All, None, Some(vec![listed]), "slices");
        assert_eq!(ips(&index, "web"), ["10.0.0.1"]);
        assert_eq!(index.export().slices.len(), 1);
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

    #[test]
    fn dns_and_address_maps_follow_the_services() {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplyService(service("api")),
            Change::ApplySlice(slice("a", "web", 80, vec![endpoint("10.0.0.1")])),
            Change::ApplySlice(slice("b", "api", 80, vec![endpoint("10.0.0.1")])),
        ]);
        let snapshot = index.load();
        assert!(snapshot.by_dns_name.contains_key("web.ns"));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            snapshot.by_ip.get(&ip).unwrap().keys(),
            &[key("api"), key("web")]
        );
        index.apply([Change::DeleteService(key("web"))]);
        let snapshot = index.load();
        assert!(!snapshot.by_dns_name.contains_key("web.ns"));
        assert_eq!(
            snapshot.by_ip.get(&ip),
            Some(&AddressOwners::One(key("api")))
        );
        index.apply([Change::DeleteSlice(SliceKey {
            namespace: "ns".into(),
            name: "b".into(),
        })]);
        assert!(index.load().by_ip.get(&ip).is_none());
    }

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

    #[test]
    fn locality_tiers_endpoints() {
        use crate::balance::topology::DefaultTopology;
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

    #[test]
    fn endpoint_count_tracks_usable_endpoints() {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(slice(
                "a",
                "web",
                80,
                vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
            )),
        ]);
        assert_eq!(index.load().endpoint_count, 2);
        index.apply([Change::DeleteService(key("web"))]);
        assert_eq!(index.load().endpoint_count, 0);
    }
}
