//! The writers of Services whose endpoints the agent does not serve, from
//! their spec alone: ClusterIP, NodePort and LoadBalancer Services answer
//! with their cluster IPs (kube-proxy balances behind them), ExternalName
//! Services with a CNAME.
//!
//! Owns: those records, per the Kubernetes DNS specification (A/AAAA of
//! `clusterIPs`, SRV per named port targeting the Service's own name with
//! its addresses in Additional, CNAME to `externalName`, followed by an
//! in-zone target's records). May not touch: the served Services' records
//! ([`super::service`]) or the forwarder: an ExternalName target outside the
//! zone is chased by the server ([`Outcome::Chase`]), not here.

use std::net::IpAddr;
use std::sync::Arc;

use rand::Rng;

use super::records::{names_port, write_address};
use super::shape::ServiceName;
use super::{Outcome, Reply, answer_target};
use crate::dns::wire::{NameRef, Section, rtype};
use crate::index::{ServiceObject, ServiceType, Snapshot};

/// The weight of a cluster IP's SRV records: there is one target, the
/// Service itself, and CoreDNS gives it 100 (100 / 1).
const SOLE_TARGET_WEIGHT: u16 = 100;

/// `<svc>.<ns>.svc.<zone>` of such a Service.
pub(super) fn service(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    service: &ServiceObject,
    name: ServiceName<'_>,
    rng: &mut impl Rng,
) -> Outcome {
    if let Some(target) = external_target(service) {
        return external_name(reply, snapshot, target, rng);
    }
    let owner = reply.owner();
    match reply.qtype() {
        rtype::A => write_cluster_ips(reply, service, Section::Answer, owner, IpAddr::is_ipv4),
        rtype::AAAA => write_cluster_ips(reply, service, Section::Answer, owner, IpAddr::is_ipv6),
        rtype::SRV => write_srv(reply, service, None, reply.at(name.at)),
        rtype::ANY => reply.any(),
        _ => reply.nodata(),
    }
    Outcome::Answered
}

/// `_<port>._<proto>.<svc>.<ns>.svc.<zone>` of such a Service: SRV for
/// that named port; NXDOMAIN when it has none (ExternalName has no ports).
pub(super) fn port(
    reply: &mut Reply<'_, '_>,
    service: &ServiceObject,
    port: &[u8],
    protocol: &[u8],
    name: ServiceName<'_>,
) -> Outcome {
    let named = |p: &&crate::index::objects::ServicePort| {
        !p.name.is_empty() && names_port(&p.name, p.protocol, port, protocol)
    };
    if external_target(service).is_some() || !service.ports.iter().any(|p| named(&p)) {
        reply.nxdomain();
        return Outcome::Answered;
    }
    match reply.qtype() {
        rtype::SRV => {
            let service_at = reply.at(name.at);
            write_srv(reply, service, Some((port, protocol)), service_at)
        }
        rtype::ANY => reply.any(),
        _ => reply.nodata(),
    }
    Outcome::Answered
}

fn external_target(service: &ServiceObject) -> Option<&Arc<str>> {
    match service.service_type {
        ServiceType::ExternalName => service.external_name.as_ref(),
        _ => None,
    }
}

/// An ExternalName Service: its CNAME; for any other type than CNAME (and
/// ANY) the target's records follow — written here when the target is in
/// the zone, else chased by the server.
fn external_name(
    reply: &mut Reply<'_, '_>,
    snapshot: &Snapshot,
    target: &Arc<str>,
    rng: &mut impl Rng,
) -> Outcome {
    let follow = !matches!(reply.qtype(), rtype::CNAME | rtype::ANY);
    if follow && !reply.zone.contains(target) {
        return Outcome::Chase(target.clone());
    }
    let (ttl, owner) = (reply.ttl(), reply.owner());
    let parts = [target.as_bytes()];
    let Ok(name_at) = reply.response.cname(owner, ttl, NameRef::Parts(&parts)) else {
        // No DNS name (the API validates it; a manifest may not).
        reply.servfail();
        return Outcome::Answered;
    };
    if follow && answer_target(reply, snapshot, target, name_at, rng).is_none() {
        return Outcome::Chase(target.clone());
    }
    Outcome::Answered
}

/// The Service's cluster IPs of one family; NODATA when it has none (a
/// single-stack Service asked for the other family).
fn write_cluster_ips(
    reply: &mut Reply<'_, '_>,
    service: &ServiceObject,
    section: Section,
    owner: u16,
    family: fn(&IpAddr) -> bool,
) {
    let ttl = reply.ttl();
    let mut any = false;
    for ip in service.cluster_ips.iter().filter(|ip| family(ip)) {
        write_address(reply.response, section, owner, ttl, *ip);
        any = true;
    }
    if !any && section == Section::Answer {
        reply.nodata();
    }
}

/// SRV per named port (`port`: only that one), each targeting the Service's
/// own name (`service_at`, inside the question), its cluster IPs in
/// Additional.
fn write_srv(
    reply: &mut Reply<'_, '_>,
    service: &ServiceObject,
    port: Option<(&[u8], &[u8])>,
    service_at: u16,
) {
    let ttl = reply.ttl();
    let mut any = false;
    for service_port in service.ports.iter().filter(|p| !p.name.is_empty()) {
        if port.is_some_and(|(name, protocol)| {
            !names_port(&service_port.name, service_port.protocol, name, protocol)
        }) {
            continue;
        }
        let target = NameRef::Pointer(service_at);
        let written = reply
            .response
            .srv(12, ttl, 0, SOLE_TARGET_WEIGHT, service_port.port, target);
        any |= written.is_ok();
    }
    if !any {
        reply.nodata();
        return;
    }
    write_cluster_ips(reply, service, Section::Additional, service_at, |_| true);
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{RData, RecordType};

    use super::super::Outcome;
    use super::super::tests::{addresses, ask, assert_soa_of_zone, synced_index};
    use crate::index::objects::{Protocol, ServicePort};
    use crate::index::{Change, Index, ServiceKey, ServiceObject, ServiceType};

    fn zone_index() -> Index {
        let port = |name: &str, port: u16, protocol: Protocol| ServicePort {
            name: name.into(),
            port,
            protocol,
            target_port: None,
        };
        let dual = ServiceObject {
            headless: false,
            cluster_ips: ["10.96.0.10", "fd00::10"]
                .iter()
                .map(|ip| ip.parse().unwrap())
                .collect(),
            ports: vec![
                port("http", 80, Protocol::Tcp),
                port("dns", 53, Protocol::Udp),
                port("", 81, Protocol::Tcp),
            ],
            ..ServiceObject::headless(ServiceKey::new("ns", "dual"))
        };
        let v4 = ServiceObject {
            service_type: ServiceType::NodePort,
            cluster_ips: ["10.96.0.11".parse().unwrap()].into(),
            ports: vec![port("", 80, Protocol::Tcp)],
            ..dual.clone()
        };
        let v4 = ServiceObject {
            key: ServiceKey::new("ns", "v4"),
            ..v4
        };
        let external = ServiceObject {
            service_type: ServiceType::ExternalName,
            headless: false,
            external_name: Some("www.example.org".into()),
            ..ServiceObject::headless(ServiceKey::new("ns", "ext"))
        };
        let alias = |name: &str, target: &str| {
            Change::ApplyService(ServiceObject {
                key: ServiceKey::new("ns", name),
                external_name: Some(target.into()),
                ..external.clone()
            })
        };
        synced_index(vec![
            Change::ApplyService(dual),
            Change::ApplyService(v4),
            alias("alias", "dual.ns.svc.cluster.local"),
            alias("alias2", "Alias.NS.svc.cluster.local"),
            alias("v4alias", "v4.ns.svc.cluster.local"),
            alias("gone", "nope.ns.svc.cluster.local"),
            alias("via-outside", "ext.ns.svc.cluster.local"),
            alias("loop-a", "loop-b.ns.svc.cluster.local"),
            alias("loop-b", "loop-a.ns.svc.cluster.local"),
            Change::ApplyService(external),
        ])
    }

    #[test]
    fn cluster_ips_answer_each_family() {
        let index = zone_index();
        let a = ask(&index, "Dual.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert!(a.metadata.authoritative);
        assert_eq!(addresses(&a), ["10.96.0.10"]);
        let aaaa = ask(&index, "dual.ns.svc.cluster.local.", RecordType::AAAA).unwrap();
        assert_eq!(addresses(&aaaa), ["fd00::10"]);
        // Single-stack: NODATA with the SOA for the family it lacks.
        let nodata = ask(&index, "v4.ns.svc.cluster.local.", RecordType::AAAA).unwrap();
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_soa_of_zone(&nodata);
        // No endpoint names under a ClusterIP Service.
        let host = ask(&index, "x.dual.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(host.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn srv_per_named_port_targets_the_service() {
        let index = zone_index();
        let srv = ask(
            &index,
            "_http._tcp.dual.ns.svc.cluster.local.",
            RecordType::SRV,
        )
        .unwrap();
        let RData::SRV(record) = &srv.answers[0].data else {
            panic!("{srv:?}");
        };
        assert_eq!(srv.answers.len(), 1);
        assert_eq!((record.priority, record.weight, record.port), (0, 100, 80));
        assert_eq!(record.target.to_ascii(), "dual.ns.svc.cluster.local.");
        let mut additional: Vec<_> = srv.additionals.iter().map(|r| r.data.to_string()).collect();
        additional.sort();
        assert_eq!(additional, ["10.96.0.10", "fd00::10"]);
        let udp = ask(
            &index,
            "_dns._udp.dual.ns.svc.cluster.local.",
            RecordType::SRV,
        )
        .unwrap();
        assert_eq!(udp.answers.len(), 1);
        // The bare name: every named port, the unnamed one left out.
        let all = ask(&index, "dual.ns.svc.cluster.local.", RecordType::SRV).unwrap();
        assert_eq!(all.answers.len(), 2);
        for missing in [
            "_dns._tcp.dual.ns.svc.cluster.local.",
            "_grpc._tcp.dual.ns.svc.cluster.local.",
            "_http._tcp.ext.ns.svc.cluster.local.",
        ] {
            let answer = ask(&index, missing, RecordType::SRV).unwrap();
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NXDomain,
                "{missing}"
            );
        }
        // Only unnamed ports: the name exists, no SRV.
        let none = ask(&index, "v4.ns.svc.cluster.local.", RecordType::SRV).unwrap();
        assert_eq!(none.metadata.response_code, ResponseCode::NoError);
        assert!(none.answers.is_empty());
    }

    #[test]
    fn cluster_ips_have_pointers() {
        let index = zone_index();
        for (name, target) in [
            ("10.0.96.10.in-addr.arpa.", "dual.ns.svc.cluster.local."),
            ("11.0.96.10.in-addr.arpa.", "v4.ns.svc.cluster.local."),
            (
                "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                "dual.ns.svc.cluster.local.",
            ),
        ] {
            let ptr = ask(&index, name, RecordType::PTR).unwrap();
            assert!(ptr.metadata.authoritative, "{name}");
            assert_eq!(ptr.answers.len(), 1, "{name}");
            assert_eq!(ptr.answers[0].data.to_string(), target, "{name}");
        }
        assert_eq!(
            ask(&index, "12.0.96.10.in-addr.arpa.", RecordType::PTR).unwrap_err(),
            Outcome::Forward
        );
    }

    #[test]
    fn external_names_are_a_cname_then_a_chase() {
        let index = zone_index();
        let cname = ask(&index, "ext.ns.svc.cluster.local.", RecordType::CNAME).unwrap();
        assert!(cname.metadata.authoritative);
        assert_eq!(cname.answers.len(), 1);
        assert_eq!(cname.answers[0].data.to_string(), "www.example.org.");
        assert_eq!(
            ask(&index, "ext.ns.svc.cluster.local.", RecordType::A).unwrap_err(),
            Outcome::Chase("www.example.org".into())
        );
    }

    /// (owner, data) of each answer, lowercase.
    fn chain(message: &hickory_proto::op::Message) -> Vec<(String, String)> {
        message
            .answers
            .iter()
            .map(|r| (r.name.to_ascii().to_lowercase(), r.data.to_string()))
            .collect()
    }

    #[test]
    fn in_zone_targets_are_answered_in_the_same_response() {
        let index = zone_index();
        let a = ask(&index, "Alias2.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert!(a.metadata.authoritative);
        assert_eq!(
            a.queries[0].name().to_ascii(),
            "Alias2.ns.svc.cluster.local."
        );
        assert_eq!(
            chain(&a),
            [
                (
                    "alias2.ns.svc.cluster.local.".into(),
                    "Alias.NS.svc.cluster.local.".into()
                ),
                (
                    "alias.ns.svc.cluster.local.".into(),
                    "dual.ns.svc.cluster.local.".into()
                ),
                ("dual.ns.svc.cluster.local.".into(), "10.96.0.10".into()),
            ]
        );
        // The target has no address of the family: CNAME, then NODATA.
        let aaaa = ask(&index, "v4alias.ns.svc.cluster.local.", RecordType::AAAA).unwrap();
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert_eq!(aaaa.answers.len(), 1);
        assert_soa_of_zone(&aaaa);
        // No such target: CNAME, then NXDOMAIN (RFC 6604: the last name's).
        let gone = ask(&index, "gone.ns.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(gone.answers.len(), 1);
        assert_soa_of_zone(&gone);
        // SRV through the CNAME, the targets' addresses in Additional.
        let srv = ask(&index, "alias.ns.svc.cluster.local.", RecordType::SRV).unwrap();
        assert_eq!(srv.answers.len(), 3, "CNAME and two SRV: {srv:?}");
        let mut additional: Vec<_> = srv.additionals.iter().map(|r| r.data.to_string()).collect();
        additional.sort();
        assert_eq!(additional, ["10.96.0.10", "fd00::10"]);
        // A chain that leaves the zone, or loops, is the server's to chase
        // from the first link.
        for (name, target) in [
            ("via-outside", "ext.ns.svc.cluster.local"),
            ("loop-a", "loop-b.ns.svc.cluster.local"),
        ] {
            assert_eq!(
                ask(
                    &index,
                    &format!("{name}.ns.svc.cluster.local."),
                    RecordType::A
                )
                .unwrap_err(),
                Outcome::Chase(target.into()),
                "{name}"
            );
        }
    }
}
