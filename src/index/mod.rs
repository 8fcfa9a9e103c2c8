//! The in-memory index: compact objects in, immutable snapshots out.
//!
//! The index depends on nothing else in the crate: sources write into it,
//! `balance` and the front ends read from it, and none of them is imported
//! here.
//!
//! - [`objects`]: the compact Service and EndpointSlice forms sources produce.
//! - `change`: the records sources hand in ([`Change`], [`Scope`], [`Contents`]).
//! - `merge`: the rules that turn one Service's slices into served endpoints.
//! - [`resilience`]: a Service's outlier-ejection and retry overrides.
//! - [`topology`]: the priority tiers merging assigns from where the agent runs.
//! - `writer`: the raw objects the sources handed in, under the writer lock.
//! - `pods`: which Services list each Pod, for weight labels.
//! - `share`: re-list sharing of unchanged endpoints.
//! - `publish`: building the next [`Snapshot`] and handing out revisions.
//! - `view`: the published [`Snapshot`] readers load.
//! - `address`: the address → Services index behind PTR answers.
//! - `zone`: every Service by DNS name, cluster IPs and namespaces, for
//!   the zone's names of Services whose endpoints are not served.
//! - `store`: the [`Index`] handle that sequences all of the above.
//! - `notify`: per-Service wake-ups for blocking queries and watch streams.
//! - `intern`: one shared copy of strings that repeat across endpoints.
//! - `sharded`: the copy-on-write map behind the snapshot's maps.
//! - `metrics`: registers the [`IndexGauges`] the index keeps current.

mod address;
mod change;
pub(crate) mod intern;
pub(crate) mod merge;
mod metrics;
mod notify;
pub mod objects;
mod pods;
mod publish;
pub mod resilience;
mod sharded;
mod share;
mod store;
#[cfg(test)]
mod testing;
pub mod topology;
mod view;
mod writer;
mod zone;

pub use change::{Change, Contents, PodKey, Scope, Slices};
pub use merge::{DEFAULT_WEIGHT, Endpoint, EndpointPort, ServedService};
pub use objects::{ServiceKey, ServiceObject, ServiceType, SliceKey, SliceObject};
pub use sharded::ShardedMap;
pub use store::{Index, IndexGauges};
pub use view::Snapshot;
pub use zone::ZoneServices;
