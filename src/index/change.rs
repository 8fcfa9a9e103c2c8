//! The records that cross into the index: incremental [`Change`]s, the
//! [`Scope`] a re-list covers, Pod identities, and the [`Contents`] a warm
//! start saves and loads.
//!
//! Plain data only: applying a record is the writer's job, and nothing here
//! may hold state or reach the snapshot.

use std::sync::Arc;

use super::objects::{ServiceKey, ServiceObject, SliceKey, SliceObject};

/// One incremental change from a source.
#[derive(Clone, Debug)]
pub enum Change {
    ApplyService(ServiceObject),
    DeleteService(ServiceKey),
    ApplySlice(SliceObject),
    DeleteSlice(SliceKey),
    /// A Pod's `kubedisco.io/weight` label: Some(weight), or None when the
    /// label (or the Pod) is gone or invalid.
    SetPodWeight(PodKey, Option<u32>),
}

/// Which objects a [`Index::replace`] covers: everything a source owns, or
/// one namespace when the agent watches namespaces one by one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(Arc<str>),
}

impl Scope {
    pub(super) fn covers(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(ns) => &**ns == namespace,
        }
    }
}

/// A Pod's identity (namespace, name).
pub type PodKey = (Arc<str>, Arc<str>);

/// Everything the writer side holds: what a snapshot on disk saves, and
/// what `Index::seed` loads back (see `crate::warmstart`).
#[derive(Clone, Debug, Default)]
pub struct Contents {
    pub services: Vec<ServiceObject>,
    pub slices: Vec<SliceObject>,
    pub pod_weights: Vec<(PodKey, u32)>,
    /// The revision counter when exported; a seeded index continues above
    /// it, so revisions keep growing across a restart.
    pub generation: u64,
}
