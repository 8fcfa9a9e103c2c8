//! How an endpoint is named in DNS: its hostname, else its dashed address
//! (`10-1-2-3`, `fd00--1`), the first label of `<host>.<svc>.<ns>.svc.<zone>`.
//!
//! Owns: that label, written into a stack buffer, so naming an endpoint
//! never allocates. May not touch: responses (the writers place the label).

use std::net::IpAddr;

use crate::index::Endpoint;

/// Room for the longest dashed address (IPv6: 39 characters).
pub(super) type LabelBuffer = [u8; 48];

/// `10.0.0.1` → `10-0-0-1`, `fd00::1` → `fd00--1`, written into `buffer`.
fn dashed_ip(ip: IpAddr, buffer: &mut LabelBuffer) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    // Cannot fail: the buffer holds any address.
    let _ = write!(cursor, "{ip}");
    let len = cursor.position() as usize;
    let label = &mut buffer[..len];
    for byte in label.iter_mut() {
        if matches!(*byte, b'.' | b':') {
            *byte = b'-';
        }
    }
    label
}

/// An endpoint's first label in DNS names: its hostname, else its dashed
/// address, as CoreDNS names them. On the stack: SRV answers write one per
/// target and the query path allocates nothing.
pub(super) fn host_label<'a>(endpoint: &'a Endpoint, buffer: &'a mut LabelBuffer) -> &'a [u8] {
    match endpoint.hostname() {
        Some(hostname) => hostname.as_bytes(),
        None => dashed_ip(endpoint.ip(), buffer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_dashed_and_the_longest_fits() {
        let mut buffer: LabelBuffer = [0; 48];
        let dashed = |text: &str, buffer: &mut LabelBuffer| {
            String::from_utf8(dashed_ip(text.parse().unwrap(), buffer).to_vec()).unwrap()
        };
        assert_eq!(dashed("10.0.0.1", &mut buffer), "10-0-0-1");
        assert_eq!(dashed("fd00::1", &mut buffer), "fd00--1");
        let longest = "1111:2222:3333:4444:5555:6666:7777:8888";
        assert_eq!(
            dashed(longest, &mut buffer),
            "1111-2222-3333-4444-5555-6666-7777-8888"
        );
    }
}
