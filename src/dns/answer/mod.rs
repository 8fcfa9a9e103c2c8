//! The zone's answers: Kubernetes DNS records (specification schema 1.1.0)
//! from an index snapshot. The agent is the authority for the whole zone.
//!
//! | name (under the zone)                 | records                              |
//! |---------------------------------------|--------------------------------------|
//! | `<svc>.<ns>.svc` headless or exposed  | A/AAAA of usable endpoints, SRV of all ports |
//! | `<svc>.<ns>.svc` ClusterIP, NodePort, LoadBalancer | A/AAAA of its cluster IPs, SRV per named port |
//! | `<svc>.<ns>.svc` ExternalName         | CNAME, then the target's records     |
//! | `<hostname or dashed-ip>.<svc>.<ns>.svc` | A/AAAA of that endpoint           |
//! | `_<port>._<proto>.<svc>.<ns>.svc`     | SRV per endpoint (or the Service), targets in Additional |
//! | `<dashed-ip>.<ns>.pod`                | A/AAAA echoing the address (`--pod-records insecure`) |
//! | `svc`, `<ns>.svc` with Services, `pod`, `<ns>.pod` | NODATA (names exist below them) |
//! | `dns-version`                         | TXT `1.1.0`                          |
//! | zone apex                             | SOA                                  |
//! | any other name                        | NXDOMAIN + SOA                       |
//! | `<reversed ip>.in-addr.arpa` / `ip6.arpa` | PTR of endpoint addresses and cluster IPs |
//!
//! Forwarded: names outside the zone, reverse names of addresses the agent
//! does not know, and names under `<ns>.svc` of a namespace it does not
//! watch (`--namespaces`). So search-path expansions never leave the node,
//! and the agent can be a pod's only nameserver.
//!
//! Exactness rules: a served Service without usable endpoints is NXDOMAIN; a
//! name that exists without the asked type is NODATA with the SOA; before the
//! first full sync, names that need the index get SERVFAIL (never a false
//! NXDOMAIN).
//!
//! Layout: [`zone`] holds the zone's settings ([`Zone`]); [`shape`] reads
//! the name into a [`Shape`], by syntax alone;
//! [`answer`] hands each shape to its writer: [`apex`] (the zone's own
//! names), [`service`] (Service, endpoint and port names of served
//! Services, with the record sets of [`records`] and the endpoint names of
//! [`host`]), [`addressed`] (ClusterIP and ExternalName Services, from their
//! spec), [`names`] (empty non-terminals, pods, everything else), [`reverse`]
//! (PTR). A new kind of name is a new [`Shape`] variant and its writer; the
//! one `match` in [`answer`] is where the compiler asks for it.
//!
//! Owns: what the zone says about a parsed query. May not touch: sockets,
//! the forwarder, metrics, or the index beyond the snapshot it is given; it
//! writes one [`Response`] and allocates nothing per query. An in-zone
//! ExternalName target is answered into the same response (its question
//! made up on the stack, see `answer_target`); a chain that leaves the zone
//! is the server's to chase ([`Outcome::Chase`]).

mod addressed;
mod apex;
mod host;
mod names;
mod records;
mod reverse;
mod service;
mod shape;
mod zone;

use rand::Rng;

use shape::{Shape, classify};
pub use zone::{PodRecords, Zone};

use super::wire::{CLASS_ANY, CLASS_IN, Query, Response, Section, rcode};
use crate::index::Snapshot;

/// What the zone says about a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The response is written.
    Answered,
    /// Not ours: send the query upstream.
    Forward,
    /// An ExternalName Service: answer with a CNAME to this name (dotted,
    /// no trailing dot) followed by the name's own records, from the zone
    /// when it is inside it and from upstream otherwise.
    Chase(std::sync::Arc<str>),
}

/// What every writer shares: the name being answered, the response being
/// written, the zone and the snapshot's generation (the SOA serial).
///
/// Owner names are the question (offset 12) — or, while an in-zone
/// ExternalName target is answered inside the same response, the target's
/// name as the CNAME wrote it: `query` is then a question made up for the
/// target, whose offsets `shift` translates into the response.
struct Reply<'r, 'q> {
    query: &'r Query<'q>,
    /// The client's question: what the response starts with and echoes.
    asked: &'r Query<'r>,
    response: &'r mut Response,
    zone: &'r Zone,
    serial: u32,
    /// Offsets in `query` plus this are offsets in the response.
    shift: u16,
    /// CNAME links followed so far (0: answering the client's name).
    depth: u8,
}

impl Reply<'_, '_> {
    fn qtype(&self) -> u16 {
        self.query.qtype
    }

    fn ttl(&self) -> u32 {
        self.zone.ttl
    }

    /// Where the answered name is in the response: the owner of answers.
    fn owner(&self) -> u16 {
        12 + self.shift
    }

    /// `offset` in the answered name's question, as a response offset.
    fn at(&self, offset: u16) -> u16 {
        offset + self.shift
    }

    /// Starts an authoritative response (a chased target's records join
    /// the response already started).
    fn start(&mut self) {
        if self.depth == 0 {
            self.response.start(self.asked, true);
        }
    }

    /// Not synced yet: the agent cannot say what does not exist.
    fn servfail(&mut self) {
        self.response.start(self.asked, false);
        self.response.set_rcode(rcode::SERVFAIL);
    }

    /// The zone's SOA, owned by the zone's name inside the answered name:
    /// only for names in the zone.
    fn soa(&mut self, section: Section) {
        let zone_at = self.at(self.zone.offset_in(self.query));
        self.response
            .soa(section, zone_at, self.zone.ttl, self.serial);
    }

    /// The name exists, the type does not: NOERROR, the SOA in Authority.
    fn nodata(&mut self) {
        self.soa(Section::Authority);
    }

    fn nxdomain(&mut self) {
        self.response.set_rcode(rcode::NXDOMAIN);
        self.soa(Section::Authority);
    }

    /// RFC 8482's answer to ANY.
    fn any(&mut self) {
        let owner = self.owner();
        self.response.hinfo_rfc8482(owner, self.zone.ttl);
    }
}

/// Writes the answer to `query` from `snapshot` into `response`.
pub(crate) fn answer(
    zone: &Zone,
    snapshot: &Snapshot,
    query: &Query<'_>,
    response: &mut Response,
    rng: &mut impl Rng,
) -> Outcome {
    if classify(zone, query).in_zone() && query.qclass != CLASS_IN && query.qclass != CLASS_ANY {
        response.start(query, false);
        response.set_rcode(rcode::REFUSED);
        return Outcome::Answered;
    }
    let reply = &mut Reply {
        query,
        asked: query,
        response,
        zone,
        serial: snapshot.generation as u32,
        shift: 0,
        depth: 0,
    };
    answer_name(reply, snapshot, rng)
}

/// Hands the answered name to the writer of its shape.
fn answer_name(reply: &mut Reply<'_, '_>, snapshot: &Snapshot, rng: &mut impl Rng) -> Outcome {
    match classify(reply.zone, reply.query) {
        Shape::Apex => apex::apex(reply),
        Shape::DnsVersion => apex::dns_version(reply),
        Shape::Service(name) => service::service(reply, snapshot, name, rng),
        Shape::Endpoint { host, service } => service::endpoint(reply, snapshot, host, service),
        Shape::Port {
            port,
            protocol,
            service,
        } => service::port(reply, snapshot, port, protocol, service),
        Shape::ServicesSuffix => names::empty_non_terminal(reply, snapshot, true),
        Shape::Namespace(namespace) => names::namespace(reply, snapshot, namespace),
        Shape::PodSuffix => {
            let exists = reply.zone.pod_records == PodRecords::Insecure;
            names::empty_non_terminal(reply, snapshot, exists)
        }
        Shape::Pod { host } => names::pod(reply, host),
        Shape::OtherInZone { namespace } => names::other(reply, snapshot, namespace),
        Shape::Reverse(ip) => reverse::pointer(reply, snapshot, ip),
        Shape::Outside => Outcome::Forward,
    }
}

/// Answers `target`, an in-zone ExternalName target whose CNAME the
/// response holds with the target's name at `name_at`, into the same
/// response: its records follow the CNAME, owned by that name. Allocates
/// nothing: the target's question is made up on the stack. Anything but a
/// local answer (a target outside the zone further down the chain, a
/// namespace the agent does not watch, a chain too long) is the server's
/// to chase instead ([`Outcome::Chase`] of the caller's target).
fn answer_target(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    target: &str,
    name_at: u16,
    rng: &mut impl Rng,
) -> Option<()> {
    const MAX_CHAIN: u8 = 8;
    if reply.depth >= MAX_CHAIN {
        return None;
    }
    let mut packet = [0u8; 12 + super::wire::MAX_NAME_LEN + 4];
    packet[2] = 0x01; // RD
    packet[5] = 1; // one question
    let mut at = 12;
    for label in target.split('.').filter(|l| !l.is_empty()) {
        let end = at + 1 + label.len();
        if label.len() > super::wire::MAX_LABEL_LEN || end + 5 > packet.len() {
            return None;
        }
        packet[at] = label.len() as u8;
        packet[at + 1..end].copy_from_slice(label.as_bytes());
        at = end;
    }
    packet[at + 1..at + 3].copy_from_slice(&reply.qtype().to_be_bytes());
    packet[at + 3..at + 5].copy_from_slice(&CLASS_IN.to_be_bytes());
    let query = super::wire::parse_query(&packet[..at + 5]).ok()?;
    let nested = &mut Reply {
        query: &query,
        asked: reply.asked,
        response: &mut *reply.response,
        zone: reply.zone,
        serial: reply.serial,
        shift: name_at.checked_sub(12)?,
        depth: reply.depth + 1,
    };
    match answer_name(nested, snapshot, rng) {
        Outcome::Answered => Some(()),
        Outcome::Forward | Outcome::Chase(_) => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};

    use super::*;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_packet;
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::{Change, Index};

    /// A synced index holding exactly `changes`.
    pub(super) fn synced_index(changes: Vec<Change>) -> Index {
        let index = Index::default();
        index.expect_parts(["test"]);
        index.apply(changes);
        index.replace(
            &crate::index::Scope::Namespace("none".into()),
            None,
            None,
            "test",
        );
        index
    }

    /// An index that has not synced yet.
    pub(super) fn unsynced_index() -> Index {
        let index = Index::default();
        index.expect_parts(["never"]);
        index
    }

    pub(super) fn index() -> Index {
        let mut web_0 = endpoint("10.0.0.1");
        web_0.hostname = Some("web-0".into());
        let mut weighted = slice("b", "web", 8080, vec![endpoint("10.0.0.2")]);
        weighted.weight = Some(300);
        let mut v6 = slice("v6", "web", 8080, vec![endpoint("fd00::2")]);
        v6.weight = Some(300);
        let mut drained = endpoint("10.0.0.9");
        drained.ready = false;
        synced_index(vec![
            Change::ApplyService(service("web")),
            Change::ApplyService(service("empty")),
            Change::ApplySlice(slice("a", "web", 8080, vec![web_0])),
            Change::ApplySlice(weighted),
            Change::ApplySlice(v6),
            Change::ApplySlice(slice("e", "empty", 80, vec![drained])),
        ])
    }

    pub(super) fn ask(
        index: &Index,
        name: &str,
        record_type: RecordType,
    ) -> Result<Message, Outcome> {
        ask_packet(index, &query_packet(name, record_type, Some(1232)))
    }

    /// The zone's answer to `packet`, decoded by hickory-proto.
    pub(super) fn ask_packet(index: &Index, packet: &[u8]) -> Result<Message, Outcome> {
        answer_in(&Zone::new("cluster.local", 5), index, packet)
    }

    /// [`ask`] in another zone (other namespaces or pod records).
    pub(super) fn ask_in(
        zone: &Zone,
        index: &Index,
        name: &str,
        record_type: RecordType,
    ) -> Result<Message, Outcome> {
        answer_in(zone, index, &query_packet(name, record_type, Some(1232)))
    }

    fn answer_in(zone: &Zone, index: &Index, packet: &[u8]) -> Result<Message, Outcome> {
        let query = parse_query(packet).unwrap();
        let mut response = Response::default();
        match answer(zone, &index.load(), &query, &mut response, &mut rand::rng()) {
            Outcome::Answered => {
                response.finish();
                Ok(Message::from_vec(&response.buf).expect("valid response"))
            }
            other => Err(other),
        }
    }

    /// The SOA in Authority is owned by the zone: the negative answer of a
    /// name in it.
    pub(super) fn assert_soa_of_zone(message: &Message) {
        assert_eq!(message.authorities.len(), 1, "{message:?}");
        let soa = &message.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.name.to_ascii().to_lowercase(), "cluster.local.");
    }

    pub(super) fn addresses(message: &Message) -> Vec<String> {
        let mut ips: Vec<String> = message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        ips.sort();
        ips
    }

    #[test]
    fn service_names_answer_a_aaaa_and_srv() {
        let index = index();
        let a = ask(&index, "web.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert!(a.metadata.authoritative);
        assert_eq!(addresses(&a), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(a.answers[0].ttl, 5);
        let aaaa = ask(&index, "WEB.ns.SVC.cluster.local.", RecordType::AAAA).unwrap();
        assert_eq!(addresses(&aaaa), ["fd00::2"]);
        assert_eq!(
            aaaa.queries[0].name().to_ascii(),
            "WEB.ns.SVC.cluster.local."
        );

        let srv = ask(
            &index,
            "_http._tcp.web.ns.svc.cluster.local.",
            RecordType::SRV,
        )
        .unwrap();
        assert_eq!(srv.answers.len(), 3);
        let mut targets: Vec<(String, u16, u16)> = srv
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => (s.target.to_ascii(), s.port, s.weight),
                other => panic!("{other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [
                ("10-0-0-2.web.ns.svc.cluster.local.".to_string(), 8080, 300),
                ("fd00--2.web.ns.svc.cluster.local.".to_string(), 8080, 300),
                ("web-0.web.ns.svc.cluster.local.".to_string(), 8080, 100),
            ]
        );
        assert_eq!(
            srv.additionals
                .iter()
                .filter(|r| r.record_type() != RecordType::OPT)
                .count(),
            3
        );
    }

    #[test]
    fn hostnames_and_dashed_ips_resolve() {
        let index = index();
        let host = ask(&index, "web-0.web.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(addresses(&host), ["10.0.0.1"]);
        let dashed = ask(&index, "10-0-0-2.web.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(addresses(&dashed), ["10.0.0.2"]);
        let missing = ask(&index, "web-7.web.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn negative_answers_are_exact() {
        let index = index();
        // A Service with no usable endpoint: NXDOMAIN with the SOA.
        let empty = ask(&index, "empty.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(empty.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(empty.authorities[0].record_type(), RecordType::SOA);
        // The name exists, the type does not: NODATA with the SOA.
        let mx = ask(&index, "web.ns.svc.cluster.local.", RecordType::MX).unwrap();
        assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
        assert!(mx.answers.is_empty());
        assert_eq!(mx.authorities[0].record_type(), RecordType::SOA);
        // An unknown port name: NXDOMAIN.
        let port = ask(
            &index,
            "_grpc._tcp.web.ns.svc.cluster.local.",
            RecordType::SRV,
        )
        .unwrap();
        assert_eq!(port.metadata.response_code, ResponseCode::NXDomain);
        // An unknown Service is denied here; other zones are somebody else's.
        let unknown = ask(&index, "nope.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(unknown.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(
            ask(&index, "example.org.", RecordType::A).unwrap_err(),
            Outcome::Forward
        );
    }

    #[test]
    fn not_synced_is_servfail_never_nxdomain() {
        let index = Index::default();
        index.expect_parts(["never"]);
        let message = ask(&index, "web.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(message.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn version_apex_ptr_and_any() {
        let index = index();
        let txt = ask(&index, "dns-version.cluster.local.", RecordType::TXT).unwrap();
        assert_eq!(txt.answers[0].data.to_string(), "1.1.0");
        let soa = ask(&index, "cluster.local.", RecordType::SOA).unwrap();
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        let ptr = ask(&index, "1.0.0.10.in-addr.arpa.", RecordType::PTR).unwrap();
        assert_eq!(
            ptr.answers[0].data.to_string(),
            "web-0.web.ns.svc.cluster.local."
        );
        let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        let ptr6 = ask(&index, v6, RecordType::PTR).unwrap();
        assert_eq!(
            ptr6.answers[0].data.to_string(),
            "fd00--2.web.ns.svc.cluster.local."
        );
        assert_eq!(
            ask(&index, "9.9.9.10.in-addr.arpa.", RecordType::PTR).unwrap_err(),
            Outcome::Forward
        );
        let any = ask(&index, "web.ns.svc.cluster.local.", RecordType::ANY).unwrap();
        assert_eq!(any.answers.len(), 1);
        assert_eq!(any.answers[0].record_type(), RecordType::HINFO);
    }

    #[test]
    fn address_order_follows_weights() {
        let index = index();
        let mut heavy_first = 0;
        for _ in 0..4000 {
            let a = ask(&index, "web.ns.svc.cluster.local.", RecordType::A).unwrap();
            if let RData::A(first) = a.answers[0].data
                && first.0.to_string() == "10.0.0.2"
            {
                heavy_first += 1;
            }
        }
        // Weight 300 vs 100: first three times in four.
        let share = f64::from(heavy_first) / 4000.0;
        assert!((0.70..0.80).contains(&share), "share {share}");
    }

    #[test]
    fn other_classes_are_refused_in_the_zone_only() {
        let index = index();
        let chaos = |name: &str| {
            let mut packet = query_packet(name, RecordType::TXT, None);
            let at = packet.len() - 2;
            packet[at..].copy_from_slice(&3u16.to_be_bytes()); // class CH
            ask_packet(&index, &packet)
        };
        for name in [
            "cluster.local.",
            "web.ns.svc.cluster.local.",
            "nope.ns.svc.cluster.local.",
            "anything.cluster.local.",
        ] {
            let refused = chaos(name).unwrap();
            assert_eq!(
                refused.metadata.response_code,
                ResponseCode::Refused,
                "{name}"
            );
            assert!(!refused.metadata.authoritative, "{name}");
            assert!(refused.answers.is_empty(), "{name}");
        }
        assert_eq!(chaos("version.bind.").unwrap_err(), Outcome::Forward);
    }

    #[test]
    fn only_names_outside_the_zone_go_upstream() {
        let index = index();
        for name in [
            "svc.cluster.local.",
            "ns.svc.cluster.local.",
            "web.ns.pod.cluster.local.",
            "www.example.org.ns.svc.cluster.local.",
            "_http.tcp.web.ns.svc.cluster.local.",
        ] {
            let answer = ask(&index, name, RecordType::A).unwrap();
            assert!(answer.metadata.authoritative, "{name}");
        }
        for name in ["example.org.", "cluster.local.example.", "local."] {
            assert_eq!(
                ask(&index, name, RecordType::A).unwrap_err(),
                Outcome::Forward,
                "{name}"
            );
        }
    }
}
