//! Test support: a real control plane, a namespace per test, helpers that
//! stand in for the kubelet, and a real `kubedisco` process to talk to.
//!
//! - [`cluster`]: finds (or starts) the control plane of `scripts/testcluster`.
//! - [`kube`]: namespaces, Nodes, Services, Pods marked Ready through
//!   `pods/status`, EndpointSlices, and bounded waits for the controller.
//! - [`agent`]: runs the built `kubedisco` binary and queries its HTTP API.
//! - [`dns`]: raw DNS queries over UDP and TCP, for counting answers.
//! - [`netns`]: a network namespace of the test's own, with a pod's
//!   resolv.conf.
//! - [`upstream`]: dnsmasq as the upstream resolver, counting what reaches it.
//! - [`scripted`]: an upstream the test scripts (TTL, delay, outage), counting
//!   what reaches it.
//! - [`in_process`]: an agent in the test's own runtime, from a `Config`.
//! - [`eventually`]: bounded polling instead of sleeps.
//! - [`tools`]: outside programs (dig, dnsmasq, ...), checked before use.

pub mod agent;
pub mod cluster;
pub mod dns;
pub mod eventually;
pub mod in_process;
pub mod kube;
pub mod netns;
pub mod scripted;
pub mod tools;
pub mod upstream;

pub use agent::Agent;
pub use eventually::eventually;
pub use in_process::InProcessAgent;
pub use kube::TestNamespace;
