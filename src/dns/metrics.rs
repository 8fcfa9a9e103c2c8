//! DNS metrics. Counters are created up front and indexed by type and rcode,
//! so counting a query is one atomic add, not a label lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::cache::metrics::CacheMetrics;
use super::wire::rtype;
use crate::connlimit::{LimiterMetrics, LimiterNames};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    r#type: String,
    rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

const TYPES: [&str; 8] = ["A", "AAAA", "SRV", "PTR", "TXT", "SOA", "ANY", "other"];
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];

fn type_index(qtype: u16) -> usize {
    match qtype {
        rtype::A => 0,
        rtype::AAAA => 1,
        rtype::SRV => 2,
        rtype::PTR => 3,
        rtype::TXT => 4,
        rtype::SOA => 5,
        rtype::ANY => 6,
        _ => 7,
    }
}

pub struct DnsMetrics {
    queries: Vec<Counter>,
    pub(crate) duration: Histogram,
    pub(crate) forwarded: Counter,
    upstream_errors: Family<ReasonLabels, Counter>,
    pub(crate) truncated: Counter,
    /// The TCP connection cap's series (`dns_tcp_*`).
    pub(crate) tcp: LimiterMetrics,
    /// The cache of forwarded answers and the upstreams (`dns_cache_*`,
    /// `dns_upstream_*`).
    pub(crate) cache: CacheMetrics,
}

impl DnsMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let family = Family::<QueryLabels, Counter>::default();
        let mut queries = Vec::with_capacity(TYPES.len() * RCODES.len());
        for t in TYPES {
            for r in RCODES {
                queries.push(
                    family
                        .get_or_create(&QueryLabels {
                            r#type: t.into(),
                            rcode: r.into(),
                        })
                        .clone(),
                );
            }
        }
        registry.register(
            "dns_queries",
            "DNS queries by type and response code",
            family,
        );
        let duration = Histogram::new(exponential_buckets(0.000_01, 2.0, 20));
        registry.register(
            "dns_request_duration_seconds",
            "Time to answer a DNS query (forwarded ones included)",
            duration.clone(),
        );
        let forwarded = Counter::default();
        registry.register(
            "dns_forwarded",
            "Queries forwarded upstream",
            forwarded.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            "dns_upstream_errors",
            "Forwarded queries that got no usable upstream answer",
            upstream_errors.clone(),
        );
        let truncated = Counter::default();
        registry.register(
            "dns_truncated",
            "UDP answers too large for the client, sent with TC set",
            truncated.clone(),
        );
        let tcp = LimiterMetrics::register(
            registry,
            &LimiterNames {
                what: "DNS TCP",
                cap_flag: "--dns-max-tcp-connections",
                accepted: "dns_tcp_accepted",
                open: "dns_tcp_connections",
                waiting: "dns_tcp_waiting",
                evicted: "dns_tcp_evicted",
                rejected: "dns_tcp_rejected",
                closed: "dns_tcp_connections_closed",
            },
        );
        let cache = CacheMetrics::register(registry);
        Self {
            cache,
            tcp,
            queries,
            duration,
            forwarded,
            upstream_errors,
            truncated,
        }
    }

    pub(crate) fn count(&self, qtype: u16, rcode: u8) {
        let r = (rcode as usize).min(RCODES.len() - 1);
        self.queries[type_index(qtype) * RCODES.len() + r].inc();
    }

    pub(crate) fn upstream_error(&self, reason: &str) {
        self.upstream_errors
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
}
