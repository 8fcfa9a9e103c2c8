//! The sockets of this network namespace, as `/proc/net/{tcp,udp}[6]`
//! list them, and which of them are this process's own.
//!
//! Owns the table format (whitespace-separated columns; addresses as 32-bit
//! words in host byte order; IPv4 sockets on an IPv6 wildcard listed as
//! v4-mapped) and nothing else: callers decide which sockets matter.
//! Outside Linux there are no such files, and no socket is found.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Transport;

/// A socket's state, as far as sharing a port goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// TCP in LISTEN, or UDP unconnected: the kernel hands it new
    /// connections or datagrams from anyone.
    Listening,
    /// Connected to one peer (for UDP: `connect()`ed, which takes it out of
    /// the kernel's SO_REUSEPORT selection).
    Connected,
    /// Anything else: a TCP socket bound but not listening, or closing.
    Other,
}

/// One line of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcSocket {
    /// A v4-mapped address is given as the IPv4 address it carries.
    pub(crate) local: SocketAddr,
    pub(crate) state: State,
    pub(crate) inode: u64,
}

/// The sockets in one table of `transport` (the header line skipped; lines
/// that do not parse ignored).
pub(crate) fn sockets_in(table: &str, transport: Transport) -> impl Iterator<Item = ProcSocket> {
    table.lines().skip(1).filter_map(move |line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        let (ip, port) = local.split_once(':')?;
        let ip = match parse_proc_address(ip)? {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        // TCP_LISTEN, TCP_CLOSE (an unconnected UDP socket) and
        // TCP_ESTABLISHED, from include/net/tcp_states.h.
        let state = match (transport, *state) {
            (Transport::Tcp, "0A") | (Transport::Udp, "07") => State::Listening,
            (_, "01") => State::Connected,
            _ => State::Other,
        };
        Some(ProcSocket {
            local: SocketAddr::new(ip, u16::from_str_radix(port, 16).ok()?),
            state,
            inode: inode.parse().ok()?,
        })
    })
}

/// The sockets of `transport` (IPv4 and IPv6 tables) that belong to other
/// processes.
pub(crate) fn others(transport: Transport) -> Vec<ProcSocket> {
    let ours = own_socket_inodes();
    let tables = match transport {
        Transport::Tcp => ["/proc/net/tcp", "/proc/net/tcp6"],
        Transport::Udp => ["/proc/net/udp", "/proc/net/udp6"],
    };
    tables
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|table| {
            sockets_in(&table, transport)
                .filter(|socket| !ours.contains(&socket.inode))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The inodes of this process's open sockets, from `/proc/self/fd`.
pub(crate) fn own_socket_inodes() -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// `/proc/net` prints addresses as 32-bit words in host byte order.
fn parse_proc_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Addresses written as the tables write them, for tests of their readers.
#[cfg(test)]
pub(crate) mod encode {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub(crate) fn hex4(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    pub(crate) fn hex6(ip: Ipv6Addr) -> String {
        ip.octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{hex4, hex6};
    use super::*;

    #[test]
    fn states_are_read_per_transport_and_mapped_addresses_as_ipv4() {
        let v4 = hex4(Ipv4Addr::new(169, 254, 20, 25));
        let mapped = hex6(Ipv4Addr::new(169, 254, 20, 25).to_ipv6_mapped());
        let ula = hex6("fd00::53".parse().unwrap());
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {v4}:0035 00000000:0000 0A 0:0 0:0 0 0 0 11\n\
             1: {mapped}:0035 00000000000000000000000000000000:0000 07 0:0 0:0 0 0 0 12\n\
             2: {ula}:1F75 00000000000000000000000000000000:0000 01 0:0 0:0 0 0 0 13\n\
             3: {v4}:zz 00000000:0000 0A 0:0 0:0 0 0 0 14\n\
             4: truncated\n"
        );
        let states = |transport| {
            sockets_in(&table, transport)
                .map(|s| (s.local.to_string(), s.state, s.inode))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            states(Transport::Tcp),
            [
                ("169.254.20.25:53".to_string(), State::Listening, 11),
                // A TCP socket in CLOSE is bound, not listening.
                ("169.254.20.25:53".to_string(), State::Other, 12),
                ("[fd00::53]:8053".to_string(), State::Connected, 13),
            ]
        );
        assert_eq!(
            states(Transport::Udp)[..2]
                .iter()
                .map(|s| s.1)
                .collect::<Vec<_>>(),
            [State::Other, State::Listening]
        );
    }
}
