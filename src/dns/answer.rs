//! Kubernetes DNS records (specification schema 1.1.0) from an index snapshot.
//!
//! | name (under the zone)                 | records                              |
//! |---------------------------------------|--------------------------------------|
//! | `<svc>.<ns>.svc`                      | A/AAAA of usable endpoints, SRV of all ports |
//! | `<hostname or dashed-ip>.<svc>.<ns>.svc` | A/AAAA of that endpoint           |
//! | `_<port>._<proto>.<svc>.<ns>.svc`     | SRV per endpoint, targets in Additional |
//! | `dns-version`                         | TXT `1.1.0`                          |
//! | zone apex                             | SOA                                  |
//! | `<reversed ip>.in-addr.arpa` / `ip6.arpa` | PTR of endpoint addresses        |
//!
//! Everything else — other zones, in-zone names of Services the agent does
//! not serve (ClusterIP without the expose annotation, pods, unknown) — is
//! forwarded upstream, so the agent can be a pod's only nameserver.
//!
//! Exactness rules: a served Service without usable endpoints is NXDOMAIN; a
//! name that exists without the asked type is NODATA with the SOA; before the
//! first full sync, Service names get SERVFAIL (never a false NXDOMAIN).

use std::net::IpAddr;

use rand::Rng;

use super::wire::{NameRef, Query, Response, Section, rcode, rtype};
use crate::index::{Endpoint, EndpointPort, ServedService, Snapshot};

/// What the zone says about a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response is written.
    Answered,
    /// Not ours: send the query upstream.
    Forward,
}

/// The served zone, pre-split for matching.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase labels, e.g. `["cluster", "local"]`.
    labels: Vec<Vec<u8>>,
    /// Dotted lowercase name without a trailing dot.
    pub name: String,
    pub ttl: u32,
}

impl Zone {
    pub fn new(name: &str, ttl: u32) -> Self {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        Self {
            labels: name.split('.').map(|l| l.as_bytes().to_vec()).collect(),
            name,
            ttl,
        }
    }

    /// How many leading labels of the query lie below the zone, or None when
    /// the name is outside it.
    fn relative_len(&self, query: &Query<'_>) -> Option<usize> {
        let zone_len = self.labels.len();
        if query.label_count < zone_len {
            return None;
        }
        let inside = self
            .labels
            .iter()
            .rev()
            .enumerate()
            .all(|(i, label)| query.label_from_end(i).eq_ignore_ascii_case(label));
        inside.then(|| query.label_count - zone_len)
    }
}

/// The dashed-IP host label Kubernetes DNS uses for endpoints without a
/// hostname: `10-1-2-3`, or for IPv6 the address with `:` → `-`.
/// Room for the longest dashed address (IPv6: 39 characters).
type LabelBuffer = [u8; 48];

/// `10.0.0.1` → `10-0-0-1`, `fd00::1` → `fd00--1`, written into `buffer`.
fn dashed_ip(ip: IpAddr, buffer: &mut LabelBuffer) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    // Cannot fail: the buffer holds any address.
    let _ = write!(cursor, "{ip}");
    let len = cursor.position() as usize;
    let label = &mut buffer[..len];
    for byte in label.iter_mut() {
        if matches!(*byte, b'.' | b':') {
            *byte = b'-';
        }
    }
    label
}

/// An endpoint's first label in DNS names: its hostname, else its dashed
/// address, as CoreDNS names them. On the stack: SRV answers write one per
/// target and the query path allocates nothing.
fn host_label<'a>(endpoint: &'a Endpoint, buffer: &'a mut LabelBuffer) -> &'a [u8] {
    match endpoint.hostname() {
        Some(hostname) => hostname.as_bytes(),
        None => dashed_ip(endpoint.ip(), buffer),
    }
}

/// Efraimidis–Spirakis weighted shuffle key: ascending order of
/// `-ln(u) / w` is a weighted random permutation. Weight 0 sorts last.
fn shuffle_key(rng: &mut impl Rng, weight: u32) -> f64 {
    if weight == 0 {
        return f64::INFINITY;
    }
    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    -u.ln() / f64::from(weight)
}

fn is_ipv4(endpoint: &&Endpoint) -> bool {
    endpoint.ip().is_ipv4()
}

fn is_ipv6(endpoint: &&Endpoint) -> bool {
    endpoint.ip().is_ipv6()
}

/// Writes the answer to `query` from `snapshot` into `response`.
pub fn answer(
    zone: &Zone,
    snapshot: &Snapshot,
    query: &Query<'_>,
    response: &mut Response,
    rng: &mut impl Rng,
) -> Outcome {
    if let Some(outcome) = reverse(zone, snapshot, query, response) {
        return outcome;
    }
    let Some(relative) = zone.relative_len(query) else {
        return Outcome::Forward;
    };
    let zone_at = query.suffix_offset(relative);
    let ttl = zone.ttl;
    let serial = snapshot.generation as u32;
    let qtype = query.qtype;
    let label_is = |i: usize, text: &[u8]| query.label(i).eq_ignore_ascii_case(text);

    if query.qclass != super::wire::CLASS_IN && query.qclass != super::wire::CLASS_ANY {
        response.start(query, false);
        response.set_rcode(rcode::REFUSED);
        return Outcome::Answered;
    }

    let is_service_shape = match relative {
        3 => label_is(2, b"svc"),
        4 => label_is(3, b"svc"),
        5 => {
            label_is(4, b"svc")
                && query.label(0).starts_with(b"_")
                && query.label(1).starts_with(b"_")
        }
        _ => false,
    };

    match relative {
        0 => {
            response.start(query, true);
            match qtype {
                rtype::SOA => response.soa(Section::Answer, zone_at, ttl, serial),
                rtype::ANY => response.hinfo_rfc8482(NameRef::Pointer(12), ttl),
                _ => response.soa(Section::Authority, zone_at, ttl, serial),
            }
            return Outcome::Answered;
        }
        1 if label_is(0, b"dns-version") => {
            response.start(query, true);
            match qtype {
                rtype::TXT => response.txt(NameRef::Pointer(12), ttl, b"1.1.0"),
                rtype::ANY => response.hinfo_rfc8482(NameRef::Pointer(12), ttl),
                _ => response.soa(Section::Authority, zone_at, ttl, serial),
            }
            return Outcome::Answered;
        }
        _ if !is_service_shape => return Outcome::Forward,
        _ => {}
    }

    if !snapshot.synced {
        response.start(query, false);
        response.set_rcode(rcode::SERVFAIL);
        return Outcome::Answered;
    }

    // The Service is labels [relative-3] (name) and [relative-2] (namespace).
    let mut key = [0u8; 128];
    let name = query.label(relative - 3);
    let namespace = query.label(relative - 2);
    let key_len = name.len() + 1 + namespace.len();
    if key_len > key.len() {
        return Outcome::Forward;
    }
    key[..name.len()].copy_from_slice(name);
    key[name.len()] = b'.';
    key[name.len() + 1..key_len].copy_from_slice(namespace);
    key[..key_len].make_ascii_lowercase();
    let Ok(key) = std::str::from_utf8(&key[..key_len]) else {
        return Outcome::Forward;
    };
    let Some(service) = snapshot.by_dns_name.get(key) else {
        // Not a Service we serve: the cluster's DNS knows the rest.
        return Outcome::Forward;
    };

    response.start(query, true);
    let nxdomain = |response: &mut Response| {
        response.set_rcode(rcode::NXDOMAIN);
        response.soa(Section::Authority, zone_at, ttl, serial);
    };
    let nodata = |response: &mut Response| response.soa(Section::Authority, zone_at, ttl, serial);
    if service.endpoints.is_empty() {
        nxdomain(response);
        return Outcome::Answered;
    }

    match relative {
        3 => match qtype {
            rtype::A => write_addresses(response, service, ttl, is_ipv4, rng, nodata),
            rtype::AAAA => write_addresses(response, service, ttl, is_ipv6, rng, nodata),
            // CoreDNS answers SRV on the bare Service name with every port.
            rtype::SRV => write_srv(response, service, ttl, None, 12, |_| true),
            rtype::ANY => response.hinfo_rfc8482(NameRef::Pointer(12), ttl),
            _ => nodata(response),
        },
        4 => {
            let host = query.label(0);
            let is_host = |e: &&Endpoint| host_label(e, &mut [0; 48]).eq_ignore_ascii_case(host);
            if !service.endpoints.iter().any(|e| is_host(&e)) {
                nxdomain(response);
                return Outcome::Answered;
            }
            let family = match qtype {
                rtype::A => Some(true),
                rtype::AAAA => Some(false),
                _ => None,
            };
            match family {
                Some(v4) => {
                    let mut any = false;
                    let matching = service.endpoints.iter().filter(is_host);
                    for endpoint in matching.filter(|e| e.ip().is_ipv4() == v4) {
                        write_address(
                            response,
                            Section::Answer,
                            NameRef::Pointer(12),
                            ttl,
                            endpoint.ip(),
                        );
                        any = true;
                    }
                    if !any {
                        nodata(response);
                    }
                }
                None if qtype == rtype::ANY => response.hinfo_rfc8482(NameRef::Pointer(12), ttl),
                None => nodata(response),
            }
        }
        _ => {
            let port_name = &query.label(0)[1..];
            let protocol = &query.label(1)[1..];
            let has_port =
                |e: &Endpoint| e.ports.iter().any(|p| port_matches(p, port_name, protocol));
            if !service.endpoints.iter().any(has_port) {
                nxdomain(response);
                return Outcome::Answered;
            }
            match qtype {
                rtype::SRV => {
                    let service_at = query.suffix_offset(2);
                    write_srv(
                        response,
                        service,
                        ttl,
                        Some((port_name, protocol)),
                        service_at,
                        has_port,
                    )
                }
                rtype::ANY => response.hinfo_rfc8482(NameRef::Pointer(12), ttl),
                _ => nodata(response),
            }
        }
    }
    Outcome::Answered
}

fn write_address(
    response: &mut Response,
    section: Section,
    owner: NameRef<'_>,
    ttl: u32,
    ip: IpAddr,
) {
    match ip {
        IpAddr::V4(v4) => response.a(section, owner, ttl, v4),
        IpAddr::V6(v6) => response.aaaa(section, owner, ttl, v6),
    }
}

/// A/AAAA of a Service: preferred tier first, each tier in a weighted
/// random order, so clients that take the first address spread by weight.
fn write_addresses(
    response: &mut Response,
    service: &ServedService,
    ttl: u32,
    family: fn(&&Endpoint) -> bool,
    rng: &mut impl Rng,
    nodata: impl Fn(&mut Response),
) {
    SCRATCH.with_borrow_mut(|scratch| {
        let ordered = &mut scratch.order;
        ordered.clear();
        ordered.extend(
            service
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| family(e))
                .map(|(i, e)| (e.priority, shuffle_key(rng, e.weight), i)),
        );
        if ordered.is_empty() {
            nodata(response);
            return;
        }
        ordered.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        for &(_, _, i) in ordered.iter() {
            write_address(
                response,
                Section::Answer,
                NameRef::Pointer(12),
                ttl,
                service.endpoints[i].ip(),
            );
        }
    });
}

/// Lists reused by every answer on a thread, so answering allocates only
/// while they grow to the largest Service's size.
#[derive(Default)]
struct Scratch {
    /// A/AAAA order: (tier, weighted shuffle key, endpoint index).
    order: Vec<(u32, f64, usize)>,
    /// SRV targets: where each target name was written, and its address.
    targets: Vec<(u16, IpAddr)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Port names are lowercase in Kubernetes; DNS names compare ignoring case.
fn port_matches(port: &EndpointPort, name: &[u8], protocol: &[u8]) -> bool {
    port.name.as_bytes().eq_ignore_ascii_case(name)
        && port
            .protocol
            .as_str()
            .as_bytes()
            .eq_ignore_ascii_case(protocol)
}

/// SRV records for every (endpoint, port) that `keep` accepts and whose port
/// matches `port` (all ports when None); targets' addresses in Additional.
/// `service_at` points at `<svc>.<ns>.svc.<zone>` inside the question.
fn write_srv(
    response: &mut Response,
    service: &ServedService,
    ttl: u32,
    port: Option<(&[u8], &[u8])>,
    service_at: u16,
    keep: impl Fn(&Endpoint) -> bool,
) {
    SCRATCH.with_borrow_mut(|scratch| {
        let targets = &mut scratch.targets;
        targets.clear();
        for endpoint in service.endpoints.iter().filter(|e| keep(e)) {
            let mut buffer: LabelBuffer = [0; 48];
            let host = host_label(endpoint, &mut buffer);
            let mut target_at = None;
            for endpoint_port in endpoint.ports.iter() {
                let matches =
                    port.is_none_or(|(name, protocol)| port_matches(endpoint_port, name, protocol));
                if !matches {
                    continue;
                }
                let target = match target_at {
                    Some(at) => NameRef::Pointer(at),
                    None => NameRef::LabelThenPointer(host, service_at),
                };
                let at = response.srv(
                    NameRef::Pointer(12),
                    ttl,
                    endpoint.priority.min(u32::from(u16::MAX)) as u16,
                    endpoint.weight.min(u32::from(u16::MAX)) as u16,
                    endpoint_port.port,
                    target,
                );
                if target_at.is_none() {
                    target_at = Some(at);
                    targets.push((at, endpoint.ip()));
                }
            }
        }
        for &(at, ip) in targets.iter() {
            write_address(response, Section::Additional, NameRef::Pointer(at), ttl, ip);
        }
    });
}

/// PTR for endpoint addresses. None when the name is not a reverse name.
fn reverse(
    zone: &Zone,
    snapshot: &Snapshot,
    query: &Query<'_>,
    response: &mut Response,
) -> Option<Outcome> {
    let ip = reverse_name_to_ip(query)?;
    let Some(owners) = snapshot.by_ip.get(&ip) else {
        return Some(Outcome::Forward);
    };
    if query.qtype != rtype::PTR {
        return Some(Outcome::Forward);
    }
    response.start(query, true);
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
            let target = format!(
                "{}.{}.{}.svc.{}",
                String::from_utf8_lossy(host_label(endpoint, &mut buffer)),
                key.name,
                key.namespace,
                zone.name
            );
            response.ptr(NameRef::Pointer(12), zone.ttl, NameRef::Plain(&target));
        }
    }
    Some(Outcome::Answered)
}

/// `4.3.2.1.in-addr.arpa` → 1.2.3.4; 32 nibbles + `ip6.arpa` → the IPv6.
fn reverse_name_to_ip(query: &Query<'_>) -> Option<IpAddr> {
    let n = query.label_count;
    if n < 3 || !query.label_from_end(0).eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let kind = query.label_from_end(1);
    if kind.eq_ignore_ascii_case(b"in-addr") && n == 6 {
        let mut octets = [0u8; 4];
        for (i, octet) in octets.iter_mut().enumerate() {
            *octet = std::str::from_utf8(query.label(3 - i)).ok()?.parse().ok()?;
        }
        return Some(IpAddr::from(octets));
    }
    if kind.eq_ignore_ascii_case(b"ip6") && n == 34 {
        let mut bytes = [0u8; 16];
        for i in 0..32 {
            let label = query.label(31 - i);
            if label.len() != 1 {
                return None;
            }
            let nibble = (label[0] as char).to_digit(16)? as u8;
            bytes[i / 2] |= if i % 2 == 0 { nibble << 4 } else { nibble };
        }
        return Some(IpAddr::from(bytes));
    }
    None
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};

    use super::*;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_packet;
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::{Change, Index};

    fn index() -> Index {
        let index = Index::default();
        index.expect_parts(["test"]);
        let mut web_0 = endpoint("10.0.0.1");
        web_0.hostname = Some("web-0".into());
        let mut weighted = slice("b", "web", 8080, vec![endpoint("10.0.0.2")]);
        weighted.weight = Some(300);
        let mut v6 = slice("v6", "web", 8080, vec![endpoint("fd00::2")]);
        v6.weight = Some(300);
        let mut drained = endpoint("10.0.0.9");
        drained.ready = false;
        index.apply([
            Change::ApplyService(service("web")),
            Change::ApplyService(service("empty")),
            Change::ApplySlice(slice("a", "web", 8080, vec![web_0])),
            Change::ApplySlice(weighted),
            Change::ApplySlice(v6),
            Change::ApplySlice(slice("e", "empty", 80, vec![drained])),
        ]);
        index.replace(
            &crate::index::Scope::Namespace("none".into()),
            None,
            None,
            "test",
        );
        index
    }

    fn ask(index: &Index, name: &str, record_type: RecordType) -> Result<Message, Outcome> {
        let packet = query_packet(name, record_type, Some(1232));
        let query = parse_query(&packet).unwrap();
        let mut response = Response::default();
        let zone = Zone::new("cluster.local", 5);
        match answer(
            &zone,
            &index.load(),
            &query,
            &mut response,
            &mut rand::rng(),
        ) {
            Outcome::Answered => {
                response.finish();
                Ok(Message::from_vec(&response.buf).expect("valid response"))
            }
            Outcome::Forward => Err(Outcome::Forward),
        }
    }

    fn addresses(message: &Message) -> Vec<String> {
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
        // Unknown Services and other zones are somebody else's.
        assert_eq!(
            ask(&index, "nope.ns.svc.cluster.local.", RecordType::A).unwrap_err(),
            Outcome::Forward
        );
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
}
