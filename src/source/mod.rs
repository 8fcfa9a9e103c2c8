//! Where the index's objects come from.
//!
//! - [`kubernetes`]: watchers on Services and EndpointSlices; [`watch`]
//!   lists and watches them in protobuf ([`proto`]: the wire format), the
//!   rest through kube-runtime's JSON watcher. Beside it: `kinds` (the two
//!   kinds and their watch loop), `pod_weights` (weighted Pods),
//!   `supervise` (the loop every watch runs, recovery after an outage),
//!   `health` and `failure` (what a watch proves, reported per part),
//!   `node_zone` (this node's zone), `unlabelled` (Services exposed by
//!   annotation whose slices the selected slice watches cannot see).
//! - [`manifest`]: a file or directory of Kubernetes YAML, re-read on change
//!   (local development, demos, tests without a cluster).
//! - [`service`], [`slice`]: Services and EndpointSlices decoded straight
//!   into the compact form (`lean` holds their common visitors);
//!   [`convert`]: the annotation and label rules they share. Both sources
//!   use them, so they cannot disagree.
//! - [`metrics`]: what the sources report (API errors, re-lists, invalid
//!   weights), registered by the agent.

pub mod convert;
mod failure;
mod health;
mod kinds;
pub mod kubernetes;
mod lean;
pub mod manifest;
pub mod metrics;
mod node_zone;
mod pod_weights;
pub mod proto;
pub mod resilience;
pub mod service;
pub mod slice;
mod supervise;
mod unlabelled;
pub mod watch;

use std::path::PathBuf;

/// Errors that stop a source from starting at all. Errors while running
/// (a broken file, an API outage) are logged and retried instead.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot load Kubernetes client configuration (in-cluster or kubeconfig): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot build Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("manifest source {path}: {message}")]
    Manifest { path: PathBuf, message: String },
}
