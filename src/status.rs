//! Freshness: which parts of the served state are failing, since when, why.
//!
//! Neutral ground between the layers: the sources (and the warm start,
//! which marks a loaded snapshot stale) write it; the front ends (`/readyz`,
//! the API's staleness fields) and the snapshot writer read it. It depends on
//! nothing else in the crate, so every side can use it without importing the
//! others.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct PartFailure {
    pub error: String,
    #[serde(with = "unix_seconds")]
    pub since: SystemTime,
}

#[derive(Default)]
pub struct SourceStatus {
    failing: Mutex<BTreeMap<String, PartFailure>>,
}

impl SourceStatus {
    pub fn failed(&self, part: &str, error: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing
            .entry(part.to_string())
            .and_modify(|f| f.error = error.to_string())
            .or_insert_with(|| PartFailure {
                error: error.to_string(),
                since: SystemTime::now(),
            });
    }

    /// As [`SourceStatus::failed`], with the time the part's data was last
    /// known fresh (e.g. when a snapshot loaded at start was taken).
    pub fn failed_since(&self, part: &str, error: &str, since: SystemTime) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing.insert(
            part.to_string(),
            PartFailure {
                error: error.to_string(),
                since,
            },
        );
    }

    pub fn succeeded(&self, part: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if !failing.is_empty() {
            failing.remove(part);
        }
    }

    /// How long the oldest current failure has lasted: how old the served
    /// state may be. None when nothing fails.
    pub fn stale_for(&self) -> Option<std::time::Duration> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let since = failing.values().map(|f| f.since).min()?;
        Some(since.elapsed().unwrap_or_default())
    }

    /// The oldest current failure's cause: why answers are stale.
    pub fn stale_reason(&self) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing
            .values()
            .min_by_key(|f| f.since)
            .map(|f| f.error.clone())
    }

    /// The parts failing right now, with their causes.
    pub fn failures(&self) -> BTreeMap<String, PartFailure> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(
            time.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        )
    }
}
