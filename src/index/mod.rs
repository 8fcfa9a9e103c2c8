//! The in-memory index: compact objects in, immutable snapshots out.
//!
//! - [`objects`]: the compact Service and EndpointSlice forms sources produce.
//! - [`merge`]: the rules that turn one Service's slices into served endpoints.
//! - [`store`]: the writer side, the published [`Snapshot`], revisions.
//! - [`notify`]: per-Service wake-ups for blocking queries and watch streams.
//! - [`intern`]: one shared copy of strings that repeat across endpoints.
//! - [`sharded`]: the copy-on-write map behind the snapshot's address index.
//! - `metrics`: registers the [`IndexGauges`] the index keeps current.

pub mod intern;
pub mod merge;
mod metrics;
pub mod notify;
pub mod objects;
pub mod sharded;
pub mod store;

pub use merge::{DEFAULT_WEIGHT, Endpoint, EndpointPort, ServedService};
pub use objects::{ServiceKey, ServiceObject, SliceKey, SliceObject};
pub use store::{Change, Contents, Index, IndexGauges, PodKey, Scope, Snapshot};
