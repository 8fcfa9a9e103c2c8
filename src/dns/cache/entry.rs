//! One cached answer: the upstream's bytes, where each record's TTL sits,
//! and how long the answer may be used (RFC 2181 §8, RFC 2308, RFC 8767).
//!
//! Owns: reading an upstream answer once when it is stored (so that a hit
//! is a copy and a few 4-byte writes, no parsing), and writing it back for
//! a client (its ID, its question bytes, the TTLs counted down). May not
//! touch: which answers are kept or for how long beyond what one answer
//! says (that is [`super::Cache`]), sockets.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::dns::wire::{Query, rcode, rtype};

/// The TTL of a stale answer (RFC 8767 §4 recommends 30 s): short, so
/// clients come back soon and get the fresh one once upstream recovers.
pub(crate) const STALE_TTL: u32 = 30;

/// What kind of answer an entry is, which decides how long it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// NOERROR with records in Answer.
    Positive,
    /// NXDOMAIN, or NOERROR with no answer (NODATA).
    Negative,
    /// The upstream's SERVFAIL: kept briefly, never served stale.
    ServFail,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Negative => "negative",
            Self::ServFail => "servfail",
        }
    }
}

/// How long answers may be kept: the operator's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TtlPolicy {
    pub(crate) max_ttl: u32,
    pub(crate) max_negative_ttl: u32,
    pub(crate) servfail_ttl: u32,
}

/// Why an upstream answer cannot be read (the client still gets it as is
/// when it came whole, it is only not cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("answer shorter than its header says")]
    Short,
    #[error("answer is not a response with one question")]
    NotAnAnswer,
}

/// A stored answer. The bytes start with a zero ID; every TTL in them is
/// already capped to the entry's life, so serving subtracts the age.
#[derive(Debug)]
pub(crate) struct Entry {
    bytes: Box<[u8]>,
    /// Offset of each record's TTL (OPT excluded: its "TTL" is flags).
    ttl_offsets: Box<[u16]>,
    /// Where the question ends (12 + its length).
    question_end: usize,
    /// Where the OPT record is (start, end), left out for a client that
    /// sent no EDNS.
    opt: Option<(usize, usize)>,
    pub(crate) kind: Kind,
    /// Seconds the entry is fresh; 0: it must not be cached at all.
    pub(crate) ttl: u32,
    pub(crate) stored: Instant,
    /// Clients served from this entry (prefetch asks for two).
    asked: AtomicU32,
    /// A refresh (prefetch or stale revalidation) is under way.
    refreshing: AtomicBool,
    /// Until when (ms after `stored`) a failed refresh keeps stale answers
    /// going out at once without asking upstream again (RFC 8767's
    /// failure recheck timer); 0: none.
    failed_until_ms: AtomicU64,
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16, EntryError> {
    Ok(u16::from_be_bytes([
        *bytes.get(at).ok_or(EntryError::Short)?,
        *bytes.get(at + 1).ok_or(EntryError::Short)?,
    ]))
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, EntryError> {
    let b = bytes.get(at..at + 4).ok_or(EntryError::Short)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The offset after a (possibly compressed) name.
fn skip_name(bytes: &[u8], mut at: usize) -> Result<usize, EntryError> {
    loop {
        let len = *bytes.get(at).ok_or(EntryError::Short)?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xC0 == 0xC0 => return Ok(at + 2),
            l if l & 0xC0 != 0 => return Err(EntryError::NotAnAnswer),
            l => at += 1 + l as usize,
        }
    }
}

/// RFC 2181 §8: a TTL with the top bit set is treated as zero.
fn sane_ttl(ttl: u32) -> u32 {
    if ttl > i32::MAX as u32 { 0 } else { ttl }
}

impl Entry {
    /// Reads an upstream answer (any ID) into an entry; its `ttl` is 0 when
    /// it must not be cached: truncated, a negative answer without SOA
    /// (RFC 2308 §5), a zero TTL, an rcode other than NOERROR, NXDOMAIN or
    /// SERVFAIL.
    pub(crate) fn parse(
        answer: &[u8],
        policy: TtlPolicy,
        now: Instant,
    ) -> Result<Self, EntryError> {
        if answer.len() < 12 {
            return Err(EntryError::Short);
        }
        if answer[2] & 0x80 == 0 || read_u16(answer, 4)? != 1 {
            return Err(EntryError::NotAnAnswer);
        }
        let truncated = answer[2] & 0x02 != 0;
        let code = answer[3] & 0x0F;
        let counts = [
            read_u16(answer, 6)?,
            read_u16(answer, 8)?,
            read_u16(answer, 10)?,
        ];
        let question_end = skip_name(answer, 12)? + 4;
        if question_end > answer.len() {
            return Err(EntryError::Short);
        }
        let mut at = question_end;
        let mut ttl_offsets = Vec::new();
        let mut min_answer_ttl = u32::MAX;
        let mut soa: Option<(u32, u32)> = None;
        let mut opt = None;
        for (section, &count) in counts.iter().enumerate() {
            for _ in 0..count {
                let after_name = skip_name(answer, at)?;
                let kind = read_u16(answer, after_name)?;
                let ttl = sane_ttl(read_u32(answer, after_name + 4)?);
                let rdata = after_name + 10;
                let end = rdata + read_u16(answer, after_name + 8)? as usize;
                if end > answer.len() {
                    return Err(EntryError::Short);
                }
                if kind == rtype::OPT {
                    opt = Some((at, end));
                } else {
                    let offset = u16::try_from(after_name + 4).map_err(|_| EntryError::Short)?;
                    ttl_offsets.push(offset);
                    if section == 0 {
                        min_answer_ttl = min_answer_ttl.min(ttl);
                    }
                    // SOA's MINIMUM is the last field of its RDATA.
                    if section == 1 && kind == rtype::SOA && end - rdata >= 22 {
                        soa = Some((ttl, sane_ttl(read_u32(answer, end - 4)?)));
                    }
                }
                at = end;
            }
        }
        let (kind, ttl) = match code {
            _ if truncated => (Kind::Positive, 0),
            0 if counts[0] > 0 => (Kind::Positive, min_answer_ttl.min(policy.max_ttl)),
            0 | rcode::NXDOMAIN => {
                // RFC 2308 §5: the negative TTL is min(SOA TTL, MINIMUM);
                // without an SOA the answer is not cached.
                let ttl = soa.map_or(0, |(ttl, minimum)| {
                    ttl.min(minimum).min(policy.max_negative_ttl)
                });
                (Kind::Negative, ttl)
            }
            rcode::SERVFAIL => (Kind::ServFail, policy.servfail_ttl),
            _ => (Kind::Positive, 0),
        };
        let mut bytes: Box<[u8]> = answer.into();
        bytes[0] = 0;
        bytes[1] = 0;
        // Each record shows at most the entry's life: a capped answer must
        // not tell clients to keep it longer than we do.
        for &offset in &ttl_offsets {
            let at = offset as usize;
            let own = sane_ttl(read_u32(&bytes, at)?);
            bytes[at..at + 4].copy_from_slice(&own.min(ttl).to_be_bytes());
        }
        Ok(Self {
            bytes,
            ttl_offsets: ttl_offsets.into(),
            question_end,
            opt,
            kind,
            ttl,
            stored: now,
            asked: AtomicU32::new(0),
            refreshing: AtomicBool::new(false),
            failed_until_ms: AtomicU64::new(0),
        })
    }

    /// Bytes held (for the size bound and the metric).
    pub(crate) fn size(&self) -> usize {
        self.bytes.len() + self.ttl_offsets.len() * 2 + std::mem::size_of::<Self>()
    }

    /// The answer as stored (ID zero, TTLs capped, not counted down).
    pub(crate) fn stored_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The question (name, type, class) as upstream echoed it.
    pub(crate) fn question(&self) -> &[u8] {
        &self.bytes[12..self.question_end]
    }

    /// The upstream could not answer (SERVFAIL, REFUSED): a stale answer,
    /// when there is one, is better.
    pub(crate) fn is_failure(&self) -> bool {
        self.kind == Kind::ServFail || self.rcode() == rcode::REFUSED
    }

    pub(crate) fn rcode(&self) -> u8 {
        self.bytes[3] & 0x0F
    }

    #[cfg(test)]
    pub(crate) fn is_truncated(&self) -> bool {
        self.bytes[2] & 0x02 != 0
    }

    /// How long it stays fresh after `now` (zero once expired).
    pub(crate) fn remaining(&self, now: Instant) -> Duration {
        (self.stored + Duration::from_secs(self.ttl.into())).saturating_duration_since(now)
    }

    /// How long ago it expired (zero while fresh).
    pub(crate) fn expired_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored + Duration::from_secs(self.ttl.into()))
    }

    /// Counts one client served; returns how many were, this one included.
    pub(crate) fn ask(&self) -> u32 {
        self.asked.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// Claims the one refresh of this entry; false when one is under way
    /// or done.
    pub(crate) fn claim_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Lets the next ask refresh again (the refresh failed).
    pub(crate) fn release_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    /// Upstream failed to refresh this entry: stale answers go out at once
    /// until `until`.
    pub(crate) fn refresh_failed(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.stored).as_millis();
        self.failed_until_ms.store(
            u64::try_from(ms).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
    }

    /// Whether a failed refresh still holds off asking upstream.
    pub(crate) fn recently_failed(&self, now: Instant) -> bool {
        let ms = self.failed_until_ms.load(Ordering::Relaxed);
        ms != 0 && now < self.stored + Duration::from_millis(ms)
    }

    /// The answer for `query` (whose lower-cased question is this entry's):
    /// the client's ID, RD bit and question bytes (its letter case), every
    /// TTL counted down by the entry's age, or [`STALE_TTL`] when `stale`.
    /// None when the question does not fit (never for a matching key).
    pub(crate) fn answer_for(
        &self,
        query: &Query<'_>,
        now: Instant,
        stale: bool,
    ) -> Option<Vec<u8>> {
        if query.question.len() != self.question_end - 12 {
            return None;
        }
        // A client without EDNS gets no OPT record (RFC 6891 §7).
        let cut = self.opt.filter(|_| query.edns.is_none());
        let mut out = match cut {
            Some((start, end)) => {
                let mut out = Vec::with_capacity(self.bytes.len() - (end - start));
                out.extend_from_slice(&self.bytes[..start]);
                out.extend_from_slice(&self.bytes[end..]);
                let additional = u16::from_be_bytes([out[10], out[11]]).saturating_sub(1);
                out[10..12].copy_from_slice(&additional.to_be_bytes());
                out
            }
            None => self.bytes.to_vec(),
        };
        out[..2].copy_from_slice(&query.id.to_be_bytes());
        out[2] = (out[2] & !0x01) | u8::from(query.recursion_desired);
        out[12..self.question_end].copy_from_slice(query.question);
        let age =
            u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX);
        for &offset in self.ttl_offsets.iter() {
            let at = match cut {
                Some((start, end)) if offset as usize >= end => offset as usize - (end - start),
                _ => offset as usize,
            };
            let ttl = if stale {
                STALE_TTL
            } else {
                u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]])
                    .saturating_sub(age)
            };
            out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        Some(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_packet;

    pub(crate) const POLICY: TtlPolicy = TtlPolicy {
        max_ttl: 3600,
        max_negative_ttl: 300,
        servfail_ttl: 2,
    };

    /// An upstream's answer to `query` built by hickory-proto.
    pub(crate) fn upstream_answer(
        query: &[u8],
        code: ResponseCode,
        answers: &[(u32, Ipv4Addr)],
        soa: Option<(u32, u32)>,
    ) -> Vec<u8> {
        let asked = Message::from_vec(query).unwrap();
        let mut message = Message::response(asked.metadata.id, asked.metadata.op_code);
        message.metadata.message_type = MessageType::Response;
        message.metadata.response_code = code;
        message.metadata.recursion_desired = asked.metadata.recursion_desired;
        message.metadata.recursion_available = true;
        let question = asked.queries[0].clone();
        for (ttl, ip) in answers {
            message.add_answer(Record::from_rdata(
                question.name().clone(),
                *ttl,
                RData::A(A(*ip)),
            ));
        }
        if let Some((ttl, minimum)) = soa {
            let zone = Name::from_str("example.org.").unwrap();
            message.add_authority(Record::from_rdata(
                zone.clone(),
                ttl,
                RData::SOA(SOA::new(
                    Name::from_str("ns.example.org.").unwrap(),
                    Name::from_str("hostmaster.example.org.").unwrap(),
                    1,
                    3600,
                    600,
                    86400,
                    minimum,
                )),
            ));
        }
        message.add_query(question);
        if let Some(edns) = asked.edns {
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    fn ttls(bytes: &[u8]) -> Vec<u32> {
        let message = Message::from_vec(bytes).unwrap();
        message
            .answers
            .iter()
            .chain(&message.authorities)
            .map(|r| r.ttl)
            .collect()
    }

    #[test]
    fn positive_answers_count_down_and_echo_the_question_as_asked() {
        let asked = query_packet("www.example.org.", RecordType::A, Some(1232));
        let answer = upstream_answer(
            &asked,
            ResponseCode::NoError,
            &[
                (60, Ipv4Addr::new(192, 0, 2, 1)),
                (300, Ipv4Addr::new(192, 0, 2, 2)),
            ],
            None,
        );
        let t0 = Instant::now();
        let entry = Entry::parse(&answer, POLICY, t0).unwrap();
        assert_eq!((entry.kind, entry.ttl), (Kind::Positive, 60));
        // Another client, its own ID and letter case (0x20), 12.5 s later.
        let mut other = query_packet("WwW.eXample.ORG.", RecordType::A, Some(1232));
        other[..2].copy_from_slice(&[0xAB, 0xCD]);
        let query = parse_query(&other).unwrap();
        let bytes = entry
            .answer_for(&query, t0 + Duration::from_millis(12_500), false)
            .unwrap();
        let message = Message::from_vec(&bytes).unwrap();
        assert_eq!(message.metadata.id, 0xABCD);
        assert_eq!(message.queries[0].name().to_ascii(), "WwW.eXample.ORG.");
        // Both records capped to the entry's 60 s, minus 12 s.
        assert_eq!(ttls(&bytes), [48, 48]);
        assert!(message.edns.is_some());
        // Stale: 30 s whatever the age.
        let stale = entry
            .answer_for(&query, t0 + Duration::from_secs(600), true)
            .unwrap();
        assert_eq!(ttls(&stale), [STALE_TTL, STALE_TTL]);
        // Long after: 0, never a wrapped-around huge TTL.
        let late = entry
            .answer_for(&query, t0 + Duration::from_secs(600), false)
            .unwrap();
        assert_eq!(ttls(&late), [0, 0]);
    }

    #[test]
    fn a_client_without_edns_gets_no_opt_record() {
        let asked = query_packet("www.example.org.", RecordType::A, Some(1232));
        let answer = upstream_answer(
            &asked,
            ResponseCode::NoError,
            &[(60, Ipv4Addr::new(192, 0, 2, 1))],
            Some((60, 60)),
        );
        let t0 = Instant::now();
        let entry = Entry::parse(&answer, POLICY, t0).unwrap();
        let plain = query_packet("www.example.org.", RecordType::A, None);
        let bytes = entry
            .answer_for(
                &parse_query(&plain).unwrap(),
                t0 + Duration::from_secs(5),
                false,
            )
            .unwrap();
        let message = Message::from_vec(&bytes).unwrap();
        assert!(message.edns.is_none());
        assert!(message.additionals.is_empty());
        assert_eq!(ttls(&bytes), [55, 55]);
        assert_eq!(bytes.len(), answer.len() - 11);
    }

    #[test]
    fn the_operator_cap_bounds_positive_ttls() {
        let asked = query_packet("www.example.org.", RecordType::A, None);
        let answer = upstream_answer(
            &asked,
            ResponseCode::NoError,
            &[(86_400, Ipv4Addr::new(192, 0, 2, 1))],
            None,
        );
        let policy = TtlPolicy {
            max_ttl: 300,
            ..POLICY
        };
        let entry = Entry::parse(&answer, policy, Instant::now()).unwrap();
        assert_eq!(entry.ttl, 300);
        let query = parse_query(&asked).unwrap();
        assert_eq!(
            ttls(&entry.answer_for(&query, entry.stored, false).unwrap()),
            [300]
        );
    }

    #[test]
    fn negative_answers_live_for_the_soa_minimum_per_rfc_2308() {
        let asked = query_packet("nope.example.org.", RecordType::A, None);
        let now = Instant::now();
        // min(SOA TTL 900, MINIMUM 60) = 60.
        let nx = upstream_answer(&asked, ResponseCode::NXDomain, &[], Some((900, 60)));
        let entry = Entry::parse(&nx, POLICY, now).unwrap();
        assert_eq!((entry.kind, entry.ttl), (Kind::Negative, 60));
        // The SOA is shown with the negative TTL, not its own 900.
        let query = parse_query(&asked).unwrap();
        assert_eq!(ttls(&entry.answer_for(&query, now, false).unwrap()), [60]);
        // min(SOA TTL 30, MINIMUM 3600) = 30; NODATA likewise.
        let nodata = upstream_answer(&asked, ResponseCode::NoError, &[], Some((30, 3600)));
        let entry = Entry::parse(&nodata, POLICY, now).unwrap();
        assert_eq!((entry.kind, entry.ttl), (Kind::Negative, 30));
        // Capped by --cache-max-negative-ttl.
        let long = upstream_answer(&asked, ResponseCode::NXDomain, &[], Some((86400, 86400)));
        assert_eq!(Entry::parse(&long, POLICY, now).unwrap().ttl, 300);
        // No SOA: not cached (RFC 2308 §5).
        let bare = upstream_answer(&asked, ResponseCode::NXDomain, &[], None);
        assert_eq!(Entry::parse(&bare, POLICY, now).unwrap().ttl, 0);
    }

    #[test]
    fn truncated_refused_and_servfail_answers() {
        let asked = query_packet("big.example.org.", RecordType::A, None);
        let now = Instant::now();
        let mut tc = upstream_answer(
            &asked,
            ResponseCode::NoError,
            &[(60, Ipv4Addr::new(192, 0, 2, 1))],
            None,
        );
        tc[2] |= 0x02;
        let entry = Entry::parse(&tc, POLICY, now).unwrap();
        assert!(entry.is_truncated());
        assert_eq!(entry.ttl, 0, "a truncated answer is never cached");
        let refused = upstream_answer(&asked, ResponseCode::Refused, &[], None);
        let entry = Entry::parse(&refused, POLICY, now).unwrap();
        assert_eq!(entry.ttl, 0);
        assert!(entry.is_failure(), "a stale answer beats REFUSED");
        let failed = upstream_answer(&asked, ResponseCode::ServFail, &[], None);
        let entry = Entry::parse(&failed, POLICY, now).unwrap();
        assert_eq!((entry.kind, entry.ttl), (Kind::ServFail, 2));
        assert!(entry.is_failure());
        // A zero TTL means "use once".
        let zero = upstream_answer(
            &asked,
            ResponseCode::NoError,
            &[(0, Ipv4Addr::new(192, 0, 2, 1))],
            None,
        );
        assert_eq!(Entry::parse(&zero, POLICY, now).unwrap().ttl, 0);
        // Garbage is refused, not stored.
        assert_eq!(
            Entry::parse(&tc[..20], POLICY, now).unwrap_err(),
            EntryError::Short
        );
        assert_eq!(
            Entry::parse(&asked, POLICY, now).unwrap_err(),
            EntryError::NotAnAnswer
        );
    }
}
