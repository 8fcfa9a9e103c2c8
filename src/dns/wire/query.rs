//! Reading a query: the header, exactly one question with an uncompressed
//! name, and the EDNS OPT record, borrowed from the packet.
//!
//! Owns: what counts as a query the agent answers (the rest is FORMERR, or
//! dropped when it is no query at all). May not touch: responses.

use super::{
    CLASSIC_UDP_PAYLOAD, EDNS_UDP_PAYLOAD, MAX_LABEL_LEN, MAX_LABELS, MAX_NAME_LEN, rtype,
};

const HEADER_LEN: usize = 12;

/// Why a packet could not be read as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Shorter than a header: nothing to answer, drop it.
    TooShort,
    /// A response (QR set): never answered, so we cannot be a reflector.
    NotAQuery,
    /// Readable header, broken body: answer FORMERR.
    Malformed,
}

/// The EDNS OPT record of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    pub(crate) udp_payload: u16,
    pub(crate) version: u8,
    /// The DO bit (RFC 3225): the client wants DNSSEC records. Part of
    /// the cache key, as the answer differs.
    pub(crate) dnssec_ok: bool,
}

/// A parsed query. Borrows the packet: the question is echoed from it.
#[derive(Debug, Clone)]
pub(crate) struct Query<'a> {
    pub(crate) packet: &'a [u8],
    pub(crate) id: u16,
    pub(crate) opcode: u8,
    pub(crate) recursion_desired: bool,
    pub(crate) checking_disabled: bool,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
    /// Question bytes (name, type, class), at offset 12 of the packet.
    pub(crate) question: &'a [u8],
    /// Start offset (within the packet) and length of each label of the name.
    pub(crate) labels: [(u16, u8); MAX_LABELS],
    pub(crate) label_count: usize,
    pub(crate) edns: Option<Edns>,
}

impl<'a> Query<'a> {
    pub(crate) fn label(&self, i: usize) -> &'a [u8] {
        let (start, len) = self.labels[i];
        &self.packet[start as usize..start as usize + len as usize]
    }

    /// Label `i` counted from the end (0 = the last label before the root).
    pub(crate) fn label_from_end(&self, i: usize) -> &'a [u8] {
        self.label(self.label_count - 1 - i)
    }

    /// The packet offset where the name suffix starting at label `i` begins,
    /// usable as a compression pointer target.
    pub(crate) fn suffix_offset(&self, i: usize) -> u16 {
        self.labels[i].0 - 1
    }

    /// The largest response the client takes over UDP.
    pub(crate) fn max_udp_size(&self) -> usize {
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
pub(crate) fn read_header(packet: &[u8]) -> Result<(u16, u8, bool), ParseError> {
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
pub(crate) fn parse_query(packet: &[u8]) -> Result<Query<'_>, ParseError> {
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
        if len & 0xC0 != 0 || len as usize > MAX_LABEL_LEN || query.label_count == MAX_LABELS {
            return Err(ParseError::Malformed);
        }
        name_len += 1 + len as usize;
        if name_len > MAX_NAME_LEN || at + 1 + len as usize > packet.len() {
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
        let flags_high = *packet.get(after_name + 6).ok_or(ParseError::Malformed)?;
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
                dnssec_ok: flags_high & 0x80 != 0,
            });
        }
        at = end;
    }
    Ok(query)
}
