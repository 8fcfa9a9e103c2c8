//! The JSON shapes of the API. They borrow from snapshots, so answering does
//! not copy endpoint lists.

use serde::Serialize;

use crate::index::objects::ServicePort;
use crate::index::{Endpoint, ServedService, Snapshot};

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
        }
    }
}

/// One row of `GET /v1/services`.
#[derive(Serialize)]
pub struct ServiceSummary<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub revision: u64,
    pub headless: bool,
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
                .sorted()
                .into_iter()
                .map(|s| ServiceSummary {
                    namespace: &s.key.namespace,
                    name: &s.key.name,
                    revision: s.revision,
                    headless: s.headless,
                    endpoints: s.endpoints.len(),
                    unusable: s.unusable.len(),
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
    pub headless: bool,
    #[serde(rename = "terminatingFallback")]
    pub terminating_fallback: bool,
    pub ports: &'a [ServicePort],
    pub endpoints: &'a [Endpoint],
    pub unusable: &'a [Endpoint],
}

impl<'a> From<&'a ServedService> for DebugService<'a> {
    fn from(s: &'a ServedService) -> Self {
        Self {
            namespace: &s.key.namespace,
            name: &s.key.name,
            revision: s.revision,
            headless: s.headless,
            terminating_fallback: s.terminating_fallback,
            ports: &s.ports,
            endpoints: &s.endpoints,
            unusable: &s.unusable,
        }
    }
}
