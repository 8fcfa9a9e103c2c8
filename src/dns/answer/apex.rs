//! The writers of the zone's own names: the apex (its SOA) and
//! `dns-version` (the specification's schema version).
//!
//! Owns: those two names' records. May not touch: the snapshot; both are
//! answered the same before and after the first sync.

use super::{Outcome, Reply};
use crate::dns::wire::{Section, rtype};

/// The Kubernetes DNS specification schema these answers follow.
const SCHEMA_VERSION: &[u8] = b"1.1.0";

/// `<zone>`: SOA, NODATA for the rest.
pub(super) fn apex(reply: &mut Reply<'_, '_>) -> Outcome {
    reply.start();
    match reply.qtype() {
        rtype::SOA => reply.soa(Section::Answer),
        rtype::ANY => reply.any(),
        _ => reply.nodata(),
    }
    Outcome::Answered
}

/// `dns-version.<zone>`: TXT of the schema version, NODATA for the rest.
pub(super) fn dns_version(reply: &mut Reply<'_, '_>) -> Outcome {
    reply.start();
    match reply.qtype() {
        rtype::TXT => {
            let owner = reply.owner();
            reply.response.txt(owner, reply.ttl(), SCHEMA_VERSION)
        }
        rtype::ANY => reply.any(),
        _ => reply.nodata(),
    }
    Outcome::Answered
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{RData, RecordType};

    use super::super::tests::{ask, assert_soa_of_zone, index, unsynced_index};

    #[test]
    fn apex_has_the_soa_and_nothing_else() {
        let index = index();
        let soa = ask(&index, "Cluster.Local.", RecordType::SOA).unwrap();
        assert!(soa.metadata.authoritative);
        assert_eq!(soa.answers.len(), 1);
        let RData::SOA(record) = &soa.answers[0].data else {
            panic!("not SOA: {:?}", soa.answers);
        };
        assert_eq!(record.mname.to_ascii(), "ns.dns.Cluster.Local.");
        assert_eq!(record.rname.to_ascii(), "hostmaster.Cluster.Local.");
        assert_eq!(record.minimum, 5);
        assert_eq!(soa.answers[0].ttl, 5);
        assert!(soa.authorities.is_empty());

        let a = ask(&index, "cluster.local.", RecordType::A).unwrap();
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_soa_of_zone(&a);

        let any = ask(&index, "cluster.local.", RecordType::ANY).unwrap();
        assert_eq!(any.answers.len(), 1);
        assert_eq!(any.answers[0].record_type(), RecordType::HINFO);
    }

    #[test]
    fn dns_version_is_the_schema_version_synced_or_not() {
        for index in [index(), unsynced_index()] {
            let txt = ask(&index, "DNS-VERSION.cluster.local.", RecordType::TXT).unwrap();
            assert!(txt.metadata.authoritative);
            assert_eq!(txt.answers.len(), 1);
            assert_eq!(txt.answers[0].data.to_string(), "1.1.0");

            let a = ask(&index, "dns-version.cluster.local.", RecordType::A).unwrap();
            assert_eq!(a.metadata.response_code, ResponseCode::NoError);
            assert!(a.answers.is_empty());
            assert_soa_of_zone(&a);

            let any = ask(&index, "dns-version.cluster.local.", RecordType::ANY).unwrap();
            assert_eq!(any.answers[0].record_type(), RecordType::HINFO);

            // The apex, too, answers before the first sync.
            let soa = ask(&index, "cluster.local.", RecordType::SOA).unwrap();
            assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
        }
    }
}
