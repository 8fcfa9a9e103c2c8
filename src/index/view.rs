//! The reader view: one published [`Snapshot`] of every served Service,
//! and of every Service the DNS zone names.
//!
//! Owns the snapshot's shape and its read-only lookups. A snapshot never
//! changes once published; building the next one is `publish`'s job, and
//! nothing here may reach the writer state or take a lock.

use std::sync::Arc;

use super::address::AddressIndex;
use super::merge::ServedService;
use super::objects::ServiceKey;
use super::sharded::ShardedMap;
use super::zone::ZoneServices;

/// What readers see: every served Service, as of one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: ShardedMap<ServiceKey, Arc<ServedService>>,
    /// True once every source part has listed its objects at least once.
    /// Before that, absence of a Service means "not known yet".
    pub(crate) synced: bool,
    /// The latest revision handed out to any Service.
    pub(crate) generation: u64,
    /// Usable endpoints over all Services.
    pub endpoint_count: usize,
    /// The revision at which each recently deleted Service went away, so a
    /// blocking query from before the deletion returns at once.
    pub(crate) tombstones: ShardedMap<ServiceKey, u64>,
    /// The same Services keyed `"<name>.<namespace>"`, the order DNS names
    /// use, so the DNS path looks a Service up from the query's bytes
    /// without building a key.
    pub(crate) by_dns_name: ShardedMap<Arc<str>, Arc<ServedService>>,
    /// Usable endpoint addresses → the Services serving them (for PTR).
    pub(crate) by_ip: AddressIndex,
    /// Every Service, served or not, as the cluster DNS zone sees it
    /// (ClusterIP and ExternalName records, namespaces).
    pub zone: ZoneServices,
}

impl Snapshot {
    #[cfg(test)]
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&Arc<ServedService>> {
        self.services.get(&ServiceKey::new(namespace, name))
    }

    /// The revision of a Service's current state, served or not: its
    /// revision, else the revision that deleted it, else 0.
    pub(crate) fn revision_of(&self, key: &ServiceKey) -> u64 {
        match self.services.get(key) {
            Some(service) => service.revision,
            None => self.tombstones.get(key).copied().unwrap_or(0),
        }
    }
}
