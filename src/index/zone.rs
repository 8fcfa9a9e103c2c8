//! What the cluster DNS zone needs of every Service, served or not: its
//! type, cluster IPs and external name by DNS name, its cluster IPs
//! reversed, and which namespaces have Services at all.
//!
//! Owns [`ZoneServices`] and its incremental upkeep ([`ZoneServices::update`]).
//! The served view (endpoints, revisions) is `merge`'s and `publish`'s;
//! this holds the Service objects as sources handed them in, shared with
//! the snapshot (an `Arc` per Service, replaced only when it changed).

use std::net::IpAddr;
use std::sync::Arc;

use super::objects::{ServiceKey, ServiceObject};
use super::sharded::ShardedMap;

/// Every Service of the index as the zone sees it.
#[derive(Clone, Debug, Default)]
pub struct ZoneServices {
    /// `"<name>.<namespace>"` → the Service, the order DNS names use, so the
    /// DNS path looks a Service up from the query's bytes.
    pub(crate) by_dns_name: ShardedMap<Arc<str>, Arc<ServiceObject>>,
    /// Cluster IP → its Service, for PTR. The API server allocates each
    /// cluster IP to one Service; should two claim one for a moment (a
    /// manifest, a delete and re-create seen out of order), the later wins
    /// and the earlier's removal leaves it alone.
    pub(crate) by_cluster_ip: ShardedMap<IpAddr, ServiceKey>,
    /// Namespace → how many Services it has: `<ns>.svc.<zone>` exists (NODATA,
    /// not NXDOMAIN) exactly while this is above zero.
    pub(crate) namespaces: ShardedMap<Arc<str>, u32>,
}

/// The DNS-order name of a Service, `"<name>.<namespace>"`.
pub(crate) fn dns_name(key: &ServiceKey) -> Arc<str> {
    format!("{}.{}", key.name, key.namespace).into()
}

impl ZoneServices {
    /// Brings one Service up to date: `service` is what the writer holds
    /// now (None when deleted). Returns whether anything changed.
    pub(crate) fn update(&mut self, key: &ServiceKey, service: Option<&ServiceObject>) -> bool {
        let name = dns_name(key);
        let old = self.by_dns_name.get(&*name).cloned();
        if old.as_deref() == service {
            return false;
        }
        if let Some(old) = &old {
            for ip in old.cluster_ips.iter() {
                if self.by_cluster_ip.get(ip) == Some(key) {
                    self.by_cluster_ip.remove(ip);
                }
            }
        }
        match service {
            Some(service) => {
                for ip in service.cluster_ips.iter() {
                    self.by_cluster_ip.insert(*ip, key.clone());
                }
                if old.is_none() {
                    self.count_namespace(&key.namespace, 1);
                }
                self.by_dns_name.insert(name, Arc::new(service.clone()));
            }
            None => {
                self.by_dns_name.remove(&*name);
                self.count_namespace(&key.namespace, -1);
            }
        }
        true
    }

    fn count_namespace(&mut self, namespace: &Arc<str>, delta: i32) {
        let count = self.namespaces.get(namespace).copied().unwrap_or(0);
        match count.saturating_add_signed(delta) {
            0 => {
                self.namespaces.remove(namespace);
            }
            count => {
                self.namespaces.insert(namespace.clone(), count);
            }
        }
    }

    /// The Service named `"<name>.<namespace>"` (lowercase).
    pub(crate) fn get(&self, dns_name: &str) -> Option<&Arc<ServiceObject>> {
        self.by_dns_name.get(dns_name)
    }

    pub(crate) fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    /// Every Service, ordered by namespace, then name.
    pub(crate) fn sorted(&self) -> Vec<&Arc<ServiceObject>> {
        let mut services: Vec<_> = self.by_dns_name.values().collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        services
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::objects::ServiceType;

    fn cluster_ip(name: &str, namespace: &str, ips: &[&str]) -> ServiceObject {
        ServiceObject {
            headless: false,
            cluster_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            ..ServiceObject::headless(ServiceKey::new(namespace, name))
        }
    }

    #[test]
    fn names_addresses_and_namespaces_follow_each_change() {
        let mut zone = ZoneServices::default();
        let web = cluster_ip("web", "shop", &["10.96.0.10", "fd00::10"]);
        assert!(zone.update(&web.key, Some(&web)));
        assert!(!zone.update(&web.key, Some(&web)), "the same again");
        let db = cluster_ip("db", "shop", &["10.96.0.11"]);
        zone.update(&db.key, Some(&db));
        assert_eq!(zone.get("web.shop").unwrap().cluster_ips.len(), 2);
        assert_eq!(
            zone.by_cluster_ip.get(&"fd00::10".parse().unwrap()),
            Some(&web.key)
        );
        assert!(zone.has_namespace("shop") && !zone.has_namespace("web"));

        // Turned headless: no cluster IP left behind.
        let headless = ServiceObject::headless(web.key.clone());
        zone.update(&web.key, Some(&headless));
        assert!(
            zone.by_cluster_ip
                .get(&"10.96.0.10".parse().unwrap())
                .is_none()
        );
        assert_eq!(zone.sorted().len(), 2);

        // A cluster IP another Service took is not the old owner's to remove.
        let taker = cluster_ip("taker", "shop", &["10.96.0.11"]);
        zone.update(&taker.key, Some(&taker));
        zone.update(&db.key, None);
        assert_eq!(
            zone.by_cluster_ip.get(&"10.96.0.11".parse().unwrap()),
            Some(&taker.key)
        );

        let external = ServiceObject {
            service_type: ServiceType::ExternalName,
            external_name: Some("example.org".into()),
            ..ServiceObject::headless(ServiceKey::new("ext", "alias"))
        };
        zone.update(&external.key, Some(&external));
        assert!(zone.has_namespace("ext"));
        for key in [&web.key, &taker.key] {
            zone.update(key, None);
        }
        assert!(!zone.has_namespace("shop"), "the last Service went");
        assert_eq!(zone.sorted()[0].key, external.key);
    }
}
