//! The DNS wire format, as much of it as the agent speaks: reading a query
//! (header, one question, the EDNS OPT record) and writing a response
//! straight into a reusable buffer.
//!
//! Hand-written rather than built from a general message type because this
//! is the hot path: a query is parsed without allocating, the question is
//! echoed byte for byte (which also echoes the client's letter case, as RFC
//! 4343 asks), and answer owner names are compression pointers into that
//! echoed question. The tests check every encoding against hickory-proto.
//!
//! - [`query`]: reading a query (never allocates; refuses what is not one
//!   plain question).
//! - [`response`]: writing a response (never allocates once its buffer has
//!   grown; refuses a name that does not fit rather than shortening it).
//!
//! Owns: bytes on the wire. May not touch: what the answer is (that is
//! [`super::answer`]), sockets, the index.

mod query;
mod response;

pub(crate) use query::{ParseError, Query, parse_query, read_header};
pub use response::Response;
pub(crate) use response::{NameRef, Section};

/// Record types the agent answers (others are NODATA or forwarded).
pub(crate) mod rtype {
    pub const A: u16 = 1;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
}

pub(crate) mod rcode {
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// Extended RCODE 16 (needs EDNS): the upper 8 bits go in the OPT TTL.
    pub const BADVERS: u16 = 16;
}

pub(crate) const CLASS_IN: u16 = 1;
pub(crate) const CLASS_ANY: u16 = 255;
/// What we advertise and honour as the largest UDP response (DNS Flag Day 2020).
pub(crate) const EDNS_UDP_PAYLOAD: u16 = 1232;
/// The classic limit for clients without EDNS.
pub(crate) const CLASSIC_UDP_PAYLOAD: u16 = 512;
pub(crate) const MAX_LABELS: usize = 127;
/// The longest label RFC 1035 allows; the length byte has no room for more.
pub(crate) const MAX_LABEL_LEN: usize = 63;
/// The longest name on the wire, length bytes and root included (RFC 1035).
pub(crate) const MAX_NAME_LEN: usize = 255;

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use hickory_proto::op::Message;
    use hickory_proto::rr::{Name, RData, RecordType};

    /// A query as a stub resolver sends it, built by hickory-proto.
    pub fn query_packet(name: &str, record_type: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            record_type,
        ));
        if let Some(payload) = edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(payload);
            message.set_edns(e);
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn parses_what_a_stub_resolver_sends() {
        let packet = query_packet("Web.Shop.svc.cluster.local.", RecordType::SRV, Some(4096));
        let query = parse_query(&packet).unwrap();
        assert_eq!(query.id, 0x1234);
        assert_eq!(query.qtype, rtype::SRV);
        assert_eq!(query.label_count, 5);
        assert_eq!(query.label(0), b"Web");
        assert_eq!(query.label_from_end(0), b"local");
        assert_eq!(query.edns.unwrap().udp_payload, 4096);
        assert_eq!(query.max_udp_size(), 1232);
    }

    #[test]
    fn rejects_what_is_not_one_plain_question() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), ParseError::TooShort);
        let mut packet = query_packet("a.b.", RecordType::A, None);
        packet[2] |= 0x80;
        assert_eq!(parse_query(&packet).unwrap_err(), ParseError::NotAQuery);
        let mut packet = query_packet("a.b.", RecordType::A, None);
        packet[5] = 2; // two questions
        assert_eq!(parse_query(&packet).unwrap_err(), ParseError::Malformed);
        let packet = query_packet("a.b.", RecordType::A, None);
        assert_eq!(
            parse_query(&packet[..packet.len() - 1]).unwrap_err(),
            ParseError::Malformed
        );
        let mut packet = query_packet("a.b.", RecordType::A, None);
        packet[12] = 0xC0; // a pointer in the question
        assert_eq!(parse_query(&packet).unwrap_err(), ParseError::Malformed);
    }

    #[test]
    fn responses_decode_with_hickory_and_echo_the_question() {
        let packet = query_packet(
            "_Http._tcp.Web.shop.svc.cluster.local.",
            RecordType::SRV,
            Some(1232),
        );
        let query = parse_query(&packet).unwrap();
        let mut response = Response::default();
        response.start(&query, true);
        let service_suffix = query.suffix_offset(2);
        let zone = query.suffix_offset(query.label_count - 2);
        let target = response
            .srv(
                12,
                5,
                0,
                100,
                8080,
                NameRef::LabelThenPointer(b"web-0", service_suffix),
            )
            .unwrap();
        response.soa(Section::Authority, zone, 5, 42);
        response.a(Section::Additional, target, 5, Ipv4Addr::new(10, 0, 0, 1));
        response.opt(0);
        response.finish();

        let message = Message::from_vec(&response.buf).expect("hickory decodes it");
        assert!(message.metadata.authoritative);
        assert_eq!(message.metadata.id, 0x1234);
        assert_eq!(
            message.queries[0].name().to_ascii(),
            "_Http._tcp.Web.shop.svc.cluster.local."
        );
        let RData::SRV(srv) = &message.answers[0].data else {
            panic!("not SRV: {:?}", message.answers[0]);
        };
        assert_eq!(srv.port, 8080);
        assert_eq!(srv.weight, 100);
        assert_eq!(
            srv.target.to_ascii().to_lowercase(),
            "web-0.web.shop.svc.cluster.local."
        );
        assert_eq!(
            message.additionals[0].name.to_ascii().to_lowercase(),
            "web-0.web.shop.svc.cluster.local."
        );
        let RData::SOA(soa) = &message.authorities[0].data else {
            panic!("not SOA");
        };
        assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
        assert_eq!(soa.minimum, 5);
        assert_eq!(message.edns.as_ref().unwrap().max_payload(), 1232);
    }

    #[test]
    fn truncation_keeps_the_question_and_sets_tc() {
        let packet = query_packet("web.shop.svc.cluster.local.", RecordType::A, None);
        let query = parse_query(&packet).unwrap();
        let mut response = Response::default();
        response.start(&query, true);
        for i in 0..100 {
            response.a(Section::Answer, 12, 5, Ipv4Addr::new(10, 0, 0, i));
        }
        response.finish();
        assert!(response.len() > 512);
        response.truncate_to_question(&query);
        let message = Message::from_vec(&response.buf).unwrap();
        assert!(message.metadata.truncation);
        assert!(message.answers.is_empty());
        assert_eq!(message.queries.len(), 1);
    }
}
