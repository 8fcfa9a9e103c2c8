//! EndpointSlices decoded straight into the index's compact form.
//!
//! k8s-openapi's `EndpointSlice` keeps all the API server sends:
//! `managedFields`, every label and annotation, every address of every
//! endpoint, each string its own `String`. At start-up the agent lists every
//! slice in the cluster, and building all of that only to drop most of it at
//! once was a large part of the time to ready. [`Slice`] reads only what a
//! [`SliceObject`] keeps, skips everything else without allocating
//! ([`IgnoredAny`]), parses addresses while decoding and makes the strings
//! it keeps `Arc<str>` from the start. It implements kube's `Resource`, so
//! kube-runtime's watcher lists and watches it like the k8s-openapi type;
//! the manifest source reads it too, so both sources convert slices the
//! same way.
//!
//! The rules are those of k8s-openapi and the conversion it replaces:
//! missing fields take their defaults, `FQDN` slices are ignored (as
//! kube-proxy does), an endpoint is its first address, conditions default as
//! Kubernetes documents them; ports with an unknown protocol or a number
//! outside 1-65535 and endpoints with an invalid address are dropped with a
//! warning.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tracing::warn;

use super::convert::{SERVICE_NAME_LABEL, WEIGHT_KEY, weight_annotation};
use super::lean::{Common, KeyIndex, Meta, Shared, lean_resource};
use super::metrics::InvalidWeights;
use super::proto::{self, ProtoError};
use crate::index::intern::intern;
use crate::index::objects::{
    Protocol, SliceEndpoint, SliceKey, SliceObject, SlicePort, TargetRef, TopologyHints,
};

/// A `discovery.k8s.io/v1` EndpointSlice, reduced while decoding.
///
/// `metadata` holds only name, namespace, resourceVersion, uid, the
/// `kubernetes.io/service-name` label and the `kubedisco.io/weight`
/// annotation: other labels and annotations are not kept.
#[derive(Clone, Debug, Default)]
pub struct Slice {
    pub metadata: ObjectMeta,
    /// `addressType: FQDN`: the slice names hosts, not addresses.
    pub fqdn: bool,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Arc<SliceEndpoint>>,
    /// What was dropped while decoding, warned about by [`Slice::into_object`]
    /// (where the slice's name is known). Empty, without an allocation, for a
    /// valid slice.
    problems: Vec<String>,
}

lean_resource!(Slice, kind: "EndpointSlice", group: "discovery.k8s.io", version: "v1", plural: "endpointslices");

impl Slice {
    /// The compact form, or None for an FQDN slice. Logs what was dropped;
    /// counts an invalid weight annotation in `invalid_weights`.
    pub fn into_object(self, invalid_weights: &InvalidWeights) -> Option<SliceObject> {
        if self.fqdn {
            return None;
        }
        let metadata = self.metadata;
        let key = SliceKey {
            namespace: intern(metadata.namespace.as_deref().unwrap_or("default")),
            name: metadata.name.as_deref().unwrap_or_default().into(),
        };
        let what = || format!("endpointslice {}/{}", key.namespace, key.name);
        for problem in &self.problems {
            warn!(object = what(), "{problem}");
        }
        let weight = weight_annotation(
            metadata.annotations.as_ref(),
            WEIGHT_KEY,
            &what(),
            "endpointslice",
            invalid_weights,
        );
        let service = metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            .map(|name| intern(name));
        let mut endpoints = self.endpoints;
        // Kept for as long as the slice exists: no spare capacity.
        endpoints.shrink_to_fit();
        Some(SliceObject {
            key,
            service,
            weight,
            ports: self.ports,
            endpoints,
        })
    }
}

/// An endpoint's `addresses`: the first one, parsed; the rest skipped.
#[derive(Default)]
enum FirstAddress {
    #[default]
    None,
    Valid(IpAddr),
    Invalid(String),
}

impl<'de> Deserialize<'de> for FirstAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Parsed(FirstAddress);
        impl<'de> Deserialize<'de> for Parsed {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Parsed;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("an address")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<Parsed, E> {
                        Ok(Parsed(match v.parse() {
                            Ok(ip) => FirstAddress::Valid(ip),
                            Err(_) => FirstAddress::Invalid(v.to_string()),
                        }))
                    }
                }
                d.deserialize_str(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FirstAddress;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of addresses or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<FirstAddress, E> {
                Ok(FirstAddress::None)
            }
            fn visit_none<E: de::Error>(self) -> Result<FirstAddress, E> {
                Ok(FirstAddress::None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<FirstAddress, D::Error> {
                d.deserialize_seq(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstAddress, A::Error> {
                let first = seq.next_element::<Parsed>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(first.map(|p| p.0).unwrap_or_default())
            }
        }
        deserializer.deserialize_option(V)
    }
}

#[derive(Default, Deserialize)]
struct Conditions {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Deserialize)]
struct RawTargetRef {
    #[serde(default)]
    kind: Common,
    #[serde(default)]
    namespace: Common,
    #[serde(default)]
    name: Shared,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: Common,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hints {
    for_zones: Option<Vec<Named>>,
    for_nodes: Option<Vec<Named>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEndpoint {
    #[serde(default)]
    addresses: FirstAddress,
    conditions: Option<Conditions>,
    #[serde(default)]
    hostname: Shared,
    #[serde(default)]
    node_name: Common,
    #[serde(default)]
    zone: Common,
    target_ref: Option<RawTargetRef>,
    hints: Option<Hints>,
}

fn empty() -> Arc<str> {
    intern("")
}

fn names(list: Option<Vec<Named>>) -> Box<[Arc<str>]> {
    list.into_iter()
        .flatten()
        .map(|n| n.name.0.unwrap_or_else(empty))
        .collect()
}

#[derive(Deserialize)]
struct RawPort {
    #[serde(default)]
    name: Common,
    port: Option<i32>,
    #[serde(default)]
    protocol: Option<String>,
}

/// `endpoints`, converted one by one as they are decoded.
struct Endpoints<'a>(&'a mut Vec<String>);

impl<'de> DeserializeSeed<'de> for Endpoints<'_> {
    type Value = Vec<Arc<SliceEndpoint>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Endpoints<'_> {
    type Value = Vec<Arc<SliceEndpoint>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of endpoints or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut endpoints = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1000));
        while let Some(raw) = seq.next_element::<RawEndpoint>()? {
            endpoints.extend(raw.into_endpoint(self.0));
        }
        Ok(endpoints)
    }
}

impl RawEndpoint {
    /// The kept form, or None (with a problem noted) for an endpoint
    /// without a usable address.
    fn into_endpoint(self, problems: &mut Vec<String>) -> Option<Arc<SliceEndpoint>> {
        let address = match self.addresses {
            FirstAddress::Valid(ip) => ip,
            FirstAddress::None => return None,
            FirstAddress::Invalid(text) => {
                problems.push(format!("ignoring endpoint with invalid address {text:?}"));
                return None;
            }
        };
        let conditions = self.conditions.unwrap_or_default();
        let hints = self.hints.unwrap_or_default();
        Some(Arc::new(SliceEndpoint {
            address,
            ready: conditions.ready.unwrap_or(true),
            serving: conditions.serving.unwrap_or(true),
            terminating: conditions.terminating.unwrap_or(false),
            hostname: self.hostname.0,
            node: self.node_name.0,
            zone: self.zone.0,
            target_ref: self.target_ref.map(|t| TargetRef {
                kind: t.kind.0.unwrap_or_else(empty),
                namespace: t.namespace.0,
                name: t.name.0.unwrap_or_else(empty),
            }),
            hints: TopologyHints::boxed(names(hints.for_zones), names(hints.for_nodes)),
        }))
    }
}

fn ports(raw: Option<Vec<RawPort>>, problems: &mut Vec<String>) -> Vec<SlicePort> {
    raw.into_iter()
        .flatten()
        .filter_map(|port| {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                problems.push(format!(
                    "ignoring port with unknown protocol {:?}",
                    port.protocol
                ));
                return None;
            };
            let number = match port.port {
                None => None,
                Some(n) => match u16::try_from(n) {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        problems.push(format!("ignoring port number {n} outside 1-65535"));
                        return None;
                    }
                },
            };
            Some(SlicePort {
                name: port.name.0.unwrap_or_else(empty),
                port: number,
                protocol,
            })
        })
        .collect()
}

impl<'de> Deserialize<'de> for Slice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        const KEYS: &[&str] = &["metadata", "addressType", "ports", "endpoints"];
        impl<'de> Visitor<'de> for V {
            type Value = Slice;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("EndpointSlice")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slice, A::Error> {
                let mut slice = Slice::default();
                let mut raw_ports: Option<Vec<RawPort>> = None;
                while let Some(found) = map.next_key_seed(KeyIndex(KEYS))? {
                    match found {
                        Some(0) => {
                            slice.metadata = map.next_value_seed(Meta {
                                labels: &[SERVICE_NAME_LABEL],
                                annotations: &[WEIGHT_KEY],
                            })?
                        }
                        Some(1) => {
                            let address_type: Option<Shared> = map.next_value()?;
                            slice.fqdn = address_type
                                .and_then(|t| t.0)
                                .is_some_and(|t| &*t == "FQDN");
                        }
                        Some(2) => raw_ports = map.next_value()?,
                        Some(3) => {
                            slice.endpoints = map.next_value_seed(Endpoints(&mut slice.problems))?
                        }
                        // kind, apiVersion: the API server's, never another kind.
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                slice.ports = ports(raw_ports, &mut slice.problems);
                Ok(slice)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The protobuf form (`k8s.io/api/discovery/v1/generated.proto`), read by
/// the same rules as the JSON above; field numbers in the comments.
impl Slice {
    pub fn from_protobuf(message: &[u8]) -> Result<Slice, ProtoError> {
        let mut slice = Slice::default();
        let mut raw_ports = Vec::new();
        proto::for_each(message, |number, value| {
            match number {
                // EndpointSlice: metadata = 1, endpoints = 2, ports = 3,
                // addressType = 4.
                1 => {
                    slice.metadata = proto::object_meta(
                        value.bytes("EndpointSlice.metadata")?,
                        &[SERVICE_NAME_LABEL],
                        &[WEIGHT_KEY],
                    )?
                }
                2 => {
                    let raw = endpoint_from_protobuf(value.bytes("EndpointSlice.endpoints")?)?;
                    slice
                        .endpoints
                        .extend(raw.into_endpoint(&mut slice.problems));
                }
                3 => raw_ports.push(port_from_protobuf(value.bytes("EndpointSlice.ports")?)?),
                4 => slice.fqdn = value.text("EndpointSlice.addressType")? == "FQDN",
                _ => {}
            }
            Ok(())
        })?;
        slice.endpoints.shrink_to_fit();
        slice.ports = ports(Some(raw_ports), &mut slice.problems);
        Ok(slice)
    }
}

fn common(value: proto::Value<'_>, field: &str) -> Result<Common, ProtoError> {
    Ok(Common(Some(intern(value.text(field)?))))
}

fn endpoint_from_protobuf(message: &[u8]) -> Result<RawEndpoint, ProtoError> {
    let mut endpoint = RawEndpoint {
        addresses: FirstAddress::None,
        conditions: None,
        hostname: Shared(None),
        node_name: Common(None),
        zone: Common(None),
        target_ref: None,
        hints: None,
    };
    proto::for_each(message, |number, value| {
        match number {
            // Endpoint: addresses = 1, conditions = 2, hostname = 3,
            // targetRef = 4, nodeName = 6, zone = 7, hints = 8.
            1 if matches!(endpoint.addresses, FirstAddress::None) => {
                let text = value.text("Endpoint.addresses")?;
                endpoint.addresses = match text.parse() {
                    Ok(ip) => FirstAddress::Valid(ip),
                    Err(_) => FirstAddress::Invalid(text.to_string()),
                };
            }
            2 => {
                // EndpointConditions: ready = 1, serving = 2, terminating = 3.
                let mut conditions = Conditions::default();
                proto::for_each(value.bytes("Endpoint.conditions")?, |number, value| {
                    match number {
                        1 => conditions.ready = Some(value.boolean("conditions.ready")?),
                        2 => conditions.serving = Some(value.boolean("conditions.serving")?),
                        3 => {
                            conditions.terminating = Some(value.boolean("conditions.terminating")?)
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                endpoint.conditions = Some(conditions);
            }
            3 => endpoint.hostname = Shared(Some(value.text("Endpoint.hostname")?.into())),
            4 => {
                // ObjectReference: kind = 1, namespace = 2, name = 3.
                let mut target = RawTargetRef {
                    kind: Common(None),
                    namespace: Common(None),
                    name: Shared(None),
                };
                proto::for_each(value.bytes("Endpoint.targetRef")?, |number, value| {
                    match number {
                        1 => target.kind = common(value, "targetRef.kind")?,
                        2 => target.namespace = common(value, "targetRef.namespace")?,
                        3 => target.name = Shared(Some(value.text("targetRef.name")?.into())),
                        _ => {}
                    }
                    Ok(())
                })?;
                endpoint.target_ref = Some(target);
            }
            6 => endpoint.node_name = common(value, "Endpoint.nodeName")?,
            7 => endpoint.zone = common(value, "Endpoint.zone")?,
            8 => {
                // EndpointHints: forZones = 1, forNodes = 2, each { name = 1 }.
                let hints = endpoint.hints.get_or_insert_with(Hints::default);
                proto::for_each(value.bytes("Endpoint.hints")?, |number, value| {
                    let list = match number {
                        1 => &mut hints.for_zones,
                        2 => &mut hints.for_nodes,
                        _ => return Ok(()),
                    };
                    let mut name = Common(None);
                    proto::for_each(value.bytes("hint")?, |number, value| {
                        if number == 1 {
                            name = common(value, "hint.name")?;
                        }
                        Ok(())
                    })?;
                    list.get_or_insert_with(Vec::new).push(Named { name });
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(endpoint)
}

fn port_from_protobuf(message: &[u8]) -> Result<RawPort, ProtoError> {
    // EndpointPort: name = 1, protocol = 2, port = 3.
    let mut port = RawPort {
        name: Common(None),
        port: None,
        protocol: None,
    };
    proto::for_each(message, |number, value| {
        match number {
            1 => port.name = common(value, "EndpointPort.name")?,
            2 => port.protocol = Some(value.text("EndpointPort.protocol")?.to_string()),
            3 => port.port = Some(value.int32("EndpointPort.port")?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(value: serde_json::Value) -> Slice {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn conditions_default_as_kubernetes_documents() {
        let compact = slice(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "7",
                         "labels": {"kubernetes.io/service-name": "web", "other": "x"},
                         "annotations": {"kubedisco.io/weight": "250", "big": "y"},
                         "managedFields": [{"manager": "m", "fieldsV1": {"f:a": {}}}]},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1", "10.0.0.99"], "nodeName": "n1", "zone": "z",
                 "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "u"},
                 "hints": {"forZones": [{"name": "z"}], "forNodes": [{"name": "n1"}]}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}},
                {"addresses": ["not-an-ip"]},
                {"addresses": []}
            ]
        }));
        assert_eq!(compact.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(compact.metadata.labels.as_ref().unwrap().len(), 1);
        assert_eq!(compact.problems.len(), 1);
        let compact = compact.into_object(&InvalidWeights::default()).unwrap();
        assert_eq!(&*compact.key.namespace, "shop");
        assert_eq!(&*compact.key.name, "web-1");
        assert_eq!(compact.service.as_deref(), Some("web"));
        assert_eq!(compact.weight, Some(250));
        assert_eq!(compact.ports[0].protocol, Protocol::Tcp);
        assert_eq!(compact.ports[0].port, Some(8080));
        assert_eq!(compact.endpoints.len(), 2);
        let first = &compact.endpoints[0];
        assert_eq!(first.address.to_string(), "10.0.0.1");
        assert!(first.ready && first.serving && !first.terminating);
        assert_eq!(first.node.as_deref(), Some("n1"));
        assert_eq!(first.zone.as_deref(), Some("z"));
        let target = first.target_ref.as_ref().unwrap();
        assert_eq!(
            (&*target.kind, target.namespace.as_deref(), &*target.name),
            ("Pod", Some("shop"), "web-0")
        );
        assert_eq!(first.hint_zones(), [Arc::<str>::from("z")]);
        assert_eq!(first.hint_nodes(), [Arc::<str>::from("n1")]);
        // Repeating strings are shared with every other holder.
        assert!(Arc::ptr_eq(first.zone.as_ref().unwrap(), &intern("z")));
        let second = &compact.endpoints[1];
        assert!(!second.ready && second.serving && second.terminating);
    }

    #[test]
    fn fqdn_slices_are_ignored_and_bad_ports_and_weights_dropped() {
        let fqdn = slice(serde_json::json!({
            "metadata": {"name": "x"}, "addressType": "FQDN", "endpoints": []
        }));
        assert!(fqdn.into_object(&InvalidWeights::default()).is_none());
        let bad = slice(serde_json::json!({
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": "x", "annotations": {"kubedisco.io/weight": "-3"}},
            "addressType": "IPv4",
            "ports": [{"port": 0}, {"port": 70000}, {"protocol": "QUIC", "port": 1}, {"name": null, "protocol": "UDP"}],
            "endpoints": null
        }));
        assert_eq!(bad.problems.len(), 3);
        let invalid_weights = InvalidWeights::default();
        let bad = bad.into_object(&invalid_weights).unwrap();
        assert_eq!(bad.weight, None);
        assert_eq!(invalid_weights.count("endpointslice"), 1);
        assert_eq!(&*bad.key.namespace, "default");
        assert_eq!(bad.ports.len(), 1);
        assert_eq!(
            (
                &*bad.ports[0].name,
                bad.ports[0].port,
                bad.ports[0].protocol
            ),
            ("", None, Protocol::Udp)
        );
        assert!(bad.endpoints.is_empty());
    }

    /// The same JSON through k8s-openapi's type gives the same fields the
    /// lean type keeps (the type kube-runtime used before).
    #[test]
    fn agrees_with_k8s_openapi_on_what_it_keeps() {
        let value = serde_json::json!({
            "metadata": {"name": "a", "namespace": "n", "resourceVersion": "9", "uid": "u"},
            "addressType": "IPv6",
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns", "port": 53, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["fd00::1"], "hostname": "h", "conditions": {"serving": false}}]
        });
        let full: k8s_openapi::api::discovery::v1::EndpointSlice =
            serde_json::from_value(value.clone()).unwrap();
        let lean = slice(value);
        assert_eq!(
            lean.metadata,
            ObjectMeta {
                managed_fields: None,
                ..full.metadata.clone()
            }
        );
        let lean = lean.into_object(&InvalidWeights::default()).unwrap();
        assert_eq!(lean.ports.len(), 2);
        let endpoint = &lean.endpoints[0];
        assert_eq!(endpoint.address.to_string(), "fd00::1");
        assert_eq!(endpoint.hostname.as_deref(), Some("h"));
        assert!(endpoint.ready && !endpoint.serving && !endpoint.terminating);
    }
}
