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
//! File format (integers little-endian):
//!
//! ```text
//! magic    8 bytes  "KDSNAP\r\n"   (\r\n catches text-mode mangling, as in PNG)
//! version  u32      FORMAT_VERSION
//! length   u64      payload bytes
//! crc32    u32      CRC-32 (IEEE 802.3) of the payload
//! payload  JSON     Payload below
//! ```
//!
//! JSON rather than a compact binary encoding: the objects are already
//! compact, the file is written at most every few seconds and read once per
//! start (a few milliseconds for thousands of endpoints), it needs no new
//! dependency, and an operator can read it (`tail -c +25 FILE | jq`).
//! Writes go to a temporary file in the same directory, are fsynced, and
//! renamed over the old file, so a crash leaves the old or the new file,
//! never a torn one; the checksum catches what the disk does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::index::intern::intern;
use crate::index::objects::{
    Protocol, ServiceKey, ServicePort, SliceEndpoint, SliceKey, SlicePort, TargetRef, TopologyHints,
};
use crate::index::{Contents, Index, ServiceObject, SliceObject};
use crate::metrics::Metrics;
use crate::source::status::SourceStatus;

pub const MAGIC: &[u8; 8] = b"KDSNAP\r\n";
/// Bumped whenever the payload's meaning changes; other versions are ignored.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Larger files are refused unread: no snapshot of a real index is near it,
/// and a corrupt length must not make the agent allocate without bound.
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// The status part under which "serving a snapshot" shows as staleness.
pub const STATUS_PART: &str = "snapshot";

/// `--snapshot-*` settings.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    pub path: PathBuf,
    /// Least time between two writes.
    pub interval: Duration,
    /// Older snapshots (by the time their data was last known fresh) are
    /// ignored at start.
    pub max_age: Duration,
}

/// What the agent watches; a snapshot is only used by an agent whose scope
/// it covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// `kubernetes` or `manifests`.
    pub source: String,
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    #[serde(rename = "podWeights")]
    pub pod_weights: bool,
}

impl Scope {
    /// Whether a snapshot taken with scope `self` holds everything an agent
    /// with scope `wanted` serves.
    fn covers(&self, wanted: &Scope) -> bool {
        self.source == wanted.source
            && (self.namespaces.is_empty()
                || (!wanted.namespaces.is_empty()
                    && wanted
                        .namespaces
                        .iter()
                        .all(|ns| self.namespaces.contains(ns))))
    }
}

/// A loaded snapshot, ready for [`Index::seed`].
#[derive(Debug)]
pub struct Loaded {
    pub contents: Contents,
    /// When its data was last known to match the source.
    pub fresh_at: SystemTime,
    pub taken_at: SystemTime,
}

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no snapshot file")]
    Missing,
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a kubedisco snapshot (bad magic)")]
    Magic,
    #[error("format version {found}, this agent reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("checksum mismatch (corrupt)")]
    Checksum,
    #[error("unreadable payload: {0}")]
    Payload(String),
    #[error("{0} bytes is larger than the {MAX_FILE_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("taken with {found:?}, but the agent watches {wanted:?}")]
    Scope { found: Scope, wanted: Scope },
    #[error("its data is {age:?} old, more than --snapshot-max-age {max:?}")]
    TooOld { age: Duration, max: Duration },
}

// ---------------------------------------------------------------------------
// The payload: plain serde mirrors of the index objects.

#[derive(Serialize, Deserialize)]
struct Payload {
    /// Unix seconds when written.
    #[serde(rename = "takenAt")]
    taken_at: f64,
    /// Unix seconds when the data was last known fresh (earlier than
    /// `takenAt` when the source was failing at the time).
    #[serde(rename = "freshAt")]
    fresh_at: f64,
    scope: Scope,
    generation: u64,
    services: Vec<SnapService>,
    slices: Vec<SnapSlice>,
    #[serde(rename = "podWeights", default)]
    pod_weights: Vec<SnapPodWeight>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
struct SnapService {
    namespace: Arc<str>,
    name: Arc<str>,
    #[serde(default, skip_serializing_if = "is_false")]
    headless: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    exposed: bool,
    #[serde(rename = "publishNotReady", default, skip_serializing_if = "is_false")]
    publish_not_ready: bool,
    ports: Vec<SnapServicePort>,
    #[serde(rename = "defaultWeight", skip_serializing_if = "Option::is_none")]
    default_weight: Option<u32>,
    #[serde(
        rename = "trafficDistribution",
        skip_serializing_if = "Option::is_none"
    )]
    traffic_distribution: Option<Arc<str>>,
}

#[derive(Serialize, Deserialize)]
struct SnapServicePort {
    name: Arc<str>,
    port: u16,
    protocol: Arc<str>,
    #[serde(rename = "targetPort", skip_serializing_if = "Option::is_none")]
    target_port: Option<Arc<str>>,
}

#[derive(Serialize, Deserialize)]
struct SnapSlice {
    namespace: Arc<str>,
    name: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<Arc<str>>,
    ports: Vec<SnapSlicePort>,
    endpoints: Vec<SnapEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct SnapSlicePort {
    name: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    protocol: Arc<str>,
}

#[derive(Serialize, Deserialize)]
struct SnapEndpoint {
    address: std::net::IpAddr,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    ready: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    serving: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    terminating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<Arc<str>>,
    #[serde(rename = "targetRef", skip_serializing_if = "Option::is_none")]
    target_ref: Option<SnapTargetRef>,
    #[serde(rename = "hintZones", default, skip_serializing_if = "Vec::is_empty")]
    hint_zones: Vec<Arc<str>>,
    #[serde(rename = "hintNodes", default, skip_serializing_if = "Vec::is_empty")]
    hint_nodes: Vec<Arc<str>>,
}

#[derive(Serialize, Deserialize)]
struct SnapTargetRef {
    kind: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<Arc<str>>,
    name: Arc<str>,
}

#[derive(Serialize, Deserialize)]
struct SnapPodWeight {
    namespace: Arc<str>,
    name: Arc<str>,
    weight: u32,
}

fn protocol(text: &str) -> Result<Protocol, LoadError> {
    Protocol::parse(Some(text)).ok_or_else(|| LoadError::Payload(format!("protocol {text:?}")))
}

impl From<&ServiceObject> for SnapService {
    fn from(s: &ServiceObject) -> Self {
        Self {
            namespace: s.key.namespace.clone(),
            name: s.key.name.clone(),
            headless: s.headless,
            exposed: s.exposed,
            publish_not_ready: s.publish_not_ready,
            ports: s
                .ports
                .iter()
                .map(|p| SnapServicePort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: p.protocol.as_str().into(),
                    target_port: p.target_port.clone(),
                })
                .collect(),
            default_weight: s.default_weight,
            traffic_distribution: s.traffic_distribution.clone(),
        }
    }
}

impl SnapService {
    fn into_object(self) -> Result<ServiceObject, LoadError> {
        Ok(ServiceObject {
            key: ServiceKey {
                namespace: intern(&self.namespace),
                name: self.name,
            },
            headless: self.headless,
            exposed: self.exposed,
            publish_not_ready: self.publish_not_ready,
            ports: self
                .ports
                .into_iter()
                .map(|p| {
                    Ok(ServicePort {
                        name: p.name,
                        port: p.port,
                        protocol: protocol(&p.protocol)?,
                        target_port: p.target_port,
                    })
                })
                .collect::<Result<_, LoadError>>()?,
            default_weight: self.default_weight,
            traffic_distribution: self.traffic_distribution,
        })
    }
}

impl From<&SliceObject> for SnapSlice {
    fn from(s: &SliceObject) -> Self {
        Self {
            namespace: s.key.namespace.clone(),
            name: s.key.name.clone(),
            service: s.service.clone(),
            ports: s
                .ports
                .iter()
                .map(|p| SnapSlicePort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: p.protocol.as_str().into(),
                })
                .collect(),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| SnapEndpoint {
                    address: e.address,
                    ready: e.ready,
                    serving: e.serving,
                    terminating: e.terminating,
                    hostname: e.hostname.clone(),
                    node: e.node.clone(),
                    zone: e.zone.clone(),
                    target_ref: e.target_ref.as_ref().map(|t| SnapTargetRef {
                        kind: t.kind.clone(),
                        namespace: t.namespace.clone(),
                        name: t.name.clone(),
                    }),
                    hint_zones: e.hint_zones().to_vec(),
                    hint_nodes: e.hint_nodes().to_vec(),
                })
                .collect(),
            weight: s.weight,
        }
    }
}

impl SnapSlice {
    fn into_object(self) -> Result<SliceObject, LoadError> {
        Ok(SliceObject {
            key: SliceKey {
                namespace: intern(&self.namespace),
                name: self.name,
            },
            service: self.service.as_deref().map(intern),
            ports: self
                .ports
                .into_iter()
                .map(|p| {
                    Ok(SlicePort {
                        name: p.name,
                        port: p.port,
                        protocol: protocol(&p.protocol)?,
                    })
                })
                .collect::<Result<_, LoadError>>()?,
            endpoints: self
                .endpoints
                .into_iter()
                .map(|e| {
                    // Shared like the converter's strings (see index::intern).
                    let shared = |s: Arc<str>| intern(&s);
                    Arc::new(SliceEndpoint {
                        address: e.address,
                        ready: e.ready,
                        serving: e.serving,
                        terminating: e.terminating,
                        hostname: e.hostname,
                        node: e.node.map(shared),
                        zone: e.zone.map(shared),
                        target_ref: e.target_ref.map(|t| TargetRef {
                            kind: intern(&t.kind),
                            namespace: t.namespace.map(shared),
                            name: t.name,
                        }),
                        hints: TopologyHints::boxed(
                            e.hint_zones.into_iter().map(shared).collect(),
                            e.hint_nodes.into_iter().map(shared).collect(),
                        ),
                    })
                })
                .collect(),
            weight: self.weight,
        })
    }
}

// ---------------------------------------------------------------------------
// Encoding and decoding.

/// CRC-32 (IEEE 802.3, reflected, as zlib and PNG): 20 lines beat a
/// dependency for a checksum read once per start.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in bytes {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn from_unix(seconds: f64) -> SystemTime {
    if seconds.is_finite() && seconds > 0.0 {
        UNIX_EPOCH + Duration::from_secs_f64(seconds.min(1e11))
    } else {
        UNIX_EPOCH
    }
}

/// The whole file for `contents`.
pub fn encode(
    contents: &Contents,
    scope: &Scope,
    taken_at: SystemTime,
    fresh_at: SystemTime,
) -> Vec<u8> {
    let payload = Payload {
        taken_at: unix(taken_at),
        fresh_at: unix(fresh_at),
        scope: scope.clone(),
        generation: contents.generation,
        services: contents.services.iter().map(SnapService::from).collect(),
        slices: contents.slices.iter().map(SnapSlice::from).collect(),
        pod_weights: contents
            .pod_weights
            .iter()
            .map(|((namespace, name), weight)| SnapPodWeight {
                namespace: namespace.clone(),
                name: name.clone(),
                weight: *weight,
            })
            .collect(),
    };
    // Serializing plain structs into a Vec cannot fail.
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    let mut file = Vec::with_capacity(HEADER_LEN + json.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(json.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32(&json).to_le_bytes());
    file.extend_from_slice(&json);
    file
}

/// Checks and parses a whole file; `wanted` filters what the agent serves.
pub fn decode(bytes: &[u8], wanted: &Scope) -> Result<Loaded, LoadError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(if MAGIC.starts_with(bytes) {
            LoadError::Truncated(format!("{} bytes", bytes.len()))
        } else {
            LoadError::Magic
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(LoadError::Truncated(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(LoadError::Version { found: version });
    }
    let length = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let checksum = word(20);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != length {
        return Err(LoadError::Truncated(format!(
            "the header announces {length} payload bytes, the file holds {}",
            payload.len()
        )));
    }
    if crc32(payload) != checksum {
        return Err(LoadError::Checksum);
    }
    let payload: Payload =
        serde_json::from_slice(payload).map_err(|e| LoadError::Payload(e.to_string()))?;
    if !payload.scope.covers(wanted) {
        return Err(LoadError::Scope {
            found: payload.scope,
            wanted: wanted.clone(),
        });
    }
    let in_scope =
        |ns: &str| wanted.namespaces.is_empty() || wanted.namespaces.iter().any(|w| w == ns);
    let services = payload
        .services
        .into_iter()
        .filter(|s| in_scope(&s.namespace))
        .map(SnapService::into_object)
        .collect::<Result<Vec<_>, _>>()?;
    let slices = payload
        .slices
        .into_iter()
        .filter(|s| in_scope(&s.namespace))
        .map(SnapSlice::into_object)
        .collect::<Result<Vec<_>, _>>()?;
    let pod_weights = if wanted.pod_weights {
        payload
            .pod_weights
            .into_iter()
            .filter(|p| in_scope(&p.namespace))
            .map(|p| ((p.namespace, p.name), p.weight))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Loaded {
        contents: Contents {
            services,
            slices,
            pod_weights,
            generation: payload.generation,
        },
        fresh_at: from_unix(payload.fresh_at),
        taken_at: from_unix(payload.taken_at),
    })
}

/// Reads and checks the file at `config.path`, including its age.
pub fn load(config: &SnapshotConfig, wanted: &Scope) -> Result<Loaded, LoadError> {
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

/// Writes `bytes` to `path` so that readers (and a crash) see the old file
/// or the new one, whole: temporary file, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the snapshot path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    // Unique per write, not per process: during a rolling update the old
    // and the new agent pod both run as PID 1 and share the hostPath, and
    // two writers on one temporary file could rename a mix of both.
    tmp_name.push(format!(
        ".tmp{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Formats a time as RFC 3339 UTC (`2025-01-31T12:00:00Z`), for messages.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Loads the snapshot into `index` when there is a usable one, and flags
/// the agent stale until every source part has listed. Returns whether it
/// did. Call before the source starts.
pub fn warm_start(
    config: &SnapshotConfig,
    wanted: &Scope,
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

/// Saves the index every `interval` while it changes, once every source
/// part has listed (a half-listed index, or an unconfirmed snapshot, is
/// never saved), and once more at shutdown. Clears the snapshot staleness
/// when the source has listed.
pub async fn run_writer(
    config: SnapshotConfig,
    scope: Scope,
    index: Arc<Index>,
    status: Arc<SourceStatus>,
    metrics: Arc<Metrics>,
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
            let result = save(&config, &scope, &index, &status).await;
            metrics.record_snapshot_write(result.is_ok());
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
        let result = save(&config, &scope, &index, &status).await;
        metrics.record_snapshot_write(result.is_ok());
        match result {
            Ok(bytes) => info!(bytes, path = %config.path.display(), "final snapshot written"),
            Err(error) => {
                warn!(path = %config.path.display(), "cannot write the final snapshot: {error}")
            }
        }
    }
}

async fn save(
    config: &SnapshotConfig,
    scope: &Scope,
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
    let scope = scope.clone();
    let path = config.path.clone();
    tokio::task::spawn_blocking(move || {
        let bytes = encode(&index.export(), &scope, now, fresh_at);
        write_atomically(&path, &bytes).map(|()| bytes.len())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::{Change, Index};

    fn scope() -> Scope {
        Scope {
            source: "kubernetes".into(),
            namespaces: vec![],
            pod_weights: true,
        }
    }

    fn sample_index() -> Index {
        let index = Index::default();
        let mut svc = service("web");
        svc.ports.push(ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Tcp,
            target_port: Some("8080".into()),
        });
        svc.traffic_distribution = Some("PreferClose".into());
        let mut terminating = endpoint("10.0.0.2");
        terminating.ready = false;
        terminating.terminating = true;
        terminating.zone = Some("zone-a".into());
        terminating.target_ref = Some(TargetRef {
            kind: "Pod".into(),
            namespace: Some("ns".into()),
            name: "web-1".into(),
        });
        terminating.hints = TopologyHints::boxed(["zone-a".into()].into(), Box::default());
        let mut weighted = slice("a", "web", 8080, vec![endpoint("10.0.0.1"), terminating]);
        weighted.weight = Some(7);
        index.apply([
            Change::ApplyService(svc),
            Change::ApplySlice(weighted),
            Change::SetPodWeight(("ns".into(), "web-1".into()), Some(300)),
        ]);
        index
    }

    fn sorted(mut contents: Contents) -> Contents {
        contents.services.sort_by(|a, b| a.key.cmp(&b.key));
        contents.slices.sort_by(|a, b| a.key.cmp(&b.key));
        contents.pod_weights.sort();
        contents
    }

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
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_restores_objects_and_served_state() {
        let index = sample_index();
        let exported = index.export();
        let now = SystemTime::now();
        let bytes = encode(&exported, &scope(), now, now);
        let loaded = decode(&bytes, &scope()).unwrap();
        let a = sorted(exported);
        let b = sorted(loaded.contents);
        assert_eq!(a.services, b.services);
        assert_eq!(a.slices, b.slices);
        assert_eq!(a.pod_weights, b.pod_weights);
        assert_eq!(a.generation, b.generation);

        let seeded = Index::default();
        seeded.seed(b);
        let (before, after) = (index.load(), seeded.load());
        assert!(after.synced, "a seeded index is synced at once");
        let (x, y) = (
            before.get("ns", "web").unwrap(),
            after.get("ns", "web").unwrap(),
        );
        assert!(x.same_served_state(y));
        assert!(
            y.revision > a.generation,
            "revisions continue above the snapshot's"
        );
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let now = SystemTime::now();
        let bytes = encode(&sample_index().export(), &scope(), now, now);
        // Every truncation.
        for len in [0, 3, 8, 20, HEADER_LEN, bytes.len() - 1] {
            let error = decode(&bytes[..len], &scope()).unwrap_err();
            assert!(matches!(error, LoadError::Truncated(_)), "{len}: {error}");
        }
        // Any flipped payload bit.
        for at in [HEADER_LEN, HEADER_LEN + 17, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(matches!(decode(&bad, &scope()), Err(LoadError::Checksum)));
        }
        let mut foreign = bytes.clone();
        foreign[8] = 2;
        assert!(matches!(
            decode(&foreign, &scope()),
            Err(LoadError::Version { found: 2 })
        ));
        assert!(matches!(
            decode(b"{\"services\": []}", &scope()),
            Err(LoadError::Magic)
        ));
        // Trailing garbage is as wrong as missing bytes.
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode(&long, &scope()),
            Err(LoadError::Truncated(_))
        ));
    }

    #[test]
    fn scope_must_cover_what_the_agent_watches() {
        let now = SystemTime::now();
        let narrow = Scope {
            namespaces: vec!["ns".into()],
            ..scope()
        };
        let bytes = encode(&sample_index().export(), &narrow, now, now);
        assert!(decode(&bytes, &narrow).is_ok());
        // Taken for one namespace, used for all: it would hide Services.
        assert!(matches!(
            decode(&bytes, &scope()),
            Err(LoadError::Scope { .. })
        ));
        let manifests = Scope {
            source: "manifests".into(),
            ..narrow.clone()
        };
        assert!(matches!(
            decode(&bytes, &manifests),
            Err(LoadError::Scope { .. })
        ));
        // Taken for all, used for one namespace: filtered.
        let bytes = encode(&sample_index().export(), &scope(), now, now);
        let other = Scope {
            namespaces: vec!["other".into()],
            pod_weights: false,
            ..scope()
        };
        let loaded = decode(&bytes, &other).unwrap();
        assert!(loaded.contents.services.is_empty() && loaded.contents.pod_weights.is_empty());
    }

    #[test]
    fn old_snapshots_are_ignored_and_files_are_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("kd-snapshot-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = SnapshotConfig {
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
