//! What an agent watches, written into every snapshot: a snapshot is used
//! only by an agent whose watch it covers, and only for the namespaces that
//! agent serves.
//!
//! Pure data and rules; no file, no index.

use serde::{Deserialize, Serialize};

/// What the agent watches (not to be confused with
/// [`crate::index::Scope`], the part of the index one re-list replaces).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// `kubernetes` or `manifests`.
    pub source: String,
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    #[serde(rename = "podWeights")]
    pub pod_weights: bool,
}

impl Coverage {
    /// Whether a snapshot taken by an agent watching `self` holds
    /// everything an agent watching `wanted` serves.
    pub(crate) fn covers(&self, wanted: &Coverage) -> bool {
        self.source == wanted.source
            && (self.namespaces.is_empty()
                || (!wanted.namespaces.is_empty()
                    && wanted
                        .namespaces
                        .iter()
                        .all(|ns| self.namespaces.contains(ns))))
    }

    /// Whether an agent watching `self` serves `namespace`.
    pub(crate) fn includes(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|w| w == namespace)
    }
}
