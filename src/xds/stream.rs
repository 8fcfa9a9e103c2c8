//! One ADS stream, state of the world: what the client watches per type,
//! what it was last sent, and what it acknowledged.
//!
//! Requests change the watched names (and are answered at once); wake-ups
//! from the index's per-Service notifier re-read the snapshot and push
//! what changed. Listener and Cluster responses carry every watched
//! resource of the type (for those types a resource missing from a
//! response means deleted); ClusterLoadAssignments go one by one.
//!
//! Reads snapshots only; owns nothing outside this stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, info, warn};

use super::XdsContext;
use super::metrics::TypeLabels;
use super::names::Target;
use super::resources::{self, CLUSTER, ENDPOINTS, LISTENER, ROUTE};
use crate::index::{ServedService, ServiceKey, Snapshot};

/// The resource types a gRPC client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Listener,
    Route,
    Cluster,
    Endpoints,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Listener, Kind::Route, Kind::Cluster, Kind::Endpoints];

    fn from_type_url(url: &str) -> Option<Kind> {
        match url {
            LISTENER => Some(Kind::Listener),
            ROUTE => Some(Kind::Route),
            CLUSTER => Some(Kind::Cluster),
            ENDPOINTS => Some(Kind::Endpoints),
            _ => None,
        }
    }

    fn type_url(self) -> &'static str {
        match self {
            Kind::Listener => LISTENER,
            Kind::Route => ROUTE,
            Kind::Cluster => CLUSTER,
            Kind::Endpoints => ENDPOINTS,
        }
    }

    pub(crate) fn label(self) -> TypeLabels {
        let r#type = match self {
            Kind::Listener => "listener",
            Kind::Route => "route",
            Kind::Cluster => "cluster",
            Kind::Endpoints => "endpoints",
        };
        TypeLabels { r#type }
    }

    /// Whether a response must list every watched resource (a missing one
    /// is deleted), as for Listeners and Clusters.
    fn whole_set(self) -> bool {
        matches!(self, Kind::Listener | Kind::Cluster)
    }

    fn build(self, name: &str, target: &Target, service: &ServedService) -> Option<Any> {
        let policy = super::policy::of(service);
        match self {
            Kind::Listener => resources::listener(name, target, service, &policy),
            Kind::Cluster => resources::cluster(name, target, service, &policy),
            Kind::Endpoints => resources::assignment(name, target, service, &policy),
            // Routes are inline in the Listener; no RouteConfiguration is
            // served on its own.
            Kind::Route => None,
        }
    }
}

/// One type's state on this stream.
#[derive(Default)]
struct TypeState {
    /// Watched names; None for a malformed one (served as nonexistent).
    watched: BTreeMap<String, Option<Target>>,
    /// The encoded resources last sent, by name.
    sent: BTreeMap<String, Vec<u8>>,
    /// Nonce and version of the last response.
    nonce: String,
    version: String,
    /// The last version the client accepted.
    acked: String,
    answered: bool,
}

pub(crate) struct Stream {
    context: Arc<XdsContext>,
    types: [TypeState; 4],
    responses: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    nonces: u64,
    node: String,
    changes: SelectAll<BoxStream<'static, ()>>,
    keys: BTreeSet<ServiceKey>,
}

/// Counts the stream as a connected client while it lives.
struct Connected(Arc<XdsContext>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.metrics.clients.dec();
    }
}

impl Stream {
    pub(crate) fn new(
        context: Arc<XdsContext>,
        responses: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) -> Self {
        Self {
            context,
            types: Default::default(),
            responses,
            nonces: 0,
            node: String::new(),
            changes: SelectAll::new(),
            keys: BTreeSet::new(),
        }
    }

    /// Serves the stream until the client ends it, it fails, or the agent
    /// shuts down.
    pub(crate) async fn run(
        mut self,
        mut requests: impl futures::Stream<Item = Result<DiscoveryRequest, Status>> + Unpin,
    ) {
        self.context.metrics.clients.inc();
        let _connected = Connected(self.context.clone());
        let shutdown = self.context.shutdown.clone();
        // Before the first sync, a Service not in the index may only be
        // unknown yet; answering "does not exist" would break clients.
        tokio::select! {
            () = self.context.index.wait_synced() => {}
            () = shutdown.cancelled() => return,
        }
        loop {
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => {
                        if !self.on_request(request).await {
                            break;
                        }
                    }
                    Some(Err(status)) => {
                        debug!(node = %self.node, "xDS stream failed: {status}");
                        break;
                    }
                    None => break,
                },
                Some(()) = self.changes.next(), if !self.changes.is_empty() => {
                    let woken = Instant::now();
                    // Coalesce wake-ups that are already pending.
                    while let Some(Some(())) = self.changes.next().now_or_never() {}
                    if !self.push_all(Some(woken)).await {
                        break;
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
        for kind in Kind::ALL {
            let watched = self.types[kind as usize].watched.len() as i64;
            self.context
                .metrics
                .watched
                .get_or_create(&kind.label())
                .dec_by(watched);
        }
        debug!(node = %self.node, "xDS stream ended");
    }

    /// Handles one request; false when the client is gone.
    async fn on_request(&mut self, request: DiscoveryRequest) -> bool {
        if self.node.is_empty() {
            self.node = describe(request.node.as_ref());
            info!(node = %self.node, "xDS client connected");
        }
        let Some(kind) = Kind::from_type_url(&request.type_url) else {
            warn!(node = %self.node, type_url = %request.type_url, "xDS request for a resource type this agent does not serve: ignored");
            self.context
                .metrics
                .rejected
                .get_or_create(&TypeLabels { r#type: "unknown" })
                .inc();
            return true;
        };
        let state = &mut self.types[kind as usize];
        if !request.response_nonce.is_empty() && request.response_nonce != state.nonce {
            // Answers a response that has been superseded; the client will
            // answer the newer one too.
            debug!(node = %self.node, ?kind, nonce = %request.response_nonce, "stale xDS request ignored");
            return true;
        }
        if let Some(error) = &request.error_detail {
            warn!(
                node = %self.node,
                ?kind,
                rejected_version = %state.version,
                kept_version = %request.version_info,
                reason = %error.message,
                "xDS client rejected a response (NACK); it keeps its last accepted version"
            );
            self.context
                .metrics
                .nacks
                .get_or_create(&kind.label())
                .inc();
        } else if !request.response_nonce.is_empty() {
            state.acked = request.version_info.clone();
            debug!(node = %self.node, ?kind, version = %state.acked, "xDS ACK");
        }
        let names: BTreeSet<&str> = request.resource_names.iter().map(String::as_str).collect();
        let same = names.len() == state.watched.len()
            && names.iter().all(|name| state.watched.contains_key(*name));
        if same && state.answered {
            return true;
        }
        let before = state.watched.len() as i64;
        let domain = &self.context.cluster_domain;
        let mut watched = BTreeMap::new();
        for name in names {
            let target = match state.watched.remove(name) {
                Some(target) => target,
                None => match Target::parse(name, domain) {
                    Ok(target) => Some(target),
                    Err(error) => {
                        warn!(node = %self.node, ?kind, "xDS resource name refused (served as nonexistent): {error}");
                        self.context
                            .metrics
                            .rejected
                            .get_or_create(&kind.label())
                            .inc();
                        None
                    }
                },
            };
            watched.insert(name.to_owned(), target);
        }
        self.context
            .metrics
            .watched
            .get_or_create(&kind.label())
            .inc_by(watched.len() as i64 - before);
        state.watched = watched;
        // Forget what was sent of names no longer watched, so that a watch
        // again is answered again.
        let watched = &state.watched;
        state.sent.retain(|name, _| watched.contains_key(name));
        self.resubscribe();
        // The first answer and one for every new set of names are due even
        // when they carry nothing new (that is how a client learns that a
        // Listener or Cluster does not exist).
        self.push(kind, true, None).await && self.push_all(None).await
    }

    /// Subscribes to the Services any type watches, when that set changed.
    fn resubscribe(&mut self) {
        let keys: BTreeSet<ServiceKey> = self
            .types
            .iter()
            .flat_map(|t| t.watched.values().flatten().map(|t| t.key.clone()))
            .collect();
        if keys == self.keys {
            return;
        }
        let notifier = self.context.index.notifier();
        self.changes = SelectAll::new();
        for key in &keys {
            let receiver = notifier.subscribe(key);
            self.changes.push(
                futures::stream::unfold(receiver, |mut receiver| async move {
                    receiver.changed().await.ok()?;
                    Some(((), receiver))
                })
                .boxed(),
            );
        }
        self.keys = keys;
    }

    async fn push_all(&mut self, woken: Option<Instant>) -> bool {
        for kind in Kind::ALL {
            if self.types[kind as usize].answered && !self.push(kind, false, woken).await {
                return false;
            }
        }
        true
    }

    /// Sends what changed of one type (everything, for Listeners and
    /// Clusters); with `force`, a response even when nothing did. False
    /// when the client is gone.
    async fn push(&mut self, kind: Kind, force: bool, woken: Option<Instant>) -> bool {
        let snapshot = self.context.index.load();
        let state = &mut self.types[kind as usize];
        let (version, built) = build(kind, &state.watched, &snapshot);
        let changed: Vec<&(String, Any)> = built
            .iter()
            .filter(|(name, any)| state.sent.get(name) != Some(&any.value))
            .collect();
        let removed = state
            .sent
            .keys()
            .any(|name| !built.iter().any(|(n, _)| n == name));
        if !force && changed.is_empty() && !(kind.whole_set() && removed) {
            return true;
        }
        let resources: Vec<Any> = if kind.whole_set() {
            built.iter().map(|(_, any)| any.clone()).collect()
        } else {
            changed.iter().map(|(_, any)| any.clone()).collect()
        };
        state.sent = built
            .into_iter()
            .map(|(name, any)| (name, any.value))
            .collect();
        self.nonces += 1;
        state.nonce = self.nonces.to_string();
        state.version = version;
        state.answered = true;
        debug!(node = %self.node, ?kind, version = %state.version, resources = resources.len(), "xDS push");
        let response = DiscoveryResponse {
            version_info: state.version.clone(),
            resources,
            type_url: kind.type_url().to_owned(),
            nonce: state.nonce.clone(),
            ..Default::default()
        };
        if self.responses.send(Ok(response)).await.is_err() {
            return false;
        }
        self.context
            .metrics
            .pushes
            .get_or_create(&kind.label())
            .inc();
        if let Some(woken) = woken {
            self.context
                .metrics
                .push_latency
                .observe(woken.elapsed().as_secs_f64());
        }
        true
    }
}

/// The resources of `kind` for the watched names that exist, and a version
/// from the revisions of the Services they name.
fn build(
    kind: Kind,
    watched: &BTreeMap<String, Option<Target>>,
    snapshot: &Snapshot,
) -> (String, Vec<(String, Any)>) {
    let mut version = 0;
    let mut built = Vec::new();
    for (name, target) in watched {
        let Some(target) = target else { continue };
        version = version.max(snapshot.revision_of(&target.key));
        if let Some(service) = snapshot.services.get(&target.key)
            && let Some(any) = kind.build(name, target, service)
        {
            built.push((name.clone(), any));
        }
    }
    (version.to_string(), built)
}

fn describe(node: Option<&Node>) -> String {
    match node {
        Some(node) if !node.id.is_empty() => node.id.clone(),
        _ => "(no node id)".into(),
    }
}
