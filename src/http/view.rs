//! The JSON shapes of the API. They borrow from snapshots, so answering does
//! not copy endpoint lists.

use std::net::IpAddr;

use serde::Serialize;

use crate::index::objects::{Resilience, ServicePort};
use crate::index::{Endpoint, ServedService, ServiceObject, Snapshot};

/// `GET /v1/services/{namespace}/{name}`, and each state of a watch stream.
#[derive(Serialize)]
pub struct ServiceView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub exists: bool,
    pub revision: u64,
    pub headless: bool,
    pub ports: &'a [ServicePort],
    pub endpoints: &'a [Endpoint],
    /// True when no endpoint is ready and terminating ones are served.
    #[serde(rename = "terminatingFallback")]
    pub terminating_fallback: bool,
    /// True while a source cannot reach what it reads (answers are the last
    /// known state).
    pub stale: bool,
    /// Seconds since the source stopped answering, while stale.
    #[serde(rename = "staleSeconds", skip_serializing_if = "Option::is_none")]
    pub stale_seconds: Option<f64>,
    /// Why the answer is stale (e.g. "serving the snapshot of <time> ...").
    #[serde(rename = "staleReason", skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
    /// The Service's `kubedisco.io/outlier-*` and `kubedisco.io/retry-*`
    /// annotations, validated; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resilience: Option<&'a Resilience>,
}

/// Staleness as the API reports it: a flag and, while stale, its age and
/// the cause.
#[derive(Clone, Debug, Default)]
pub struct Staleness {
    pub stale: bool,
    pub seconds: Option<f64>,
    pub reason: Option<String>,
}

impl Staleness {
    pub fn of(status: &crate::status::SourceStatus) -> Self {
        let age = status.stale_for();
        Self {
            stale: age.is_some(),
            seconds: age.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
            reason: age.and_then(|_| status.stale_reason()),
        }
    }
}

impl<'a> ServiceView<'a> {
    pub fn found(service: &'a ServedService, staleness: Staleness) -> Self {
        Self {
            namespace: &service.key.namespace,
            name: &service.key.name,
            exists: true,
            revision: service.revision,
            headless: service.headless,
            ports: &service.ports,
            endpoints: &service.endpoints,
            terminating_fallback: service.terminating_fallback,
            stale: staleness.stale,
            stale_seconds: staleness.seconds,
            stale_reason: staleness.reason,
            resilience: service.resilience.as_deref(),
        }
    }

    pub fn missing(namespace: &'a str, name: &'a str, revision: u64, staleness: Staleness) -> Self {
        Self {
            namespace,
            name,
            exists: false,
            revision,
            headless: false,
            ports: &[],
            endpoints: &[],
            terminating_fallback: false,
            stale: staleness.stale,
            stale_seconds: staleness.seconds,
            stale_reason: staleness.reason,
            resilience: None,
        }
    }
}

/// What every Service shows of its spec, served or not: its type and the
/// addresses DNS gives for it.
#[derive(Serialize)]
pub struct ServiceSpecView<'a> {
    #[serde(rename = "type")]
    pub service_type: &'static str,
    pub headless: bool,
    /// Whether its endpoints are served (headless, or exposed); otherwise
    /// DNS answers its cluster IPs or external name.
    pub served: bool,
    #[serde(rename = "clusterIPs", skip_serializing_if = "<[_]>::is_empty")]
    pub cluster_ips: &'a [IpAddr],
    #[serde(rename = "externalName", skip_serializing_if = "Option::is_none")]
    pub external_name: Option<&'a str>,
}

impl<'a> From<&'a ServiceObject> for ServiceSpecView<'a> {
    fn from(s: &'a ServiceObject) -> Self {
        Self {
            service_type: s.service_type.as_str(),
            headless: s.headless,
            served: s.is_served(),
            cluster_ips: &s.cluster_ips,
            external_name: s.external_name.as_deref(),
        }
    }
}

/// One row of `GET /v1/services`: every Service the agent knows.
#[derive(Serialize)]
pub struct ServiceSummary<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// 0 for a Service whose endpoints are not served.
    pub revision: u64,
    #[serde(flatten)]
    pub spec: ServiceSpecView<'a>,
    /// Usable endpoints.
    pub endpoints: usize,
    /// Endpoints listed but not served (not ready).
    pub unusable: usize,
}

#[derive(Serialize)]
pub struct ServiceList<'a> {
    pub synced: bool,
    pub stale: bool,
    #[serde(rename = "staleSeconds", skip_serializing_if = "Option::is_none")]
    pub stale_seconds: Option<f64>,
    #[serde(rename = "staleReason", skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
    pub generation: u64,
    pub services: Vec<ServiceSummary<'a>>,
}

impl<'a> ServiceList<'a> {
    pub fn new(snapshot: &'a Snapshot, staleness: Staleness) -> Self {
        Self {
            synced: snapshot.synced,
            stale: staleness.stale,
            stale_seconds: staleness.seconds,
            stale_reason: staleness.reason,
            generation: snapshot.generation,
            services: snapshot
                .zone
                .sorted()
                .into_iter()
                .map(|s| {
                    let served = snapshot.services.get(&s.key);
                    ServiceSummary {
                        namespace: &s.key.namespace,
                        name: &s.key.name,
                        revision: served.map_or(0, |served| served.revision),
                        spec: ServiceSpecView::from(&**s),
                        endpoints: served.map_or(0, |served| served.endpoints.len()),
                        unusable: served.map_or(0, |served| served.unusable.len()),
                    }
                })
                .collect(),
        }
    }
}

/// One Service in `GET /debug/endpoints`: everything, served or not.
#[derive(Serialize)]
pub struct DebugService<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub revision: u64,
    #[serde(flatten)]
    pub spec: ServiceSpecView<'a>,
    #[serde(rename = "terminatingFallback")]
    pub terminating_fallback: bool,
    pub ports: &'a [ServicePort],
    pub endpoints: &'a [Endpoint],
    pub unusable: &'a [Endpoint],
}

impl<'a> DebugService<'a> {
    /// `service`, with its served view when its endpoints are served.
    pub fn new(service: &'a ServiceObject, served: Option<&'a ServedService>) -> Self {
        Self {
            namespace: &service.key.namespace,
            name: &service.key.name,
            revision: served.map_or(0, |s| s.revision),
            spec: ServiceSpecView::from(service),
            terminating_fallback: served.is_some_and(|s| s.terminating_fallback),
            ports: &service.ports,
            endpoints: served.map_or(&[], |s| &s.endpoints),
            unusable: served.map_or(&[], |s| &s.unusable),
        }
    }
}
