//! Kubernetes Services → compact index objects (EndpointSlices:
//! [`super::slice`]), and the annotation rules both share.
//!
//! Everything the agent does not serve is dropped here (managedFields,
//! unrelated annotations, status), so memory grows with endpoints, not with
//! the size of API objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tracing::warn;

use crate::index::intern::intern;
use crate::index::objects::{Protocol, ServiceKey, ServiceObject, ServicePort};

/// Service annotation: serve this ClusterIP Service's endpoints too.
pub const EXPOSE_ANNOTATION: &str = "kubedisco.io/expose";
/// Service annotation: weight of endpoints that have none of their own.
pub const DEFAULT_WEIGHT_ANNOTATION: &str = "kubedisco.io/default-weight";
/// EndpointSlice annotation (and Pod label): weight of its endpoints.
pub const WEIGHT_KEY: &str = "kubedisco.io/weight";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Weights are 16-bit so that they fit SRV records unchanged.
pub fn parse_weight(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u16>()
        .map(u32::from)
        .map_err(|_| format!("weight {text:?} is not an integer from 0 to 65535"))
}

fn weight_annotation(
    annotations: Option<&BTreeMap<String, String>>,
    key: &str,
    what: &str,
) -> Option<u32> {
    let text = annotations?.get(key)?;
    match parse_weight(text) {
        Ok(weight) => Some(weight),
        Err(error) => {
            warn!(
                object = what,
                annotation = key,
                "ignoring invalid weight: {error}"
            );
            None
        }
    }
}

fn shared(text: &str) -> Arc<str> {
    Arc::from(text)
}

/// The compact form of a Service.
pub fn service_object(service: &Service) -> ServiceObject {
    let metadata = &service.metadata;
    let namespace = metadata.namespace.as_deref().unwrap_or("default");
    let name = metadata.name.as_deref().unwrap_or_default();
    let key = ServiceKey {
        // Namespaces repeat across objects: one shared copy.
        namespace: intern(namespace),
        name: shared(name),
    };
    let spec = service.spec.as_ref();
    let headless = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None");
    let external_name = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    let annotations = metadata.annotations.as_ref();
    let exposed = !external_name
        && annotations
            .and_then(|a| a.get(EXPOSE_ANNOTATION))
            .is_some_and(|v| v == "true");
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|port| {
            let protocol = Protocol::parse(port.protocol.as_deref())?;
            Some(ServicePort {
                name: shared(port.name.as_deref().unwrap_or_default()),
                port: u16::try_from(port.port).ok()?,
                protocol,
                target_port: port.target_port.as_ref().map(|t| match t {
                    IntOrString::Int(n) => shared(&n.to_string()),
                    IntOrString::String(s) => shared(s),
                }),
            })
        })
        .collect();
    ServiceObject {
        default_weight: weight_annotation(annotations, DEFAULT_WEIGHT_ANNOTATION, &key.to_string()),
        key,
        headless,
        exposed,
        publish_not_ready: spec
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false),
        ports,
        traffic_distribution: spec
            .and_then(|s| s.traffic_distribution.as_deref())
            .map(shared),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_served_when_headless_or_exposed() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop",
                         "annotations": {"kubedisco.io/expose": "true",
                                         "kubedisco.io/default-weight": "5"}},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": "http"}]}
        }))
        .unwrap();
        let compact = service_object(&service);
        assert!(!compact.headless && compact.exposed && compact.is_served());
        assert_eq!(compact.default_weight, Some(5));
        assert_eq!(compact.ports[0].target_port.as_deref(), Some("http"));
    }

    #[test]
    fn weights_must_fit_sixteen_bits() {
        assert_eq!(parse_weight("0"), Ok(0));
        assert_eq!(parse_weight("65535"), Ok(65535));
        assert!(parse_weight("65536").is_err());
        assert!(parse_weight("ten").is_err());
    }
}
