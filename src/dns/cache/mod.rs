//! The cache of forwarded answers: every name outside the cluster zone that
//! went upstream, shared by UDP and TCP clients and by ExternalName chases.
//!
//! - [`entry`]: one stored answer (TTL offsets, RFC 2308 negative TTLs,
//!   the countdown and the client's question written back).
//! - [`metrics`]: the cache's and the upstreams' series.
//! - [`export`]: handing the entries to the next agent (warm upgrade).
//!
//! Keyed by the lower-cased name, type, class, and the bits that change the
//! answer (DO, CD). Not by whether the client sent EDNS: upstream is always
//! asked with EDNS, and a client without it gets the answer without the
//! OPT record (and TC over UDP beyond 512 bytes), so glibc (no EDNS by
//! default) and Go (EDNS) share one entry.
//!
//! Bounded by entries and bytes at once: each
//! entry weighs its bytes but at least `max_bytes / size`, so whichever
//! bound is reached first holds. Expired entries stay (until evicted, or
//! until `--serve-stale` past their expiry, when a lookup or the sweep
//! drops them) so they can be served stale (RFC 8767).
//!
//! Owns: storage, keys and lookups. May not touch: upstreams or when to ask
//! them (that is [`super::resolve`]), sockets.

pub(crate) mod entry;
pub mod export;
pub(crate) mod metrics;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache as Store;
use quick_cache::{DefaultHashBuilder, Equivalent, Lifecycle, Weighter};

pub(crate) use entry::{Entry, Kind, TtlPolicy};
use metrics::CacheMetrics;

use crate::dns::wire::{MAX_NAME_LEN, Query};

/// The cache's settings (`--cache-*`, `--serve-stale`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries; 0 turns the cache off (misses still coalesce).
    pub size: usize,
    /// Most bytes the entries hold.
    pub max_bytes: u64,
    pub max_ttl: Duration,
    pub max_negative_ttl: Duration,
    /// How long past its expiry an entry may still be served when upstream
    /// fails; zero: never.
    pub serve_stale: Duration,
    /// How long a client asking for an expired entry waits for its refresh
    /// before getting the stale answer (RFC 8767's client response timer).
    /// Zero answers stale at once and refreshes in the background
    /// (optimistic caching: no client waits for an expired name).
    pub stale_client_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            size: 20_000,
            max_bytes: 32 << 20,
            max_ttl: Duration::from_secs(3600),
            max_negative_ttl: Duration::from_secs(300),
            serve_stale: Duration::from_secs(3600),
            stale_client_timeout: Duration::from_millis(1800),
        }
    }
}

/// SERVFAIL from upstream is kept this long (RFC 9520 asks for at least
/// 1 s, so a failing name does not hammer the upstream; more would hide a
/// recovery).
const SERVFAIL_TTL: u32 = 2;

fn secs(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// DO and CD: each changes what upstream answers.
const DNSSEC_OK: u8 = 2;
const CHECKING_DISABLED: u8 = 4;

/// A cache key: lower-cased wire name, type, class, flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    flags: u8,
}

/// A key borrowed from a stack buffer: a lookup allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyRef<'a> {
    name: &'a [u8],
    qtype: u16,
    qclass: u16,
    flags: u8,
}

fn hash_parts<H: Hasher>(state: &mut H, name: &[u8], qtype: u16, qclass: u16, flags: u8) {
    state.write(name);
    state.write_u16(qtype);
    state.write_u16(qclass);
    state.write_u8(flags);
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, &self.name, self.qtype, self.qclass, self.flags);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, self.name, self.qtype, self.qclass, self.flags);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.qtype == key.qtype
            && self.qclass == key.qclass
            && self.flags == key.flags
            && self.name == &*key.name
    }
}

/// The key of a query, built on the stack.
pub(crate) struct KeyBuf {
    name: [u8; MAX_NAME_LEN],
    len: usize,
    qtype: u16,
    qclass: u16,
    flags: u8,
}

impl KeyBuf {
    pub(crate) fn of(query: &Query<'_>) -> Self {
        let wire = &query.question[..query.question.len() - 4];
        let mut name = [0u8; MAX_NAME_LEN];
        let len = wire.len().min(MAX_NAME_LEN);
        for (to, from) in name.iter_mut().zip(&wire[..len]) {
            *to = from.to_ascii_lowercase();
        }
        let mut flags = 0;
        if query.edns.is_some_and(|edns| edns.dnssec_ok) {
            flags |= DNSSEC_OK;
        }
        if query.checking_disabled {
            flags |= CHECKING_DISABLED;
        }
        Self {
            name,
            len,
            qtype: query.qtype,
            qclass: query.qclass,
            flags,
        }
    }

    pub(crate) fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            name: &self.name[..self.len],
            qtype: self.qtype,
            qclass: self.qclass,
            flags: self.flags,
        }
    }
}

impl KeyRef<'_> {
    /// The name in text, lower-cased, with the final dot.
    pub(crate) fn name(self) -> String {
        let mut text = String::new();
        let mut at = 0;
        while let Some(&len) = self.name.get(at) {
            if len == 0 {
                break;
            }
            let label = self.name.get(at + 1..at + 1 + len as usize).unwrap_or(&[]);
            for &byte in label {
                match byte {
                    b'.' | b'\\' => {
                        text.push('\\');
                        text.push(byte as char);
                    }
                    0x21..=0x7E => text.push(byte as char),
                    other => text.push_str(&format!("\\{other:03}")),
                }
            }
            text.push('.');
            at += 1 + len as usize;
        }
        if text.is_empty() {
            text.push('.');
        }
        text
    }

    pub(crate) fn to_owned(self) -> Key {
        Key {
            name: self.name.into(),
            qtype: self.qtype,
            qclass: self.qclass,
            flags: self.flags,
        }
    }
}

impl Key {
    pub(crate) fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            name: &self.name,
            qtype: self.qtype,
            qclass: self.qclass,
            flags: self.flags,
        }
    }

    /// The name in text, lower-cased, with the final dot.
    pub(crate) fn name(&self) -> String {
        self.as_ref().name()
    }

    /// The query the agent sends upstream for this key: RD set, EDNS
    /// (advertising 1232 bytes), the CD and DO bits as the key says.
    pub(crate) fn upstream_query(&self, id: u16) -> Vec<u8> {
        let mut packet = Vec::with_capacity(12 + self.name.len() + 4 + 11);
        packet.extend_from_slice(&id.to_be_bytes());
        packet.push(0x01);
        packet.push(if self.flags & CHECKING_DISABLED != 0 {
            0x10
        } else {
            0
        });
        for count in [1u16, 0, 0, 1] {
            packet.extend_from_slice(&count.to_be_bytes());
        }
        packet.extend_from_slice(&self.name);
        packet.extend_from_slice(&self.qtype.to_be_bytes());
        packet.extend_from_slice(&self.qclass.to_be_bytes());
        let payload = crate::dns::wire::EDNS_UDP_PAYLOAD.to_be_bytes();
        let dnssec_ok = if self.flags & DNSSEC_OK != 0 { 0x80 } else { 0 };
        packet.extend_from_slice(&[0, 0, 41, payload[0], payload[1], 0, 0, dnssec_ok, 0, 0, 0]);
        packet
    }
}

/// Each entry weighs its bytes, but at least `floor`: the byte bound then
/// also bounds the entry count.
#[derive(Debug, Clone)]
struct Weigh {
    floor: u64,
}

impl Weighter<Key, Arc<Entry>> for Weigh {
    fn weight(&self, key: &Key, entry: &Arc<Entry>) -> u64 {
        ((key.name.len() + entry.size()) as u64).max(self.floor)
    }
}

/// Counts evictions; drops the evicted values after the shard lock is
/// released (quick_cache drops the request state then).
#[derive(Debug, Clone)]
struct Evictions(prometheus_client::metrics::counter::Counter);

impl Lifecycle<Key, Arc<Entry>> for Evictions {
    type RequestState = Vec<(Key, Arc<Entry>)>;

    fn on_evict(&self, state: &mut Self::RequestState, key: Key, entry: Arc<Entry>) {
        self.0.inc();
        state.push((key, entry));
    }
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    Fresh(Arc<Entry>),
    /// Expired, but within `--serve-stale`; servable when upstream fails.
    Stale(Arc<Entry>),
    Miss,
}

/// One cached name, for `dump --cache`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedName {
    pub name: String,
    pub r#type: String,
    /// positive, negative or servfail.
    pub kind: String,
    pub rcode: u8,
    /// Seconds left; 0 once expired (then `stale_for` says how long).
    pub ttl_remaining: u64,
    pub stale_for: u64,
    pub bytes: usize,
    pub dnssec_ok: bool,
}

pub(crate) struct Cache {
    store: Option<Store<Key, Arc<Entry>, Weigh, DefaultHashBuilder, Evictions>>,
    policy: TtlPolicy,
    serve_stale: Duration,
    metrics: CacheMetrics,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.len())
            .field("policy", &self.policy)
            .finish()
    }
}

impl Cache {
    pub(crate) fn new(config: &CacheConfig, metrics: CacheMetrics) -> Self {
        let store = (config.size > 0).then(|| {
            let floor = (config.max_bytes / config.size as u64).max(1);
            Store::with(
                config.size,
                config.max_bytes.max(floor),
                Weigh { floor },
                DefaultHashBuilder::default(),
                Evictions(metrics.evictions.clone()),
            )
        });
        Self {
            store,
            policy: TtlPolicy {
                max_ttl: secs(config.max_ttl),
                max_negative_ttl: secs(config.max_negative_ttl),
                servfail_ttl: SERVFAIL_TTL,
            },
            serve_stale: config.serve_stale,
            metrics,
        }
    }

    pub(crate) fn policy(&self) -> TtlPolicy {
        self.policy
    }

    pub(crate) fn len(&self) -> usize {
        self.store.as_ref().map_or(0, |store| store.len())
    }

    pub(crate) fn lookup(&self, key: KeyRef<'_>, now: Instant) -> Lookup {
        let Some(store) = &self.store else {
            return Lookup::Miss;
        };
        let Some(entry) = store.get(&key) else {
            return Lookup::Miss;
        };
        if !entry.remaining(now).is_zero() {
            return Lookup::Fresh(entry);
        }
        let expired_for = entry.expired_for(now);
        if entry.kind != Kind::ServFail && expired_for < self.serve_stale {
            return Lookup::Stale(entry);
        }
        store.remove(&key);
        self.update_gauges();
        Lookup::Miss
    }

    /// Stores `entry` unless its TTL says not to.
    pub(crate) fn insert(&self, key: Key, entry: Arc<Entry>) {
        let Some(store) = &self.store else { return };
        if entry.ttl == 0 {
            return;
        }
        store.insert(key, entry);
        self.update_gauges();
    }

    fn update_gauges(&self) {
        if let Some(store) = &self.store {
            self.metrics.entries.set(store.len() as i64);
            // What counts against --cache-max-bytes (each entry at least
            // max-bytes/size); O(shards), unlike summing the entries.
            self.metrics.bytes.set(store.weight() as i64);
        }
    }

    /// The entry for `key` without counting it as used.
    pub(crate) fn peek(&self, key: KeyRef<'_>) -> Option<Arc<Entry>> {
        self.store.as_ref()?.peek(&key)
    }

    /// Drops entries past `--serve-stale` (and SERVFAIL ones once
    /// expired), so the gauges and memory follow what can still be served.
    pub(crate) fn sweep(&self, now: Instant) {
        if let Some(store) = &self.store {
            store.retain(|_, entry| {
                let expired_for = entry.expired_for(now);
                entry.remaining(now) > Duration::ZERO
                    || (entry.kind != Kind::ServFail && expired_for < self.serve_stale)
            });
            self.update_gauges();
        }
    }

    /// Every cached name with its remaining TTL, sorted by name and type.
    pub(crate) fn list(&self, now: Instant) -> Vec<CachedName> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        let mut names: Vec<CachedName> = store
            .iter()
            .map(|(key, entry)| CachedName {
                name: key.name(),
                r#type: type_name(key.qtype),
                kind: entry.kind.label().into(),
                rcode: entry.rcode(),
                ttl_remaining: entry.remaining(now).as_secs(),
                stale_for: entry.expired_for(now).as_secs(),
                bytes: entry.size(),
                dnssec_ok: key.flags & DNSSEC_OK != 0,
            })
            .collect();
        names.sort_by(|a, b| (&a.name, &a.r#type).cmp(&(&b.name, &b.r#type)));
        names
    }
}

fn type_name(qtype: u16) -> String {
    hickory_proto::rr::RecordType::from(qtype).to_string()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::entry::tests::{POLICY, upstream_answer};
    use super::*;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_packet;

    fn cache(size: usize, max_bytes: u64) -> Cache {
        Cache::new(
            &CacheConfig {
                size,
                max_bytes,
                serve_stale: Duration::from_secs(60),
                ..CacheConfig::default()
            },
            CacheMetrics::default(),
        )
    }

    fn stored(cache: &Cache, name: &str, ttl: u32, now: Instant) -> Key {
        let packet = query_packet(name, RecordType::A, Some(1232));
        let query = parse_query(&packet).unwrap();
        let key = KeyBuf::of(&query).as_ref().to_owned();
        let answer = upstream_answer(
            &packet,
            ResponseCode::NoError,
            &[(ttl, Ipv4Addr::new(192, 0, 2, 1))],
            None,
        );
        cache.insert(
            key.clone(),
            Arc::new(Entry::parse(&answer, POLICY, now).unwrap()),
        );
        key
    }

    #[test]
    fn keys_ignore_case_but_not_type_or_dnssec() {
        let key = |name: &str, rtype, edns: Option<u16>, dnssec_ok: bool| {
            let mut packet = query_packet(name, rtype, edns);
            if dnssec_ok {
                let at = packet.len() - 4;
                packet[at] |= 0x80;
            }
            let query = parse_query(&packet).unwrap();
            assert_eq!(query.edns.is_some_and(|e| e.dnssec_ok), dnssec_ok);
            KeyBuf::of(&query).as_ref().to_owned()
        };
        let plain = key("WWW.Example.org.", RecordType::A, Some(1232), false);
        assert_eq!(
            plain,
            key("www.example.ORG.", RecordType::A, Some(1232), false)
        );
        assert_eq!(plain.name(), "www.example.org.");
        assert_ne!(
            plain,
            key("www.example.org.", RecordType::AAAA, Some(1232), false)
        );
        assert_ne!(
            plain,
            key("www.example.org.", RecordType::A, Some(1232), true)
        );
        // With or without EDNS: one entry (a client without gets the answer
        // without the OPT record).
        assert_eq!(plain, key("www.example.org.", RecordType::A, None, false));
    }

    #[test]
    fn the_upstream_query_is_the_key() {
        let packet = query_packet("Www.Example.org.", RecordType::AAAA, Some(4096));
        let key = KeyBuf::of(&parse_query(&packet).unwrap())
            .as_ref()
            .to_owned();
        let sent = key.upstream_query(7);
        let query = parse_query(&sent).unwrap();
        assert_eq!(query.id, 7);
        assert!(query.recursion_desired);
        assert_eq!(
            query.question,
            b"\x03www\x07example\x03org\x00\x00\x1c\x00\x01"
        );
        assert_eq!(query.edns.unwrap().udp_payload, 1232);
        assert_eq!(KeyBuf::of(&query).as_ref().to_owned(), key);
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let cache = cache(100, 1 << 20);
        let t0 = Instant::now();
        let key = stored(&cache, "a.example.org.", 10, t0);
        assert!(matches!(
            cache.lookup(key.as_ref(), t0 + Duration::from_secs(9)),
            Lookup::Fresh(_)
        ));
        assert!(matches!(
            cache.lookup(key.as_ref(), t0 + Duration::from_secs(11)),
            Lookup::Stale(_)
        ));
        // Past --serve-stale (60 s): dropped on sight.
        assert!(matches!(
            cache.lookup(key.as_ref(), t0 + Duration::from_secs(71)),
            Lookup::Miss
        ));
        assert_eq!(cache.len(), 0);
        let listed = stored(&cache, "b.example.org.", 10, t0);
        let names = cache.list(t0 + Duration::from_secs(4));
        assert_eq!(names.len(), 1);
        assert_eq!(
            (names[0].name.as_str(), names[0].r#type.as_str()),
            ("b.example.org.", "A")
        );
        assert_eq!(names[0].ttl_remaining, 6);
        cache.sweep(t0 + Duration::from_secs(100));
        assert!(matches!(cache.lookup(listed.as_ref(), t0), Lookup::Miss));
    }

    #[test]
    fn the_entry_bound_holds_and_evictions_are_counted() {
        let cache = cache(64, 1 << 30);
        let t0 = Instant::now();
        for i in 0..1000 {
            stored(&cache, &format!("n{i}.example.org."), 300, t0);
        }
        assert!(cache.len() <= 64, "{} entries", cache.len());
        assert!(cache.metrics.evictions.get() >= 1000 - 64);
        assert_eq!(cache.metrics.entries.get(), cache.len() as i64);
        // The byte bound holds too when it is the tighter one.
        let small = self::cache(10_000, 16 << 10);
        for i in 0..1000 {
            stored(&small, &format!("n{i}.example.org."), 300, t0);
        }
        assert!(
            small.metrics.bytes.get() <= 16 << 10,
            "{}",
            small.metrics.bytes.get()
        );
        assert!(small.len() > 10, "{}", small.len());
    }

    #[test]
    fn zero_size_turns_the_cache_off_and_zero_ttl_is_not_stored() {
        let off = cache(0, 1 << 20);
        let t0 = Instant::now();
        let key = stored(&off, "a.example.org.", 60, t0);
        assert!(matches!(off.lookup(key.as_ref(), t0), Lookup::Miss));
        let on = cache(10, 1 << 20);
        let key = stored(&on, "a.example.org.", 0, t0);
        assert!(matches!(on.lookup(key.as_ref(), t0), Lookup::Miss));
    }
}
