//! The record sets of a served Service: its addresses in weighted order and
//! its SRV records with their targets' addresses.
//!
//! Owns: the order clients see (tier first, then a weighted shuffle), SRV
//! priority and weight, and the per-thread scratch lists that keep this
//! free of allocation once warm. May not touch: name matching or the
//! choice of rcode (the writers in [`super::service`] decide what exists).

use std::net::IpAddr;

use rand::Rng;

use super::Reply;
use super::host::{LabelBuffer, host_label};
use crate::dns::wire::{NameRef, Response, Section};
use crate::index::objects::Protocol;
use crate::index::{Endpoint, EndpointPort, ServedService};

/// Efraimidis–Spirakis weighted shuffle key: ascending order of
/// `-ln(u) / w` is a weighted random permutation. Weight 0 sorts last.
fn shuffle_key(rng: &mut impl Rng, weight: u32) -> f64 {
    if weight == 0 {
        return f64::INFINITY;
    }
    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    -u.ln() / f64::from(weight)
}

pub(super) fn is_ipv4(endpoint: &&Endpoint) -> bool {
    endpoint.ip().is_ipv4()
}

pub(super) fn is_ipv6(endpoint: &&Endpoint) -> bool {
    endpoint.ip().is_ipv6()
}

pub(super) fn write_address(
    response: &mut Response,
    section: Section,
    owner: u16,
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
/// NODATA when the Service has no address of the family.
pub(super) fn write_addresses(
    reply: &mut Reply<'_, '_>,
    service: &ServedService,
    family: fn(&&Endpoint) -> bool,
    rng: &mut impl Rng,
) {
    let ttl = reply.ttl();
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
            reply.nodata();
            return;
        }
        ordered.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let owner = reply.owner();
        for &(_, _, i) in ordered.iter() {
            write_address(
                reply.response,
                Section::Answer,
                owner,
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
pub(super) fn port_matches(port: &EndpointPort, name: &[u8], protocol: &[u8]) -> bool {
    names_port(&port.name, port.protocol, name, protocol)
}

/// Whether `_<name>._<protocol>` (the underscores removed, any case) names
/// the port `port_name`/`port_protocol`.
pub(super) fn names_port(
    port_name: &str,
    port_protocol: Protocol,
    name: &[u8],
    protocol: &[u8],
) -> bool {
    port_name.as_bytes().eq_ignore_ascii_case(name)
        && port_protocol
            .as_str()
            .as_bytes()
            .eq_ignore_ascii_case(protocol)
}

/// SRV records for every (endpoint, port) that `keep` accepts and whose port
/// matches `port` (all ports when None); targets' addresses in Additional.
/// `service_at` points at `<svc>.<ns>.svc.<zone>` inside the response (the
/// question, or a CNAME's target name).
/// An endpoint whose host label cannot be written (a hostname that is not
/// a DNS label) is left out, records and address: a shortened name would
/// point clients at a host that does not exist.
pub(super) fn write_srv(
    reply: &mut Reply<'_, '_>,
    service: &ServedService,
    port: Option<(&[u8], &[u8])>,
    service_at: u16,
    keep: impl Fn(&Endpoint) -> bool,
) {
    let (ttl, owner) = (reply.ttl(), reply.owner());
    let response = &mut *reply.response;
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
                let Ok(at) = response.srv(
                    owner,
                    ttl,
                    endpoint.priority.min(u32::from(u16::MAX)) as u16,
                    endpoint.weight.min(u32::from(u16::MAX)) as u16,
                    endpoint_port.port,
                    target,
                ) else {
                    break;
                };
                if target_at.is_none() {
                    target_at = Some(at);
                    targets.push((at, endpoint.ip()));
                }
            }
        }
        for &(at, ip) in targets.iter() {
            write_address(response, Section::Additional, at, ttl, ip);
        }
    });
}
