//! Reliability (issue 9), one concern a module:
//!
//! - [`warm_start`]: a restart served from the snapshot while the API
//!   server is down; damaged, foreign and old snapshots ignored.
//! - [`handover`]: zero-downtime restarts of two agents sharing the ports.
//! - [`connection_caps`]: floods of idle connections and connections beyond
//!   the caps, answered and never reset, in bounded memory.
//! - [`abusive_requests`]: slow, oversized, bodied and malformed requests.
//! - [`bad_config`]: a broken kubeconfig that recovers, invalid flags.
//! - [`properties`]: property tests of the HTTP API's parameters, in process.
//!
//! Figures (first answer after a warm start, lost queries and gaps in a
//! handover, memory under idle connections) are printed:
//! `cargo test --test it reliability -- --nocapture`.
//!
//! What the modules share is here; raw DNS is [`crate::support::dns`], the
//! agent process [`crate::support::agent`].

mod abusive_requests;
mod bad_config;
mod connection_caps;
mod handover;
mod properties;
mod warm_start;

use serde_json::json;

use crate::support::TestNamespace;
use crate::support::kube::ip_range;

/// `args` for an agent that forwards nothing: its upstream is the discard
/// port, so every answer counted is its own.
fn without_upstream<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [&["--upstream", "127.0.0.1:9"], args].concat()
}

/// A namespace with a headless Service `web` of three ready Pods.
async fn three_endpoints(test: &str) -> TestNamespace {
    let ns = TestNamespace::new(test).await;
    ns.create_service("web", json!({})).await;
    let pods = ns.create_pods("web", 3).await;
    let first = "10.130.0.1".parse().unwrap();
    ns.mark_ready(&pods, first).await;
    ns.wait_for_ready_addresses("web", &ip_range(first, 3))
        .await;
    ns
}
