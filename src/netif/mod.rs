//! The agent's own node-local address (`--link-local-ip`), managed over
//! rtnetlink: no `ip` binary, no iptables rules.
//!
//! In DaemonSet mode every node's agent listens on the same well-known
//! address (169.254.20.25 by default), so apps on any node reach their local
//! agent at one address. At start-up, before any socket is bound, the agent
//! puts that address on an interface of its own (`kubedisco0`, created as a
//! `dummy` interface, or as a bridge without ports on a kernel without the
//! dummy driver — both hold a local address the same way). While it runs, a
//! guard puts the address back if something removes it. On shutdown it
//! removes the address and the interface again, unless another process still
//! listens on the address (the next agent of a rolling update, which shares
//! the ports through SO_REUSEPORT): the last agent out removes it.
//!
//! After a crash (SIGKILL) the address and interface stay; the next agent
//! finds them and reuses them (EEXIST is success here).
//!
//! The interface is marked with an alias ([`OWNER_ALIAS`]); only a marked
//! interface is ever deleted, so pointing `--link-local-interface` at an
//! existing interface (e.g. `lo`) adds and removes just the address.
//!
//! - [`address`]: which addresses and interface names the flags accept.
//! - [`netlink`]: the rtnetlink requests that make the interface and the
//!   address be there, and take them away.
//! - [`link_local`]: the address for the agent's lifetime: set up, guarded,
//!   torn down by the last agent out.
//! - [`listeners`]: whether another process still listens on the address.
//!
//! Owns the node's interface and address, nothing else: it binds no socket
//! (it runs before any is bound, see [`crate::agent`]) and reads sockets
//! only through [`crate::sockets::proc_net`].

pub(crate) mod address;
pub(crate) mod link_local;
pub(crate) mod listeners;
pub(crate) mod netlink;

pub(crate) use address::{DEFAULT_INTERFACE, parse_interface_name, parse_link_local_ip};
pub(crate) use link_local::LinkLocal;
pub use netlink::NetifError;
