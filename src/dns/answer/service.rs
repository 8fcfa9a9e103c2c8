//! The writers of the names under `svc.<zone>` that name a Service:
//! the Service itself, one of its endpoints, one of its ports.
//!
//! Owns: finding the Service a name points to, and the exactness rules for
//! these names (SERVFAIL before the first sync, NXDOMAIN for no such
//! Service, a served one without usable endpoints or a host or port it does
//! not have, NODATA for a type it does not have). Services whose endpoints
//! are not served are handed to [`super::addressed`]. May not touch: sockets, the forwarder, or the
//! index beyond reading the snapshot it is given.

use rand::Rng;

use super::addressed;
use super::host::{LabelBuffer, host_label};
use super::records::{is_ipv4, is_ipv6, port_matches, write_address, write_addresses, write_srv};
use super::shape::ServiceName;
use super::{Outcome, Reply};
use crate::dns::wire::{Section, rtype};
use crate::index::{Endpoint, ServedService, ServiceObject, Snapshot};

/// Longest `<name>.<namespace>` looked up; longer is no Service of ours.
const MAX_KEY_LEN: usize = 128;

/// What a `<svc>.<ns>` names, once the response is started.
enum Named<'s> {
    /// A served Service (headless, or exposed) with usable endpoints.
    Served(&'s ServedService),
    /// A Service whose endpoints are not served: ClusterIP, NodePort,
    /// LoadBalancer or ExternalName, answered from its spec.
    Addressed(&'s ServiceObject),
}

/// The Service that `name` names, the response started; or what to do
/// instead, the response written for it: forwarded when the namespace is
/// one the agent does not watch, SERVFAIL before the first sync, NXDOMAIN
/// for no such Service and for a served one without usable endpoints.
fn lookup<'s>(
    reply: &mut Reply<'_, '_>,
    snapshot: &'s Snapshot,
    name: ServiceName<'_>,
) -> Result<Named<'s>, Outcome> {
    if !reply.zone.knows_namespace(name.namespace) {
        return Err(Outcome::Forward);
    }
    if !snapshot.synced {
        reply.servfail();
        return Err(Outcome::Answered);
    }
    reply.start();
    // Keyed `<name>.<namespace>` in lowercase, built on the stack.
    let mut key = [0u8; MAX_KEY_LEN];
    let key_len = name.name.len() + 1 + name.namespace.len();
    let key = (key_len <= key.len())
        .then(|| {
            key[..name.name.len()].copy_from_slice(name.name);
            key[name.name.len()] = b'.';
            key[name.name.len() + 1..key_len].copy_from_slice(name.namespace);
            key[..key_len].make_ascii_lowercase();
            std::str::from_utf8(&key[..key_len]).ok()
        })
        .flatten();
    if let Some(key) = key {
        if let Some(served) = snapshot.by_dns_name.get(key) {
            if !served.endpoints.is_empty() {
                return Ok(Named::Served(served));
            }
        } else if let Some(service) = snapshot.zone.get(key) {
            return Ok(Named::Addressed(service));
        }
    }
    reply.nxdomain();
    Err(Outcome::Answered)
}

/// `<svc>.<ns>.svc.<zone>`: A/AAAA of the usable endpoints; SRV of every
/// port, as CoreDNS answers SRV on the bare Service name. Services whose
/// endpoints are not served: [`addressed::service`].
pub(super) fn service(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    name: ServiceName<'_>,
    rng: &mut impl Rng,
) -> Outcome {
    let service = match lookup(reply, snapshot, name) {
        Ok(Named::Served(service)) => service,
        Ok(Named::Addressed(service)) => {
            return addressed::service(reply, snapshot, service, name, rng);
        }
        Err(outcome) => return outcome,
    };
    match reply.qtype() {
        rtype::A => write_addresses(reply, service, is_ipv4, rng),
        rtype::AAAA => write_addresses(reply, service, is_ipv6, rng),
        rtype::SRV => write_srv(reply, service, None, reply.at(name.at), |_| true),
        rtype::ANY => reply.any(),
        _ => reply.nodata(),
    }
    Outcome::Answered
}

/// `<host>.<svc>.<ns>.svc.<zone>`: A/AAAA of the endpoints with that
/// hostname or dashed address.
pub(super) fn endpoint(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    host: &[u8],
    name: ServiceName<'_>,
) -> Outcome {
    let service = match lookup(reply, snapshot, name) {
        Ok(Named::Served(service)) => service,
        // Endpoint names are a served Service's only.
        Ok(Named::Addressed(_)) => {
            reply.nxdomain();
            return Outcome::Answered;
        }
        Err(outcome) => return outcome,
    };
    let is_host = |e: &&Endpoint| {
        let mut buffer: LabelBuffer = [0; 48];
        host_label(e, &mut buffer).eq_ignore_ascii_case(host)
    };
    if !service.endpoints.iter().any(|e| is_host(&e)) {
        reply.nxdomain();
        return Outcome::Answered;
    }
    let v4 = match reply.qtype() {
        rtype::A => true,
        rtype::AAAA => false,
        rtype::ANY => {
            reply.any();
            return Outcome::Answered;
        }
        _ => {
            reply.nodata();
            return Outcome::Answered;
        }
    };
    let (ttl, owner) = (reply.ttl(), reply.owner());
    let mut any = false;
    let matching = service.endpoints.iter().filter(is_host);
    for endpoint in matching.filter(|e| e.ip().is_ipv4() == v4) {
        write_address(reply.response, Section::Answer, owner, ttl, endpoint.ip());
        any = true;
    }
    if !any {
        reply.nodata();
    }
    Outcome::Answered
}

/// `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV per endpoint with that
/// port, targets' addresses in Additional.
pub(super) fn port(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    port: &[u8],
    protocol: &[u8],
    name: ServiceName<'_>,
) -> Outcome {
    let service = match lookup(reply, snapshot, name) {
        Ok(Named::Served(service)) => service,
        Ok(Named::Addressed(service)) => {
            return addressed::port(reply, service, port, protocol, name);
        }
        Err(outcome) => return outcome,
    };
    let has_port = |e: &Endpoint| e.ports.iter().any(|p| port_matches(p, port, protocol));
    if !service.endpoints.iter().any(has_port) {
        reply.nxdomain();
        return Outcome::Answered;
    }
    match reply.qtype() {
        rtype::SRV => {
            let service_at = reply.at(name.at);
            write_srv(reply, service, Some((port, protocol)), service_at, has_port)
        }
        rtype::ANY => reply.any(),
        _ => reply.nodata(),
    }
    Outcome::Answered
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};

    use super::super::tests::{
        addresses, ask, ask_packet, assert_soa_of_zone, index, synced_index, unsynced_index,
    };
    use crate::dns::wire::tests::query_packet;
    use crate::index::Change;
    use crate::index::merge::tests::{endpoint, service, slice};

    /// An SRV answer: (target, port, weight).
    type Srv = (String, u16, u16);
    /// An address in Additional: (owner, address).
    type Additional = (String, String);

    /// SRV answers and the addresses in Additional, each sorted.
    fn srv_records(message: &Message) -> (Vec<Srv>, Vec<Additional>) {
        let mut targets: Vec<_> = message
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => (s.target.to_ascii().to_lowercase(), s.port, s.weight),
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        targets.sort();
        let mut additional: Vec<_> = message
            .additionals
            .iter()
            .filter_map(|r| {
                match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    RData::AAAA(a) => Some(a.0.to_string()),
                    _ => None,
                }
                .map(|ip| (r.name.to_ascii().to_lowercase(), ip))
            })
            .collect();
        additional.sort();
        (targets, additional)
    }

    fn web_targets() -> Vec<Srv> {
        vec![
            ("10-0-0-2.web.ns.svc.cluster.local.".into(), 8080, 300),
            ("fd00--2.web.ns.svc.cluster.local.".into(), 8080, 300),
            ("web-0.web.ns.svc.cluster.local.".into(), 8080, 100),
        ]
    }

    fn web_additional() -> Vec<Additional> {
        vec![
            (
                "10-0-0-2.web.ns.svc.cluster.local.".into(),
                "10.0.0.2".into(),
            ),
            ("fd00--2.web.ns.svc.cluster.local.".into(), "fd00::2".into()),
            ("web-0.web.ns.svc.cluster.local.".into(), "10.0.0.1".into()),
        ]
    }

    #[test]
    fn service_writer_answers_each_type() {
        let index = index();
        let srv = ask(&index, "web.ns.svc.cluster.local.", RecordType::SRV).unwrap();
        assert!(srv.metadata.authoritative);
        assert_eq!(srv_records(&srv), (web_targets(), web_additional()));

        let txt = ask(&index, "web.ns.svc.cluster.local.", RecordType::TXT).unwrap();
        assert_eq!(txt.metadata.response_code, ResponseCode::NoError);
        assert!(txt.answers.is_empty());
        assert_soa_of_zone(&txt);

        // A Service with IPv4 endpoints only: AAAA is NODATA.
        let v4_only = synced_index(vec![
            Change::ApplyService(service("v4")),
            Change::ApplySlice(slice("a", "v4", 80, vec![endpoint("10.0.1.1")])),
        ]);
        let aaaa = ask(&v4_only, "v4.ns.svc.cluster.local.", RecordType::AAAA).unwrap();
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        assert_soa_of_zone(&aaaa);
        let a = ask(&v4_only, "v4.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(addresses(&a), ["10.0.1.1"]);
    }

    #[test]
    fn service_names_before_sync_unknown_or_empty() {
        let unsynced = unsynced_index();
        for name in [
            "web.ns.svc.cluster.local.",
            "web-0.web.ns.svc.cluster.local.",
            "_http._tcp.web.ns.svc.cluster.local.",
        ] {
            let servfail = ask(&unsynced, name, RecordType::A).unwrap();
            assert_eq!(
                servfail.metadata.response_code,
                ResponseCode::ServFail,
                "{name}"
            );
            assert!(!servfail.metadata.authoritative, "{name}");
            assert!(servfail.authorities.is_empty(), "{name}");
        }

        // Unknown Services are denied here, not asked of another server.
        let index = index();
        for name in [
            "nope.ns.svc.cluster.local.",
            "web-0.nope.ns.svc.cluster.local.",
            "_http._tcp.nope.ns.svc.cluster.local.",
            "web.other.svc.cluster.local.",
        ] {
            let nxdomain = ask(&index, name, RecordType::A).unwrap();
            assert_eq!(
                nxdomain.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
            assert_soa_of_zone(&nxdomain);
        }
        // A name that is not UTF-8 is no Service's.
        let mut packet = query_packet("web.ns.svc.cluster.local.", RecordType::A, None);
        packet[13] = 0xFF;
        let not_utf8 = ask_packet(&index, &packet).unwrap();
        assert_eq!(not_utf8.metadata.response_code, ResponseCode::NXDomain);

        for name in [
            "empty.ns.svc.cluster.local.",
            "10-0-0-9.empty.ns.svc.cluster.local.",
            "_http._tcp.empty.ns.svc.cluster.local.",
        ] {
            let nxdomain = ask(&index, name, RecordType::SRV).unwrap();
            assert_eq!(
                nxdomain.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
            assert!(nxdomain.metadata.authoritative, "{name}");
            assert_soa_of_zone(&nxdomain);
        }
    }

    #[test]
    fn endpoint_writer_answers_its_family_only() {
        let index = index();
        let upper = ask(&index, "WEB-0.web.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert!(upper.metadata.authoritative);
        assert_eq!(addresses(&upper), ["10.0.0.1"]);
        let v6 = ask(
            &index,
            "fd00--2.web.ns.svc.cluster.local.",
            RecordType::AAAA,
        )
        .unwrap();
        assert_eq!(addresses(&v6), ["fd00::2"]);

        for (name, record_type) in [
            ("web-0.web.ns.svc.cluster.local.", RecordType::AAAA),
            ("fd00--2.web.ns.svc.cluster.local.", RecordType::A),
            ("web-0.web.ns.svc.cluster.local.", RecordType::SRV),
        ] {
            let nodata = ask(&index, name, record_type).unwrap();
            assert_eq!(
                nodata.metadata.response_code,
                ResponseCode::NoError,
                "{name}"
            );
            assert!(nodata.answers.is_empty(), "{name}");
            assert_soa_of_zone(&nodata);
        }
        let any = ask(&index, "web-0.web.ns.svc.cluster.local.", RecordType::ANY).unwrap();
        assert_eq!(any.answers.len(), 1);
        assert_eq!(any.answers[0].record_type(), RecordType::HINFO);

        // An endpoint with a hostname is not named by its address.
        let dashed = ask(&index, "10-0-0-1.web.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(dashed.metadata.response_code, ResponseCode::NXDomain);
        assert_soa_of_zone(&dashed);
    }

    #[test]
    fn port_writer_answers_srv_of_that_port() {
        let index = index();
        let srv = ask(
            &index,
            "_HTTP._Tcp.web.ns.svc.cluster.local.",
            RecordType::SRV,
        )
        .unwrap();
        assert!(srv.metadata.authoritative);
        assert_eq!(srv_records(&srv), (web_targets(), web_additional()));

        let a = ask(
            &index,
            "_http._tcp.web.ns.svc.cluster.local.",
            RecordType::A,
        )
        .unwrap();
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_soa_of_zone(&a);

        let any = ask(
            &index,
            "_http._tcp.web.ns.svc.cluster.local.",
            RecordType::ANY,
        )
        .unwrap();
        assert_eq!(any.answers[0].record_type(), RecordType::HINFO);

        let udp = ask(
            &index,
            "_http._udp.web.ns.svc.cluster.local.",
            RecordType::SRV,
        )
        .unwrap();
        assert_eq!(udp.metadata.response_code, ResponseCode::NXDomain);
        assert_soa_of_zone(&udp);
    }

    #[test]
    fn a_hostname_that_is_no_dns_label_is_left_out_of_srv() {
        let mut long = endpoint("10.0.2.1");
        long.hostname = Some("h".repeat(64).into());
        let mut empty = endpoint("10.0.2.2");
        empty.hostname = Some("".into());
        let index = synced_index(vec![
            Change::ApplyService(service("odd")),
            Change::ApplySlice(slice(
                "a",
                "odd",
                80,
                vec![long, empty, endpoint("10.0.2.3")],
            )),
        ]);
        for name in [
            "odd.ns.svc.cluster.local.",
            "_http._tcp.odd.ns.svc.cluster.local.",
        ] {
            let srv = ask(&index, name, RecordType::SRV).unwrap();
            assert_eq!(
                srv_records(&srv),
                (
                    vec![("10-0-2-3.odd.ns.svc.cluster.local.".into(), 80, 100)],
                    vec![(
                        "10-0-2-3.odd.ns.svc.cluster.local.".into(),
                        "10.0.2.3".into()
                    )]
                ),
                "{name}"
            );
        }
        // Their addresses are still the Service's.
        let a = ask(&index, "odd.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(addresses(&a), ["10.0.2.1", "10.0.2.2", "10.0.2.3"]);
    }
}
