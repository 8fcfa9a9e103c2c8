//! The writer of reverse names (`in-addr.arpa`, `ip6.arpa`): PTR records
//! for the addresses of served endpoints and for cluster IPs.
//!
//! Owns: which Services' endpoints an address names, and writing those
//! names without building them in memory. May not touch: the forward zone's
//! rules; reverse names the agent knows nothing about go upstream.

use std::net::IpAddr;

use super::host::{LabelBuffer, host_label};
use super::{Outcome, Reply};
use crate::dns::wire::{NameRef, rtype};
use crate::index::Snapshot;

/// `<reversed ip>.<in-addr|ip6>.arpa`: PTR to `<host>.<svc>.<ns>.svc.<zone>`
/// for every served endpoint with address `ip`. Forwarded when no served
/// endpoint has it, and for other types.
pub(super) fn pointer(reply: &mut Reply<'_, '_>, snapshot: &Snapshot, ip: IpAddr) -> Outcome {
    let Some(owners) = snapshot.by_ip.get(&ip) else {
        return cluster_ip_pointer(reply, snapshot, ip);
    };
    if reply.qtype() != rtype::PTR {
        return Outcome::Forward;
    }
    reply.start();
    let (ttl, owner) = (reply.ttl(), reply.owner());
    for key in owners.keys() {
        let Some(service) = snapshot.services.get(key) else {
            continue;
        };
        // Endpoints are ordered by address.
        let first = service.endpoints.partition_point(|e| e.ip() < ip);
        for endpoint in service.endpoints[first..]
            .iter()
            .take_while(|e| e.ip() == ip)
        {
            let mut buffer: LabelBuffer = [0; 48];
            let target = [
                host_label(endpoint, &mut buffer),
                key.name.as_bytes(),
                key.namespace.as_bytes(),
                b"svc",
                reply.zone.name.as_bytes(),
            ];
            // A name with a label that is no DNS label (a hostname from a
            // manifest, an over-long zone) is left out: shortened, it would
            // name another host.
            let _ = reply.response.ptr(owner, ttl, NameRef::Parts(&target));
        }
    }
    Outcome::Answered
}

/// A cluster IP reversed: PTR to `<svc>.<ns>.svc.<zone>`. Forwarded when
/// no Service has that cluster IP, and for other types.
fn cluster_ip_pointer(reply: &mut Reply<'_, '_>, snapshot: &Snapshot, ip: IpAddr) -> Outcome {
    let Some(key) = snapshot.zone.by_cluster_ip.get(&ip) else {
        return Outcome::Forward;
    };
    if reply.qtype() != rtype::PTR {
        return Outcome::Forward;
    }
    reply.start();
    let target = [
        key.name.as_bytes(),
        key.namespace.as_bytes(),
        b"svc",
        reply.zone.name.as_bytes(),
    ];
    let (ttl, owner) = (reply.ttl(), reply.owner());
    if reply
        .response
        .ptr(owner, ttl, NameRef::Parts(&target))
        .is_err()
    {
        reply.servfail();
    }
    Outcome::Answered
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::super::Outcome;
    use super::super::tests::{ask, index, synced_index};
    use crate::index::Change;
    use crate::index::merge::tests::{endpoint, service, slice};

    fn targets(name: &str, index: &crate::index::Index) -> Vec<String> {
        let ptr = ask(index, name, RecordType::PTR).unwrap();
        assert!(ptr.metadata.authoritative);
        assert_eq!(ptr.metadata.response_code, ResponseCode::NoError);
        let mut targets: Vec<_> = ptr.answers.iter().map(|r| r.data.to_string()).collect();
        targets.sort();
        targets
    }

    #[test]
    fn every_service_serving_an_address_gets_its_pointer() {
        let mut named = endpoint("10.0.3.1");
        named.hostname = Some("db-0".into());
        let index = synced_index(vec![
            Change::ApplyService(service("db")),
            Change::ApplyService(service("db-read")),
            Change::ApplySlice(slice("a", "db", 5432, vec![named])),
            Change::ApplySlice(slice("b", "db-read", 5432, vec![endpoint("10.0.3.1")])),
        ]);
        assert_eq!(
            targets("1.3.0.10.IN-ADDR.ARPA.", &index),
            [
                "10-0-3-1.db-read.ns.svc.cluster.local.",
                "db-0.db.ns.svc.cluster.local."
            ]
        );
    }

    #[test]
    fn other_types_and_unknown_addresses_go_upstream() {
        let index = index();
        assert_eq!(
            ask(&index, "1.0.0.10.in-addr.arpa.", RecordType::A).unwrap_err(),
            Outcome::Forward
        );
        // Not usable (not ready): not the Service's address.
        assert_eq!(
            ask(&index, "9.0.0.10.in-addr.arpa.", RecordType::PTR).unwrap_err(),
            Outcome::Forward
        );
    }

    #[test]
    fn a_pointer_that_cannot_be_named_is_left_out() {
        let mut long = endpoint("10.0.4.1");
        long.hostname = Some("h".repeat(64).into());
        let index = synced_index(vec![
            Change::ApplyService(service("odd")),
            Change::ApplyService(service("plain")),
            Change::ApplySlice(slice("a", "odd", 80, vec![long])),
            Change::ApplySlice(slice("b", "plain", 80, vec![endpoint("10.0.4.1")])),
        ]);
        assert_eq!(
            targets("1.4.0.10.in-addr.arpa.", &index),
            ["10-0-4-1.plain.ns.svc.cluster.local."]
        );
    }
}
