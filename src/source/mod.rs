//! Where the index's objects come from.
//!
//! - [`kubernetes`]: kube-runtime watchers on Services and EndpointSlices.
//! - [`manifest`]: a file or directory of Kubernetes YAML, re-read on change
//!   (local development, demos, tests without a cluster).
//! - [`convert`]: Services → compact index objects, and the annotation
//!   rules; [`slice`]: EndpointSlices decoded straight into the compact
//!   form. Both sources use them, so they cannot disagree.

pub mod convert;
pub mod kubernetes;
pub mod manifest;
pub mod slice;
pub mod status;

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
