//! Re-list sharing: a listed slice takes every endpoint the index already
//! holds unchanged from the held copy, so a re-list or an update that
//! changed nothing served costs a pointer per endpoint, not a second copy.
//!
//! Owns [`share_unchanged`] only. It compares and reuses; it may not
//! change what the index holds or publishes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::objects::{SliceEndpoint, SliceObject};

/// `new` with every endpoint that `old` (the same slice, as the index
/// holds it) has unchanged taken from `old`: one pointer each instead of a
/// second copy. An unchanged slice is `old` itself.
pub(super) fn share_unchanged(old: &SliceObject, mut new: SliceObject) -> SliceObject {
    if *old == new {
        return old.clone();
    }
    // Endpoints mostly keep their place; when they do not, by address.
    let mut by_address: Option<HashMap<IpAddr, &Arc<SliceEndpoint>>> = None;
    for (at, endpoint) in new.endpoints.iter_mut().enumerate() {
        let same = match old.endpoints.get(at) {
            Some(there) if there == endpoint => Some(there),
            _ => by_address
                .get_or_insert_with(|| old.endpoints.iter().map(|e| (e.address, e)).collect())
                .get(&endpoint.address)
                .copied()
                .filter(|there| *there == endpoint),
        };
        if let Some(same) = same {
            *endpoint = same.clone();
        }
    }
    new.key = old.key.clone();
    new
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::testing::ips;
    use crate::index::{Change, Index, Scope};

    /// An index serving `ns/web` from one slice `a` of `endpoints`.
    fn serving_web(endpoints: Vec<crate::index::objects::SliceEndpoint>) -> Index {
        let index = Index::default();
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplySlice(slice("a", "web", 80, endpoints)),
        ]);
        index
    }

    /// Every served endpoint of `name` is the writer's entry itself, not an
    /// equal copy of it.
    fn served_and_held_are_shared(index: &Index, name: &str) -> bool {
        let snapshot = index.load();
        let served = &snapshot.get("ns", name).unwrap().endpoints;
        let contents = index.export();
        served.iter().all(|endpoint| {
            contents
                .slices
                .iter()
                .flat_map(|slice| &slice.endpoints)
                .any(|held| Arc::ptr_eq(held, &endpoint.listed))
        })
    }

    #[test]
    fn a_listed_unchanged_slice_is_the_held_one_and_costs_no_second_copy() {
        let endpoints = || vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")];
        let index = serving_web(endpoints());
        let before = index.load().get("ns", "web").unwrap().clone();
        // A re-list decodes a fresh copy; buffered, it is the held one.
        let listed = index.share_listed(slice("a", "web", 80, endpoints()));
        for (listed, served) in listed.endpoints.iter().zip(&before.endpoints) {
            assert!(Arc::ptr_eq(listed, &served.listed));
        }
        let held_name = index.export().slices[0].key.name.clone();
        assert!(Arc::ptr_eq(&listed.key.name, &held_name));
        index.replace(&Scope::All, None, Some(vec![listed]), "slices");
        let after = index.load().get("ns", "web").unwrap().clone();
        assert_eq!(after.revision, before.revision);
        assert!(served_and_held_are_shared(&index, "web"));
    }

    /// Without the buffer sharing (a manifest reload, a watch update), the
    /// swap itself shares: the snapshot keeps its old served view when
    /// nothing served changed, so the writer must keep the same entries.
    #[test]
    fn an_unchanged_replace_or_update_leaves_one_copy_of_each_endpoint() {
        let endpoints = || vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")];
        let index = serving_web(endpoints());
        let relisted = slice("a", "web", 80, endpoints());
        index.replace(&Scope::All, None, Some(vec![relisted]), "slices");
        assert!(served_and_held_are_shared(&index, "web"));
        // An update that changes nothing the index keeps (a label, the
        // resourceVersion).
        index.apply([Change::ApplySlice(slice("a", "web", 80, endpoints()))]);
        assert!(served_and_held_are_shared(&index, "web"));
    }

    #[test]
    fn a_changed_slice_shares_its_unchanged_endpoints_wherever_they_moved() {
        let three = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
        let index = serving_web(three.into_iter().map(endpoint).collect());
        let held = index.export().slices[0].endpoints.clone();
        let mut changed = endpoint("10.0.0.2");
        changed.ready = false;
        // Reordered, one changed, one new.
        let reordered = vec![
            endpoint("10.0.0.3"),
            changed.clone(),
            endpoint("10.0.0.1"),
            endpoint("10.0.0.4"),
        ];
        let listed = index.share_listed(slice("a", "web", 80, reordered));
        assert!(Arc::ptr_eq(&listed.endpoints[0], &held[2]));
        assert!(!Arc::ptr_eq(&listed.endpoints[1], &held[1]));
        assert_eq!(*listed.endpoints[1], changed);
        assert!(Arc::ptr_eq(&listed.endpoints[2], &held[0]));
        assert_eq!(listed.endpoints[3].address.to_string(), "10.0.0.4");
        index.replace(&Scope::All, None, Some(vec![listed]), "slices");
        assert_eq!(ips(&index, "web"), ["10.0.0.1", "10.0.0.3", "10.0.0.4"]);
        assert!(served_and_held_are_shared(&index, "web"));
    }

    #[test]
    fn a_relist_still_drops_what_was_not_listed() {
        let index = serving_web(vec![endpoint("10.0.0.1")]);
        let other = slice("b", "web", 80, vec![endpoint("10.0.0.2")]);
        index.apply([Change::ApplySlice(other)]);
        let listed = index.share_listed(slice("a", "web", 80, vec![endpoint("10.0.0.1")]));
        index.replace(&Scope::All, None, Some(vec![listed]), "slices");
        assert_eq!(ips(&index, "web"), ["10.0.0.1"]);
        assert_eq!(index.export().slices.len(), 1);
    }
}
