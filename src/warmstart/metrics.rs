//! What the snapshot writer reports: files written, by result, and when the
//! last one was. Registered by the warm start itself; the agent composes it
//! with the other components' metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// The snapshot writer's series. A default one is registered nowhere.
#[derive(Clone, Debug, Default)]
pub struct SnapshotMetrics {
    writes: Family<ResultLabels, Counter>,
    last_write: Gauge<f64, AtomicU64>,
}

impl SnapshotMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "snapshot_writes",
            "Snapshot files written (--snapshot-path), by result",
            metrics.writes.clone(),
        );
        registry.register(
            "snapshot_last_write_timestamp_seconds",
            "Unix time of the last snapshot written",
            metrics.last_write.clone(),
        );
        metrics
    }

    pub(crate) fn record_write(&self, ok: bool) {
        self.writes
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        if ok {
            self.last_write.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
    }
}
