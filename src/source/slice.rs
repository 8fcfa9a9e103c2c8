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

use super::convert::{HEADLESS_LABEL, SERVICE_NAME_LABEL, WEIGHT_KEY, weight_annotation};
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
/// `kubernetes.io/service-name` and `service.kubernetes.io/headless` labels
/// and the `kubedisco.io/weight` annotation: other labels and annotations
/// are not kept.
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
        let labels = metadata.labels.as_ref();
        let service = labels
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            .map(|name| intern(name));
        // Present with any value: label selectors test existence.
        let headless_label = labels.is_some_and(|labels| labels.contains_key(HEADLESS_LABEL));
        let mut endpoints = self.endpoints;
        // Kept for as long as the slice exists: no spare capacity.
        endpoints.shrink_to_fit();
        Some(SliceObject {
            key,
            service,
            weight,
            ports: self.ports,
            endpoints,
            headless_label,
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
                                labels: &[SERVICE_NAME_LABEL, HEADLESS_LABEL],
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
                        &[SERVICE_NAME_LABEL, HEADLESS_LABEL],
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
mod tests;
