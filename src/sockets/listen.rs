//! The agent's listening sockets, DNS (UDP and TCP) and HTTP alike.
//!
//! Every one is bound with SO_REUSEPORT, so that during a rolling update
//! the new agent binds the ports the old one still serves, and the kernel
//! spreads traffic over all sockets of the port group. An IPv6 address is
//! bound IPv6-only (IPV6_V6ONLY), whatever `net.ipv6.bindv6only` says: `[::]`
//! then takes IPv6 alone, and the IPv4 wildcard on the same port stays free
//! for another socket, as [`crate::handover`] assumes when it counts the
//! sockets that serve an address (a wildcard serves its own family only).
//!
//! May not touch: what the sockets serve, or when they join the port group
//! (`listen()` is the caller's).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::Transport;

/// A non-blocking socket bound to `addr` with SO_REUSEADDR and
/// SO_REUSEPORT, IPv6-only for an IPv6 address, not yet listening: binding
/// fails fast on a port another user holds, and `listen()` (TCP) joins the
/// port group.
pub(crate) fn reuseport_socket(addr: SocketAddr, transport: Transport) -> std::io::Result<Socket> {
    let (kind, protocol) = match transport {
        Transport::Tcp => (Type::STREAM, Protocol::TCP),
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// A socket on the IPv4 wildcard and a free port, without SO_REUSEPORT
    /// or SO_REUSEADDR: nothing else can bind that port for IPv4.
    fn plain_ipv4_wildcard(transport: Transport) -> (Socket, u16) {
        let kind = match transport {
            Transport::Tcp => Type::STREAM,
            Transport::Udp => Type::DGRAM,
        };
        let socket = Socket::new(Domain::IPV4, kind, None).unwrap();
        socket
            .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())
            .unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        (socket, port)
    }

    #[test]
    fn the_ipv6_wildcard_leaves_the_ipv4_wildcard_to_others() {
        for transport in [Transport::Tcp, Transport::Udp] {
            let (ipv4_holder, port) = plain_ipv4_wildcard(transport);
            // A dual-stack `[::]` would take IPv4 too, and fail here with
            // EADDRINUSE.
            let wildcard = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
            let first = reuseport_socket(wildcard, transport).unwrap_or_else(|e| {
                panic!("{transport:?} [::]:{port} beside a plain 0.0.0.0:{port}: {e}")
            });
            // The next agent of a rolling update binds the same address.
            let second = reuseport_socket(wildcard, transport)
                .unwrap_or_else(|e| panic!("{transport:?} [::]:{port} twice: {e}"));
            // An IPv4 address, in an IPv6 socket or not, is refused.
            let mapped = SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 0));
            assert!(
                reuseport_socket(mapped, transport).is_err(),
                "{transport:?}"
            );
            // Tokio's reactor needs it.
            assert!(first.nonblocking().unwrap(), "{transport:?}");
            drop((first, second, ipv4_holder));
        }
    }
}
