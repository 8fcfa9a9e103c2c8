//! The DNS front end: Kubernetes DNS records from the index over UDP and
//! TCP, everything else forwarded upstream.
//!
//! - [`wire`]: parsing queries and writing responses (no allocation per query).
//! - [`answer`]: the zone's records from a snapshot.
//! - [`forward`]: relaying other names to the upstream resolvers.
//! - [`server`]: sockets, TCP framing, limits, metrics.
//! - [`metrics`]: query counters and latency.

pub mod answer;
pub mod forward;
pub mod metrics;
pub mod server;
pub mod wire;

pub use server::{DnsConfig, DnsServer, Handled, handle_packet};
