//! The warm-start policy: which snapshot the agent serves at start (one
//! that covers what it watches and is no older than `--snapshot-max-age`),
//! and the staleness it shows until every source part has listed.
//!
//! Reads the file (bounded by [`super::format::MAX_FILE_BYTES`]) and
//! decides; what its bytes mean is [`super::codec`]'s, saving it
//! [`super::writer`]'s.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::codec::{Loaded, decode};
use super::coverage::Coverage;
use super::format::{LoadError, MAX_FILE_BYTES};
use crate::index::Index;
use crate::status::SourceStatus;

/// The status part under which "serving a snapshot" shows as staleness.
pub(crate) const STATUS_PART: &str = "snapshot";

/// `--snapshot-*` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmStartConfig {
    pub path: PathBuf,
    /// Least time between two writes.
    pub interval: Duration,
    /// Older snapshots (by the time their data was last known fresh) are
    /// ignored at start.
    pub max_age: Duration,
}

/// Reads and checks the file at `config.path`, including its age.
pub fn load(config: &WarmStartConfig, wanted: &Coverage) -> Result<Loaded, LoadError> {
    let size = match std::fs::metadata(&config.path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(e.into()),
    };
    if size > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge(size));
    }
    let bytes = std::fs::read(&config.path)?;
    let loaded = decode(&bytes, wanted)?;
    let age = SystemTime::now()
        .duration_since(loaded.fresh_at)
        .unwrap_or_default();
    if age > config.max_age {
        return Err(LoadError::TooOld {
            age: Duration::from_secs(age.as_secs()),
            max: config.max_age,
        });
    }
    Ok(loaded)
}

/// Loads the snapshot into `index` when there is a usable one, and flags
/// the agent stale until every source part has listed. Returns whether it
/// did. Call before the source starts.
pub(crate) fn warm_start(
    config: &WarmStartConfig,
    wanted: &Coverage,
    index: &Index,
    status: &SourceStatus,
) -> bool {
    let started = std::time::Instant::now();
    let loaded = match load(config, wanted) {
        Ok(loaded) => loaded,
        Err(LoadError::Missing) => {
            info!(path = %config.path.display(), "no snapshot yet: cold start");
            return false;
        }
        Err(error) => {
            warn!(path = %config.path.display(), "ignoring the snapshot: {error}");
            return false;
        }
    };
    let services = loaded.contents.services.len();
    let slices = loaded.contents.slices.len();
    index.seed(loaded.contents);
    let fresh = rfc3339(loaded.fresh_at);
    status.failed_since(
        STATUS_PART,
        &format!("serving the snapshot of {fresh} until every source has listed"),
        loaded.fresh_at,
    );
    info!(
        path = %config.path.display(),
        services,
        slices,
        endpoints = index.load().endpoint_count,
        fresh_at = %fresh,
        taken_at = %rfc3339(loaded.taken_at),
        took = ?started.elapsed(),
        "warm start: serving the snapshot (stale) until the source has listed"
    );
    true
}

/// Formats a time as RFC 3339 UTC (`2025-01-31T12:00:00Z`), for messages.
fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    match jiff::Timestamp::from_second(secs) {
        Ok(timestamp) => timestamp.to_string(),
        // Past the year 9999: no date to print.
        Err(_) => format!("{secs} s after 1970"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::atomic_write::write_atomically;
    use super::super::codec::encode;
    use super::super::fixtures::{everything as scope, sample_index};
    use super::*;
    use crate::index::merge::tests::service;

    #[tokio::test]
    async fn a_seeded_index_is_synced_at_once_and_listed_when_every_part_has_listed() {
        let index = Index::default();
        index.seed(sample_index().export());
        index.expect_parts(["services", "endpointslices"]);
        assert!(
            index.load().synced,
            "declaring parts keeps a seeded index synced"
        );
        index.replace(
            &crate::index::Scope::All,
            Some(vec![service("web")]),
            None,
            "services",
        );
        let listed = index.wait_listed();
        tokio::pin!(listed);
        assert!(futures::poll!(listed.as_mut()).is_pending());
        // The snapshot's slices still serve until their own list replaces them.
        assert_eq!(index.load().endpoint_count, 1);
        index.replace(
            &crate::index::Scope::All,
            None,
            Some(vec![]),
            "endpointslices",
        );
        listed.await;
        assert_eq!(index.load().endpoint_count, 0);
    }

    #[test]
    fn old_snapshots_are_ignored_and_files_are_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("kd-snapshot-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = WarmStartConfig {
            path: dir.join("index.snap"),
            interval: Duration::from_secs(1),
            max_age: Duration::from_secs(3600),
        };
        assert!(matches!(load(&config, &scope()), Err(LoadError::Missing)));
        let now = SystemTime::now();
        let old = now - Duration::from_secs(7200);
        let export = sample_index().export();
        write_atomically(&config.path, &encode(&export, &scope(), now, old)).unwrap();
        assert!(matches!(
            load(&config, &scope()),
            Err(LoadError::TooOld { .. })
        ));
        write_atomically(&config.path, &encode(&export, &scope(), now, now)).unwrap();
        assert!(load(&config, &scope()).is_ok());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["index.snap"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_827_696)),
            "2000-02-29T12:34:56Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31T23:59:59Z"
        );
    }
}
