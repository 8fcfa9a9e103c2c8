//! What the cache of forwarded answers and its upstreams report
//! (`kubedisco_dns_cache_*`, `kubedisco_dns_upstream_*`). Registered by
//! [`crate::dns::metrics::DnsMetrics`], so the process registry needs no
//! change when a series is added here.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub(crate) struct CacheMetrics {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) stale: Counter,
    pub(crate) prefetches: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) evictions: Counter,
    pub(crate) entries: Gauge,
    pub(crate) bytes: Gauge,
    /// Seconds per upstream exchange that got an answer.
    pub(crate) upstream_rtt: Histogram,
    pub(crate) upstream_down: Counter,
}

impl Default for CacheMetrics {
    /// Unregistered series (for tests).
    fn default() -> Self {
        Self {
            hits: Counter::default(),
            misses: Counter::default(),
            stale: Counter::default(),
            prefetches: Counter::default(),
            coalesced: Counter::default(),
            evictions: Counter::default(),
            entries: Gauge::default(),
            bytes: Gauge::default(),
            // 100 µs to ~6.5 s.
            upstream_rtt: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            upstream_down: Counter::default(),
        }
    }
}

impl CacheMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let counters = [
            (
                "dns_cache_hits",
                "Forwarded-name queries answered from the cache (fresh)",
                &metrics.hits,
            ),
            (
                "dns_cache_misses",
                "Forwarded-name queries the cache could not answer fresh",
                &metrics.misses,
            ),
            (
                "dns_cache_stale_served",
                "Expired answers served because upstream failed or was slow (RFC 8767)",
                &metrics.stale,
            ),
            (
                "dns_cache_prefetches",
                "Popular entries refreshed in the background before they expired",
                &metrics.prefetches,
            ),
            (
                "dns_cache_coalesced",
                "Misses that waited for an identical query already upstream instead of sending their own",
                &metrics.coalesced,
            ),
            (
                "dns_cache_evictions",
                "Entries evicted to stay within --cache-size / --cache-max-bytes",
                &metrics.evictions,
            ),
            (
                "dns_upstream_all_down",
                "Queries answered SERVFAIL at once because every upstream for the name was failing",
                &metrics.upstream_down,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "dns_cache_entries",
            "Entries in the cache (stale ones included)",
            metrics.entries.clone(),
        );
        registry.register(
            "dns_cache_bytes",
            "Bytes the cache's entries hold",
            metrics.bytes.clone(),
        );
        registry.register(
            "dns_upstream_rtt_seconds",
            "Round trip of upstream exchanges that got an answer",
            metrics.upstream_rtt.clone(),
        );
        metrics
    }
}
