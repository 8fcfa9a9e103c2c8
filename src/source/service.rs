//! Services decoded straight into what the index keeps.
//!
//! At start-up the agent lists every Service in the cluster; at 10 000
//! Services, k8s-openapi's `Service` (its `managedFields` with free-form
//! JSON, status, every label and annotation, each string a `String`) cost
//! as much decoding as the index gained from it nothing. [`LeanService`]
//! keeps the metadata kube-runtime's watcher needs (name, namespace,
//! resourceVersion, uid), kubedisco's annotations (expose, default weight,
//! the resilience settings of [`super::resilience`]) and its one label
//! (`kubedisco.io/expose`, the label the agent's slice watch selects on) and the spec fields
//! of a [`ServiceObject`]; the rest is skipped unread. Both sources (the
//! watcher and manifest files) read Services through it, so they cannot
//! disagree.
//!
//! The rules are those of the k8s-openapi conversion it replaces: `port` is
//! required (as the API requires it), a port with an unknown protocol or a
//! number outside 0-65535 is dropped, a missing protocol is TCP.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::convert::{
    DEFAULT_WEIGHT_ANNOTATION, EXPOSE_ANNOTATION, EXPOSE_LABEL, weight_annotation,
};
use super::lean::{Common, KeyIndex, Meta, Shared, lean_resource};
use super::metrics::InvalidWeights;
use super::proto::{self, ProtoError};
use super::resilience::{RESILIENCE_ANNOTATIONS, resilience_annotations};
use crate::index::intern::intern;
use crate::index::objects::{Protocol, ServiceKey, ServiceObject, ServicePort, ServiceType};

/// A `v1` Service, reduced while decoding.
///
/// `metadata` holds only name, namespace, resourceVersion, uid, the
/// `kubedisco.io/expose` label and the `kubedisco.io/expose`,
/// `kubedisco.io/default-weight` and resilience annotations
/// ([`super::resilience`]).
#[derive(Clone, Debug, Default)]
pub struct LeanService {
    pub metadata: ObjectMeta,
    /// `spec.clusterIP: None`.
    headless: bool,
    /// `spec.type`; ExternalName is never served, whatever its annotations.
    service_type: ServiceType,
    /// `spec.clusterIPs`, in the API's order (primary family first).
    cluster_ips: Vec<IpAddr>,
    /// `spec.clusterIP`, used when `clusterIPs` is absent (older writers).
    cluster_ip: Option<IpAddr>,
    external_name: Option<String>,
    publish_not_ready: bool,
    ports: Vec<ServicePort>,
    traffic_distribution: Option<Arc<str>>,
}

/// The annotations a Service is decoded with; every other one is skipped
/// unread.
const SERVICE_ANNOTATIONS: [&str; 12] = {
    let mut keys = [EXPOSE_ANNOTATION; 12];
    keys[1] = DEFAULT_WEIGHT_ANNOTATION;
    let mut i = 0;
    while i < RESILIENCE_ANNOTATIONS.len() {
        keys[i + 2] = RESILIENCE_ANNOTATIONS[i];
        i += 1;
    }
    keys
};

lean_resource!(LeanService, kind: "Service", group: "", version: "v1", plural: "services");

impl LeanService {
    /// The compact form the index keeps. Logs an invalid weight annotation
    /// and counts it in `invalid_weights`.
    pub fn into_object(self, invalid_weights: &InvalidWeights) -> ServiceObject {
        let metadata = self.metadata;
        let key = ServiceKey {
            // Namespaces repeat across objects: one shared copy.
            namespace: intern(metadata.namespace.as_deref().unwrap_or("default")),
            name: metadata.name.as_deref().unwrap_or_default().into(),
        };
        let annotations = metadata.annotations.as_ref();
        let is_external_name = self.service_type == ServiceType::ExternalName;
        let exposed = !is_external_name
            && (is_true(metadata.labels.as_ref(), EXPOSE_LABEL)
                || is_true(annotations, EXPOSE_ANNOTATION));
        let what = key.to_string();
        ServiceObject {
            default_weight: weight_annotation(
                annotations,
                DEFAULT_WEIGHT_ANNOTATION,
                &what,
                "service",
                invalid_weights,
            ),
            resilience: resilience_annotations(annotations, &what, invalid_weights),
            key,
            service_type: self.service_type,
            cluster_ips: if self.headless || is_external_name {
                Box::default()
            } else if self.cluster_ips.is_empty() {
                self.cluster_ip.into_iter().collect()
            } else {
                self.cluster_ips.into()
            },
            external_name: self
                .external_name
                .filter(|_| is_external_name)
                .map(|name| name.trim_end_matches('.').into()),
            headless: self.headless,
            exposed,
            publish_not_ready: self.publish_not_ready,
            ports: self.ports,
            traffic_distribution: self.traffic_distribution,
        }
    }

    /// Exposed by the annotation alone: served, but with the label missing
    /// an agent that watches only served slices (`--watch-slices served`)
    /// never receives its endpoints, since the slices carry the Service's
    /// labels, not its annotations.
    pub fn exposed_by_annotation_only(&self) -> bool {
        self.service_type != ServiceType::ExternalName
            && !self.headless
            && !self.expose_label()
            && is_true(self.metadata.annotations.as_ref(), EXPOSE_ANNOTATION)
    }

    fn expose_label(&self) -> bool {
        is_true(self.metadata.labels.as_ref(), EXPOSE_LABEL)
    }
}

/// Whether `key` of a label or annotation map is `"true"`.
fn is_true(map: Option<&std::collections::BTreeMap<String, String>>, key: &str) -> bool {
    map.and_then(|m| m.get(key)).is_some_and(|v| v == "true")
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(rename = "clusterIP", default)]
    cluster_ip: Shared,
    #[serde(rename = "clusterIPs", default)]
    cluster_ips: Vec<String>,
    #[serde(rename = "type", default)]
    type_: Shared,
    #[serde(default)]
    external_name: Option<String>,
    ports: Option<Vec<RawPort>>,
    publish_not_ready_addresses: Option<bool>,
    #[serde(default)]
    traffic_distribution: Shared,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPort {
    #[serde(default)]
    name: Common,
    port: i32,
    #[serde(default)]
    protocol: Common,
    target_port: Option<IntOrString>,
}

impl RawPort {
    fn into_port(self) -> Option<ServicePort> {
        Some(ServicePort {
            protocol: Protocol::parse(self.protocol.0.as_deref())?,
            port: u16::try_from(self.port).ok()?,
            name: self.name.0.unwrap_or_else(|| intern("")),
            target_port: self.target_port.map(|target| match target {
                IntOrString::Int(n) => n.to_string().into(),
                IntOrString::String(s) => s.into(),
            }),
        })
    }
}

impl<'de> Deserialize<'de> for LeanService {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        const KEYS: &[&str] = &["metadata", "spec"];
        impl<'de> Visitor<'de> for V {
            type Value = LeanService;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("Service")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LeanService, A::Error> {
                let mut service = LeanService::default();
                while let Some(found) = map.next_key_seed(KeyIndex(KEYS))? {
                    match found {
                        Some(0) => {
                            service.metadata = map.next_value_seed(Meta {
                                labels: &[EXPOSE_LABEL],
                                annotations: &SERVICE_ANNOTATIONS,
                            })?
                        }
                        Some(1) => {
                            let spec: Option<RawSpec> = map.next_value()?;
                            let spec = spec.unwrap_or_default();
                            service.headless = spec.cluster_ip.0.as_deref() == Some("None");
                            service.cluster_ip = parse_cluster_ip(spec.cluster_ip.0.as_deref());
                            service.cluster_ips = spec
                                .cluster_ips
                                .iter()
                                .filter_map(|ip| parse_cluster_ip(Some(ip)))
                                .collect();
                            service.service_type =
                                ServiceType::parse(spec.type_.0.as_deref().unwrap_or_default());
                            service.external_name = spec.external_name;
                            service.publish_not_ready =
                                spec.publish_not_ready_addresses.unwrap_or(false);
                            service.ports = spec
                                .ports
                                .into_iter()
                                .flatten()
                                .filter_map(RawPort::into_port)
                                .collect();
                            service.traffic_distribution = spec.traffic_distribution.0;
                        }
                        // kind, apiVersion, status: not used.
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(service)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The protobuf form (`k8s.io/api/core/v1/generated.proto`), read by the
/// same rules as the JSON above; field numbers in the comments.
impl LeanService {
    pub fn from_protobuf(message: &[u8]) -> Result<LeanService, ProtoError> {
        let mut service = LeanService::default();
        proto::for_each(message, |number, value| {
            match number {
                // Service: metadata = 1, spec = 2 (status = 3 unread).
                1 => {
                    service.metadata = proto::object_meta(
                        value.bytes("Service.metadata")?,
                        &[EXPOSE_LABEL],
                        &SERVICE_ANNOTATIONS,
                    )?
                }
                2 => spec_from_protobuf(value.bytes("Service.spec")?, &mut service)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(service)
    }
}

fn spec_from_protobuf(message: &[u8], service: &mut LeanService) -> Result<(), ProtoError> {
    proto::for_each(message, |number, value| {
        match number {
            // ServiceSpec: ports = 1, clusterIP = 3, type = 4,
            // externalName = 10, publishNotReadyAddresses = 13,
            // clusterIPs = 18, trafficDistribution = 23.
            1 => service
                .ports
                .extend(port_from_protobuf(value.bytes("ServiceSpec.ports")?)?.into_port()),
            3 => {
                let text = value.text("ServiceSpec.clusterIP")?;
                service.headless = text == "None";
                service.cluster_ip = parse_cluster_ip(Some(text));
            }
            4 => service.service_type = ServiceType::parse(value.text("ServiceSpec.type")?),
            10 => service.external_name = Some(value.text("ServiceSpec.externalName")?.to_string()),
            18 => service.cluster_ips.extend(parse_cluster_ip(Some(
                value.text("ServiceSpec.clusterIPs")?,
            ))),
            13 => {
                service.publish_not_ready = value.boolean("ServiceSpec.publishNotReadyAddresses")?
            }
            23 => {
                service.traffic_distribution =
                    Some(value.text("ServiceSpec.trafficDistribution")?.into())
            }
            _ => {}
        }
        Ok(())
    })
}

/// A cluster IP as the API writes it; "None" (headless), "" (not yet
/// allocated) and anything unparseable are no address.
fn parse_cluster_ip(text: Option<&str>) -> Option<IpAddr> {
    text?.parse().ok()
}

fn port_from_protobuf(message: &[u8]) -> Result<RawPort, ProtoError> {
    // ServicePort: name = 1, protocol = 2, port = 3, targetPort = 4.
    let mut port = RawPort {
        name: Common(None),
        port: 0,
        protocol: Common(None),
        target_port: None,
    };
    proto::for_each(message, |number, value| {
        match number {
            1 => port.name = Common(Some(intern(value.text("ServicePort.name")?))),
            2 => port.protocol = Common(Some(intern(value.text("ServicePort.protocol")?))),
            3 => port.port = value.int32("ServicePort.port")?,
            4 => {
                // IntOrString: type = 1 (0 int, 1 string), intVal = 2, strVal = 3.
                let (mut is_string, mut number, mut text) = (false, 0, String::new());
                proto::for_each(value.bytes("ServicePort.targetPort")?, |field, value| {
                    match field {
                        1 => is_string = value.varint("IntOrString.type")? == 1,
                        2 => number = value.int32("IntOrString.intVal")?,
                        3 => text = value.text("IntOrString.strVal")?.to_string(),
                        _ => {}
                    }
                    Ok(())
                })?;
                port.target_port = Some(if is_string {
                    IntOrString::String(text)
                } else {
                    IntOrString::Int(number)
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(value: serde_json::Value) -> ServiceObject {
        serde_json::from_value::<LeanService>(value)
            .unwrap()
            .into_object(&InvalidWeights::default())
    }

    #[test]
    fn services_are_served_when_headless_or_exposed() {
        let exposed = decode(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop",
                         "annotations": {"kubedisco.io/expose": "true",
                                         "kubedisco.io/default-weight": "5", "other": "x"}},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": "http"}]}
        }));
        assert!(!exposed.headless && exposed.exposed && exposed.is_served());
        assert_eq!(exposed.service_type, ServiceType::ClusterIP);
        // clusterIP alone (a writer that predates clusterIPs).
        assert_eq!(
            &*exposed.cluster_ips,
            ["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(exposed.default_weight, Some(5));
        assert_eq!(exposed.ports[0].target_port.as_deref(), Some("http"));
        assert_eq!(exposed.ports[0].protocol, Protocol::Tcp);

        let external = decode(serde_json::json!({
            "metadata": {"name": "ext", "annotations": {"kubedisco.io/expose": "true"}},
            "spec": {"type": "ExternalName", "externalName": "example.org."}
        }));
        assert!(!external.is_served());
        assert_eq!(&*external.key.namespace, "default");
        assert_eq!(external.service_type, ServiceType::ExternalName);
        assert_eq!(external.external_name.as_deref(), Some("example.org"));
        assert!(external.cluster_ips.is_empty());

        let dual = decode(serde_json::json!({
            "metadata": {"name": "dual"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11",
                     "clusterIPs": ["10.96.0.11", "fd00::11"], "externalName": "ignored.example"}
        }));
        assert_eq!(dual.service_type, ServiceType::LoadBalancer);
        assert_eq!(dual.cluster_ips.len(), 2);
        assert_eq!(dual.external_name, None, "only ExternalName has one");

        let plain = decode(serde_json::json!({"metadata": {"name": "p"}, "spec": null}));
        assert!(!plain.is_served() && plain.ports.is_empty());
    }

    /// What k8s-openapi's type would have given, field by field, for a
    /// Service as the API server sends it (managedFields, status and all).
    #[test]
    fn keeps_what_the_index_needs_and_skips_the_rest() {
        let value = serde_json::json!({
            "kind": "Service", "apiVersion": "v1",
            "metadata": {"name": "db", "namespace": "data", "resourceVersion": "42", "uid": "u-1",
                         "labels": {"app": "db"},
                         "annotations": {"kubedisco.io/default-weight": "70000"},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:ports": {}}}}]},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"},
                     "publishNotReadyAddresses": true, "trafficDistribution": "PreferClose",
                     "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": 5432},
                               {"name": "metrics", "port": 9187, "protocol": "UDP"},
                               {"name": "odd", "port": 1, "protocol": "QUIC"},
                               {"name": "big", "port": 70000}]},
            "status": {"loadBalancer": {}}
        });
        let lean: LeanService = serde_json::from_value(value.clone()).unwrap();
        let full: k8s_openapi::api::core::v1::Service = serde_json::from_value(value).unwrap();
        assert_eq!(lean.metadata.name, full.metadata.name);
        assert_eq!(lean.metadata.namespace, full.metadata.namespace);
        assert_eq!(
            lean.metadata.resource_version,
            full.metadata.resource_version
        );
        assert_eq!(lean.metadata.uid, full.metadata.uid);
        assert!(lean.metadata.managed_fields.is_none());
        assert!(lean.metadata.labels.as_ref().unwrap().is_empty());
        let invalid_weights = InvalidWeights::default();
        let object = lean.into_object(&invalid_weights);
        assert!(object.headless && object.publish_not_ready);
        // 70000 does not fit an SRV weight: ignored (logged and counted).
        assert_eq!(object.default_weight, None);
        assert_eq!(invalid_weights.count("service"), 1);
        assert_eq!(object.traffic_distribution.as_deref(), Some("PreferClose"));
        let ports: Vec<_> = object
            .ports
            .iter()
            .map(|p| (&*p.name, p.port, p.protocol, p.target_port.as_deref()))
            .collect();
        assert_eq!(
            ports,
            [
                ("pg", 5432, Protocol::Tcp, Some("5432")),
                ("metrics", 9187, Protocol::Udp, None)
            ]
        );
    }

    /// The label exposes as the annotation does, in both encodings; only
    /// an annotation without the label is reported, and only for a Service
    /// whose slices the label would select (not headless, not ExternalName).
    #[test]
    fn the_expose_label_exposes_and_an_annotation_alone_is_reported() {
        let service = |labels: &[(&str, &str)], annotations: &[(&str, &str)], spec: &str| {
            let mut message = Vec::new();
            proto::encode::bytes(
                &mut message,
                1,
                &proto::encode::meta("web", "shop", "1", labels, annotations),
            );
            let mut spec_message = Vec::new();
            proto::encode::text(&mut spec_message, 3, spec);
            proto::encode::bytes(&mut message, 2, &spec_message);
            let from_protobuf = LeanService::from_protobuf(&message).unwrap();
            let map = |pairs: &[(&str, &str)]| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            let from_json: LeanService = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "labels": map(labels), "annotations": map(annotations)},
                "spec": {"clusterIP": spec}
            }))
            .unwrap();
            [from_protobuf, from_json].map(|lean| {
                let annotation_only = lean.exposed_by_annotation_only();
                let object = lean.into_object(&InvalidWeights::default());
                (object.exposed, annotation_only)
            })
        };
        let expose = [("kubedisco.io/expose", "true")];
        let other = [("app", "web")];
        assert_eq!(service(&expose, &[], "10.96.0.1"), [(true, false); 2]);
        assert_eq!(service(&expose, &expose, "10.96.0.1"), [(true, false); 2]);
        assert_eq!(service(&other, &expose, "10.96.0.1"), [(true, true); 2]);
        assert_eq!(service(&other, &expose, "None"), [(true, false); 2]);
        assert_eq!(service(&other, &[], "10.96.0.1"), [(false, false); 2]);
        let not_true = [("kubedisco.io/expose", "yes")];
        assert_eq!(service(&not_true, &[], "10.96.0.1"), [(false, false); 2]);
    }

    /// The resilience annotations come through both encodings alike, and
    /// an invalid one is counted without hiding the valid ones.
    #[test]
    fn resilience_annotations_are_read_from_json_and_protobuf() {
        use super::super::resilience::{
            HASH_HEADER, LB_POLICY, OUTLIER_CONSECUTIVE_FAILURES, RETRY_MAX_ATTEMPTS,
        };
        use crate::index::resilience::LbPolicy;
        let annotations = [
            (OUTLIER_CONSECUTIVE_FAILURES, "2"),
            (RETRY_MAX_ATTEMPTS, "9"),
            (LB_POLICY, "ring_hash"),
            (HASH_HEADER, "x-user key"),
            ("kubedisco.io/expose", "true"),
        ];
        let mut message = Vec::new();
        proto::encode::bytes(
            &mut message,
            1,
            &proto::encode::meta("web", "shop", "1", &[], &annotations),
        );
        let from_protobuf = LeanService::from_protobuf(&message).unwrap();
        let map: std::collections::BTreeMap<_, _> = annotations.into_iter().collect();
        let from_json: LeanService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": map},
        }))
        .unwrap();
        for lean in [from_protobuf, from_json] {
            let invalid = InvalidWeights::default();
            let object = lean.into_object(&invalid);
            let resilience = object.resilience.expect("a valid annotation");
            assert_eq!(resilience.outlier.consecutive_failures, Some(2));
            assert_eq!(resilience.retry.max_attempts, None, "9 attempts is invalid");
            assert_eq!(invalid.annotation_count(RETRY_MAX_ATTEMPTS), 1);
            assert_eq!(resilience.balancing.policy, Some(LbPolicy::RingHash));
            assert_eq!(resilience.balancing.hash_header, None, "a space is invalid");
            assert_eq!(invalid.annotation_count(HASH_HEADER), 1);
        }
        let plain = decode(serde_json::json!({"metadata": {"name": "p"}}));
        assert!(plain.resilience.is_none());
    }

    #[test]
    fn a_port_without_a_number_is_an_error() {
        let error = serde_json::from_value::<LeanService>(serde_json::json!({
            "metadata": {"name": "b"}, "spec": {"ports": [{"port": "notanumber"}]}
        }))
        .unwrap_err();
        assert!(error.to_string().contains("invalid type"), "{error}");
    }
}
