//! Saving the index while the agent runs: every `--snapshot-interval`
//! while it changes, never before every source part has listed, and once
//! more at shutdown.
//!
//! Decides when to save; what a file holds is [`super::codec`]'s, how it is
//! replaced [`super::atomic_write`]'s.

use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::atomic_write::write_atomically;
use super::codec::encode;
use super::coverage::Coverage;
use super::metrics::SnapshotMetrics;
use super::start::{STATUS_PART, WarmStartConfig};
use crate::index::Index;
use crate::status::SourceStatus;

/// Saves the index every `interval` while it changes, once every source
/// part has listed (a half-listed index, or an unconfirmed snapshot, is
/// never saved), and once more at shutdown. Clears the snapshot staleness
/// when the source has listed.
pub(crate) async fn run_writer(
    config: WarmStartConfig,
    coverage: Coverage,
    index: Arc<Index>,
    status: Arc<SourceStatus>,
    metrics: Arc<SnapshotMetrics>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = index.wait_listed() => {}
        _ = shutdown.cancelled() => return,
    }
    if status.failures().contains_key(STATUS_PART) {
        status.succeeded(STATUS_PART);
        info!("the source has listed: the snapshot is replaced by live data");
    }
    let mut written: Option<u64> = None;
    let mut last_error: Option<String> = None;
    loop {
        let generation = index.load().generation;
        if written != Some(generation) {
            let result = save(&config, &coverage, &index, &status).await;
            metrics.record_write(result.is_ok());
            match result {
                Ok(bytes) => {
                    debug!(generation, bytes, path = %config.path.display(), "snapshot written");
                    if last_error.take().is_some() {
                        info!(path = %config.path.display(), "snapshot written again");
                    }
                    written = Some(generation);
                }
                Err(error) => {
                    // Retried next interval; logged once per cause.
                    let error = error.to_string();
                    if last_error.as_deref() != Some(error.as_str()) {
                        warn!(path = %config.path.display(), "cannot write the snapshot (retrying every {:?}): {error}", config.interval);
                    }
                    last_error = Some(error);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if written != Some(index.load().generation) {
        let result = save(&config, &coverage, &index, &status).await;
        metrics.record_write(result.is_ok());
        match result {
            Ok(bytes) => info!(bytes, path = %config.path.display(), "final snapshot written"),
            Err(error) => {
                warn!(path = %config.path.display(), "cannot write the final snapshot: {error}")
            }
        }
    }
}

async fn save(
    config: &WarmStartConfig,
    coverage: &Coverage,
    index: &Arc<Index>,
    status: &SourceStatus,
) -> std::io::Result<usize> {
    let now = SystemTime::now();
    // While the source fails, the data is as fresh as the last success.
    let fresh_at = status
        .stale_for()
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now);
    let index = index.clone();
    let coverage = coverage.clone();
    let path = config.path.clone();
    tokio::task::spawn_blocking(move || {
        let bytes = encode(&index.export(), &coverage, now, fresh_at);
        write_atomically(&path, &bytes).map(|()| bytes.len())
    })
    .await
    .map_err(std::io::Error::other)?
}
