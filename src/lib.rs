//! kubedisco: node-local service discovery for Kubernetes.
//!
//! Data flows one way, and the module layout follows it:
//!
//! ```text
//!  source/  ──►  index/  ──►  balance/  ──►  dns/, http/
//!  watchers      merge rules,  pickers       front ends; read snapshots,
//!  + manifest    snapshots,                  never talk to the API server
//!  files         revisions
//! ```
//!
//! - [`source`] turns Kubernetes objects (from the API server or from manifest
//!   files) into compact [`index::objects`] and hands them to the index writer.
//! - [`index`] keeps the raw compact objects on the writer side, merges every
//!   Service's EndpointSlices into a [`index::ServedService`] (tiering its
//!   endpoints by [`index::topology`]), and publishes an
//!   immutable [`index::Snapshot`] that readers load without locking. Each
//!   Service carries a revision that changes exactly when its served state does,
//!   and waiters are woken per Service.
//! - [`balance`] picks endpoints for `/v1/pick`.
//! - [`dns`] answers Kubernetes DNS names from the index and forwards the rest.
//! - [`http`] is the JSON API, the watch stream, health and metrics.
//! - [`cli`] holds the command-line interface: the agent, `dump`, `version`.
//! - [`metrics`] composes the series each component registers itself into
//!   the one registry `/metrics` serves.
//! - [`status`] is freshness: the sources say which parts fail and since
//!   when; the front ends and the warm start read it.
//! - [`warmstart`] saves the index's objects to disk and loads them at start
//!   (warm start); [`handover`] and [`connlimit`] keep restarts and abusive
//!   clients from costing answers; [`netif`] owns the node-local address and
//!   [`sockets`] the listening sockets both front ends bind; [`duration`]
//!   and [`names`] check what users write (durations, DNS labels) for the
//!   command line and the HTTP API alike.

pub mod agent;
pub mod balance;
pub mod cli;
pub mod connlimit;
pub mod dns;
pub mod duration;
pub(crate) mod handover;
pub mod http;
pub mod index;
pub(crate) mod logging;
pub mod metrics;
pub(crate) mod names;
pub(crate) mod netif;
pub(crate) mod sockets;
pub mod source;
pub mod status;
pub mod warmstart;
pub mod xds;

/// The version printed by `kubedisco version` and reported in `/healthz`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
