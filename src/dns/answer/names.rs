//! The writers of the zone's names that name no Service: the empty
//! non-terminals (`svc`, `<ns>.svc`, `pod`, `<ns>.pod`), pod names, and
//! every other name under the zone — the search-path expansions a pod's
//! `ndots:5` makes of every outside name, answered NXDOMAIN here so that
//! they never leave the node.
//!
//! Owns: which of these names exist (RFC 8020: NXDOMAIN means nothing
//! exists at or below the name, so a name with names below it is NODATA),
//! and the pod records' address parsing. May not touch: Services' records
//! (that is [`super::service`]) or the forwarder; a namespace the agent
//! does not watch is the only reason to hand a name on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::records::write_address;
use super::{Outcome, PodRecords, Reply};
use crate::dns::wire::{Section, rtype};
use crate::index::Snapshot;

/// SERVFAIL before the first sync: until then the agent cannot say what
/// does not exist. True when that was written.
fn not_synced(reply: &mut Reply<'_, '_>, snapshot: &Snapshot) -> bool {
    if !snapshot.synced {
        reply.servfail();
    }
    !snapshot.synced
}

/// A name that exists only as the parent of others: NODATA when `exists`,
/// else NXDOMAIN; the SOA either way.
pub(super) fn empty_non_terminal(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    exists: bool,
) -> Outcome {
    if not_synced(reply, snapshot) {
        return Outcome::Answered;
    }
    reply.start();
    if exists {
        reply.nodata();
    } else {
        reply.nxdomain();
    }
    Outcome::Answered
}

/// `<ns>.svc.<zone>`: exists while the namespace has Services.
pub(super) fn namespace(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    namespace: &[u8],
) -> Outcome {
    if !reply.zone.knows_namespace(namespace) {
        return Outcome::Forward;
    }
    let mut buffer = [0u8; 64];
    let exists = lowercase(namespace, &mut buffer)
        .is_some_and(|namespace| snapshot.zone.has_namespace(namespace));
    empty_non_terminal(reply, snapshot, exists)
}

/// Any other name under the zone: nothing is there. Under `<ns>.svc` of a
/// namespace the agent does not watch, the cluster's DNS may know better.
pub(super) fn other(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    namespace: Option<&[u8]>,
) -> Outcome {
    if namespace.is_some_and(|namespace| !reply.zone.knows_namespace(namespace)) {
        return Outcome::Forward;
    }
    empty_non_terminal(reply, snapshot, false)
}

/// `<dashed ip>.<ns>.pod.<zone>`: with insecure pod records, the address
/// the name spells (`10-0-0-1`, `fd00--1`), for whatever namespace, as
/// CoreDNS's `pods insecure`; NXDOMAIN for a label that spells none, and
/// for every pod name when they are disabled. Needs no sync: it reads no
/// Service.
pub(super) fn pod(reply: &mut Reply<'_, '_>, host: &[u8]) -> Outcome {
    reply.start();
    let address = match reply.zone.pod_records {
        PodRecords::Insecure => dashed_address(host),
        PodRecords::Disabled => None,
    };
    let Some(address) = address else {
        reply.nxdomain();
        return Outcome::Answered;
    };
    match (reply.qtype(), address) {
        (rtype::A, IpAddr::V4(_)) | (rtype::AAAA, IpAddr::V6(_)) => {
            let (ttl, owner) = (reply.ttl(), reply.owner());
            write_address(reply.response, Section::Answer, owner, ttl, address);
        }
        (rtype::ANY, _) => reply.any(),
        _ => reply.nodata(),
    }
    Outcome::Answered
}

/// `10-0-0-1` → 10.0.0.1; `fd00--1` → fd00::1 (a pod name's address, dashes
/// for dots or colons). Parsed from a stack copy: no allocation.
fn dashed_address(label: &[u8]) -> Option<IpAddr> {
    let mut buffer = [0u8; 64];
    let copy = buffer.get_mut(..label.len())?;
    copy.copy_from_slice(label);
    let dots = label.iter().filter(|&&b| b == b'-').count() == 3
        && label.iter().all(|b| b.is_ascii_digit() || *b == b'-');
    let separator = if dots { b'.' } else { b':' };
    for byte in copy.iter_mut().filter(|b| **b == b'-') {
        *byte = separator;
    }
    let text = std::str::from_utf8(copy).ok()?;
    if dots {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// `label` in lowercase, in `buffer`; None when it does not fit or is not
/// UTF-8 (then it names nothing the index has).
pub(super) fn lowercase<'b>(label: &[u8], buffer: &'b mut [u8]) -> Option<&'b str> {
    let copy = buffer.get_mut(..label.len())?;
    copy.copy_from_slice(label);
    copy.make_ascii_lowercase();
    std::str::from_utf8(copy).ok()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::super::tests::{addresses, ask, ask_in, assert_soa_of_zone, index, unsynced_index};
    use super::super::{Outcome, PodRecords, Zone};
    use super::dashed_address;

    fn rcode(index: &crate::index::Index, name: &str) -> ResponseCode {
        let answer = ask(index, name, RecordType::A).unwrap();
        assert!(answer.metadata.authoritative, "{name}");
        assert!(answer.answers.is_empty(), "{name}");
        assert_soa_of_zone(&answer);
        answer.metadata.response_code
    }

    #[test]
    fn search_path_expansions_and_unknown_names_are_nxdomain() {
        let index = index();
        for name in [
            "www.example.org.ns.svc.cluster.local.",
            "www.example.org.svc.cluster.local.",
            "www.example.org.cluster.local.",
            "nope.ns.svc.cluster.local.",
            "a.b.c.d.e.f.svc.cluster.local.",
            "web.ns.cluster.local.",
            "nobody.svc.cluster.local.",
        ] {
            assert_eq!(rcode(&index, name), ResponseCode::NXDomain, "{name}");
        }
    }

    #[test]
    fn names_with_names_below_them_are_nodata() {
        let index = index();
        for name in [
            "svc.cluster.local.",
            "NS.svc.cluster.local.",
            "pod.cluster.local.",
            "ns.pod.cluster.local.",
        ] {
            assert_eq!(rcode(&index, name), ResponseCode::NoError, "{name}");
        }
    }

    #[test]
    fn before_the_first_sync_nothing_is_denied() {
        let index = unsynced_index();
        for name in [
            "www.example.org.ns.svc.cluster.local.",
            "svc.cluster.local.",
            "ns.svc.cluster.local.",
        ] {
            let answer = ask(&index, name, RecordType::A).unwrap();
            assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        }
    }

    #[test]
    fn unwatched_namespaces_are_the_cluster_dns_business() {
        let index = index();
        let zone = Zone::new("cluster.local", 5).watching(&["ns".into()]);
        for name in [
            "www.example.org.other.svc.cluster.local.",
            "other.svc.cluster.local.",
            "web.other.svc.cluster.local.",
        ] {
            assert_eq!(
                ask_in(&zone, &index, name, RecordType::A).unwrap_err(),
                Outcome::Forward,
                "{name}"
            );
        }
        let watched = ask_in(&zone, &index, "x.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(watched.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn pod_names_echo_their_address() {
        let index = unsynced_index();
        let a = ask(&index, "10-1-2-3.any.pod.cluster.local.", RecordType::A).unwrap();
        assert!(a.metadata.authoritative);
        assert_eq!(addresses(&a), ["10.1.2.3"]);
        let v6 = ask(&index, "FD00--A.any.pod.cluster.local.", RecordType::AAAA).unwrap();
        assert_eq!(addresses(&v6), ["fd00::a"]);
        let nodata = ask(&index, "10-1-2-3.any.pod.cluster.local.", RecordType::AAAA).unwrap();
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        for bad in ["10-1-2.x.pod.cluster.local.", "web-0.x.pod.cluster.local."] {
            let answer = ask(&index, bad, RecordType::A).unwrap();
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NXDomain,
                "{bad}"
            );
        }
        let zone = Zone::new("cluster.local", 5).with_pod_records(PodRecords::Disabled);
        let disabled = ask_in(
            &zone,
            &index,
            "10-1-2-3.x.pod.cluster.local.",
            RecordType::A,
        );
        assert_eq!(
            disabled.unwrap().metadata.response_code,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn dashed_addresses_parse_both_families_and_nothing_else() {
        assert_eq!(
            dashed_address(b"192-168-0-1"),
            Some("192.168.0.1".parse().unwrap())
        );
        assert_eq!(
            dashed_address(b"2001-db8--1"),
            Some("2001:db8::1".parse().unwrap())
        );
        for bad in [
            &b"1-2-3"[..],
            b"1-2-3-4-5",
            b"300-1-1-1",
            b"",
            b"x",
            &[b'1'; 70],
        ] {
            assert_eq!(dashed_address(bad), None, "{bad:?}");
        }
    }
}
