//! The address index behind PTR answers: endpoint address → the Services
//! serving it.
//!
//! Owns [`AddressIndex`], [`AddressOwners`] and their incremental upkeep
//! ([`reindex_addresses`]). It sees only served views, never the writer's
//! objects, and never publishes.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::merge::{Endpoint, ServedService};
use super::objects::ServiceKey;
use super::sharded::ShardedMap;

/// Endpoint addresses → the Services serving them, IPv4 and IPv6 apart so
/// an IPv4 key takes 4 bytes, not the 17 of an `IpAddr`.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddressIndex {
    v4: ShardedMap<Ipv4Addr, AddressOwners>,
    v6: ShardedMap<Ipv6Addr, AddressOwners>,
}

impl AddressIndex {
    pub(crate) fn get(&self, ip: &IpAddr) -> Option<&AddressOwners> {
        match ip {
            IpAddr::V4(ip) => self.v4.get(ip),
            IpAddr::V6(ip) => self.v6.get(ip),
        }
    }

    fn insert(&mut self, ip: IpAddr, owners: AddressOwners) {
        match ip {
            IpAddr::V4(ip) => self.v4.insert(ip, owners),
            IpAddr::V6(ip) => self.v6.insert(ip, owners),
        };
    }

    fn remove(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(ip) => self.v4.remove(ip),
            IpAddr::V6(ip) => self.v6.remove(ip),
        };
    }
}

/// The Services an endpoint address belongs to: nearly always one, which
/// then costs no allocation of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AddressOwners {
    One(ServiceKey),
    /// Sorted, two or more.
    Many(Arc<[ServiceKey]>),
}

impl AddressOwners {
    pub(crate) fn keys(&self) -> &[ServiceKey] {
        match self {
            AddressOwners::One(key) => std::slice::from_ref(key),
            AddressOwners::Many(keys) => keys,
        }
    }

    fn from_keys(mut keys: Vec<ServiceKey>) -> Option<Self> {
        match keys.len() {
            0 => None,
            1 => keys.pop().map(AddressOwners::One),
            _ => {
                keys.sort();
                Some(AddressOwners::Many(keys.into()))
            }
        }
    }
}

/// Updates the address map for one Service, touching only the addresses
/// that came or went: a weight change in a 10 000-endpoint Service moves
/// no address and costs nothing here.
pub(super) fn reindex_addresses(
    by_ip: &mut AddressIndex,
    key: &ServiceKey,
    old: Option<&ServedService>,
    new: Option<&ServedService>,
) {
    let addresses = |service: Option<&ServedService>| -> HashSet<IpAddr> {
        service
            .map(|s| s.endpoints.iter().map(Endpoint::ip).collect())
            .unwrap_or_default()
    };
    let (before, after) = (addresses(old), addresses(new));
    for ip in before.difference(&after) {
        let Some(owners) = by_ip.get(ip) else {
            continue;
        };
        let rest: Vec<ServiceKey> = owners
            .keys()
            .iter()
            .filter(|k| *k != key)
            .cloned()
            .collect();
        match AddressOwners::from_keys(rest) {
            Some(owners) => by_ip.insert(*ip, owners),
            None => by_ip.remove(ip),
        }
    }
    for ip in after.difference(&before) {
        let mut keys: Vec<ServiceKey> = by_ip
            .get(ip)
            .map(|owners| owners.keys().to_vec())
            .unwrap_or_default();
        if !keys.contains(key) {
            keys.push(key.clone());
            if let Some(owners) = AddressOwners::from_keys(keys) {
                by_ip.insert(*ip, owners);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::testing::key;
    use crate::index::{Change, Index, SliceKey};

    #[test]
    fn dns_and_address_maps_follow_the_services() {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplyService(service("api")),
            Change::ApplySlice(slice("a", "web", 80, vec![endpoint("10.0.0.1")])),
            Change::ApplySlice(slice("b", "api", 80, vec![endpoint("10.0.0.1")])),
        ]);
        let snapshot = index.load();
        assert!(snapshot.by_dns_name.contains_key("web.ns"));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            snapshot.by_ip.get(&ip).unwrap().keys(),
            &[key("api"), key("web")]
        );
        index.apply([Change::DeleteService(key("web"))]);
        let snapshot = index.load();
        assert!(!snapshot.by_dns_name.contains_key("web.ns"));
        assert_eq!(
            snapshot.by_ip.get(&ip),
            Some(&AddressOwners::One(key("api")))
        );
        index.apply([Change::DeleteSlice(SliceKey {
            namespace: "ns".into(),
            name: "b".into(),
        })]);
        assert!(index.load().by_ip.get(&ip).is_none());
    }
}
