//! How one Service's EndpointSlices become the endpoints the agent serves.
//!
//! The rules follow kube-proxy's endpointslicecache, the reference consumer:
//!
//! - every slice labelled with the Service's name counts, never just one;
//! - an endpoint is its first address; the same address may sit in two
//!   slices while the controller moves it, so addresses are merged and each
//!   (port name, protocol) is kept once; when the copies disagree, the one in
//!   the better state (ready, then serving) wins, so a move never makes an
//!   endpoint flap to not-ready;
//! - ready endpoints are served; only when none is ready are the serving and
//!   terminating ones served instead (KEP-1669);
//! - `publishNotReadyAddresses` makes every endpoint usable.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::objects::{
    Protocol, Resilience, ServiceKey, ServiceObject, ServicePort, SliceEndpoint, SliceObject,
    TargetRef,
};
use super::topology::{Locality, TierInput, assign_priorities};

/// What merging needs besides the Service and its slices.
pub(crate) struct MergeContext<'a> {
    pub(crate) locality: &'a Locality,
    /// The `kubedisco.io/weight` label of the Pod behind an endpoint.
    pub(crate) pod_weight: &'a dyn Fn(&str, &str) -> Option<u32>,
}

#[cfg(test)]
impl MergeContext<'_> {
    /// No topology, no Pod weights.
    pub(crate) fn plain() -> MergeContext<'static> {
        static LOCALITY: std::sync::OnceLock<Locality> = std::sync::OnceLock::new();
        MergeContext {
            locality: LOCALITY.get_or_init(Locality::default),
            pod_weight: &|_, _| None,
        }
    }
}

/// The weight of an endpoint nobody gave one, as in Envoy and Consul.
pub const DEFAULT_WEIGHT: u32 = 100;

/// A port of a served endpoint: the number its Pod listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointPort {
    pub name: Arc<str>,
    pub port: u16,
    pub protocol: Protocol,
}

/// One endpoint (one address) of a served Service.
///
/// Compact on purpose: the slice entry that won the merge is shared with the
/// writer's copy of the slice (not copied), and the merged ports are shared
/// by every endpoint of the Service that has the same ones (normally all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The slice's entry for this address that won the merge.
    pub listed: Arc<SliceEndpoint>,
    pub ports: Arc<[EndpointPort]>,
    pub weight: u32,
    /// Topology tier: 0 is preferred, higher numbers are fallbacks.
    pub priority: u32,
}

impl Endpoint {
    pub(crate) fn ip(&self) -> IpAddr {
        self.listed.address
    }

    pub(crate) fn ready(&self) -> bool {
        self.listed.ready
    }

    pub(crate) fn serving(&self) -> bool {
        self.listed.serving
    }

    pub(crate) fn terminating(&self) -> bool {
        self.listed.terminating
    }

    pub(crate) fn zone(&self) -> Option<&str> {
        self.listed.zone.as_deref()
    }

    pub(crate) fn node(&self) -> Option<&str> {
        self.listed.node.as_deref()
    }

    pub(crate) fn hostname(&self) -> Option<&str> {
        self.listed.hostname.as_deref()
    }

    pub(crate) fn target_ref(&self) -> Option<&TargetRef> {
        self.listed.target_ref.as_ref()
    }

    pub(crate) fn port(&self, name: &str, protocol: Option<Protocol>) -> Option<&EndpointPort> {
        self.ports
            .iter()
            .find(|port| &*port.name == name && protocol.is_none_or(|p| p == port.protocol))
    }
}

/// The API's JSON shape of an endpoint (flat, as it always was).
impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            ip: IpAddr,
            ports: &'a [EndpointPort],
            ready: bool,
            serving: bool,
            terminating: bool,
            zone: Option<&'a str>,
            node: Option<&'a str>,
            hostname: Option<&'a str>,
            #[serde(rename = "targetRef")]
            target_ref: Option<&'a TargetRef>,
            weight: u32,
            priority: u32,
        }
        Flat {
            ip: self.ip(),
            ports: &self.ports,
            ready: self.ready(),
            serving: self.serving(),
            terminating: self.terminating(),
            zone: self.zone(),
            node: self.node(),
            hostname: self.hostname(),
            target_ref: self.target_ref(),
            weight: self.weight,
            priority: self.priority,
        }
        .serialize(serializer)
    }
}

/// A Service as the front ends see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedService {
    pub key: ServiceKey,
    /// Changes exactly when the served state (everything but `unusable`)
    /// changes; taken from one counter shared by all Services, so it also
    /// grows across a delete and re-create.
    pub revision: u64,
    pub headless: bool,
    pub ports: Vec<ServicePort>,
    /// The endpoints clients should use, ordered by address.
    pub endpoints: Vec<Endpoint>,
    /// Endpoints listed in slices but not served (not ready, or terminating
    /// while ready ones exist); kept for `/debug/endpoints` and `dump` only.
    pub unusable: Vec<Endpoint>,
    /// The answer a front end encodes for this revision, kept by the first
    /// request that needs it: a thousand clients polling one Service cost
    /// one encoding per change, not one per request.
    pub(crate) encoded: EncodedOnce,
    /// True when no endpoint is ready and serving-terminating ones are used.
    pub terminating_fallback: bool,
    /// The Service's resilience overrides (its annotations), for clients.
    pub resilience: Option<Arc<Resilience>>,
}

/// A slot for bytes encoded from one [`ServedService`], filled at most once
/// (lazily: nothing is spent on Services nobody asks for). Not part of the
/// Service's state: equality ignores it and a clone starts empty.
#[derive(Default)]
pub(crate) struct EncodedOnce(std::sync::OnceLock<bytes::Bytes>);

impl EncodedOnce {
    pub(crate) fn get_or_init(&self, encode: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        self.0.get_or_init(encode).clone()
    }
}

impl Clone for EncodedOnce {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for EncodedOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EncodedOnce {}

impl std::fmt::Debug for EncodedOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filled = self.0.get().map(bytes::Bytes::len);
        f.debug_tuple("EncodedOnce").field(&filled).finish()
    }
}

impl ServedService {
    /// Equality of what clients are served, ignoring revision and debug data.
    pub(crate) fn same_served_state(&self, other: &ServedService) -> bool {
        self.headless == other.headless
            && self.ports == other.ports
            && self.endpoints == other.endpoints
            && self.terminating_fallback == other.terminating_fallback
            && self.resilience == other.resilience
    }
}

/// Ranks copies of one address found in several slices.
fn condition_rank(endpoint: &SliceEndpoint) -> u8 {
    match (endpoint.ready, endpoint.serving) {
        (true, _) => 2,
        (false, true) => 1,
        (false, false) => 0,
    }
}

struct Accumulated<'a> {
    endpoint: &'a Arc<SliceEndpoint>,
    rank: u8,
    weight: u32,
    ports: BTreeMap<(Arc<str>, Protocol), (u16, u8)>,
}

/// Merges `slices` (all slices of the Service, in any order) into the served
/// view. `revision` is stamped on the result.
///
/// Weights: the Pod's `kubedisco.io/weight` label, else the slice's
/// annotation, else the Service's `kubedisco.io/default-weight`, else 100.
pub(crate) fn merge<'a>(
    service: &ServiceObject,
    slices: impl IntoIterator<Item = &'a SliceObject>,
    revision: u64,
    context: &MergeContext<'_>,
) -> ServedService {
    let mut slices: Vec<&SliceObject> = slices.into_iter().collect();
    // Deterministic tie-breaks whatever order the slices arrived in.
    slices.sort_by(|a, b| a.key.name.cmp(&b.key.name));
    let default_weight = service.default_weight.unwrap_or(DEFAULT_WEIGHT);

    let mut by_address: BTreeMap<IpAddr, Accumulated<'_>> = BTreeMap::new();
    for slice in &slices {
        let weight = slice.weight.unwrap_or(default_weight);
        for endpoint in &slice.endpoints {
            let rank = condition_rank(endpoint);
            let entry = by_address
                .entry(endpoint.address)
                .or_insert_with(|| Accumulated {
                    endpoint,
                    rank,
                    weight,
                    ports: BTreeMap::new(),
                });
            if rank > entry.rank {
                entry.endpoint = endpoint;
                entry.rank = rank;
                entry.weight = weight;
            }
            for port in &slice.ports {
                let Some(number) = port.port else { continue };
                let key = (port.name.clone(), port.protocol);
                match entry.ports.get(&key) {
                    Some(&(_, existing_rank)) if existing_rank >= rank => {}
                    _ => {
                        entry.ports.insert(key, (number, rank));
                    }
                }
            }
        }
    }

    let namespace = &*service.key.namespace;
    let pod_weight = |target: &Option<TargetRef>| {
        let target = target.as_ref().filter(|t| &*t.kind == "Pod")?;
        let pod_namespace = target.namespace.as_deref().unwrap_or(namespace);
        (context.pod_weight)(pod_namespace, &target.name)
    };
    // Endpoints with the same ports share one list.
    let mut last_ports: Option<Arc<[EndpointPort]>> = None;
    let all: Vec<Endpoint> = by_address
        .into_values()
        .map(|acc| {
            let ports: Vec<EndpointPort> = acc
                .ports
                .into_iter()
                .map(|((name, protocol), (port, _))| EndpointPort {
                    name,
                    port,
                    protocol,
                })
                .collect();
            let ports = match &last_ports {
                Some(shared) if **shared == *ports => shared.clone(),
                _ => {
                    let shared: Arc<[EndpointPort]> = ports.into();
                    last_ports = Some(shared.clone());
                    shared
                }
            };
            Endpoint {
                weight: pod_weight(&acc.endpoint.target_ref).unwrap_or(acc.weight),
                listed: acc.endpoint.clone(),
                ports,
                priority: 0,
            }
        })
        .collect();

    let any_ready = all.iter().any(Endpoint::ready);
    let usable = |e: &Endpoint| {
        if service.publish_not_ready {
            true
        } else if any_ready {
            e.ready()
        } else {
            e.serving() && e.terminating()
        }
    };
    let usable_flags: Vec<bool> = all.iter().map(usable).collect();
    let inputs: Vec<TierInput<'_>> = all
        .iter()
        .zip(&usable_flags)
        .map(|(endpoint, &usable)| TierInput {
            node: endpoint.node(),
            zone: endpoint.zone(),
            hint_zones: endpoint.listed.hint_zones(),
            hint_nodes: endpoint.listed.hint_nodes(),
            weight: endpoint.weight,
            usable,
        })
        .collect();
    let priorities = assign_priorities(
        &inputs,
        service.traffic_distribution.as_deref(),
        context.locality,
    );
    drop(inputs);
    // Exact capacities: snapshots keep these lists for as long as they live.
    let usable_count = usable_flags.iter().filter(|usable| **usable).count();
    let mut endpoints = Vec::with_capacity(usable_count);
    let mut unusable = Vec::with_capacity(all.len() - usable_count);
    for ((mut endpoint, usable), priority) in all.into_iter().zip(usable_flags).zip(priorities) {
        endpoint.priority = priority;
        if usable {
            endpoints.push(endpoint);
        } else {
            unusable.push(endpoint);
        }
    }
    let terminating_fallback = !service.publish_not_ready && !any_ready && !endpoints.is_empty();

    ServedService {
        key: service.key.clone(),
        revision,
        headless: service.headless,
        ports: service.ports.clone(),
        endpoints,
        unusable,
        terminating_fallback,
        encoded: EncodedOnce::default(),
        resilience: service.resilience.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::index::objects::{SliceKey, SlicePort};

    pub fn service(name: &str) -> ServiceObject {
        ServiceObject::headless(ServiceKey::new("ns", name))
    }

    pub fn endpoint(ip: &str) -> SliceEndpoint {
        SliceEndpoint {
            address: ip.parse().unwrap(),
            ready: true,
            serving: true,
            terminating: false,
            hostname: None,
            node: None,
            zone: None,
            target_ref: None,
            hints: None,
        }
    }

    pub fn slice(
        name: &str,
        service: &str,
        port: u16,
        endpoints: Vec<SliceEndpoint>,
    ) -> SliceObject {
        SliceObject {
            key: SliceKey {
                namespace: "ns".into(),
                name: name.into(),
            },
            service: Some(service.into()),
            ports: vec![SlicePort {
                name: "http".into(),
                port: Some(port),
                protocol: Protocol::Tcp,
            }],
            endpoints: endpoints.into_iter().map(Arc::new).collect(),
            weight: None,
            headless_label: true,
        }
    }

    fn ips(served: &[Endpoint]) -> Vec<String> {
        served.iter().map(|e| e.ip().to_string()).collect()
    }

    #[test]
    fn merges_every_slice_of_a_service() {
        let a = slice(
            "a",
            "web",
            80,
            vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
        );
        let b = slice("b", "web", 80, vec![endpoint("10.0.0.3")]);
        let served = merge(&service("web"), [&a, &b], 1, &MergeContext::plain());
        assert_eq!(ips(&served.endpoints), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn an_endpoint_in_two_slices_is_served_once_and_ready_wins() {
        let mut not_ready = endpoint("10.0.0.1");
        not_ready.ready = false;
        let a = slice("a", "web", 80, vec![not_ready, endpoint("10.0.0.2")]);
        let b = slice("b", "web", 80, vec![endpoint("10.0.0.1")]);
        let served = merge(&service("web"), [&a, &b], 1, &MergeContext::plain());
        assert_eq!(ips(&served.endpoints), ["10.0.0.1", "10.0.0.2"]);
        assert!(served.endpoints[0].ready());
        assert_eq!(served.endpoints[0].ports.len(), 1);
    }

    #[test]
    fn ports_differing_per_endpoint_are_kept_per_endpoint() {
        let a = slice("a", "web", 8080, vec![endpoint("10.0.0.1")]);
        let b = slice("b", "web", 9090, vec![endpoint("10.0.0.2")]);
        let served = merge(&service("web"), [&a, &b], 1, &MergeContext::plain());
        assert_eq!(served.endpoints[0].ports[0].port, 8080);
        assert_eq!(served.endpoints[1].ports[0].port, 9090);
    }

    #[test]
    fn missing_conditions_default_like_kubernetes_and_terminating_is_a_fallback() {
        let mut terminating = endpoint("10.0.0.1");
        terminating.ready = false;
        terminating.terminating = true;
        let mut gone = endpoint("10.0.0.2");
        gone.ready = false;
        gone.serving = false;
        gone.terminating = true;
        let a = slice("a", "web", 80, vec![terminating.clone(), gone]);
        let served = merge(&service("web"), [&a], 1, &MergeContext::plain());
        assert!(served.terminating_fallback);
        assert_eq!(ips(&served.endpoints), ["10.0.0.1"]);
        assert_eq!(ips(&served.unusable), ["10.0.0.2"]);

        let b = slice("b", "web", 80, vec![endpoint("10.0.0.3")]);
        let served = merge(&service("web"), [&a, &b], 2, &MergeContext::plain());
        assert!(!served.terminating_fallback);
        assert_eq!(ips(&served.endpoints), ["10.0.0.3"]);
    }

    #[test]
    fn publish_not_ready_addresses_serves_everything() {
        let mut not_ready = endpoint("10.0.0.1");
        not_ready.ready = false;
        not_ready.serving = false;
        let mut svc = service("web");
        svc.publish_not_ready = true;
        let served = merge(
            &svc,
            [&slice("a", "web", 80, vec![not_ready])],
            1,
            &MergeContext::plain(),
        );
        assert_eq!(ips(&served.endpoints), ["10.0.0.1"]);
    }

    #[test]
    fn weights_come_from_the_slice_then_the_service_then_the_default() {
        let mut svc = service("web");
        let plain = slice("a", "web", 80, vec![endpoint("10.0.0.1")]);
        let mut weighted = slice("b", "web", 80, vec![endpoint("10.0.0.2")]);
        weighted.weight = Some(7);
        let served = merge(&svc, [&plain, &weighted], 1, &MergeContext::plain());
        assert_eq!(served.endpoints[0].weight, DEFAULT_WEIGHT);
        assert_eq!(served.endpoints[1].weight, 7);
        svc.default_weight = Some(3);
        let served = merge(&svc, [&plain, &weighted], 1, &MergeContext::plain());
        assert_eq!(served.endpoints[0].weight, 3);
    }

    #[test]
    fn same_served_state_ignores_revision_and_debug_data() {
        let a = slice("a", "web", 80, vec![endpoint("10.0.0.1")]);
        let one = merge(&service("web"), [&a], 1, &MergeContext::plain());
        let mut two = merge(&service("web"), [&a], 2, &MergeContext::plain());
        assert!(one.same_served_state(&two));
        two.unusable.push(one.endpoints[0].clone());
        assert!(one.same_served_state(&two));
        two.endpoints.clear();
        assert!(!one.same_served_state(&two));
    }

    /// New resilience annotations are a new served state: watchers get
    /// them with a new revision.
    #[test]
    fn resilience_is_part_of_the_served_state() {
        let a = slice("a", "web", 80, vec![endpoint("10.0.0.1")]);
        let mut svc = service("web");
        let plain = merge(&svc, [&a], 1, &MergeContext::plain());
        let mut resilience = Resilience::default();
        resilience.retry.max_attempts = Some(1);
        svc.resilience = Some(Arc::new(resilience));
        let tuned = merge(&svc, [&a], 2, &MergeContext::plain());
        assert_eq!(tuned.resilience, svc.resilience);
        assert!(!plain.same_served_state(&tuned));
    }
}
