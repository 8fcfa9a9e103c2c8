//! The agent's source, started from its [`Config`]: the Kubernetes
//! watchers (once a client can be built) or the manifest files. What the
//! source learns goes into the index; the agent only holds its task.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{AgentError, Config, Source};
use crate::index::Index;
use crate::index::topology::Locality;
use crate::metrics::Metrics;
use crate::source::kubernetes::{KubernetesSource, zone_of_node};
use crate::source::manifest::ManifestSource;
use crate::source::metrics::SourceMetrics;
use crate::status::SourceStatus;

/// Starts the configured source; a manifest path that does not exist fails
/// here, before anything runs.
pub(super) fn start(
    config: &Config,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
    status: Arc<SourceStatus>,
    shutdown: &CancellationToken,
) -> Result<JoinHandle<()>, AgentError> {
    let task = match config.source.clone() {
        Source::Kubernetes {
            list_strategy,
            api_encoding,
            watch_slices,
        } => {
            let config = config.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let Some(client) = kubernetes_client(&status, &metrics.source, &shutdown).await
                else {
                    return;
                };
                if config.zone.is_none()
                    && let Some(node) = &config.node_name
                    && config.zone_from_node
                {
                    let zone = zone_of_node(&client, node).await;
                    if zone.is_some() {
                        index.set_locality(locality(&config, zone));
                    }
                }
                let source = KubernetesSource {
                    client,
                    namespaces: config.namespaces.clone(),
                    list_strategy,
                    api_encoding,
                    watch_slices,
                    pod_weights: config.pod_weights,
                    index,
                    metrics: metrics.source.clone(),
                    status,
                };
                source.run(shutdown).await;
            })
        }
        Source::Manifests {
            origin,
            poll_interval,
        } => {
            ManifestSource::check(&origin)?;
            let source = ManifestSource {
                origin,
                poll_interval,
                index,
                metrics: metrics.source.clone(),
                status,
            };
            tokio::spawn(source.run(shutdown.clone()))
        }
    };
    Ok(task)
}

/// The Kubernetes client, retried with backoff while the configuration
/// cannot be loaded (a broken kubeconfig, a missing service-account token):
/// the agent stays up and says why (log once per cause, `/readyz`), serving
/// its snapshot if it loaded one, and goes on when the file is fixed.
/// None when shutdown comes first.
async fn kubernetes_client(
    status: &SourceStatus,
    metrics: &SourceMetrics,
    shutdown: &CancellationToken,
) -> Option<kube::Client> {
    const PART: &str = "kubeconfig";
    let mut delay = Duration::from_millis(500);
    let mut last: Option<String> = None;
    loop {
        match KubernetesSource::client().await {
            Ok(client) => {
                if last.is_some() {
                    status.succeeded(PART);
                    info!("Kubernetes client configuration loaded: going on");
                }
                return Some(client);
            }
            Err(error) => {
                let message = error.to_string();
                metrics.record_api_error(PART, "config");
                if last.as_deref() != Some(message.as_str()) {
                    error!(
                        "{message}; retrying with backoff (fix the kubeconfig, $KUBECONFIG, or the in-cluster service account)"
                    );
                }
                status.failed(PART, &message);
                last = Some(message);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

pub(super) fn locality(config: &Config, zone: Option<String>) -> Locality {
    let locality = Locality {
        node: config.node_name.as_deref().map(Into::into),
        zone: zone.as_deref().map(Into::into),
        default_topology: config.default_topology,
        panic_threshold: config.panic_threshold,
    };
    info!(
        node = ?locality.node,
        zone = ?locality.zone,
        default_topology = ?locality.default_topology,
        panic_threshold = locality.panic_threshold,
        "topology"
    );
    locality
}
