//! Publishing: turning the Services a change touched into the next
//! [`Snapshot`], handing out revisions, and waking who waits.
//!
//! Owns [`Index::publish`] and the tombstones' bound. It reads the writer
//! (under the lock its caller holds) and builds a new snapshot from the
//! current one, sharing what did not change; it never edits a published
//! snapshot and never changes the writer's objects.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::address::reindex_addresses;
use super::objects::ServiceKey;
use super::store::Index;
use super::view::Snapshot;
use super::writer::Writer;
use super::zone::dns_name;

/// Deleted Services remembered for blocking queries; see [`Snapshot::tombstones`].
const MAX_TOMBSTONES: usize = 65_536;

impl Index {
    pub(super) fn publish(&self, writer: &mut Writer, touched: BTreeSet<ServiceKey>) {
        let current = self.snapshot.load();
        let mut services = current.services.clone();
        let mut endpoint_count = current.endpoint_count;
        let mut tombstones = current.tombstones.clone();
        let mut by_dns_name = current.by_dns_name.clone();
        let mut by_ip = current.by_ip.clone();
        let mut zone = current.zone.clone();
        // A Service the zone names changed (a ClusterIP Service's addresses,
        // say) without a served revision: the snapshot is published anyway.
        let mut zone_changed = false;
        let mut changed: Vec<(ServiceKey, u64)> = Vec::new();
        // Debug-only data (unusable endpoints) changed without a revision.
        let mut quietly_modified = false;
        for key in touched {
            zone_changed |= zone.update(&key, writer.services.get(&key));
            let old = services.get(&key).cloned();
            let new = match (&old, writer.build(&key)) {
                (Some(old), Some(mut new)) => {
                    if old.same_served_state(&new) {
                        if old.unusable != new.unusable {
                            new.revision = old.revision;
                            let new = Arc::new(new);
                            services.insert(key.clone(), new.clone());
                            by_dns_name.insert(dns_name(&key), new);
                            quietly_modified = true;
                        }
                        continue;
                    }
                    Some(new)
                }
                (_, new) => new,
            };
            if let Some(old) = &old {
                endpoint_count -= old.endpoints.len();
            }
            reindex_addresses(&mut by_ip, &key, old.as_deref(), new.as_ref());
            writer.revision_counter += 1;
            changed.push((key.clone(), writer.revision_counter));
            match new {
                Some(mut new) => {
                    tombstones.remove(&key);
                    new.revision = writer.revision_counter;
                    endpoint_count += new.endpoints.len();
                    let new = Arc::new(new);
                    by_dns_name.insert(dns_name(&key), new.clone());
                    services.insert(key, new);
                }
                None if old.is_some() => {
                    services.remove(&key);
                    by_dns_name.remove(&*dns_name(&key));
                    if tombstones.len() >= MAX_TOMBSTONES {
                        // Forgetting only makes an old waiter wait its full
                        // `wait` instead of returning early: bounded memory
                        // is worth more.
                        tombstones.clear();
                    }
                    tombstones.insert(key, writer.revision_counter);
                }
                None => {
                    // Neither served before nor now: nothing changed.
                    writer.revision_counter -= 1;
                    changed.pop();
                }
            }
        }
        let listed = writer.any_part_registered && writer.unsynced_parts.is_empty();
        if listed {
            self.listed_tx
                .send_if_modified(|l| !std::mem::replace(l, true));
        }
        let synced = writer.seeded || listed;
        if changed.is_empty() && !quietly_modified && !zone_changed && synced == current.synced {
            return;
        }
        self.gauges.services.set(services.len() as i64);
        self.gauges.endpoints.set(endpoint_count as i64);
        self.gauges.synced.set(i64::from(synced));
        self.gauges.revisions.inc_by(changed.len() as u64);
        self.snapshot.store(Arc::new(Snapshot {
            services,
            synced,
            generation: writer.revision_counter,
            endpoint_count,
            tombstones,
            by_dns_name,
            by_ip,
            zone,
        }));
        self.notifier
            .notify(changed.iter().map(|(key, revision)| (key, *revision)));
        if synced {
            self.synced_tx
                .send_if_modified(|s| !std::mem::replace(s, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::testing::key;
    use crate::index::{Change, Index};

    #[test]
    fn revision_changes_exactly_when_served_state_changes() {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(slice("a", "web", 80, vec![endpoint("10.0.0.1")])),
        ]);
        let first = index.load().get("ns", "web").unwrap().revision;
        // The same slice again: nothing served changed.
        index.apply([Change::ApplySlice(slice(
            "a",
            "web",
            80,
            vec![endpoint("10.0.0.1")],
        ))]);
        assert_eq!(index.load().get("ns", "web").unwrap().revision, first);
        // A not-ready endpoint is not served: still the same revision.
        let mut not_ready = endpoint("10.0.0.9");
        not_ready.ready = false;
        index.apply([Change::ApplySlice(slice(
            "a",
            "web",
            80,
            vec![endpoint("10.0.0.1"), not_ready],
        ))]);
        let snapshot = index.load();
        let web = snapshot.get("ns", "web").unwrap();
        assert_eq!(web.revision, first);
        assert_eq!(web.unusable.len(), 1);
        // A new ready endpoint is.
        index.apply([Change::ApplySlice(slice(
            "a",
            "web",
            80,
            vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
        ))]);
        assert!(index.load().get("ns", "web").unwrap().revision > first);
    }

    #[test]
    fn revisions_grow_across_delete_and_recreate() {
        let index = Index::default();
        index.apply([Change::ApplyService(service("web"))]);
        let first = index.load().get("ns", "web").unwrap().revision;
        index.apply([Change::DeleteService(key("web"))]);
        let snapshot = index.load();
        assert!(snapshot.get("ns", "web").is_none());
        let deleted_at = snapshot.revision_of(&key("web"));
        assert!(deleted_at > first);
        index.apply([Change::ApplyService(service("web"))]);
        assert!(index.load().get("ns", "web").unwrap().revision > deleted_at);
        assert!(index.load().get("ns", "web").unwrap().revision > first);
    }

    #[test]
    fn endpoint_count_tracks_usable_endpoints() {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(slice(
                "a",
                "web",
                80,
                vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
            )),
        ]);
        assert_eq!(index.load().endpoint_count, 2);
        index.apply([Change::DeleteService(key("web"))]);
        assert_eq!(index.load().endpoint_count, 0);
    }
}
