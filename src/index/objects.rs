//! The compact form of the Kubernetes objects the index is built from.
//!
//! Sources convert API objects into these as soon as they arrive, so nothing
//! the agent keeps carries `managedFields`, annotations it does not read, or
//! any other part of the object it never serves.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

pub use super::resilience::Resilience;

/// A Service's identity. Cheap to clone: both parts are shared strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An EndpointSlice's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SliceKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// Kubernetes spells protocols in capitals and defaults them to TCP.
    pub fn parse(text: Option<&str>) -> Option<Self> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

/// A port of a Service spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// Empty for the single unnamed port a Service may have.
    pub name: Arc<str>,
    pub port: u16,
    pub protocol: Protocol,
    /// The target port as written in the spec (a number or a Pod port name).
    #[serde(rename = "targetPort", skip_serializing_if = "Option::is_none")]
    pub target_port: Option<Arc<str>>,
}

/// `spec.type`. Kubernetes defaults it to ClusterIP; a type this agent
/// does not know is kept as ClusterIP too (its cluster IPs are what DNS
/// can say about it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

impl ServiceType {
    pub fn parse(text: &str) -> Self {
        match text {
            "NodePort" => Self::NodePort,
            "LoadBalancer" => Self::LoadBalancer,
            "ExternalName" => Self::ExternalName,
            _ => Self::ClusterIP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
            Self::ExternalName => "ExternalName",
        }
    }
}

/// What the index needs of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceObject {
    pub key: ServiceKey,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (else `spec.clusterIP`), parsed; empty for
    /// headless and ExternalName Services. The zone's A/AAAA and PTR
    /// records of a Service whose endpoints are not served.
    pub cluster_ips: Box<[IpAddr]>,
    /// `spec.externalName` of an ExternalName Service: the zone's CNAME.
    pub external_name: Option<Arc<str>>,
    /// `spec.clusterIP: None`.
    pub headless: bool,
    /// Label or annotation `kubedisco.io/expose: "true"`: serve a ClusterIP Service too.
    pub exposed: bool,
    /// `spec.publishNotReadyAddresses`: every endpoint counts as usable.
    pub publish_not_ready: bool,
    pub ports: Vec<ServicePort>,
    /// Annotation `kubedisco.io/default-weight`, already validated.
    pub default_weight: Option<u32>,
    /// `spec.trafficDistribution`, kept for topology-aware balancing.
    pub traffic_distribution: Option<Arc<str>>,
    /// Annotations `kubedisco.io/outlier-*` and `kubedisco.io/retry-*`,
    /// already validated; None when the Service has none (the usual case:
    /// one word per Service). Shared with the served view.
    pub resilience: Option<Arc<Resilience>>,
}

impl ServiceObject {
    /// A headless Service with no ports and nothing else set: what tests,
    /// benchmarks and fuzzing start from.
    pub fn headless(key: ServiceKey) -> Self {
        Self {
            key,
            service_type: ServiceType::ClusterIP,
            cluster_ips: Box::default(),
            external_name: None,
            headless: true,
            exposed: false,
            publish_not_ready: false,
            ports: Vec::new(),
            default_weight: None,
            traffic_distribution: None,
            resilience: None,
        }
    }

    /// Only headless Services are served, unless the owner opted in.
    pub fn is_served(&self) -> bool {
        self.headless || self.exposed
    }
}

/// A port of an EndpointSlice; `port` is absent when the slice says "all ports".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    pub name: Arc<str>,
    pub port: Option<u16>,
    pub protocol: Protocol,
}

/// A reference to the object behind an endpoint (normally a Pod).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TargetRef {
    pub kind: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Arc<str>>,
    pub name: Arc<str>,
}

/// One endpoint of an EndpointSlice, reduced to its first address, as
/// kube-proxy does: the addresses of one endpoint are fungible. Strings that
/// repeat across endpoints (node, zone, kind, namespace) are interned
/// ([`super::intern`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub address: IpAddr,
    /// `conditions.ready`, missing meaning true.
    pub ready: bool,
    /// `conditions.serving`, missing meaning true.
    pub serving: bool,
    /// `conditions.terminating`, missing meaning false.
    pub terminating: bool,
    pub hostname: Option<Arc<str>>,
    pub node: Option<Arc<str>>,
    pub zone: Option<Arc<str>>,
    pub target_ref: Option<TargetRef>,
    /// `hints`, kept for topology-aware balancing. Boxed: most endpoints
    /// have none, and then it costs one word.
    pub hints: Option<Box<TopologyHints>>,
}

/// An endpoint's `hints` (`forZones`, `forNodes`), as names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyHints {
    pub zones: Box<[Arc<str>]>,
    pub nodes: Box<[Arc<str>]>,
}

impl TopologyHints {
    /// None when both lists are empty.
    pub fn boxed(zones: Box<[Arc<str>]>, nodes: Box<[Arc<str>]>) -> Option<Box<Self>> {
        (!zones.is_empty() || !nodes.is_empty()).then(|| Box::new(Self { zones, nodes }))
    }
}

impl SliceEndpoint {
    /// `hints.forZones`.
    pub fn hint_zones(&self) -> &[Arc<str>] {
        self.hints.as_ref().map_or(&[], |h| &h.zones)
    }

    /// `hints.forNodes`.
    pub fn hint_nodes(&self) -> &[Arc<str>] {
        self.hints.as_ref().map_or(&[], |h| &h.nodes)
    }
}

/// What the index needs of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceObject {
    pub key: SliceKey,
    /// Label `kubernetes.io/service-name`; a slice without it belongs to no Service.
    pub service: Option<Arc<str>>,
    pub ports: Vec<SlicePort>,
    /// Shared with the served endpoints merged from them, so the index
    /// holds each endpoint's data once.
    pub endpoints: Vec<Arc<SliceEndpoint>>,
    /// Annotation `kubedisco.io/weight`, already validated.
    pub weight: Option<u32>,
    /// Label `service.kubernetes.io/headless` (the EndpointSlice controller
    /// sets it on the slices of headless Services): which of the two
    /// label-selected slice watches lists the slice, so that a re-list of
    /// one replaces only its own ([`crate::index::Slices`]).
    pub headless_label: bool,
}

impl SliceObject {
    pub fn service_key(&self) -> Option<ServiceKey> {
        self.service.as_ref().map(|service| ServiceKey {
            namespace: self.key.namespace.clone(),
            name: service.clone(),
        })
    }
}
