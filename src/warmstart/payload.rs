//! The snapshot's payload: plain serde mirrors of the index objects, and
//! the conversions both ways.
//!
//! JSON rather than a compact binary encoding: the objects are already
//! compact, the file is written at most every few seconds and read once per
//! start (a few milliseconds for thousands of endpoints), it needs no new
//! dependency, and an operator can read it (`tail -c +25 FILE | jq`).
//!
//! Mirrors the index objects field by field and is the only place that
//! knows the JSON names; a loaded object goes through the same interning
//! ([`crate::index::intern`]) as a converted one. No I/O.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::coverage::Coverage;
use super::format::LoadError;
use crate::index::intern::intern;
use crate::index::objects::{
    Protocol, Resilience, ServiceKey, ServicePort, ServiceType, SliceEndpoint, SliceKey, SlicePort,
    TargetRef, TopologyHints,
};
use crate::index::resilience::{Balancing, LbPolicy, Outlier, Retry, RetryCode};
use crate::index::{Contents, ServiceObject, SliceObject};

#[derive(Serialize, Deserialize)]
pub(crate) struct Payload {
    /// Unix seconds when written.
    #[serde(rename = "takenAt")]
    taken_at: f64,
    /// Unix seconds when the data was last known fresh (earlier than
    /// `takenAt` when the source was failing at the time).
    #[serde(rename = "freshAt")]
    fresh_at: f64,
    /// What the agent that wrote it watched.
    #[serde(rename = "scope")]
    pub(crate) coverage: Coverage,
    generation: u64,
    services: Vec<SnapService>,
    slices: Vec<SnapSlice>,
    #[serde(rename = "podWeights", default)]
    pod_weights: Vec<SnapPodWeight>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
struct SnapService {
    namespace: Arc<str>,
    name: Arc<str>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    service_type: Option<Arc<str>>,
    #[serde(rename = "clusterIPs", default, skip_serializing_if = "Vec::is_empty")]
    cluster_ips: Vec<IpAddr>,
    #[serde(
        rename = "externalName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    external_name: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "is_false")]
    headless: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    exposed: bool,
    #[serde(rename = "publishNotReady", default, skip_serializing_if = "is_false")]
    publish_not_ready: bool,
    ports: Vec<SnapServicePort>,
    #[serde(rename = "defaultWeight", skip_serializing_if = "Option::is_none")]
    default_weight: Option<u32>,
    #[serde(
        rename = "trafficDistribution",
        skip_serializing_if = "Option::is_none"
    )]
    traffic_distribution: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resilience: Option<SnapResilience>,
}

/// [`Resilience`], flat; durations in nanoseconds, as exact as the index
/// keeps them.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapResilience {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_percentage: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval_nanos: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_ejection_nanos: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_ejection_nanos: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_on: Option<Vec<Arc<str>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lb_policy: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash_header: Option<Box<str>>,
}

fn nanos(duration: Option<Duration>) -> Option<u64> {
    duration.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl From<&Resilience> for SnapResilience {
    fn from(r: &Resilience) -> Self {
        Self {
            consecutive_failures: r.outlier.consecutive_failures,
            failure_percentage: r.outlier.failure_percentage,
            interval_nanos: nanos(r.outlier.interval),
            base_ejection_nanos: nanos(r.outlier.base_ejection_time),
            max_ejection_nanos: nanos(r.outlier.max_ejection_time),
            max_ejection_percent: r.outlier.max_ejection_percent,
            retry_max_attempts: r.retry.max_attempts,
            retry_on: r
                .retry
                .on
                .as_ref()
                .map(|codes| codes.iter().map(|code| code.as_str().into()).collect()),
            lb_policy: r.balancing.policy.map(|p| p.as_str().into()),
            hash_header: r.balancing.hash_header.clone(),
        }
    }
}

impl SnapResilience {
    fn into_resilience(self) -> Result<Resilience, LoadError> {
        Ok(Resilience {
            outlier: Outlier {
                consecutive_failures: self.consecutive_failures,
                failure_percentage: self.failure_percentage,
                interval: self.interval_nanos.map(Duration::from_nanos),
                base_ejection_time: self.base_ejection_nanos.map(Duration::from_nanos),
                max_ejection_time: self.max_ejection_nanos.map(Duration::from_nanos),
                max_ejection_percent: self.max_ejection_percent,
            },
            retry: Retry {
                max_attempts: self.retry_max_attempts,
                on: self
                    .retry_on
                    .map(|codes| {
                        codes
                            .iter()
                            .map(|code| {
                                RetryCode::parse(code).ok_or_else(|| {
                                    LoadError::Payload(format!("retry code {code:?}"))
                                })
                            })
                            .collect::<Result<_, _>>()
                    })
                    .transpose()?,
            },
            balancing: Balancing {
                policy: self
                    .lb_policy
                    .map(|p| {
                        LbPolicy::parse(&p)
                            .ok_or_else(|| LoadError::Payload(format!("lb policy {p:?}")))
                    })
                    .transpose()?,
                hash_header: self.hash_header,
            },
        })
    }
}

#[derive(Serialize, Deserialize)]
struct SnapServicePort {
    name: Arc<str>,
    port: u16,
    protocol: Arc<str>,
    #[serde(rename = "targetPort", skip_serializing_if = "Option::is_none")]
    target_port: Option<Arc<str>>,
}

#[derive(Serialize, Deserialize)]
struct SnapSlice {
    namespace: Arc<str>,
    name: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<Arc<str>>,
    ports: Vec<SnapSlicePort>,
    endpoints: Vec<SnapEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    /// Label `service.kubernetes.io/headless`.
    #[serde(rename = "headlessLabel", default, skip_serializing_if = "is_false")]
    headless_label: bool,
}

#[derive(Serialize, Deserialize)]
struct SnapSlicePort {
    name: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    protocol: Arc<str>,
}

#[derive(Serialize, Deserialize)]
struct SnapEndpoint {
    address: std::net::IpAddr,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    ready: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    serving: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    terminating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<Arc<str>>,
    #[serde(rename = "targetRef", skip_serializing_if = "Option::is_none")]
    target_ref: Option<SnapTargetRef>,
    #[serde(rename = "hintZones", default, skip_serializing_if = "Vec::is_empty")]
    hint_zones: Vec<Arc<str>>,
    #[serde(rename = "hintNodes", default, skip_serializing_if = "Vec::is_empty")]
    hint_nodes: Vec<Arc<str>>,
}

#[derive(Serialize, Deserialize)]
struct SnapTargetRef {
    kind: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<Arc<str>>,
    name: Arc<str>,
}

#[derive(Serialize, Deserialize)]
struct SnapPodWeight {
    namespace: Arc<str>,
    name: Arc<str>,
    weight: u32,
}

fn protocol(text: &str) -> Result<Protocol, LoadError> {
    Protocol::parse(Some(text)).ok_or_else(|| LoadError::Payload(format!("protocol {text:?}")))
}

impl From<&ServiceObject> for SnapService {
    fn from(s: &ServiceObject) -> Self {
        Self {
            namespace: s.key.namespace.clone(),
            name: s.key.name.clone(),
            // ClusterIP, the default, is not written.
            service_type: (s.service_type != ServiceType::ClusterIP)
                .then(|| s.service_type.as_str().into()),
            cluster_ips: s.cluster_ips.to_vec(),
            external_name: s.external_name.clone(),
            headless: s.headless,
            exposed: s.exposed,
            publish_not_ready: s.publish_not_ready,
            ports: s
                .ports
                .iter()
                .map(|p| SnapServicePort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: p.protocol.as_str().into(),
                    target_port: p.target_port.clone(),
                })
                .collect(),
            default_weight: s.default_weight,
            traffic_distribution: s.traffic_distribution.clone(),
            resilience: s.resilience.as_deref().map(SnapResilience::from),
        }
    }
}

impl SnapService {
    fn into_object(self) -> Result<ServiceObject, LoadError> {
        Ok(ServiceObject {
            key: ServiceKey {
                namespace: intern(&self.namespace),
                name: self.name,
            },
            service_type: self
                .service_type
                .as_deref()
                .map_or(ServiceType::ClusterIP, ServiceType::parse),
            cluster_ips: self.cluster_ips.into(),
            external_name: self.external_name,
            headless: self.headless,
            exposed: self.exposed,
            publish_not_ready: self.publish_not_ready,
            ports: self
                .ports
                .into_iter()
                .map(|p| {
                    Ok(ServicePort {
                        name: p.name,
                        port: p.port,
                        protocol: protocol(&p.protocol)?,
                        target_port: p.target_port,
                    })
                })
                .collect::<Result<_, LoadError>>()?,
            default_weight: self.default_weight,
            traffic_distribution: self.traffic_distribution,
            resilience: self
                .resilience
                .map(|r| r.into_resilience().map(Arc::new))
                .transpose()?,
        })
    }
}

impl From<&SliceObject> for SnapSlice {
    fn from(s: &SliceObject) -> Self {
        Self {
            namespace: s.key.namespace.clone(),
            name: s.key.name.clone(),
            service: s.service.clone(),
            ports: s
                .ports
                .iter()
                .map(|p| SnapSlicePort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: p.protocol.as_str().into(),
                })
                .collect(),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| SnapEndpoint {
                    address: e.address,
                    ready: e.ready,
                    serving: e.serving,
                    terminating: e.terminating,
                    hostname: e.hostname.clone(),
                    node: e.node.clone(),
                    zone: e.zone.clone(),
                    target_ref: e.target_ref.as_ref().map(|t| SnapTargetRef {
                        kind: t.kind.clone(),
                        namespace: t.namespace.clone(),
                        name: t.name.clone(),
                    }),
                    hint_zones: e.hint_zones().to_vec(),
                    hint_nodes: e.hint_nodes().to_vec(),
                })
                .collect(),
            weight: s.weight,
            headless_label: s.headless_label,
        }
    }
}

impl SnapSlice {
    fn into_object(self) -> Result<SliceObject, LoadError> {
        Ok(SliceObject {
            key: SliceKey {
                namespace: intern(&self.namespace),
                name: self.name,
            },
            service: self.service.as_deref().map(intern),
            ports: self
                .ports
                .into_iter()
                .map(|p| {
                    Ok(SlicePort {
                        name: p.name,
                        port: p.port,
                        protocol: protocol(&p.protocol)?,
                    })
                })
                .collect::<Result<_, LoadError>>()?,
            endpoints: self
                .endpoints
                .into_iter()
                .map(|e| {
                    // Shared like the converter's strings (see index::intern).
                    let shared = |s: Arc<str>| intern(&s);
                    Arc::new(SliceEndpoint {
                        address: e.address,
                        ready: e.ready,
                        serving: e.serving,
                        terminating: e.terminating,
                        hostname: e.hostname,
                        node: e.node.map(shared),
                        zone: e.zone.map(shared),
                        target_ref: e.target_ref.map(|t| TargetRef {
                            kind: intern(&t.kind),
                            namespace: t.namespace.map(shared),
                            name: t.name,
                        }),
                        hints: TopologyHints::boxed(
                            e.hint_zones.into_iter().map(shared).collect(),
                            e.hint_nodes.into_iter().map(shared).collect(),
                        ),
                    })
                })
                .collect(),
            weight: self.weight,
            headless_label: self.headless_label,
        })
    }
}

impl Payload {
    pub(crate) fn new(
        contents: &Contents,
        coverage: &Coverage,
        taken_at: SystemTime,
        fresh_at: SystemTime,
    ) -> Self {
        Payload {
            taken_at: unix(taken_at),
            fresh_at: unix(fresh_at),
            coverage: coverage.clone(),
            generation: contents.generation,
            services: contents.services.iter().map(SnapService::from).collect(),
            slices: contents.slices.iter().map(SnapSlice::from).collect(),
            pod_weights: contents
                .pod_weights
                .iter()
                .map(|((namespace, name), weight)| SnapPodWeight {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    weight: *weight,
                })
                .collect(),
        }
    }

    pub(crate) fn taken_at(&self) -> SystemTime {
        from_unix(self.taken_at)
    }

    pub(crate) fn fresh_at(&self) -> SystemTime {
        from_unix(self.fresh_at)
    }

    /// The objects of the namespaces `wanted` serves (Pod weights only when
    /// it reads them).
    pub(crate) fn into_contents(self, wanted: &Coverage) -> Result<Contents, LoadError> {
        let services = self
            .services
            .into_iter()
            .filter(|s| wanted.includes(&s.namespace))
            .map(SnapService::into_object)
            .collect::<Result<Vec<_>, _>>()?;
        let slices = self
            .slices
            .into_iter()
            .filter(|s| wanted.includes(&s.namespace))
            .map(SnapSlice::into_object)
            .collect::<Result<Vec<_>, _>>()?;
        let pod_weights = if wanted.pod_weights {
            self.pod_weights
                .into_iter()
                .filter(|p| wanted.includes(&p.namespace))
                .map(|p| ((p.namespace, p.name), p.weight))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Contents {
            services,
            slices,
            pod_weights,
            generation: self.generation,
        })
    }
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn from_unix(seconds: f64) -> SystemTime {
    if seconds.is_finite() && seconds > 0.0 {
        UNIX_EPOCH + Duration::from_secs_f64(seconds.min(1e11))
    } else {
        UNIX_EPOCH
    }
}
