//! The DNS front end: Kubernetes DNS records from the index over UDP and
//! TCP, everything else forwarded upstream.
//!
//! - [`wire`]: parsing queries and writing responses (no allocation per query).
//! - [`answer`]: the zone's records from a snapshot.
//! - [`resolve`]: other names: the cache in front of the upstreams
//!   (coalescing, prefetch, serve-stale).
//! - [`cache`]: the cache of forwarded answers.
//! - [`forward`]: asking the upstream resolvers (routes, health, speed).
//! - [`chase`]: an ExternalName's CNAME followed by its target's records.
//! - [`server`]: sockets, TCP framing, limits, metrics.
//! - [`metrics`]: query counters and latency.
//!
//! Owns: everything DNS, from the socket to the bytes. May not touch: the
//! API server or the index writer; it reads snapshots only. Only what the
//! fuzz target and benchmarks use is public: [`handle_packet`], [`Zone`]
//! and [`Response`].
//!
//! [`Zone`]: answer::Zone
//! [`Response`]: wire::Response

pub mod answer;
pub mod cache;
pub(crate) mod chase;
pub(crate) mod forward;
pub(crate) mod metrics;
pub(crate) mod resolve;
pub(crate) mod server;
pub(crate) mod upstream;
pub mod wire;

pub use cache::{CacheConfig, CachedName};
pub use server::CacheView;
pub(crate) use server::{DnsConfig, DnsServer};
pub use server::{Handled, handle_packet};
