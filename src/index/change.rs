//! The records that cross into the index: incremental [`Change`]s, the
//! [`Scope`] and [`Slices`] a re-list covers, Pod identities, and the [`Contents`] a warm
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
    /// A slice gone from the watch of one side of [`Slices`]: removed only
    /// while the index holds it on that side. A slice whose
    /// `service.kubernetes.io/headless` label changed leaves one watch and
    /// enters the other, and the two streams' events may arrive in either
    /// order: the other watch's new self must not be deleted.
    DeleteSliceOf(SliceKey, Slices),
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

/// Which EndpointSlices one list covers, by the label
/// `service.kubernetes.io/headless` the EndpointSlice controller sets on
/// the slices of headless Services: all of them (one watch of every slice,
/// a manifest reload), or one side, when the slices of headless Services and
/// those of exposed ClusterIP Services are watched apart
/// (`--watch-slices served`), so that a re-list of one leaves the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slices {
    All,
    Headless,
    NotHeadless,
}

impl Slices {
    pub(super) fn covers(self, slice: &SliceObject) -> bool {
        match self {
            Slices::All => true,
            Slices::Headless => slice.headless_label,
            Slices::NotHeadless => !slice.headless_label,
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
