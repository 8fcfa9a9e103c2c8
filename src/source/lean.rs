//! Building blocks of the lean decoders ([`super::slice`],
//! [`super::service`]): serde visitors that keep only what the index uses,
//! skip the rest without allocating ([`IgnoredAny`]), and make kept strings
//! `Arc<str>` straight from the decoder's borrowed text.
//!
//! At start-up the agent lists every Service and EndpointSlice in the
//! cluster at once. k8s-openapi's types keep everything the API server sends
//! (`managedFields` with its free-form `fieldsV1`, every label and
//! annotation, status), each string its own `String`; building all of that
//! only to drop most of it was a large part of the time to ready.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::index::intern::intern;

/// kube's `Resource` for a lean type with a `metadata: ObjectMeta` field,
/// so that kube-runtime's watcher (and URL building) treat it as the API
/// kind it decodes.
macro_rules! lean_resource {
    ($type:ty, kind: $kind:literal, group: $group:literal, version: $version:literal, plural: $plural:literal) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(super) use lean_resource;

/// A string kept as `Arc<str>`, made from the decoder's borrowed text
/// (one allocation, no intermediate `String`).
#[derive(Default)]
pub(super) struct Shared(pub(super) Option<Arc<str>>);

/// A string that repeats across objects (node, zone, kind, namespace,
/// port name): its one shared copy ([`intern`]), looked up from the
/// decoder's borrowed text.
#[derive(Default)]
pub(super) struct Common(pub(super) Option<Arc<str>>);

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        optional_text(deserializer, |text| Arc::from(text)).map(Shared)
    }
}

impl<'de> Deserialize<'de> for Common {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        optional_text(deserializer, intern).map(Common)
    }
}

/// A string or null, made into `Arc<str>` by `make` from the borrowed text.
fn optional_text<'de, D: Deserializer<'de>>(
    deserializer: D,
    make: fn(&str) -> Arc<str>,
) -> Result<Option<Arc<str>>, D::Error> {
    struct V(fn(&str) -> Arc<str>);
    impl<'de> Visitor<'de> for V {
        type Value = Option<Arc<str>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some((self.0)(v)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    deserializer.deserialize_option(V(make))
}

/// Which of the keys being looked for a map key is, compared on the
/// borrowed text (skipped keys are never copied).
pub(super) struct KeyIndex<'a>(pub(super) &'a [&'a str]);

impl<'de> DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct V<'a>(&'a [&'a str]);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Option<usize>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
                Ok(self.0.iter().position(|k| *k == v))
            }
        }
        deserializer.deserialize_str(V(self.0))
    }
}

/// A string map of which only `keys` are kept (labels, annotations).
struct OnlyKeys(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for OnlyKeys {
    type Value = Option<BTreeMap<String, String>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct V(&'static [&'static str]);
        impl<'de> Visitor<'de> for V {
            type Value = Option<BTreeMap<String, String>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut kept = BTreeMap::new();
                while let Some(found) = map.next_key_seed(KeyIndex(self.0))? {
                    match found {
                        Some(i) => {
                            let value: String = map.next_value()?;
                            kept.insert(self.0[i].to_string(), value);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Some(kept))
            }
        }
        deserializer.deserialize_option(V(self.0))
    }
}

/// `ObjectMeta` with name, namespace, resourceVersion and uid, and of the
/// labels and annotations only the given keys; `managedFields` and the rest
/// are skipped.
pub(super) struct Meta {
    pub(super) labels: &'static [&'static str],
    pub(super) annotations: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for Meta {
    type Value = ObjectMeta;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ObjectMeta, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Meta {
    type Value = ObjectMeta;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("ObjectMeta")
    }
    fn visit_unit<E: de::Error>(self) -> Result<ObjectMeta, E> {
        Ok(ObjectMeta::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<ObjectMeta, E> {
        Ok(ObjectMeta::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ObjectMeta, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectMeta, A::Error> {
        const KEYS: &[&str] = &[
            "name",
            "namespace",
            "resourceVersion",
            "uid",
            "labels",
            "annotations",
        ];
        let mut meta = ObjectMeta::default();
        while let Some(found) = map.next_key_seed(KeyIndex(KEYS))? {
            match found {
                Some(0) => meta.name = map.next_value()?,
                Some(1) => meta.namespace = map.next_value()?,
                Some(2) => meta.resource_version = map.next_value()?,
                Some(3) => meta.uid = map.next_value()?,
                Some(4) => meta.labels = map.next_value_seed(OnlyKeys(self.labels))?,
                Some(5) => meta.annotations = map.next_value_seed(OnlyKeys(self.annotations))?,
                // managedFields and the rest: skipped, nothing allocated.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(meta)
    }
}
