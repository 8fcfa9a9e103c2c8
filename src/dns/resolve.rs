//! Names outside the zone: the cache in front of the upstreams, with the
//! behaviours that make a node's resolver better than a plain forwarder.
//!
//! - Coalescing: concurrent identical misses share one upstream query (an
//!   in-flight map of shared futures; the query runs as its own task, so it
//!   completes and fills the cache even when the client that started it
//!   has gone).
//! - Prefetch: an entry asked at least twice and within the last tenth of
//!   its life (at least [`PREFETCH_WINDOW_MIN`], at most half of it) is
//!   refreshed once in the background, so a popular name never expires
//!   under its clients (unlike CoreDNS's prefetch, which needs a hit
//!   count within a fixed period and still lets entries lapse).
//! - Serve-stale (RFC 8767): an expired entry within `--serve-stale` is
//!   refreshed first; when upstream fails, or does not answer within
//!   `--stale-client-timeout` (RFC 8767's client response timer), the stale
//!   answer goes out with TTL 30, and for [`FAILURE_RECHECK`] after a
//!   failure stale answers go out at once. While every upstream of a name
//!   failed its last exchange or has gone silent ([`super::forward`]), its
//!   stale entries also go out at once, with a refresh in the background:
//!   in an outage only the queries in flight when it starts wait for the
//!   client timer, not each entry as it expires. With the timer at zero
//!   every stale entry goes out at once with a refresh behind it
//!   (optimistic caching). A name never seen gets SERVFAIL, at once when
//!   every upstream is known down ([`super::forward`]).
//!
//! Owns: when to ask upstream and what a client gets back. May not touch:
//! sockets (the server sends), storage details ([`super::cache`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::cache::{Cache, CacheConfig, Entry, Key, KeyBuf, KeyRef, Lookup};
use super::forward::{Forwarder, UpstreamError};
use super::metrics::DnsMetrics;
use super::wire::{Query, Response, rcode};

/// After a failed refresh, stale answers go out without asking upstream
/// again for this long (RFC 8767 §5's failure recheck timer).
pub(crate) const FAILURE_RECHECK: Duration = Duration::from_secs(30);
/// The prefetch window is 10 % of the TTL but at least this (a 10 s TTL
/// would otherwise leave 1 s for the refresh to land).
pub(crate) const PREFETCH_WINDOW_MIN: Duration = Duration::from_secs(2);

type Fetched = Result<Arc<Entry>, UpstreamError>;
type Flight = Shared<BoxFuture<'static, Fetched>>;

pub(crate) struct Resolver {
    cache: Cache,
    forwarder: Forwarder,
    metrics: Arc<DnsMetrics>,
    inflight: Mutex<HashMap<Key, Flight>>,
    /// `--stale-client-timeout`: how long a client whose name is cached but
    /// expired waits for the refresh (zero: not at all).
    stale_client_timeout: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cache", &self.cache)
            .field("forwarder", &self.forwarder)
            .finish()
    }
}

/// Where an answer came from (tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Fresh,
    Stale,
    Upstream,
}

impl Resolver {
    pub(crate) fn new(
        config: &CacheConfig,
        forwarder: Forwarder,
        metrics: Arc<DnsMetrics>,
    ) -> Self {
        Self {
            cache: Cache::new(config, metrics.cache.clone()),
            forwarder,
            metrics,
            inflight: Mutex::new(HashMap::new()),
            stale_client_timeout: config.stale_client_timeout,
        }
    }

    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The answer when it needs no waiting: a fresh entry (which may start
    /// a prefetch), or a stale one while upstream is known to fail.
    pub(crate) fn cached(self: &Arc<Self>, query: &Query<'_>, over_udp: bool) -> Option<Vec<u8>> {
        let key = KeyBuf::of(query);
        let now = Instant::now();
        match self.cache.lookup(key.as_ref(), now) {
            Lookup::Fresh(entry) => {
                self.metrics.cache.hits.inc();
                self.maybe_prefetch(&entry, key.as_ref(), now);
                respond(&entry, query, now, false, over_udp)
            }
            Lookup::Stale(entry) if self.stale_at_once(&entry, key.as_ref(), now) => {
                self.metrics.cache.stale.inc();
                respond(&entry, query, now, true, over_udp)
            }
            Lookup::Stale(_) | Lookup::Miss => None,
        }
    }

    /// The answer to `query`, from the cache or upstream; Err when there
    /// is none to give (the client gets SERVFAIL).
    pub(crate) async fn resolve(
        self: &Arc<Self>,
        query: &Query<'_>,
        over_udp: bool,
    ) -> Result<(Vec<u8>, Source), UpstreamError> {
        let key = KeyBuf::of(query);
        let now = Instant::now();
        let stale = match self.cache.lookup(key.as_ref(), now) {
            Lookup::Fresh(entry) => {
                self.metrics.cache.hits.inc();
                self.maybe_prefetch(&entry, key.as_ref(), now);
                return answer(&entry, query, now, false, over_udp, Source::Fresh);
            }
            Lookup::Stale(entry) if self.stale_at_once(&entry, key.as_ref(), now) => {
                self.metrics.cache.stale.inc();
                return answer(&entry, query, now, true, over_udp, Source::Stale);
            }
            Lookup::Stale(entry) => Some(entry),
            Lookup::Miss => None,
        };
        self.metrics.cache.misses.inc();
        let flight = self.flight(key.as_ref().to_owned());
        let fetched = match &stale {
            Some(_) => tokio::time::timeout(self.stale_client_timeout, flight)
                .await
                .unwrap_or(Err(UpstreamError::Timeout)),
            None => flight.await,
        };
        let now = Instant::now();
        match (fetched, stale) {
            (Ok(entry), Some(stale)) if entry.is_failure() => {
                self.metrics.cache.stale.inc();
                answer(&stale, query, now, true, over_udp, Source::Stale)
            }
            (Ok(entry), _) => answer(&entry, query, now, false, over_udp, Source::Upstream),
            (Err(_), Some(stale)) => {
                self.metrics.cache.stale.inc();
                answer(&stale, query, now, true, over_udp, Source::Stale)
            }
            (Err(error), None) => Err(error),
        }
    }

    /// Whether an expired entry goes out now, without waiting for upstream:
    /// its last refresh failed within [`FAILURE_RECHECK`], the client timer
    /// is zero, or every upstream of its name failed its last exchange. In
    /// the last two cases one refresh starts in the background (the entry's
    /// claim keeps it to one).
    fn stale_at_once(self: &Arc<Self>, entry: &Arc<Entry>, key: KeyRef<'_>, now: Instant) -> bool {
        if entry.recently_failed(now) {
            return true;
        }
        if !self.stale_client_timeout.is_zero() && !self.forwarder.failing(&key.name()) {
            return false;
        }
        if entry.claim_refresh() {
            drop(self.flight(key.to_owned()));
        }
        true
    }

    fn maybe_prefetch(self: &Arc<Self>, entry: &Arc<Entry>, key: KeyRef<'_>, now: Instant) {
        let asked = entry.ask();
        let life = Duration::from_secs(entry.ttl.into());
        let window = (life / 10).max(PREFETCH_WINDOW_MIN).min(life / 2);
        if asked >= 2
            && entry.remaining(now) <= window
            && !entry.recently_failed(now)
            && entry.claim_refresh()
        {
            self.metrics.cache.prefetches.inc();
            // The flight runs as its own task; nobody needs to wait for it.
            drop(self.flight(key.to_owned()));
        }
    }

    /// The upstream query for `key`: the one in flight, or a new one.
    fn flight(self: &Arc<Self>, key: Key) -> Flight {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = inflight.get(&key) {
            self.metrics.cache.coalesced.inc();
            return flight.clone();
        }
        let this = self.clone();
        let task_key = key.clone();
        // Spawned while the map is locked: the task's removal of its key
        // waits for this insertion.
        let task = tokio::spawn(async move { this.fetch(task_key).await });
        let flight = async move { task.await.unwrap_or(Err(UpstreamError::Unreachable)) }
            .boxed()
            .shared();
        inflight.insert(key, flight.clone());
        flight
    }

    /// Asks upstream for `key` and updates the cache. A failure (or an
    /// upstream SERVFAIL) never replaces an entry that can still be served
    /// stale: that entry is marked failed instead.
    async fn fetch(self: Arc<Self>, key: Key) -> Fetched {
        self.metrics.forwarded.inc();
        let packet = key.upstream_query(rand::random());
        let name = key.name();
        let answered = self
            .forwarder
            .exchange(&name, &packet, &self.metrics.cache.upstream_rtt)
            .await;
        let now = Instant::now();
        let fetched = match answered {
            Ok(bytes) => Entry::parse(&bytes, self.cache.policy(), now)
                .map(Arc::new)
                .map_err(|_| UpstreamError::BadResponse),
            Err(error) => Err(error),
        };
        let failed = match &fetched {
            Ok(entry) => entry.is_failure(),
            Err(error) => {
                if *error == UpstreamError::AllDown {
                    self.metrics.cache.upstream_down.inc();
                }
                self.metrics.upstream_error(error.label());
                true
            }
        };
        let existing = self.cache.peek(key.as_ref());
        match (&fetched, existing) {
            (_, Some(existing)) if failed => {
                existing.refresh_failed(now + FAILURE_RECHECK);
                existing.release_refresh();
            }
            (Ok(entry), _) => self.cache.insert(key.clone(), entry.clone()),
            (Err(_), _) => {}
        }
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        fetched
    }
}

fn answer(
    entry: &Entry,
    query: &Query<'_>,
    now: Instant,
    stale: bool,
    over_udp: bool,
    source: Source,
) -> Result<(Vec<u8>, Source), UpstreamError> {
    respond(entry, query, now, stale, over_udp)
        .map(|bytes| (bytes, source))
        .ok_or(UpstreamError::BadResponse)
}

/// The entry's answer for this client; over UDP, when it is larger than the
/// client takes, the question with TC set (the client retries over TCP and
/// gets the cached answer whole).
fn respond(
    entry: &Entry,
    query: &Query<'_>,
    now: Instant,
    stale: bool,
    over_udp: bool,
) -> Option<Vec<u8>> {
    let bytes = entry.answer_for(query, now, stale)?;
    if !over_udp || bytes.len() <= query.max_udp_size() {
        return Some(bytes);
    }
    let mut response = Response::default();
    response.start(query, false);
    response.set_rcode(bytes[3] & 0x0F);
    response.set_truncated();
    if query.edns.is_some() {
        response.opt(0);
    }
    response.finish();
    Some(response.buf)
}

/// SERVFAIL for `query` (the client always gets an answer).
pub(crate) fn servfail(query: &Query<'_>) -> Vec<u8> {
    let mut response = Response::default();
    response.start(query, false);
    response.set_rcode(rcode::SERVFAIL);
    if query.edns.is_some() {
        response.opt(0);
    }
    response.finish();
    response.buf
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RecordType;
    use tokio::net::UdpSocket;

    use super::*;
    use crate::dns::cache::entry::tests::upstream_answer;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_packet;

    /// A scripted UDP upstream: answers A queries with one record of `ttl`
    /// after `delay`, unless `silent`; counts what reaches it.
    struct Scripted {
        addr: SocketAddr,
        count: Arc<AtomicU32>,
        silent: Arc<AtomicBool>,
    }

    async fn scripted(ttl: u32, delay: Duration) -> Scripted {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let silent = Arc::new(AtomicBool::new(false));
        let (seen, quiet) = (count.clone(), silent.clone());
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 512];
            while let Ok((len, peer)) = socket.recv_from(&mut buffer).await {
                seen.fetch_add(1, Ordering::SeqCst);
                if quiet.load(Ordering::SeqCst) {
                    continue;
                }
                let answer = upstream_answer(
                    &buffer[..len],
                    ResponseCode::NoError,
                    &[(ttl, Ipv4Addr::new(192, 0, 2, 7))],
                    None,
                );
                let socket = socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&answer, peer).await;
                });
            }
        });
        Scripted {
            addr,
            count,
            silent,
        }
    }

    fn resolver(upstream: SocketAddr, config: CacheConfig) -> Arc<Resolver> {
        let metrics = Arc::new(DnsMetrics::register(&mut Default::default()));
        let forwarder = Forwarder::new(vec![upstream], &[], Duration::from_millis(200));
        Arc::new(Resolver::new(&config, forwarder, metrics))
    }

    async fn ask(resolver: &Arc<Resolver>, name: &str) -> Result<(Message, Source), UpstreamError> {
        let packet = query_packet(name, RecordType::A, Some(1232));
        let query = parse_query(&packet).unwrap();
        let (bytes, source) = resolver.resolve(&query, true).await?;
        Ok((Message::from_vec(&bytes).unwrap(), source))
    }

    #[tokio::test]
    async fn concurrent_identical_misses_make_one_upstream_query() {
        let upstream = scripted(60, Duration::from_millis(100)).await;
        let resolver = resolver(upstream.addr, CacheConfig::default());
        let asks = (0..50).map(|i| {
            let resolver = resolver.clone();
            // Different letter case, same name.
            let name = if i % 2 == 0 {
                "www.example.org."
            } else {
                "WWW.example.org."
            };
            tokio::spawn(async move { ask(&resolver, name).await })
        });
        for result in futures::future::join_all(asks).await {
            let (message, _) = result.unwrap().unwrap();
            assert_eq!(message.answers.len(), 1);
        }
        assert_eq!(upstream.count.load(Ordering::SeqCst), 1);
        assert_eq!(
            resolver.metrics.cache.coalesced.get() + 1,
            resolver.metrics.cache.misses.get()
        );
        // And then from the cache.
        let (_, source) = ask(&resolver, "www.example.org.").await.unwrap();
        assert_eq!(source, Source::Fresh);
        assert_eq!(upstream.count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stale_answers_when_upstream_goes_silent_and_servfail_for_new_names() {
        let upstream = scripted(1, Duration::ZERO).await;
        let resolver = resolver(upstream.addr, CacheConfig::default());
        let (_, source) = ask(&resolver, "seen.example.org.").await.unwrap();
        assert_eq!(source, Source::Upstream);
        upstream.silent.store(true, Ordering::SeqCst);
        // Expired after its 1 s TTL: the refresh fails (timeout), the stale
        // answer goes out with TTL 30.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (message, source) = loop {
            let (message, source) = ask(&resolver, "seen.example.org.").await.unwrap();
            if source == Source::Stale || Instant::now() > deadline {
                break (message, source);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(source, Source::Stale);
        assert_eq!(message.answers[0].ttl, 30);
        // Marked failed: stale again without waiting for upstream.
        let packet = query_packet("seen.example.org.", RecordType::A, Some(1232));
        assert!(
            resolver
                .cached(&parse_query(&packet).unwrap(), true)
                .is_some()
        );
        // A new name: no answer to give.
        assert!(ask(&resolver, "new.example.org.").await.is_err());
    }

    #[tokio::test]
    async fn once_upstream_has_failed_expired_entries_are_answered_without_waiting() {
        let upstream = scripted(1, Duration::ZERO).await;
        let resolver = resolver(upstream.addr, CacheConfig::default());
        for name in ["first.example.org.", "second.example.org."] {
            let (_, source) = ask(&resolver, name).await.unwrap();
            assert_eq!(source, Source::Upstream);
        }
        upstream.silent.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The first expired entry waits for its refresh to fail (the
        // forwarder's 200 ms timeout here) and goes out stale.
        let (_, source) = ask(&resolver, "first.example.org.").await.unwrap();
        assert_eq!(source, Source::Stale);
        let asked = upstream.count.load(Ordering::SeqCst);
        // The second was never refreshed, but upstream has just failed:
        // its stale answer comes from the non-waiting path, and one
        // refresh goes out in the background.
        let packet = query_packet("second.example.org.", RecordType::A, Some(1232));
        assert!(
            resolver
                .cached(&parse_query(&packet).unwrap(), true)
                .is_some()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while upstream.count.load(Ordering::SeqCst) == asked && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(upstream.count.load(Ordering::SeqCst), asked + 1);
        // Upstream back: the background refresh of an expired entry ends
        // the failing state, and names are asked upstream again.
        upstream.silent.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        // (A new name gets SERVFAIL while the upstream is left out.)
        let source = loop {
            let source = ask(&resolver, "third.example.org.")
                .await
                .map(|(_, source)| source);
            if source == Ok(Source::Upstream) || Instant::now() > deadline {
                break source;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(source, Ok(Source::Upstream));
    }

    #[tokio::test]
    async fn with_a_zero_client_timer_expired_entries_go_out_at_once_and_are_refreshed() {
        let upstream = scripted(1, Duration::from_millis(100)).await;
        let config = CacheConfig {
            stale_client_timeout: Duration::ZERO,
            ..CacheConfig::default()
        };
        let resolver = resolver(upstream.addr, config);
        let (_, source) = ask(&resolver, "rare.example.org.").await.unwrap();
        assert_eq!(source, Source::Upstream);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Expired, upstream healthy but slow: stale now, TTL 30, one
        // refresh behind it.
        let (message, source) = ask(&resolver, "rare.example.org.").await.unwrap();
        assert_eq!((source, message.answers[0].ttl), (Source::Stale, 30));
        let (_, source) = ask(&resolver, "rare.example.org.").await.unwrap();
        assert_eq!(source, Source::Stale);
        let deadline = Instant::now() + Duration::from_secs(5);
        let source = loop {
            let (_, source) = ask(&resolver, "rare.example.org.").await.unwrap();
            if source == Source::Fresh || Instant::now() > deadline {
                break source;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(source, Source::Fresh);
        assert_eq!(upstream.count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_popular_entry_is_refreshed_before_it_expires() {
        let upstream = scripted(3, Duration::ZERO).await;
        let resolver = resolver(upstream.addr, CacheConfig::default());
        ask(&resolver, "hot.example.org.").await.unwrap();
        // Asked every 100 ms for 7 s (two lifetimes and more): never a
        // miss after the first, yet upstream was asked again.
        for _ in 0..70 {
            let (_, source) = ask(&resolver, "hot.example.org.").await.unwrap();
            assert_eq!(source, Source::Fresh);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(resolver.metrics.cache.misses.get(), 1);
        assert!(resolver.metrics.cache.prefetches.get() >= 2);
        assert!(upstream.count.load(Ordering::SeqCst) >= 3);
    }
}
