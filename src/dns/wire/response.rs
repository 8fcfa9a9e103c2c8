//! Writing a response straight into a reusable buffer: header, the echoed
//! question, records whose owner names are compression pointers.
//!
//! Owns: the byte layout of records and names, and the section counts.
//! May not touch: what goes into a response (the answer writers decide) or
//! how it is sent. A name that cannot be written is refused whole, with the
//! response left as it was, never shortened into another name.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{CLASS_IN, EDNS_UDP_PAYLOAD, MAX_LABEL_LEN, MAX_NAME_LEN, Query, rtype};

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
pub(crate) enum Section {
    Answer,
    Authority,
    Additional,
}

/// Why a name cannot be written. Writing never shortens a label to make it
/// fit: that would be another name, an answer nobody asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    #[error("a DNS label has 1 to {MAX_LABEL_LEN} bytes, this one has {0}")]
    BadLabelLength(usize),
    #[error("a DNS name has at most {MAX_NAME_LEN} bytes, this one has {0}")]
    TooLong(usize),
}

/// A name in record data: a compression pointer, a label followed by a
/// pointer, or a full uncompressed name. Owner names are always pointers
/// (into the echoed question or an earlier record), so only record data
/// can hold a name that does not fit.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NameRef<'a> {
    Pointer(u16),
    LabelThenPointer(&'a [u8], u16),
    /// Dotted parts written in full one after the other, then the root,
    /// e.g. `[host, service, namespace, b"svc", zone]` for a PTR target:
    /// the name is never assembled in memory.
    Parts(&'a [&'a [u8]]),
}

impl Response {
    /// Starts a response to `query`: header, echoed question.
    pub(crate) fn start(&mut self, query: &Query<'_>, authoritative: bool) {
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
    pub(crate) fn start_bare(&mut self, id: u16, opcode: u8, rd: bool, cd: bool) {
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

    pub(crate) fn set_rcode(&mut self, code: u8) {
        self.buf[3] = (self.buf[3] & 0xF0) | (code & 0x0F);
    }

    pub(crate) fn rcode(&self) -> u8 {
        self.buf[3] & 0x0F
    }

    pub fn is_truncated(&self) -> bool {
        self.buf[2] & 0x02 != 0
    }

    pub(crate) fn set_truncated(&mut self) {
        self.buf[2] |= 0x02;
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The offset the next written byte lands at (for compression pointers).
    fn offset(&self) -> u16 {
        self.buf.len() as u16
    }

    fn write_name(&mut self, name: NameRef<'_>) -> Result<(), NameError> {
        match name {
            NameRef::Pointer(at) => self.pointer(at),
            NameRef::LabelThenPointer(label, at) => {
                self.push_label(label)?;
                self.pointer(at);
            }
            NameRef::Parts(parts) => {
                let labels = parts
                    .iter()
                    .flat_map(|part| part.split(|&byte| byte == b'.'))
                    .filter(|label| !label.is_empty());
                let mut name_len = 1;
                for label in labels {
                    name_len += 1 + label.len();
                    if name_len > MAX_NAME_LEN {
                        return Err(NameError::TooLong(name_len));
                    }
                    self.push_label(label)?;
                }
                self.buf.push(0);
            }
        }
        Ok(())
    }

    fn pointer(&mut self, at: u16) {
        self.buf.extend_from_slice(&(0xC000 | at).to_be_bytes());
    }

    /// Refuses (and writes nothing for) a label that is empty, which would
    /// read as the end of the name, or longer than [`MAX_LABEL_LEN`].
    fn push_label(&mut self, label: &[u8]) -> Result<(), NameError> {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(NameError::BadLabelLength(label.len()));
        }
        self.buf.push(label.len() as u8);
        self.buf.extend_from_slice(label);
        Ok(())
    }

    /// A label known when compiling, checked then: writing it cannot fail.
    fn push_fixed_label<const N: usize>(&mut self, label: &[u8; N]) {
        const { assert!(N > 0 && N <= MAX_LABEL_LEN) };
        self.buf.push(N as u8);
        self.buf.extend_from_slice(label);
    }

    /// Writes a record header and returns where RDLENGTH sits, to patch.
    fn record_start(&mut self, section: Section, owner: u16, rr_type: u16, ttl: u32) -> usize {
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
        self.pointer(owner);
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

    /// A record whose data is `fixed` bytes, then `name` (SRV, PTR).
    /// Returns where the name starts. When the name cannot be written the
    /// record is taken back whole: the response is as it was before.
    fn record_ending_in_name(
        &mut self,
        section: Section,
        owner: u16,
        rr_type: u16,
        ttl: u32,
        fixed: &[u8],
        name: NameRef<'_>,
    ) -> Result<u16, NameError> {
        let before = (
            self.buf.len(),
            self.answers,
            self.authorities,
            self.additionals,
        );
        let rdlength_at = self.record_start(section, owner, rr_type, ttl);
        self.buf.extend_from_slice(fixed);
        let name_at = self.offset();
        if let Err(error) = self.write_name(name) {
            let len;
            (len, self.answers, self.authorities, self.additionals) = before;
            self.buf.truncate(len);
            return Err(error);
        }
        self.record_end(rdlength_at);
        Ok(name_at)
    }

    pub(crate) fn a(&mut self, section: Section, owner: u16, ttl: u32, ip: Ipv4Addr) {
        let at = self.record_start(section, owner, rtype::A, ttl);
        self.buf.extend_from_slice(&ip.octets());
        self.record_end(at);
    }

    pub(crate) fn aaaa(&mut self, section: Section, owner: u16, ttl: u32, ip: Ipv6Addr) {
        let at = self.record_start(section, owner, rtype::AAAA, ttl);
        self.buf.extend_from_slice(&ip.octets());
        self.record_end(at);
    }

    /// Writes an SRV answer; returns the offset of its target name, or
    /// writes nothing when the target cannot be written.
    pub(crate) fn srv(
        &mut self,
        owner: u16,
        ttl: u32,
        priority: u16,
        weight: u16,
        port: u16,
        target: NameRef<'_>,
    ) -> Result<u16, NameError> {
        let mut fixed = [0; 6];
        fixed[..2].copy_from_slice(&priority.to_be_bytes());
        fixed[2..4].copy_from_slice(&weight.to_be_bytes());
        fixed[4..].copy_from_slice(&port.to_be_bytes());
        self.record_ending_in_name(Section::Answer, owner, rtype::SRV, ttl, &fixed, target)
    }

    /// Writes a PTR answer, or nothing when the target cannot be written.
    pub(crate) fn ptr(
        &mut self,
        owner: u16,
        ttl: u32,
        target: NameRef<'_>,
    ) -> Result<(), NameError> {
        self.record_ending_in_name(Section::Answer, owner, rtype::PTR, ttl, &[], target)
            .map(|_| ())
    }

    /// Writes a CNAME answer; returns the offset of its target name, or
    /// writes nothing when the target cannot be written.
    pub(crate) fn cname(
        &mut self,
        owner: u16,
        ttl: u32,
        target: NameRef<'_>,
    ) -> Result<u16, NameError> {
        self.record_ending_in_name(Section::Answer, owner, rtype::CNAME, ttl, &[], target)
    }

    pub(crate) fn txt(&mut self, owner: u16, ttl: u32, text: &[u8]) {
        let at = self.record_start(Section::Answer, owner, rtype::TXT, ttl);
        self.buf.push(text.len().min(255) as u8);
        self.buf.extend_from_slice(&text[..text.len().min(255)]);
        self.record_end(at);
    }

    /// RFC 8482's answer to ANY: one synthesized HINFO record.
    pub(crate) fn hinfo_rfc8482(&mut self, owner: u16, ttl: u32) {
        let at = self.record_start(Section::Answer, owner, rtype::HINFO, ttl);
        self.buf.push(7);
        self.buf.extend_from_slice(b"RFC8482");
        self.buf.push(0);
        self.record_end(at);
    }

    /// The zone's SOA. `zone` points at the zone name; TTL and negative-cache
    /// minimum are both the agent's TTL, so a negative answer lives as long
    /// as a positive one.
    pub(crate) fn soa(&mut self, section: Section, zone: u16, ttl: u32, serial: u32) {
        let at = self.record_start(section, zone, rtype::SOA, ttl);
        self.push_fixed_label(b"ns");
        self.push_fixed_label(b"dns");
        self.pointer(zone);
        self.push_fixed_label(b"hostmaster");
        self.pointer(zone);
        for value in [serial, 7200, 1800, 86400, ttl] {
            self.buf.extend_from_slice(&value.to_be_bytes());
        }
        self.record_end(at);
    }

    /// Appends our OPT record (when the query had one). `extended_rcode` is
    /// the upper 8 bits of a 12-bit RCODE (1 for BADVERS).
    pub(crate) fn opt(&mut self, extended_rcode: u8) {
        self.additionals += 1;
        self.buf.push(0); // root
        self.buf.extend_from_slice(&rtype::OPT.to_be_bytes());
        self.buf.extend_from_slice(&EDNS_UDP_PAYLOAD.to_be_bytes());
        self.buf.extend_from_slice(&[extended_rcode, 0, 0, 0]);
        self.buf.extend_from_slice(&[0, 0]);
    }

    /// Writes the section counts into the header. Call once, at the end.
    pub(crate) fn finish(&mut self) {
        self.buf[6..8].copy_from_slice(&self.answers.to_be_bytes());
        self.buf[8..10].copy_from_slice(&self.authorities.to_be_bytes());
        self.buf[10..12].copy_from_slice(&self.additionals.to_be_bytes());
    }

    /// Cuts the response back to header + question (+ OPT) with TC set: the
    /// client retries over TCP and gets everything. Never a silent partial
    /// answer.
    pub(crate) fn truncate_to_question(&mut self, query: &Query<'_>) {
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

#[cfg(test)]
mod tests {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_packet;

    #[test]
    fn a_label_that_does_not_fit_is_refused_never_shortened() {
        let packet = query_packet("1.0.0.10.in-addr.arpa.", RecordType::PTR, None);
        let query = parse_query(&packet).unwrap();
        let mut response = Response::default();
        response.start(&query, true);
        response
            .ptr(12, 5, NameRef::Parts(&[b"web-0.web.ns.svc.cluster.local"]))
            .unwrap();
        let fits = response.buf.clone();

        let long = [b'a'; MAX_LABEL_LEN + 1];
        // Five labels of 60: every label fits, the name does not.
        let too_long = [[b'a'; 60].as_slice(); 5].join(&b'.');
        let refusals: [(NameRef<'_>, NameError); 4] = [
            (
                NameRef::LabelThenPointer(&long, 12),
                NameError::BadLabelLength(64),
            ),
            (
                NameRef::LabelThenPointer(b"", 12),
                NameError::BadLabelLength(0),
            ),
            (
                NameRef::Parts(&[b"web", &long, b"svc"]),
                NameError::BadLabelLength(64),
            ),
            (NameRef::Parts(&[&too_long]), NameError::TooLong(306)),
        ];
        for (target, error) in refusals {
            assert_eq!(response.ptr(12, 5, target), Err(error));
            assert_eq!(response.srv(12, 5, 0, 1, 80, target), Err(error));
            // Nothing of the refused record stays behind.
            assert_eq!(response.buf, fits);
        }
        response.a(Section::Additional, 12, 5, Ipv4Addr::new(10, 0, 0, 1));
        response.finish();
        let message = Message::from_vec(&response.buf).expect("hickory decodes it");
        assert_eq!(message.answers.len(), 1);
        assert_eq!(
            message.answers[0].data.to_string(),
            "web-0.web.ns.svc.cluster.local."
        );
        assert_eq!(message.additionals.len(), 1);
        assert!(
            NameError::BadLabelLength(64)
                .to_string()
                .contains("1 to 63 bytes, this one has 64")
        );
    }
}
