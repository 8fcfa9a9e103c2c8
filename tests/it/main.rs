//! Integration tests, one binary with modules (as ripgrep does), all against
//! the real control plane of `scripts/testcluster` (started on demand) and
//! the real `kubedisco` binary. Each test works in a namespace of its own.

mod support;

mod agent_api;
mod chart;
mod dns;
mod encoding;
mod harness;
mod http_api;
mod layers;
mod manifest_source;
mod netif;
mod node_cache;
mod outage;
mod reliability;
mod resilience;
mod watch_slices;
mod weights;
mod xds;
mod zone;
