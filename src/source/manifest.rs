//! The manifest source: Services and EndpointSlices from Kubernetes YAML.
//!
//! Reads a file, or every `.yaml`/`.yml`/`.json` file below a directory
//! (names starting with `.` skipped, so a ConfigMap volume's `..data` twin is
//! not read twice), in the exact Kubernetes schema, multi-document files and
//! `kind: List` included. The tree is polled rather than watched with inotify:
//! ConfigMap volumes update by swapping symlinks, which inotify reports
//! unreliably, and a stat per file per second costs nothing at this size.
//!
//! A file that fails to parse is reported (log and metric) and its last good
//! content stays in force; the other files still update.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::SourceError;
use super::convert::SERVICE_NAME_LABEL;
use super::metrics::{InvalidWeights, SourceMetrics};
use super::service::LeanService;
use super::slice::Slice;
use crate::index::{Index, Scope, ServiceObject, SliceObject};

/// The index part this source reports its sync under.
pub const PART: &str = "manifests";

/// The demo manifests, built in so `--source demo` works from any directory.
pub const DEMO: &[(&str, &str)] = &[
    (
        "demo/shop.yaml",
        include_str!("../../examples/demo/shop.yaml"),
    ),
    (
        "demo/dual-stack.yaml",
        include_str!("../../examples/demo/dual-stack.yaml"),
    ),
    (
        "demo/platform.yaml",
        include_str!("../../examples/demo/platform.yaml"),
    ),
];

/// The objects of one file.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub services: Vec<ServiceObject>,
    pub slices: Vec<SliceObject>,
}

/// The built-in demo manifests' objects (what `--source demo` serves), for
/// tests, fuzzing and benchmarks. They are checked to parse by this
/// module's tests, so a failure here is a broken build, not bad input.
pub fn demo_objects() -> Parsed {
    let mut parsed = Parsed::default();
    for (name, text) in DEMO {
        let file = parse_manifests(text, &InvalidWeights::default())
            .unwrap_or_else(|error| panic!("built-in manifest {name}: {error}"));
        merge_into(&mut parsed, file);
    }
    parsed
}

/// Parses one file's text. Errors name the document (1-based) and the cause.
/// Weights ignored as invalid are counted in `invalid_weights`.
pub fn parse_manifests(text: &str, invalid_weights: &InvalidWeights) -> Result<Parsed, String> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let mut parsed = Parsed::default();
    for (number, document) in documents.into_iter().enumerate() {
        add_document(document, &mut parsed, invalid_weights)
            .map_err(|e| format!("document {}: {e}", number + 1))?;
    }
    Ok(parsed)
}

fn add_document(
    document: Value,
    parsed: &mut Parsed,
    invalid_weights: &InvalidWeights,
) -> Result<(), String> {
    if document.is_null() {
        return Ok(()); // an empty document, e.g. after a trailing `---`
    }
    let Value::Object(map) = &document else {
        return Err("expected a Kubernetes object (a mapping)".into());
    };
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    let api_version = text(map.get("apiVersion"));
    let kind = text(map.get("kind"));
    let name = text(map.get("metadata").and_then(|m| m.get("name"))).unwrap_or_default();
    let name = name.as_str();
    match (api_version.as_deref(), kind.as_deref()) {
        (None, _) => Err("missing apiVersion".into()),
        (_, None) => Err("missing kind".into()),
        (Some(_), Some("List")) => {
            let Some(Value::Array(items)) = map.get("items") else {
                return Err("List without items".into());
            };
            for (number, item) in items.iter().enumerate() {
                add_document(item.clone(), parsed, invalid_weights)
                    .map_err(|e| format!("item {}: {e}", number + 1))?;
            }
            Ok(())
        }
        (Some("v1"), Some("Service")) => {
            require_name(name, "Service")?;
            let service: LeanService =
                serde_json::from_value(document).map_err(|e| format!("Service {name}: {e}"))?;
            parsed.services.push(service.into_object(invalid_weights));
            Ok(())
        }
        (Some("discovery.k8s.io/v1"), Some("EndpointSlice")) => {
            require_name(name, "EndpointSlice")?;
            let slice: Slice = serde_json::from_value(document)
                .map_err(|e| format!("EndpointSlice {name}: {e}"))?;
            if let Some(compact) = slice.into_object(invalid_weights) {
                if compact.service.is_none() {
                    warn!(
                        "EndpointSlice {name} has no {SERVICE_NAME_LABEL} label; no Service uses it"
                    );
                }
                parsed.slices.push(compact);
            }
            Ok(())
        }
        (Some(api_version), Some(kind)) => {
            warn!(
                "ignoring {api_version} {kind} {name:?}: only v1 Service and discovery.k8s.io/v1 EndpointSlice are read"
            );
            Ok(())
        }
    }
}

fn require_name(name: &str, kind: &str) -> Result<(), String> {
    if name.is_empty() {
        Err(format!("{kind} without metadata.name"))
    } else {
        Ok(())
    }
}

/// What a file looked like when it was last read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

struct FileState {
    fingerprint: Fingerprint,
    /// The last content that parsed; kept while the file is broken.
    good: Option<Parsed>,
}

/// Where the manifests come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestOrigin {
    Path(PathBuf),
    /// The built-in demo manifests.
    Demo,
}

pub struct ManifestSource {
    pub origin: ManifestOrigin,
    pub poll_interval: Duration,
    pub index: Arc<Index>,
    pub metrics: Arc<SourceMetrics>,
    pub status: Arc<crate::status::SourceStatus>,
}

impl ManifestSource {
    /// Fails when the path does not exist: a typo should stop the agent, not
    /// leave it serving nothing.
    pub fn check(origin: &ManifestOrigin) -> Result<(), SourceError> {
        if let ManifestOrigin::Path(path) = origin
            && !path.exists()
        {
            return Err(SourceError::Manifest {
                path: path.clone(),
                message: "no such file or directory".into(),
            });
        }
        Ok(())
    }

    pub async fn run(self, shutdown: CancellationToken) {
        self.index.expect_parts([PART]);
        match &self.origin {
            ManifestOrigin::Demo => {
                let mut parsed = Parsed::default();
                for (name, text) in DEMO {
                    match parse_manifests(text, &self.metrics.invalid_weights) {
                        Ok(p) => merge_into(&mut parsed, p),
                        Err(e) => error!("built-in manifest {name}: {e}"),
                    }
                }
                info!(
                    services = parsed.services.len(),
                    "serving the built-in demo manifests"
                );
                self.index.replace(
                    &Scope::All,
                    Some(parsed.services),
                    Some(parsed.slices),
                    PART,
                );
                shutdown.cancelled().await;
            }
            ManifestOrigin::Path(root) => {
                let root = root.clone();
                let mut files: BTreeMap<PathBuf, FileState> = BTreeMap::new();
                let mut first = true;
                loop {
                    if self.rescan(&root, &mut files).await || first {
                        let mut all = Parsed::default();
                        for state in files.values() {
                            if let Some(good) = &state.good {
                                merge_into(&mut all, good.clone());
                            }
                        }
                        info!(
                            path = %root.display(),
                            files = files.len(),
                            services = all.services.len(),
                            slices = all.slices.len(),
                            "manifests loaded"
                        );
                        self.index
                            .replace(&Scope::All, Some(all.services), Some(all.slices), PART);
                        first = false;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.poll_interval) => {}
                    }
                }
            }
        }
    }

    /// Re-reads what changed; true when anything did (files added, changed
    /// or removed).
    async fn rescan(&self, root: &Path, files: &mut BTreeMap<PathBuf, FileState>) -> bool {
        let found = match list_files(root) {
            Ok(found) => found,
            Err(e) => {
                let message = format!("manifest source {}: {e}", root.display());
                self.report(&message);
                return false;
            }
        };
        let mut changed = false;
        let before = files.len();
        files.retain(|path, _| found.iter().any(|(p, _)| p == path));
        changed |= files.len() != before;
        for (path, fingerprint) in found {
            if files
                .get(&path)
                .is_some_and(|s| s.fingerprint == fingerprint)
            {
                continue;
            }
            changed = true;
            let result = match tokio::fs::read_to_string(&path).await {
                Ok(text) => parse_manifests(&text, &self.metrics.invalid_weights),
                Err(e) => Err(format!("cannot read: {e}")),
            };
            let previous = files.remove(&path).and_then(|s| s.good);
            let good = match result {
                Ok(parsed) => {
                    self.status.succeeded(&path.display().to_string());
                    Some(parsed)
                }
                Err(e) => {
                    let message = format!(
                        "manifest {}: {e}; keeping its last good content",
                        path.display()
                    );
                    self.status.failed(&path.display().to_string(), &message);
                    self.report(&message);
                    previous
                }
            };
            files.insert(path, FileState { fingerprint, good });
        }
        changed
    }

    fn report(&self, message: &str) {
        error!("{message}");
        self.metrics.record_source_error("manifest");
    }
}

fn merge_into(all: &mut Parsed, more: Parsed) {
    all.services.extend(more.services);
    all.slices.extend(more.slices);
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let metadata = std::fs::metadata(path)?;
    Ok(Fingerprint {
        len: metadata.len(),
        modified: metadata.modified().ok(),
    })
}

fn list_files(root: &Path) -> std::io::Result<Vec<(PathBuf, Fingerprint)>> {
    let mut found = Vec::new();
    if std::fs::metadata(root)?.is_file() {
        found.push((root.to_path_buf(), fingerprint(root)?));
        return Ok(found);
    }
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            let Ok(metadata) = std::fs::metadata(&path) else {
                continue; // a dangling link, or removed since read_dir
            };
            if metadata.is_dir() {
                pending.push(path);
            } else if is_manifest(&path) {
                found.push((path.clone(), fingerprint(&path)?));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_manifests_parse() {
        for (name, text) in DEMO {
            let parsed = parse_manifests(text, &InvalidWeights::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                !parsed.services.is_empty() || !parsed.slices.is_empty(),
                "{name}"
            );
        }
    }

    #[test]
    fn multi_document_files_and_lists_are_read() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: None}
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-abc
    namespace: shop
    labels: {kubernetes.io/service-name: web}
  addressType: IPv4
  endpoints: [{addresses: [10.1.0.1]}]
---
"#;
        let parsed = parse_manifests(text, &InvalidWeights::default()).unwrap();
        assert_eq!(parsed.services.len(), 1);
        assert_eq!(parsed.slices.len(), 1);
        assert_eq!(&*parsed.slices[0].key.namespace, "shop");
    }

    #[test]
    fn broken_documents_are_reported_with_their_position() {
        let cases = [
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: [",
                "invalid YAML",
            ),
            (
                "kind: Service\nmetadata: {name: a}",
                "document 1: missing apiVersion",
            ),
            ("apiVersion: v1\nmetadata: {name: a}", "missing kind"),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {}",
                "without metadata.name",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: notanumber}]}",
                "document 2: Service b",
            ),
            ("- just\n- a list", "expected a Kubernetes object"),
        ];
        for (text, expected) in cases {
            let error = parse_manifests(text, &InvalidWeights::default()).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
