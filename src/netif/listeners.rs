//! Whether another process still listens on the node-local address (the
//! next agent of a rolling update): then the address stays when this agent
//! stops.
//!
//! Reads sockets only through [`crate::sockets::proc_net`].

use std::net::IpAddr;

use crate::sockets::Transport;
use crate::sockets::proc_net::{self, ProcSocket, State};

/// The socket inodes of other processes listening on `ip` (TCP in LISTEN,
/// unconnected UDP), from `/proc/net` of this network namespace.
pub(crate) fn other_listeners(ip: IpAddr) -> Vec<u64> {
    [Transport::Tcp, Transport::Udp]
        .into_iter()
        .flat_map(proc_net::others)
        .filter(|socket| listens_on(socket, ip))
        .map(|socket| socket.inode)
        .collect()
}

fn listens_on(socket: &ProcSocket, ip: IpAddr) -> bool {
    socket.state == State::Listening && socket.local.ip() == ip
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::sockets::proc_net::encode::{hex4, hex6};

    /// Inodes of the sockets in one table bound to `ip` and listening.
    fn listeners_in(table: &str, ip: IpAddr, tcp: bool) -> Vec<u64> {
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        proc_net::sockets_in(table, transport)
            .filter(|socket| listens_on(socket, ip))
            .map(|socket| socket.inode)
            .collect()
    }

    #[test]
    fn proc_net_tables_are_parsed_in_host_byte_order() {
        let ip: IpAddr = "169.254.20.25".parse().unwrap();
        let v4 = hex4(Ipv4Addr::new(169, 254, 20, 25));
        let other = hex4(Ipv4Addr::new(127, 0, 0, 1));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {v4}:1F75 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0\n\
             1: {v4}:C350 {other}:1F75 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 100 0 0 10 0\n\
             2: {other}:1F75 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 100 0 0 10 0\n"
        );
        assert_eq!(listeners_in(&table, ip, true), [1001]);
        assert!(listeners_in(&table, ip, false).is_empty());

        let mapped = hex6(Ipv4Addr::new(169, 254, 20, 25).to_ipv6_mapped());
        let table6 = format!(
            "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {mapped}:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2001 2 0\n"
        );
        assert_eq!(listeners_in(&table6, ip, false), [2001]);

        let ula: Ipv6Addr = "fd00::53".parse().unwrap();
        let table6 = format!(
            "header\n 0: {}:0035 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 3001\n",
            hex6(ula)
        );
        assert_eq!(listeners_in(&table6, IpAddr::V6(ula), true), [3001]);
    }

    #[test]
    fn this_process_sockets_are_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = listener.local_addr().unwrap().port();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let needle = format!("{}:{port:04X}", hex4(Ipv4Addr::LOCALHOST));
        assert!(table.contains(&needle), "{needle} not in /proc/net/tcp");
        let mine: Vec<u64> = listeners_in(&table, ip, true)
            .into_iter()
            .filter(|inode| proc_net::own_socket_inodes().contains(inode))
            .collect();
        assert!(!mine.is_empty(), "the test's own listener was not found");
        assert!(
            other_listeners(ip)
                .iter()
                .all(|inode| !mine.contains(inode)),
            "own sockets must not count as another agent's"
        );
    }
}
