//! Kubernetes API objects → compact index objects.
//!
//! Everything the agent does not serve is dropped here (managedFields,
//! unrelated annotations, status), so memory grows with endpoints, not with
//! the size of API objects.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tracing::warn;

use crate::index::intern::intern;
use crate::index::objects::{
    Protocol, ServiceKey, ServiceObject, ServicePort, SliceEndpoint, SliceKey, SliceObject,
    SlicePort, TargetRef, TopologyHints,
};

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

/// For strings that repeat across objects (namespaces, node and zone
/// names, kinds, port names): one shared copy ([`intern`]).
fn common(text: &str) -> Arc<str> {
    intern(text)
}

/// The compact form of a Service.
pub fn service_object(service: &Service) -> ServiceObject {
    let metadata = &service.metadata;
    let namespace = metadata.namespace.as_deref().unwrap_or("default");
    let name = metadata.name.as_deref().unwrap_or_default();
    let key = ServiceKey {
        namespace: common(namespace),
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

/// The compact form of an EndpointSlice, or None for FQDN slices, which name
/// hosts rather than addresses and are ignored (as kube-proxy does).
pub fn slice_object(slice: &EndpointSlice) -> Option<SliceObject> {
    if slice.address_type == "FQDN" {
        return None;
    }
    let metadata = &slice.metadata;
    let key = SliceKey {
        namespace: common(metadata.namespace.as_deref().unwrap_or("default")),
        name: shared(metadata.name.as_deref().unwrap_or_default()),
    };
    let service = metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .map(|name| common(name));
    let what = format!("endpointslice {}/{}", key.namespace, key.name);
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                warn!(
                    object = what,
                    "ignoring port with unknown protocol {:?}", port.protocol
                );
                return None;
            };
            let number = match port.port {
                None => None,
                Some(n) => match u16::try_from(n) {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        warn!(object = what, "ignoring port number {n} outside 1-65535");
                        return None;
                    }
                },
            };
            Some(SlicePort {
                name: common(port.name.as_deref().unwrap_or_default()),
                port: number,
                protocol,
            })
        })
        .collect();
    let mut endpoints: Vec<_> = slice
        .endpoints
        .iter()
        .filter_map(|endpoint| {
            let first = endpoint.addresses.first()?;
            let address: IpAddr = match first.parse() {
                Ok(address) => address,
                Err(_) => {
                    warn!(
                        object = what,
                        "ignoring endpoint with invalid address {first:?}"
                    );
                    return None;
                }
            };
            let conditions = endpoint.conditions.as_ref();
            let hints = endpoint.hints.as_ref();
            Some(Arc::new(SliceEndpoint {
                address,
                ready: conditions.and_then(|c| c.ready).unwrap_or(true),
                serving: conditions.and_then(|c| c.serving).unwrap_or(true),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                hostname: endpoint.hostname.as_deref().map(shared),
                node: endpoint.node_name.as_deref().map(common),
                zone: endpoint.zone.as_deref().map(common),
                target_ref: endpoint.target_ref.as_ref().map(|t| TargetRef {
                    kind: common(t.kind.as_deref().unwrap_or_default()),
                    namespace: t.namespace.as_deref().map(common),
                    name: shared(t.name.as_deref().unwrap_or_default()),
                }),
                hints: TopologyHints::boxed(
                    hints
                        .and_then(|h| h.for_zones.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|z| common(&z.name))
                        .collect(),
                    hints
                        .and_then(|h| h.for_nodes.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|n| common(&n.name))
                        .collect(),
                ),
            }))
        })
        .collect();
    // Kept for as long as the slice exists: no spare capacity.
    endpoints.shrink_to_fit();
    Some(SliceObject {
        weight: weight_annotation(metadata.annotations.as_ref(), WEIGHT_KEY, &what),
        key,
        service,
        ports,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice_from_json(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn slice_conditions_default_as_kubernetes_documents() {
        let slice = slice_from_json(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"},
                         "annotations": {"kubedisco.io/weight": "250"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1", "10.0.0.99"]},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}},
                {"addresses": ["not-an-ip"]}
            ]
        }));
        let compact = slice_object(&slice).unwrap();
        assert_eq!(compact.service.as_deref(), Some("web"));
        assert_eq!(compact.weight, Some(250));
        assert_eq!(compact.ports[0].protocol, Protocol::Tcp);
        assert_eq!(compact.endpoints.len(), 2);
        let first = &compact.endpoints[0];
        assert_eq!(first.address.to_string(), "10.0.0.1");
        assert!(first.ready && first.serving && !first.terminating);
        let second = &compact.endpoints[1];
        assert!(!second.ready && second.serving && second.terminating);
    }

    #[test]
    fn fqdn_slices_are_ignored_and_bad_weights_dropped() {
        let fqdn = slice_from_json(serde_json::json!({
            "metadata": {"name": "x"}, "addressType": "FQDN", "endpoints": []
        }));
        assert!(slice_object(&fqdn).is_none());
        let bad = slice_from_json(serde_json::json!({
            "metadata": {"name": "x", "annotations": {"kubedisco.io/weight": "-3"}},
            "addressType": "IPv4", "endpoints": []
        }));
        assert_eq!(slice_object(&bad).unwrap().weight, None);
    }

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
