//! Warm start: the index's objects saved on disk (`--snapshot-path`).
//!
//! The agent saves the compact source objects the index is built from
//! (Services, EndpointSlices, Pod weights) — not the served view — so that a
//! loaded snapshot goes through the same merge rules, with this agent's
//! topology, as live objects do. At start, a valid snapshot no older than
//! `--snapshot-max-age` is loaded before the source starts: the agent
//! answers at once, flagged stale ("serving the snapshot of <time>"), and
//! every source part's first list replaces what the snapshot held, as a
//! re-list does. A file that is corrupt, truncated, of another format
//! version or too old is ignored with a warning; it never stops the agent.
//!
//! - [`coverage`]: what an agent watches, and which snapshot covers it.
//! - [`format`]: the file's header and checksum, and why a file is refused.
//! - [`payload`]: the JSON inside, plain serde mirrors of the index objects.
//! - [`codec`]: a whole file from the index's contents, and back.
//! - [`atomic_write`]: replacing the file so that readers see it whole.
//! - [`start`]: the policy at start (age, staleness until the source lists).
//! - [`writer`]: when to save.
//! - [`metrics`]: what the writer reports.
//!
//! Reads and seeds the index through its writer-side API
//! ([`crate::index::Index::export`], [`crate::index::Index::seed`]) and
//! marks staleness in [`crate::status`]; it never touches the
//! served snapshot ([`crate::index::Snapshot`]) or the front ends. This
//! file only declares and re-exports: every part imports its siblings,
//! never this module.

pub(crate) mod atomic_write;
pub(crate) mod codec;
pub(crate) mod coverage;
pub(crate) mod format;
pub(crate) mod metrics;
pub(crate) mod payload;
pub(crate) mod start;
pub(crate) mod writer;

#[cfg(test)]
mod fixtures;

pub use codec::{Loaded, decode, encode};
pub use coverage::Coverage;
pub use format::LoadError;
pub use metrics::SnapshotMetrics;
pub(crate) use start::warm_start;
pub use start::{WarmStartConfig, load};
pub(crate) use writer::run_writer;
