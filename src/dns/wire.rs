//! The DNS wire format, as much of it as the agent speaks: reading a query
//! (header, one question, the EDNS OPT record) and writing a response
//! straight into a reusable buffer.
//!
//! Hand-written rather than built from a general message type because this
//! is the hot path: a query is parsed without allocating, the question is
//! echoed byte for byte (which also echoes the client's letter case, as RFC
//! 4343 asks), and answer owner names are compression pointers into that
//! echoed question. The tests check every encoding against hickory-proto.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Record types the agent answers (others are NODATA or forwarded).
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
}

pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// Extended RCODE 16 (needs EDNS): the upper 8 bits go in the OPT TTL.
    pub const BADVERS: u16 = 16;
}

pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;
const HEADER_LEN: usize = 12;
/// What we advertise and honour as the largest UDP response (DNS Flag Day 2020).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;
/// The classic limit for clients without EDNS.
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
pub const MAX_LABELS: usize = 127;

/// Why a packet could not be read as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than a header: nothing to answer, drop it.
    TooShort,
    /// A response (QR set): never answered, so we cannot be a reflector.
    NotAQuery,
    /// Readable header, broken body: answer FORMERR.
    Malformed,
}

/// The EDNS OPT record of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub udp_payload: u16,
    pub version: u8,
}

/// A parsed query. Borrows the packet: the question is echoed from it.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub qtype: u16,
    pub qclass: u16,
    /// Question bytes (name, type, class), at offset 12 of the packet.
    pub question: &'a [u8],
    /// Start offset (within the packet) and length of each label of the name.
    pub labels: [(u16, u8); MAX_LABELS],
    pub label_count: usize,
    pub edns: Option<Edns>,
    /// Set when the body was not understood (FORMERR), the header was.
    pub question_count: u16,
}

impl<'a> Query<'a> {
    pub fn label(&self, i: usize) -> &'a [u8] {
        let (start, len) = self.labels[i];
        &self.packet[start as usize..start as usize + len as usize]
    }

    /// Label `i` counted from the end (0 = the last label before the root).
    pub fn label_from_end(&self, i: usize) -> &'a [u8] {
        self.label(self.label_count - 1 - i)
    }

    /// The packet offset where the name suffix starting at label `i` begins,
    /// usable as a compression pointer target.
    pub fn suffix_offset(&self, i: usize) -> u16 {
        self.labels[i].0 - 1
    }

    /// The largest response the client takes over UDP.
    pub fn max_udp_size(&self) -> usize {
        match self.edns {
            Some(edns) => edns
                .udp_payload
                .clamp(CLASSIC_UDP_PAYLOAD, EDNS_UDP_PAYLOAD) as usize,
            None => CLASSIC_UDP_PAYLOAD as usize,
        }
    }
}

fn read_u16(packet: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]))
}

/// Skips a (possibly compressed) name in a resource record; returns the
/// offset after it.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return packet.get(at + 1).map(|_| at + 2),
            l if l & 0xC0 != 0 => return None,
            l => at += 1 + l as usize,
        }
    }
}

/// Reads the header of any packet: enough to answer FORMERR or NOTIMP.
pub fn read_header(packet: &[u8]) -> Result<(u16, u8, bool), ParseError> {
    if packet.len() < HEADER_LEN {
        return Err(ParseError::TooShort);
    }
    if packet[2] & 0x80 != 0 {
        return Err(ParseError::NotAQuery);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let opcode = (packet[2] >> 3) & 0x0F;
    let rd = packet[2] & 0x01 != 0;
    Ok((id, opcode, rd))
}

/// Parses a standard query: exactly one question with an uncompressed name,
/// and an optional OPT record in the additional section.
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, ParseError> {
    let (id, opcode, recursion_desired) = read_header(packet)?;
    let question_count = read_u16(packet, 4).ok_or(ParseError::Malformed)?;
    let answer_count = read_u16(packet, 6).ok_or(ParseError::Malformed)?;
    let authority_count = read_u16(packet, 8).ok_or(ParseError::Malformed)?;
    let additional_count = read_u16(packet, 10).ok_or(ParseError::Malformed)?;
    let mut query = Query {
        packet,
        id,
        opcode,
        recursion_desired,
        checking_disabled: packet[3] & 0x10 != 0,
        qtype: 0,
        qclass: 0,
        question: &[],
        labels: [(0, 0); MAX_LABELS],
        label_count: 0,
        edns: None,
        question_count,
    };
    if question_count != 1 || answer_count != 0 || authority_count != 0 {
        return Err(ParseError::Malformed);
    }
    let mut at = HEADER_LEN;
    let mut name_len = 1;
    loop {
        let len = *packet.get(at).ok_or(ParseError::Malformed)?;
        if len == 0 {
            at += 1;
            break;
        }
        // Compression in a question is legal but never seen from real
        // stub resolvers; refusing it keeps the echoed question self-contained.
        if len & 0xC0 != 0 || len > 63 || query.label_count == MAX_LABELS {
            return Err(ParseError::Malformed);
        }
        name_len += 1 + len as usize;
        if name_len > 255 || at + 1 + len as usize > packet.len() {
            return Err(ParseError::Malformed);
        }
        query.labels[query.label_count] = ((at + 1) as u16, len);
        query.label_count += 1;
        at += 1 + len as usize;
    }
    query.qtype = read_u16(packet, at).ok_or(ParseError::Malformed)?;
    query.qclass = read_u16(packet, at + 2).ok_or(ParseError::Malformed)?;
    at += 4;
    query.question = &packet[HEADER_LEN..at];

    for _ in 0..additional_count {
        let after_name = skip_name(packet, at).ok_or(ParseError::Malformed)?;
        let rr_type = read_u16(packet, after_name).ok_or(ParseError::Malformed)?;
        let class = read_u16(packet, after_name + 2).ok_or(ParseError::Malformed)?;
        let ttl_high = *packet.get(after_name + 5).ok_or(ParseError::Malformed)?;
        let rdlen = read_u16(packet, after_name + 8).ok_or(ParseError::Malformed)? as usize;
        let end = after_name + 10 + rdlen;
        if end > packet.len() {
            return Err(ParseError::Malformed);
        }
        if rr_type == rtype::OPT {
            // RFC 6891: more than one OPT, or one not owned by the root, is FORMERR.
            if query.edns.is_some() || after_name != at + 1 {
                return Err(ParseError::Malformed);
            }
            query.edns = Some(Edns {
                udp_payload: class,
                version: ttl_high,
            });
        }
        at = end;
    }
    Ok(query)
}

/// Writes one response. Reuse it across queries: `start` clears it.
#[derive(Debug, Default)]
pub struct Response {
    pub buf: Vec<u8>,
    answers: u16,
    authorities: u16,
    additionals: u16,
}

/// Which section a record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// A name to write: a compression pointer, labels followed by a pointer, or
/// a full uncompressed name.
#[derive(Clone, Copy, Debug)]
pub enum NameRef<'a> {
    Pointer(u16),
    LabelThenPointer(&'a [u8], u16),
    TwoLabelsThenPointer(&'a [u8], &'a [u8], u16),
    /// Dotted text, written in full (e.g. PTR targets).
    Plain(&'a str),
}

impl Response {
    /// Starts a response to `query`: header, echoed question.
    pub fn start(&mut self, query: &Query<'_>, authoritative: bool) {
        self.start_bare(
            query.id,
            query.opcode,
            query.recursion_desired,
            query.checking_disabled,
        );
        if authoritative {
            self.buf[2] |= 0x04;
        }
        self.buf[5] = 1; // QDCOUNT
        self.buf.extend_from_slice(query.question);
    }

    /// A header-only response (FORMERR, NOTIMP): no question.
    pub fn start_bare(&mut self, id: u16, opcode: u8, rd: bool, cd: bool) {
        self.buf.clear();
        self.answers = 0;
        self.authorities = 0;
        self.additionals = 0;
        self.buf.extend_from_slice(&id.to_be_bytes());
        // QR=1, opcode, RD copied; RA=1 (we recurse through the upstream).
        self.buf.push(0x80 | (opcode << 3) | u8::from(rd));
        self.buf.push(0x80 | if cd { 0x10 } else { 0 });
        self.buf.extend_from_slice(&[0; 8]);
    }

    pub fn set_rcode(&mut self, code: u8) {
        self.buf[3] = (self.buf[3] & 0xF0) | (code & 0x0F);
    }

    pub fn rcode(&self) -> u8 {
        self.buf[3] & 0x0F
    }

    pub fn is_truncated(&self) -> bool {
        self.buf[2] & 0x02 != 0
    }

    pub fn set_truncated(&mut self) {
        self.buf[2] |= 0x02;
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn answer_count(&self) -> u16 {
        self.answers
    }

    /// The offset the next written byte lands at (for compression pointers).
    pub fn offset(&self) -> u16 {
        self.buf.len() as u16
    }

    pub fn write_name(&mut self, name: NameRef<'_>) {
        match name {
            NameRef::Pointer(at) => self.buf.extend_from_slice(&(0xC000 | at).to_be_bytes()),
            NameRef::LabelThenPointer(label, at) => {
                self.push_label(label);
                self.write_name(NameRef::Pointer(at));
            }
            NameRef::TwoLabelsThenPointer(first, second, at) => {
                self.push_label(first);
                self.push_label(second);
                self.write_name(NameRef::Pointer(at));
            }
            NameRef::Plain(text) => {
                for label in text
                    .trim_end_matches('.')
                    .split('.')
                    .filter(|l| !l.is_empty())
                {
                    self.push_label(label.as_bytes());
                }
                self.buf.push(0);
            }
        }
    }

    fn push_label(&mut self, label: &[u8]) {
        let len = label.len().min(63);
        self.buf.push(len as u8);
        self.buf.extend_from_slice(&label[..len]);
    }

    /// Writes a record header and returns where RDLENGTH sits, to patch.
    fn record_start(
        &mut self,
        section: Section,
        owner: NameRef<'_>,
        rr_type: u16,
        ttl: u32,
    ) -> usize {
        // Sections are laid out in order on the wire; writing an answer after
        // an additional record would silently mislabel both.
        debug_assert!(
            match section {
                Section::Answer => self.authorities == 0 && self.additionals == 0,
                Section::Authority => self.additionals == 0,
                Section::Additional => true,
            },
            "records written out of section order"
        );
        match section {
            Section::Answer => self.answers += 1,
            Section::Authority => self.authorities += 1,
            Section::Additional => self.additionals += 1,
        }
        self.write_name(owner);
        self.buf.extend_from_slice(&rr_type.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        at
    }

    fn record_end(&mut self, rdlength_at: usize) {
        let len = (self.buf.len() - rdlength_at - 2) as u16;
        self.buf[rdlength_at..rdlength_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    pub fn a(&mut self, section: Section, owner: NameRef<'_>, ttl: u32, ip: Ipv4Addr) {
        let at = self.record_start(section, owner, rtype::A, ttl);
        self.buf.extend_from_slice(&ip.octets());
        self.record_end(at);
    }

    pub fn aaaa(&mut self, section: Section, owner: NameRef<'_>, ttl: u32, ip: Ipv6Addr) {
        let at = self.record_start(section, owner, rtype::AAAA, ttl);
        self.buf.extend_from_slice(&ip.octets());
        self.record_end(at);
    }

    /// Writes an SRV record; returns the offset of its target name.
    #[allow(clippy::too_many_arguments)]
    pub fn srv(
        &mut self,
        owner: NameRef<'_>,
        ttl: u32,
        priority: u16,
        weight: u16,
        port: u16,
        target: NameRef<'_>,
    ) -> u16 {
        let at = self.record_start(Section::Answer, owner, rtype::SRV, ttl);
        self.buf.extend_from_slice(&priority.to_be_bytes());
        self.buf.extend_from_slice(&weight.to_be_bytes());
        self.buf.extend_from_slice(&port.to_be_bytes());
        let target_at = self.offset();
        self.write_name(target);
        self.record_end(at);
        target_at
    }

    pub fn ptr(&mut self, owner: NameRef<'_>, ttl: u32, target: NameRef<'_>) {
        let at = self.record_start(Section::Answer, owner, rtype::PTR, ttl);
        self.write_name(target);
        self.record_end(at);
    }

    pub fn txt(&mut self, owner: NameRef<'_>, ttl: u32, text: &[u8]) {
        let at = self.record_start(Section::Answer, owner, rtype::TXT, ttl);
        self.buf.push(text.len().min(255) as u8);
        self.buf.extend_from_slice(&text[..text.len().min(255)]);
        self.record_end(at);
    }

    /// RFC 8482's answer to ANY: one synthesized HINFO record.
    pub fn hinfo_rfc8482(&mut self, owner: NameRef<'_>, ttl: u32) {
        let at = self.record_start(Section::Answer, owner, rtype::HINFO, ttl);
        self.buf.push(7);
        self.buf.extend_from_slice(b"RFC8482");
        self.buf.push(0);
        self.record_end(at);
    }

    /// The zone's SOA. `zone` points at the zone name; TTL and negative-cache
    /// minimum are both the agent's TTL, so a negative answer lives as long
    /// as a positive one.
    pub fn soa(&mut self, section: Section, zone: u16, ttl: u32, serial: u32) {
        let at = self.record_start(section, NameRef::Pointer(zone), rtype::SOA, ttl);
        self.write_name(NameRef::TwoLabelsThenPointer(b"ns", b"dns", zone));
        self.write_name(NameRef::LabelThenPointer(b"hostmaster", zone));
        for value in [serial, 7200, 1800, 86400, ttl] {
            self.buf.extend_from_slice(&value.to_be_bytes());
        }
        self.record_end(at);
    }

    /// Appends our OPT record (when the query had one). `extended_rcode` is
    /// the upper 8 bits of a 12-bit RCODE (1 for BADVERS).
    pub fn opt(&mut self, extended_rcode: u8) {
        self.additionals += 1;
        self.buf.push(0); // root
        self.buf.extend_from_slice(&rtype::OPT.to_be_bytes());
        self.buf.extend_from_slice(&EDNS_UDP_PAYLOAD.to_be_bytes());
        self.buf.extend_from_slice(&[extended_rcode, 0, 0, 0]);
        self.buf.extend_from_slice(&[0, 0]);
    }

    /// Writes the section counts into the header. Call once, at the end.
    pub fn finish(&mut self) {
        self.buf[6..8].copy_from_slice(&self.answers.to_be_bytes());
        self.buf[8..10].copy_from_slice(&self.authorities.to_be_bytes());
        self.buf[10..12].copy_from_slice(&self.additionals.to_be_bytes());
    }

    /// Cuts the response back to header + question (+ OPT) with TC set: the
    /// client retries over TCP and gets everything. Never a silent partial
    /// answer.
    pub fn truncate_to_question(&mut self, query: &Query<'_>) {
        let rcode = self.rcode();
        let authoritative = self.buf[2] & 0x04 != 0;
        self.start(query, authoritative);
        self.set_rcode(rcode);
        self.set_truncated();
        if query.edns.is_some() {
            self.opt(0);
        }
        self.finish();
    }
}

/// Reads the name at `at` of a response (following pointers), as dotted
/// lowercase text. For tests and the forwarder's sanity checks.
pub fn read_name(packet: &[u8], mut at: usize) -> Option<String> {
    let mut out = String::new();
    let mut jumps = 0;
    loop {
        let len = *packet.get(at)?;
        if len == 0 {
            return Some(out);
        }
        if len & 0xC0 == 0xC0 {
            jumps += 1;
            if jumps > 16 {
                return None;
            }
            at = (((len & 0x3F) as usize) << 8) | *packet.get(at + 1)? as usize;
            continue;
        }
        let label = packet.get(at + 1..at + 1 + len as usize)?;
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        at += 1 + len as usize;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::Message;
    use hickory_proto::rr::{Name, RData, RecordType};

    /// A query as a stub resolver sends it, built by hickory-proto.
    pub fn query_packet(name: &str, record_type: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            record_type,
        ));
        if let Some(payload) = edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(payload);
            message.set_edns(e);
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn parses_what_a_stub_resolver_sends() {
        let packet = query_packet("Web.Shop.svc.cluster.local.", RecordType::SRV, Some(4096));
        let query = parse_query(&packet).unwrap();
        assert_eq!(query.id, 0x1234);
        assert_eq!(query.qtype, rtype::SRV);
        assert_eq!(query.label_count, 5);
        assert_eq!(query.label(0), b"Web");
        assert_eq!(query.label_from_end(0), b"local");
        assert_eq!(query.edns.unwrap().udp_payload, 4096);
        assert_eq!(query.max_udp_size(), 1232);
    }

    #[test]
    fn rejects_what_is_not_one_plain_question() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), ParseError::TooShort);
        let mut packet = query_packet("a.b.", RecordType::A, None);
        packet[2] |= 0x80;
        assert_eq!(parse_query(&packet).unwrap_err(), ParseError::NotAQuery);
        let mut packet = query_packet("a.b.", RecordType::A, None);
        packet[5] = 2; // two questions
        assert_eq!(parse_query(&packet).unwrap_err(), ParseError::Malformed);
        let packet = query_packet("a.b.", RecordType::A, None);
        assert_eq!(
            parse_query(&packet[..packet.len() - 1]).unwrap_err(),
            ParseError::Malformed
        );
        let mut packet = query_packet("a.b.", RecordType::A, None);
        packet[12] = 0xC0; // a pointer in the question
        assert_eq!(parse_query(&packet).unwrap_err(), ParseError::Malformed);
    }

    #[test]
    fn responses_decode_with_hickory_and_echo_the_question() {
        let packet = query_packet(
            "_Http._tcp.Web.shop.svc.cluster.local.",
            RecordType::SRV,
            Some(1232),
        );
        let query = parse_query(&packet).unwrap();
        let mut response = Response::default();
        response.start(&query, true);
        let service_suffix = query.suffix_offset(2);
        let zone = query.suffix_offset(query.label_count - 2);
        let target = response.srv(
            NameRef::Pointer(12),
            5,
            0,
            100,
            8080,
            NameRef::LabelThenPointer(b"web-0", service_suffix),
        );
        response.soa(Section::Authority, zone, 5, 42);
        response.a(
            Section::Additional,
            NameRef::Pointer(target),
            5,
            Ipv4Addr::new(10, 0, 0, 1),
        );
        response.opt(0);
        response.finish();

        let message = Message::from_vec(&response.buf).expect("hickory decodes it");
        assert!(message.metadata.authoritative);
        assert_eq!(message.metadata.id, 0x1234);
        assert_eq!(
            message.queries[0].name().to_ascii(),
            "_Http._tcp.Web.shop.svc.cluster.local."
        );
        let RData::SRV(srv) = &message.answers[0].data else {
            panic!("not SRV: {:?}", message.answers[0]);
        };
        assert_eq!(srv.port, 8080);
        assert_eq!(srv.weight, 100);
        assert_eq!(
            srv.target.to_ascii().to_lowercase(),
            "web-0.web.shop.svc.cluster.local."
        );
        assert_eq!(
            message.additionals[0].name.to_ascii().to_lowercase(),
            "web-0.web.shop.svc.cluster.local."
        );
        let RData::SOA(soa) = &message.authorities[0].data else {
            panic!("not SOA");
        };
        assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
        assert_eq!(soa.minimum, 5);
        assert_eq!(message.edns.as_ref().unwrap().max_payload(), 1232);
    }

    #[test]
    fn truncation_keeps_the_question_and_sets_tc() {
        let packet = query_packet("web.shop.svc.cluster.local.", RecordType::A, None);
        let query = parse_query(&packet).unwrap();
        let mut response = Response::default();
        response.start(&query, true);
        for i in 0..100 {
            response.a(
                Section::Answer,
                NameRef::Pointer(12),
                5,
                Ipv4Addr::new(10, 0, 0, i),
            );
        }
        response.finish();
        assert!(response.len() > 512);
        response.truncate_to_question(&query);
        let message = Message::from_vec(&response.buf).unwrap();
        assert!(message.metadata.truncation);
        assert!(message.answers.is_empty());
        assert_eq!(message.queries.len(), 1);
    }
}
