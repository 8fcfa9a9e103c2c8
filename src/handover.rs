//! Zero-downtime restarts: two agents sharing the DNS and HTTP ports
//! (SO_REUSEPORT) during a rolling update.
//!
//! - A new agent that finds another process already serving its ports
//!   (the agent it replaces) joins them only once it can answer: when its
//!   index has synced, or was loaded from a snapshot. Until then the old
//!   agent answers alone — an unsynced agent in the port group would
//!   answer SERVFAIL/503 to the share of clients the kernel sends it. If
//!   the old agent goes away first, the new one joins at once. While it
//!   waits, it holds a *marker*: a UDP socket bound to the DNS address and
//!   connected to [`detach_peer`], which the kernel never picks for a query
//!   but which other agents see in `/proc/net/udp`.
//! - An old agent told to stop (SIGTERM) turns unready ([`Lifecycle`]); if a
//!   successor's marker is there, it keeps answering until the successor
//!   has joined (bounded by `--handover-wait`: a rolling update may mark the
//!   new Pod Ready, by the old agent's answer to the shared port, before the
//!   new agent has synced). Then it stops taking new work while it finishes
//!   what it holds (lame duck):
//!   each UDP socket is `connect()`ed to an address that never sends, which
//!   takes it out of the kernel's SO_REUSEPORT selection (Linux skips
//!   connected sockets) without dropping the datagrams already queued on
//!   it; those are answered, and the socket closes once it stays empty.
//!   TCP listeners hand their queued connections to the server and close.
//!
//! Sockets of other processes are found in `/proc/net/{tcp,udp}[6]` of
//! this network namespace ([`crate::sockets::proc_net`]; none found
//! elsewhere than Linux).
//!
//! Owns when the agent joins and leaves the port group; may not touch how
//! the sockets are made ([`crate::sockets`]) or what they serve (the front
//! ends).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sockets::Transport;
use crate::sockets::proc_net::{self, State};

/// The agent's lifecycle as its front ends see it.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    /// Shutting down: `/readyz` answers 503 so probes and load balancers
    /// move away, while requests are still answered.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Sockets of other processes that serve `addr` over `transport`: TCP
/// sockets listening on it, unconnected UDP sockets bound to it (a lame-duck
/// agent's connected sockets do not count). A socket bound to the wildcard
/// address of the same family serves it too.
pub(crate) fn others_serving(addr: SocketAddr, transport: Transport) -> usize {
    proc_net::others(transport)
        .iter()
        .filter(|socket| socket.state == State::Listening && serves(socket.local, addr))
        .count()
}

/// Sockets of other processes bound to `addr` over UDP and connected (a
/// waiting successor's marker, or a lame-duck agent's sockets).
pub(crate) fn others_waiting(addr: SocketAddr) -> usize {
    proc_net::others(Transport::Udp)
        .iter()
        .filter(|socket| socket.state == State::Connected && serves(socket.local, addr))
        .count()
}

/// Whether a socket bound to `local` takes traffic for `addr`: the same
/// port, and the same address or the wildcard of its family (the agent's
/// IPv6 sockets are IPv6-only, see [`crate::sockets::listen`]).
fn serves(local: SocketAddr, addr: SocketAddr) -> bool {
    let ip = local.ip();
    let same_family = ip.is_ipv4() == addr.is_ipv4();
    local.port() == addr.port() && (ip == addr.ip() || (ip.is_unspecified() && same_family))
}

/// Where a lame-duck UDP socket bound to `local` is connected so that it
/// leaves the port group: the discard port of its own address (or of
/// loopback for a wildcard bind), from which nobody ever sends.
pub(crate) fn detach_peer(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, 9)
}

/// Accepts every connection already queued on `listener` (non-blocking
/// accept calls, not the reactor's possibly older view), hands each to
/// `take`, and closes the listener, so that queued clients get an answer
/// and new ones go to the other sockets sharing the port. Returns how many
/// were queued.
pub(crate) fn drain_accept_queue(
    listener: tokio::net::TcpListener,
    mut take: impl FnMut(tokio::net::TcpStream),
) -> usize {
    let Ok(listener) = listener.into_std() else {
        return 0;
    };
    let mut drained = 0;
    while let Ok((stream, _)) = listener.accept() {
        // Accepted sockets do not inherit O_NONBLOCK.
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
            take(stream);
            drained += 1;
        }
    }
    drained
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inodes of the sockets in one UDP table, in `state`, serving `addr`.
    fn sockets_serving(table: &str, addr: SocketAddr, state: State) -> Vec<u64> {
        proc_net::sockets_in(table, Transport::Udp)
            .filter(|socket| socket.state == state && serves(socket.local, addr))
            .map(|socket| socket.inode)
            .collect()
    }

    #[tokio::test]
    async fn other_sockets_on_a_port_are_found_and_detached_ones_are_not() {
        // This process's own sockets never count...
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = a.local_addr().unwrap();
        assert_eq!(others_serving(addr, Transport::Udp), 0);
        // ...and a table line of another process does, unless connected.
        let hex = format!("{:08X}", u32::from_ne_bytes([127, 0, 0, 1]));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             1: {hex}:{port:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 4242 2\n\
             2: {hex}:{port:04X} 0100007F:0009 01 00000000:00000000 00:00000000 00000000 0 0 4343 2\n\
             3: 00000000:{port:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 4444 2\n\
             4: {hex}:{other:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 4545 2\n",
            port = addr.port(),
            other = addr.port().wrapping_add(1),
        );
        assert_eq!(
            sockets_serving(&table, addr, State::Listening),
            [4242, 4444]
        );
        assert_eq!(sockets_serving(&table, addr, State::Connected), [4343]);
        assert_eq!(
            detach_peer("0.0.0.0:53".parse().unwrap()),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            detach_peer("169.254.20.25:53".parse().unwrap()),
            "169.254.20.25:9".parse().unwrap()
        );
    }
}
