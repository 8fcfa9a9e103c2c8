//! What a question's name is, in the terms of the Kubernetes DNS
//! specification: [`classify`] reads the labels of a parsed query into a
//! [`Shape`].
//!
//! Owns: the name patterns (which labels mean what, the reverse-name
//! forms). May not touch: the snapshot or the response. Whether a Service
//! exists, and what to answer, is the writers' business; a shape is only
//! syntax, so it is decided before anything is looked up and is the same
//! for every snapshot.

use std::net::IpAddr;

use super::Zone;
use crate::dns::wire::Query;

/// The shape of a question's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape<'q> {
    /// `<zone>`.
    Apex,
    /// `dns-version.<zone>`.
    DnsVersion,
    /// `svc.<zone>`: an empty non-terminal, it has names below it only.
    ServicesSuffix,
    /// `<ns>.svc.<zone>`: an empty non-terminal too, while the namespace
    /// has Services.
    Namespace(&'q [u8]),
    /// `<svc>.<ns>.svc.<zone>`.
    Service(ServiceName<'q>),
    /// `<hostname or dashed-ip>.<svc>.<ns>.svc.<zone>`.
    Endpoint {
        host: &'q [u8],
        service: ServiceName<'q>,
    },
    /// `_<port>._<proto>.<svc>.<ns>.svc.<zone>`, the underscores removed.
    Port {
        port: &'q [u8],
        protocol: &'q [u8],
        service: ServiceName<'q>,
    },
    /// `pod.<zone>` or `<ns>.pod.<zone>`: empty non-terminals above the
    /// pod names.
    PodSuffix,
    /// `<dashed ip>.<ns>.pod.<zone>`.
    Pod { host: &'q [u8] },
    /// Any other name under the zone. `namespace` is the label before
    /// `svc` for a name under `svc.<zone>` (say `www.example.org.shop.svc`,
    /// a search-path expansion): whether the agent knows that namespace
    /// decides between NXDOMAIN and asking the cluster's DNS.
    OtherInZone { namespace: Option<&'q [u8]> },
    /// `<reversed IPv4>.in-addr.arpa` or `<32 reversed nibbles>.ip6.arpa`.
    Reverse(IpAddr),
    /// Outside the zone and not a reverse name.
    Outside,
}

impl Shape<'_> {
    /// True for the names the zone is the authority for.
    pub(crate) fn in_zone(&self) -> bool {
        !matches!(self, Shape::Reverse(_) | Shape::Outside)
    }
}

/// The `<svc>.<ns>` labels of a name under `svc.<zone>`, as the client
/// wrote them (any letter case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServiceName<'q> {
    pub(crate) name: &'q [u8],
    pub(crate) namespace: &'q [u8],
    /// Where `<svc>.<ns>.svc.<zone>` starts in the packet: a compression
    /// pointer target for record data that names the Service.
    pub(crate) at: u16,
}

/// The shape of `query`'s name. Reverse names come first, as they always
/// have: a zone is never under `arpa` in practice, and this keeps it so.
pub(crate) fn classify<'q>(zone: &Zone, query: &Query<'q>) -> Shape<'q> {
    if let Some(ip) = reverse_name_to_ip(query) {
        return Shape::Reverse(ip);
    }
    let Some(relative) = zone.relative_len(query) else {
        return Shape::Outside;
    };
    let label_is = |i: usize, text: &[u8]| query.label(i).eq_ignore_ascii_case(text);
    // Below `svc`, the Service is always the two labels above it.
    let service = || ServiceName {
        name: query.label(relative - 3),
        namespace: query.label(relative - 2),
        at: query.suffix_offset(relative - 3),
    };
    let other = || Shape::OtherInZone {
        namespace: (relative >= 2 && label_is(relative - 1, b"svc"))
            .then(|| query.label(relative - 2)),
    };
    match relative {
        0 => Shape::Apex,
        1 if label_is(0, b"dns-version") => Shape::DnsVersion,
        1 if label_is(0, b"svc") => Shape::ServicesSuffix,
        2 if label_is(1, b"svc") => Shape::Namespace(query.label(0)),
        3 if label_is(2, b"svc") => Shape::Service(service()),
        4 if label_is(3, b"svc") => Shape::Endpoint {
            host: query.label(0),
            service: service(),
        },
        5 if label_is(4, b"svc") => match (
            query.label(0).strip_prefix(b"_"),
            query.label(1).strip_prefix(b"_"),
        ) {
            (Some(port), Some(protocol)) => Shape::Port {
                port,
                protocol,
                service: service(),
            },
            _ => other(),
        },
        1 | 2 if label_is(relative - 1, b"pod") => Shape::PodSuffix,
        3 if label_is(2, b"pod") => Shape::Pod {
            host: query.label(0),
        },
        _ => other(),
    }
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
    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_packet;

    /// The shape of `name`, with the Service's labels as text.
    fn shape_of(name: &str) -> String {
        let packet = query_packet(name, RecordType::A, None);
        let query = parse_query(&packet).unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let service =
            |s: ServiceName<'_>| format!("{}.{}@{}", text(s.name), text(s.namespace), s.at);
        match classify(&Zone::new("Cluster.Local.", 5), &query) {
            Shape::Service(s) => format!("service {}", service(s)),
            Shape::Endpoint { host, service: s } => {
                format!("endpoint {} of {}", text(host), service(s))
            }
            Shape::Port {
                port,
                protocol,
                service: s,
            } => format!("port {}/{} of {}", text(port), text(protocol), service(s)),
            Shape::Reverse(ip) => format!("reverse {ip}"),
            Shape::Namespace(namespace) => format!("namespace {}", text(namespace)),
            Shape::Pod { host } => format!("pod {}", text(host)),
            Shape::OtherInZone {
                namespace: Some(namespace),
            } => format!("other in {}", text(namespace)),
            Shape::OtherInZone { namespace: None } => "other".into(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn every_name_of_the_specification_has_its_shape() {
        let cases = [
            ("cluster.local.", "Apex"),
            ("CLUSTER.local.", "Apex"),
            ("dns-version.cluster.local.", "DnsVersion"),
            ("svc.cluster.local.", "ServicesSuffix"),
            ("shop.svc.cluster.local.", "namespace shop"),
            // The Service name is the question itself: offset 12.
            ("Web.Shop.SVC.cluster.local.", "service Web.Shop@12"),
            (
                "web-0.web.shop.svc.cluster.local.",
                "endpoint web-0 of web.shop@18",
            ),
            (
                "10-0-0-1.web.shop.svc.cluster.local.",
                "endpoint 10-0-0-1 of web.shop@21",
            ),
            (
                "_http._tcp.web.shop.svc.cluster.local.",
                "port http/tcp of web.shop@23",
            ),
            // Only with both underscores is it a port name.
            ("_http.tcp.web.shop.svc.cluster.local.", "other in shop"),
            ("http._tcp.web.shop.svc.cluster.local.", "other in shop"),
            ("a.b.c.d.e.f.svc.cluster.local.", "other in f"),
            ("www.example.org.shop.svc.cluster.local.", "other in shop"),
            ("web.shop.cluster.local.", "other"),
            ("www.example.org.cluster.local.", "other"),
            ("pod.cluster.local.", "PodSuffix"),
            ("shop.Pod.cluster.local.", "PodSuffix"),
            ("10-0-0-1.shop.pod.cluster.local.", "pod 10-0-0-1"),
            ("fd00--1.shop.pod.cluster.local.", "pod fd00--1"),
            ("web.x.shop.pod.cluster.local.", "other"),
            ("local.", "Outside"),
            ("example.org.", "Outside"),
            ("web.shop.svc.cluster.example.", "Outside"),
            ("1.0.0.10.in-addr.arpa.", "reverse 10.0.0.1"),
            (
                "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.IP6.ARPA.",
                "reverse fd00::2",
            ),
            // Partial or malformed reverse names are somebody else's.
            ("0.10.in-addr.arpa.", "Outside"),
            ("1.0.0.300.in-addr.arpa.", "Outside"),
            ("x.0.0.10.in-addr.arpa.", "Outside"),
        ];
        for (name, shape) in cases {
            assert_eq!(shape_of(name), shape, "{name}");
        }
    }

    #[test]
    fn only_names_under_the_zone_are_in_it() {
        let service = ServiceName {
            name: b"web",
            namespace: b"shop",
            at: 12,
        };
        assert!(Shape::Apex.in_zone());
        assert!(Shape::OtherInZone { namespace: None }.in_zone());
        assert!(Shape::Pod { host: b"10-0-0-1" }.in_zone());
        assert!(Shape::Service(service).in_zone());
        assert!(!Shape::Outside.in_zone());
        assert!(!Shape::Reverse("10.0.0.1".parse().unwrap()).in_zone());
    }
}
