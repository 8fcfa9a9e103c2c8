//! Handing the cache to the next agent of a rolling update: the running
//! agent lists its entries (`GET /debug/cache/export`), the next one,
//! before it joins the ports, reads them and stores each as it was (same
//! bytes, same age), so it starts warm: no upstream query and no latency
//! step for names the node already knew.
//!
//! Owns: the exported form and checking it on import (a malformed entry is
//! skipped, never stored). May not touch: how the export is fetched (the
//! agent's start-up does that), sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cache, Entry, Key, Kind};

/// One cached answer as it travels to the next agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportedEntry {
    /// The key's lower-cased wire name, hex.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    pub flags: u8,
    /// The stored answer (TTLs as stored, not counted down), hex.
    pub answer: String,
    /// How long ago it was stored.
    pub age_ms: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A lower-case wire name of at most 255 bytes, ending at its root label.
fn valid_wire_name(name: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&len) = name.get(at) {
        if len == 0 {
            return at + 1 == name.len() && name.len() <= crate::dns::wire::MAX_NAME_LEN;
        }
        if len > 63 || name[at + 1..].len() < len as usize {
            return false;
        }
        if name[at + 1..at + 1 + len as usize]
            .iter()
            .any(u8::is_ascii_uppercase)
        {
            return false;
        }
        at += 1 + len as usize;
    }
    false
}

impl Cache {
    /// Every entry that can still be served, fresh or stale.
    pub(crate) fn export(&self, now: Instant) -> Vec<ExportedEntry> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        store
            .iter()
            .filter(|(_, entry)| {
                !entry.remaining(now).is_zero()
                    || (entry.kind != Kind::ServFail && entry.expired_for(now) < self.serve_stale)
            })
            .map(|(key, entry)| ExportedEntry {
                name: hex(&key.name),
                qtype: key.qtype,
                qclass: key.qclass,
                flags: key.flags,
                answer: hex(entry.stored_bytes()),
                age_ms: u64::try_from(now.saturating_duration_since(entry.stored).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Stores what another agent exported; returns how many were taken
    /// (malformed ones, and ones past serving, are skipped).
    pub(crate) fn import(&self, entries: Vec<ExportedEntry>, now: Instant) -> usize {
        if self.store.is_none() {
            return 0;
        }
        let mut taken = 0;
        for exported in entries {
            let Some(name) = unhex(&exported.name).filter(|n| valid_wire_name(n)) else {
                continue;
            };
            let Some(answer) = unhex(&exported.answer) else {
                continue;
            };
            let Some(stored) = now.checked_sub(Duration::from_millis(exported.age_ms)) else {
                continue;
            };
            let Ok(entry) = Entry::parse(&answer, self.policy, stored) else {
                continue;
            };
            // The answer must be for the key's question.
            let asked = entry.question();
            if asked.len() != name.len() + 4
                || !asked[..name.len()].eq_ignore_ascii_case(&name)
                || asked[name.len()..]
                    != [exported.qtype.to_be_bytes(), exported.qclass.to_be_bytes()].concat()
            {
                continue;
            }
            let servable = !entry.remaining(now).is_zero()
                || (entry.kind != Kind::ServFail && entry.expired_for(now) < self.serve_stale);
            if entry.ttl == 0 || !servable {
                continue;
            }
            let key = Key {
                name: name.into(),
                qtype: exported.qtype,
                qclass: exported.qclass,
                flags: exported.flags,
            };
            self.insert(key, Arc::new(entry));
            taken += 1;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::super::entry::tests::upstream_answer;
    use super::super::{CacheConfig, KeyBuf, Lookup};
    use super::*;
    use crate::dns::cache::metrics::CacheMetrics;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_packet;

    fn cache() -> Cache {
        Cache::new(&CacheConfig::default(), CacheMetrics::default())
    }

    #[test]
    fn the_next_agent_gets_the_same_answers_at_the_same_age() {
        let old = cache();
        let t0 = Instant::now();
        let packet = query_packet("www.example.org.", RecordType::A, Some(1232));
        let query = parse_query(&packet).unwrap();
        let key = KeyBuf::of(&query);
        let answer = upstream_answer(
            &packet,
            ResponseCode::NoError,
            &[(60, Ipv4Addr::new(192, 0, 2, 1))],
            None,
        );
        old.insert(
            key.as_ref().to_owned(),
            Arc::new(Entry::parse(&answer, old.policy, t0).unwrap()),
        );
        let later = t0 + Duration::from_secs(20);
        let exported = old.export(later);
        assert_eq!(exported.len(), 1);

        let new = cache();
        // Through JSON, as over HTTP.
        let json = serde_json::to_string(&exported).unwrap();
        assert_eq!(new.import(serde_json::from_str(&json).unwrap(), later), 1);
        let Lookup::Fresh(entry) = new.lookup(key.as_ref(), later) else {
            panic!("not imported fresh");
        };
        assert_eq!(entry.remaining(later), Duration::from_secs(40));
        assert_eq!(
            entry.answer_for(&query, later, false),
            old.peek(key.as_ref())
                .unwrap()
                .answer_for(&query, later, false)
        );

        // Broken entries are skipped, never stored.
        let mut broken = exported.clone();
        broken[0].name = "zz".into();
        let mut other_question = exported.clone();
        other_question[0].name = hex(b"\x03www\x07example\x03net\x00");
        let mut upper = exported.clone();
        upper[0].name = hex(b"\x03WWW\x07example\x03org\x00");
        let mut short = exported;
        short[0].answer.truncate(40);
        let fresh = cache();
        for bad in [broken, other_question, upper, short] {
            assert_eq!(fresh.import(bad, later), 0);
        }
        assert_eq!(fresh.len(), 0);
    }
}
