//! The Kubernetes source: kube-runtime watchers on Services and
//! EndpointSlices (and, with `--pod-weights`, weighted Pods).
//!
//! One watcher per kind and per watched namespace (or one cluster-wide set);
//! EndpointSlices, unless `--watch-slices all`, by two label-selected
//! watchers that receive only the slices the agent serves
//! ([`Selection::SERVED_SLICES`]).
//! Errors are retried with kube-runtime's default backoff and logged once
//! per distinct cause, so an outage does not flood the log. This file
//! starts the watchers; the rest lives beside it:
//!
//! - [`super::kinds`]: Services and EndpointSlices, and their watch loop.
//! - [`super::unlabelled`]: Services exposed by annotation whose slices
//!   the selected watchers cannot see.
//! - [`super::pod_weights`]: the metadata-only watch of weighted Pods.
//! - [`super::supervise`]: the loop every watch runs, and its recovery after
//!   an outage.
//! - [`super::health`], [`super::failure`]: what a watch's events and errors
//!   say about the API server, reported per part.
//! - [`super::node_zone`]: this node's zone, read once at start.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::kinds::{self, Selection, Watched};
use super::metrics::SourceMetrics;
use super::pod_weights::{self, POD_RESOURCE};
use super::service::LeanService;
use super::slice::Slice;
use super::supervise::WatchedPart;
use super::unlabelled::Unlabelled;
use crate::index::{Index, Scope};
use crate::status::SourceStatus;

pub use super::node_zone::zone_of_node;

/// How the watchers fetch their initial state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// Streaming lists when the API server serves them, else list+watch.
    Auto,
    /// Always `watch?sendInitialEvents=true` (Kubernetes WatchList).
    Streaming,
    /// Always paginated list, then watch.
    List,
}

/// The encoding of lists and watches of Services and EndpointSlices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiEncoding {
    /// Kubernetes protobuf ([`super::watch`]).
    Protobuf,
    /// JSON, through kube-runtime's watcher.
    Json,
}

/// Which EndpointSlices the agent receives (`--watch-slices`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchSlices {
    /// Only those of headless Services and of Services labelled
    /// `kubedisco.io/expose=true`, selected by label on the API server.
    Served,
    /// Every slice in the watched namespaces.
    All,
}

impl WatchSlices {
    fn selections(self) -> &'static [Selection] {
        match self {
            WatchSlices::Served => &Selection::SERVED_SLICES,
            WatchSlices::All => &[Selection::EVERYTHING],
        }
    }
}

/// What the watchers need; each watcher task gets its [`WatchedPart`] of it.
#[derive(Clone)]
pub struct KubernetesSource {
    pub client: Client,
    /// Empty means all namespaces.
    pub namespaces: Vec<String>,
    pub list_strategy: ListStrategy,
    pub api_encoding: ApiEncoding,
    pub watch_slices: WatchSlices,
    /// Also watch Pods carrying `kubedisco.io/weight` (metadata only).
    pub pod_weights: bool,
    pub index: Arc<Index>,
    pub metrics: Arc<SourceMetrics>,
    pub status: Arc<SourceStatus>,
}

impl KubernetesSource {
    /// Builds a client from in-cluster config or the kubeconfig.
    pub async fn client() -> Result<Client, super::SourceError> {
        let config = kube::Config::infer().await?;
        Client::try_from(config).map_err(super::SourceError::Client)
    }

    /// The sync parts this source reports, declared to the index up front.
    pub fn parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        let mut watches = vec![(LeanService::RESOURCE, Selection::EVERYTHING)];
        watches.extend(
            self.watch_slices
                .selections()
                .iter()
                .map(|&selection| (Slice::RESOURCE, selection)),
        );
        if self.pod_weights {
            watches.push((POD_RESOURCE, Selection::EVERYTHING));
        }
        for (resource, selection) in watches {
            if self.namespaces.is_empty() {
                parts.push(part_name(resource, selection, None));
            } else {
                parts.extend(
                    self.namespaces
                        .iter()
                        .map(|ns| part_name(resource, selection, Some(ns))),
                );
            }
        }
        parts
    }

    /// `resource` watched in `namespace` (None: all namespaces).
    fn part(
        &self,
        resource: &'static str,
        selection: Selection,
        namespace: Option<String>,
        streaming: bool,
    ) -> WatchedPart {
        let scope = match &namespace {
            Some(ns) => Scope::Namespace(ns.as_str().into()),
            None => Scope::All,
        };
        WatchedPart {
            client: self.client.clone(),
            resource,
            part: part_name(resource, selection, namespace.as_deref()),
            namespace,
            streaming,
            selection,
            scope,
            index: self.index.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
        }
    }

    /// Runs every watcher until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        self.index.expect_parts(self.parts());
        let streaming = match self.list_strategy {
            ListStrategy::Streaming => true,
            ListStrategy::List => false,
            ListStrategy::Auto => self.streaming_lists_supported().await,
        };
        info!(
            streaming_lists = streaming,
            namespaces = ?self.namespaces,
            slices = ?self.watch_slices,
            "watching Services and EndpointSlices"
        );
        let mut tasks = tokio::task::JoinSet::new();
        let scopes: Vec<Option<String>> = if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        };
        let protobuf = self.api_encoding == ApiEncoding::Protobuf;
        for namespace in scopes {
            let part =
                |resource, selection| self.part(resource, selection, namespace.clone(), streaming);
            let services = part(LeanService::RESOURCE, Selection::EVERYTHING);
            match self.watch_slices {
                WatchSlices::Served => {
                    let unlabelled = Unlabelled::new(self.metrics.exposed_without_label.clone());
                    tasks.spawn(kinds::watch::<LeanService>(services, protobuf, unlabelled));
                }
                WatchSlices::All => {
                    tasks.spawn(kinds::watch::<LeanService>(services, protobuf, ()));
                }
            }
            if self.pod_weights {
                tasks.spawn(pod_weights::watch(part(
                    POD_RESOURCE,
                    Selection::EVERYTHING,
                )));
            }
            for &selection in self.watch_slices.selections() {
                tasks.spawn(kinds::watch::<Slice>(
                    part(Slice::RESOURCE, selection),
                    protobuf,
                    (),
                ));
            }
        }
        shutdown.cancelled().await;
        tasks.abort_all();
    }

    /// Streaming lists save the API server a full list per agent start, but
    /// a server without the WatchList feature either rejects them or silently
    /// never ends the initial stream; a watch that matches nothing tells us
    /// which, cheaply.
    ///
    /// The probe runs on a client of its own. On the watchers' client its
    /// TLS connection would leave a session ticket behind, the watchers'
    /// connections would resume that session, and a resumed handshake
    /// stalls the first request by the server's delayed ACK (40 ms on
    /// Linux): the client writes its Finished and the request as two small
    /// segments and, without TCP_NODELAY (kube-rs does not set it), Nagle
    /// holds the request back until the Finished is acknowledged.
    async fn streaming_lists_supported(&self) -> bool {
        let client = Self::client().await.unwrap_or_else(|_| self.client.clone());
        let api: Api<Slice> = match self.namespaces.first() {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let config = watcher::Config::default()
            .streaming_lists()
            .labels("kubedisco.io/probe-matches-nothing=1");
        let mut stream = watcher::watcher(api, config).boxed();
        let probe = async {
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::InitDone) => return true,
                    Ok(_) => continue,
                    Err(error) => {
                        debug!("streaming list probe failed: {error}");
                        return false;
                    }
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .unwrap_or(false)
    }
}

/// The sync part of `resource` as `selection` selects it, in `namespace`
/// (None: all namespaces), as the index and the status know it:
/// `endpointslices:headless/shop`.
fn part_name(resource: &str, selection: Selection, namespace: Option<&str>) -> String {
    let mut name = resource.to_string();
    if let Some(selected) = selection.name {
        name.push(':');
        name.push_str(selected);
    }
    if let Some(ns) = namespace {
        name.push('/');
        name.push_str(ns);
    }
    name
}
