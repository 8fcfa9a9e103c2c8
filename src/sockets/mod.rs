//! Sockets on this node's ports: how the agent binds its own, and how it
//! sees other processes' (the agent it replaces, the one replacing it).
//!
//! - [`listen`]: the one way the agent binds a DNS or HTTP socket
//!   (SO_REUSEPORT, IPv6 sockets IPv6-only).
//! - [`proc_net`]: the sockets of this network namespace, read from
//!   `/proc/net/{tcp,udp}[6]`.
//!
//! Owns the socket options and the `/proc/net` format, nothing else: what a
//! socket found there means (a predecessor, a successor, a last agent out)
//! is decided by [`crate::handover`] and [`crate::netif`]. Depends on no
//! other module of the crate.

pub(crate) mod listen;
pub(crate) mod proc_net;

/// A socket's transport, which picks its socket type and its `/proc/net`
/// tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Udp,
}
