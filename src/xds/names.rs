//! What an xDS resource name means: which Service and which of its ports.
//!
//! gRPC asks for the authority of an `xds:///` target as the Listener name,
//! and for the Cluster and ClusterLoadAssignment names the agent itself put
//! in the route. All three use one grammar:
//!
//! - `<svc>.<ns>:<port>` (what users write: `xds:///orders.shop:grpc`);
//! - `<svc>.<ns>.svc.<cluster-domain>:<port>` (the fully qualified form);
//!
//! where `<port>` is the Service port's name or its number. Owns parsing
//! only: whether the Service or port exists is the snapshot's business.

use std::sync::Arc;

use crate::index::ServiceKey;
use crate::index::objects::ServicePort;

/// A parsed resource name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Target {
    pub(crate) key: ServiceKey,
    pub(crate) port: PortRef,
}

/// The port part of a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PortRef {
    Name(Arc<str>),
    Number(u16),
}

/// Why a resource name is not one this agent serves.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    #[error("{0:?}: expected <service>.<namespace>:<port> or <service>.<namespace>.svc.{1}:<port>")]
    Shape(String, String),
    #[error("{0:?}: {1}")]
    Label(String, String),
}

impl Target {
    /// Parses `name`; `cluster_domain` is the zone the long form must end in.
    pub(crate) fn parse(name: &str, cluster_domain: &str) -> Result<Target, NameError> {
        let shape = || NameError::Shape(name.to_owned(), cluster_domain.to_owned());
        let (host, port) = name.rsplit_once(':').ok_or_else(shape)?;
        let host = host.strip_suffix('.').unwrap_or(host);
        let (service, rest) = host.split_once('.').ok_or_else(shape)?;
        let namespace = match rest.split_once('.') {
            None => rest,
            Some((namespace, zone)) => {
                let zone = zone.strip_prefix("svc.").ok_or_else(shape)?;
                if !zone.eq_ignore_ascii_case(cluster_domain.trim_end_matches('.')) {
                    return Err(shape());
                }
                namespace
            }
        };
        let label = |what, value: &str| {
            crate::names::check_dns_label(what, value)
                .map_err(|why| NameError::Label(name.to_owned(), why))
        };
        label("service", service)?;
        label("namespace", namespace)?;
        let port = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            match port.parse::<u16>() {
                Ok(number) if number > 0 => PortRef::Number(number),
                _ => {
                    return Err(NameError::Label(
                        name.to_owned(),
                        "port out of range".into(),
                    ));
                }
            }
        } else {
            label("port", port)?;
            PortRef::Name(port.into())
        };
        Ok(Target {
            key: ServiceKey::new(namespace, service),
            port,
        })
    }

    /// The Service port this name selects, among the Service's ports.
    pub(crate) fn select<'a>(&self, ports: &'a [ServicePort]) -> Option<&'a ServicePort> {
        ports.iter().find(|port| match &self.port {
            PortRef::Name(name) => port.name == *name,
            PortRef::Number(number) => port.port == *number,
        })
    }

    /// The one name of the Cluster and its assignment for `port` of this
    /// Service, whichever form the Listener was asked by: two Listener
    /// names for one port share one Cluster.
    pub(crate) fn cluster_name(&self, port: &ServicePort) -> String {
        let key = &self.key;
        if port.name.is_empty() {
            format!("{}.{}:{}", key.name, key.namespace, port.port)
        } else {
            format!("{}.{}:{}", key.name, key.namespace, port.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> Result<Target, NameError> {
        Target::parse(name, "cluster.local")
    }

    #[test]
    fn both_forms_name_the_same_service() {
        let short = parse("orders.shop:grpc").unwrap();
        assert_eq!(short.key, ServiceKey::new("shop", "orders"));
        assert_eq!(short.port, PortRef::Name("grpc".into()));
        let long = parse("orders.shop.svc.cluster.local:8080").unwrap();
        assert_eq!(long.key, ServiceKey::new("shop", "orders"));
        assert_eq!(long.port, PortRef::Number(8080));
        assert_eq!(
            parse("orders.shop.svc.cluster.local.:grpc").unwrap(),
            short,
            "a trailing dot is the same name"
        );
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "orders",
            "orders:grpc",
            "orders.shop",
            "orders.shop:",
            "orders.shop:0",
            "orders.shop:70000",
            "orders.shop.svc.other.zone:grpc",
            "orders.shop.pod.cluster.local:grpc",
            "Orders_x.shop:grpc",
            "orders.shop:gr pc",
            "xdstp://authority/envoy.config.listener.v3.Listener/orders",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
