//! The Kubernetes source: kube-runtime watchers on Services and EndpointSlices.
//!
//! One watcher per kind and per watched namespace (or one cluster-wide pair).
//! A watcher's initial list, and every re-list after a 410 Gone or a broken
//! connection, is buffered and handed to the index as one
//! [`Index::replace`], so readers never see a half-listed state. Errors are
//! retried with kube-runtime's default backoff and logged once per distinct
//! cause, so an outage does not flood the log.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::convert::{WEIGHT_KEY, parse_weight};
use super::service::LeanService;
use super::slice::Slice;
use super::status::SourceStatus;
use super::watch::ProtoResource;
use crate::index::objects::{ServiceKey, SliceKey};
use crate::index::{Change, Index, PodKey, Scope, ServiceObject, SliceObject};
use crate::metrics::Metrics;

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

/// A kind the agent watches, and how its objects reach the index.
trait Watched:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + ProtoResource
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    type Compact: Send + 'static;
    /// The plural resource name, for logs, metrics and sync parts.
    const RESOURCE: &'static str;
    fn compact(self) -> Option<Self::Compact>;
    fn applied(compact: Self::Compact) -> Change;
    fn deleted(&self) -> Change;
    fn replace(index: &Index, scope: &Scope, items: Vec<Self::Compact>, part: &str);
}

/// Services, like slices, are decoded straight into what the index keeps
/// ([`LeanService`]).
impl Watched for LeanService {
    type Compact = ServiceObject;
    const RESOURCE: &'static str = "services";
    fn compact(self) -> Option<ServiceObject> {
        Some(self.into_object())
    }
    fn applied(compact: ServiceObject) -> Change {
        Change::ApplyService(compact)
    }
    fn deleted(&self) -> Change {
        Change::DeleteService(ServiceKey::new(
            self.namespace().as_deref().unwrap_or("default"),
            &self.name_any(),
        ))
    }
    fn replace(index: &Index, scope: &Scope, items: Vec<ServiceObject>, part: &str) {
        index.replace(scope, Some(items), None, part);
    }
}

/// EndpointSlices are decoded straight into what the index keeps
/// ([`Slice`]): at start-up every slice in the cluster is listed at once.
impl Watched for Slice {
    type Compact = SliceObject;
    const RESOURCE: &'static str = "endpointslices";
    fn compact(self) -> Option<SliceObject> {
        self.into_object()
    }
    fn applied(compact: SliceObject) -> Change {
        Change::ApplySlice(compact)
    }
    fn deleted(&self) -> Change {
        Change::DeleteSlice(SliceKey {
            namespace: self.namespace().as_deref().unwrap_or("default").into(),
            name: self.name_any().into(),
        })
    }
    fn replace(index: &Index, scope: &Scope, items: Vec<SliceObject>, part: &str) {
        index.replace(scope, None, Some(items), part);
    }
}

/// Everything a watcher task needs; cloned into each task.
#[derive(Clone)]
pub struct KubernetesSource {
    pub client: Client,
    /// Empty means all namespaces.
    pub namespaces: Vec<String>,
    pub list_strategy: ListStrategy,
    pub api_encoding: ApiEncoding,
    /// Also watch Pods carrying `kubedisco.io/weight` (metadata only).
    pub pod_weights: bool,
    pub index: Arc<Index>,
    pub metrics: Arc<Metrics>,
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
        let mut resources = vec![LeanService::RESOURCE, Slice::RESOURCE];
        if self.pod_weights {
            resources.push(POD_RESOURCE);
        }
        for resource in resources {
            if self.namespaces.is_empty() {
                parts.push(resource.to_string());
            } else {
                parts.extend(self.namespaces.iter().map(|ns| format!("{resource}/{ns}")));
            }
        }
        parts
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
            "watching Services and EndpointSlices"
        );
        let mut tasks = tokio::task::JoinSet::new();
        let scopes: Vec<Option<String>> = if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        };
        for namespace in scopes {
            tasks.spawn(
                self.clone()
                    .watch::<LeanService>(namespace.clone(), streaming),
            );
            if self.pod_weights {
                tasks.spawn(self.clone().watch_pod_weights(namespace.clone(), streaming));
            }
            tasks.spawn(self.clone().watch::<Slice>(namespace, streaming));
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

    async fn watch<K: Watched>(self, namespace: Option<String>, streaming: bool) {
        let api: Api<K> = match &namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let (scope, part) = match &namespace {
            Some(ns) => (
                Scope::Namespace(ns.as_str().into()),
                format!("{}/{ns}", K::RESOURCE),
            ),
            None => (Scope::All, K::RESOURCE.to_string()),
        };
        let mut config = watcher::Config::default();
        if streaming {
            config = config.streaming_lists();
        }
        let namespace_of_watch = namespace.clone();
        let probe_api = api.clone();
        let (client, encoding) = (self.client.clone(), self.api_encoding);
        let mut stream = Supervised::new(
            move || match encoding {
                ApiEncoding::Protobuf => super::watch::watcher::<K>(
                    client.clone(),
                    namespace_of_watch.as_deref(),
                    streaming,
                )
                .default_backoff()
                .boxed(),
                // The lean types never decode managedFields.
                ApiEncoding::Json => watcher::watcher(api.clone(), config.clone())
                    .default_backoff()
                    .boxed(),
            },
            move || {
                let api = probe_api.clone();
                async move {
                    api.list_metadata(&ListParams::default().limit(1))
                        .await
                        .is_ok()
                }
                .boxed()
            },
        );
        let mut buffer: Vec<K::Compact> = Vec::new();
        let mut listed_once = false;
        let mut errors = ErrorLog::default();
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(err) => {
                    let reason = classify(&err);
                    self.metrics.record_api_error(K::RESOURCE, reason.label());
                    let message = describe(&err, K::RESOURCE, &namespace);
                    self.status.failed(&part, &message);
                    errors.log(&message);
                    continue;
                }
            };
            if let Some(outage) = errors.recovered() {
                info!(resource = K::RESOURCE, outage = ?outage, "watch recovered");
            }
            self.status.succeeded(&part);
            match event {
                Event::Init => {
                    buffer.clear();
                    if listed_once {
                        self.metrics.record_watch_restart(K::RESOURCE);
                        info!(resource = K::RESOURCE, "re-listing");
                    }
                }
                Event::InitApply(object) => buffer.extend(object.compact()),
                Event::InitDone => {
                    let count = buffer.len();
                    K::replace(&self.index, &scope, std::mem::take(&mut buffer), &part);
                    if !listed_once {
                        info!(resource = K::RESOURCE, count, "listed");
                    }
                    listed_once = true;
                }
                Event::Apply(object) => {
                    if let Some(compact) = object.compact() {
                        self.index.apply([K::applied(compact)]);
                    }
                }
                Event::Delete(object) => self.index.apply([object.deleted()]),
            }
        }
    }
}

const POD_RESOURCE: &str = "pods";

/// A watch stream that recovers promptly after an outage.
///
/// kube-runtime's watcher reports errors but not success: when the API
/// server comes back and the watch resumes from its resource version,
/// nothing is emitted until something changes, so the agent could neither
/// tell that its state is fresh again nor be sure nothing was missed while
/// the watcher was still backing off. So after an error (other than 410,
/// which re-lists by itself) a probe lists one object every second; when it
/// succeeds the watch is started afresh, and its re-list (one list per agent
/// after an outage, as a 410 would cause anyway) proves and restores
/// freshness.
struct Supervised<T> {
    make: Box<dyn Fn() -> BoxStream<'static, watcher::Result<T>> + Send>,
    stream: BoxStream<'static, watcher::Result<T>>,
    probe_once: ProbeOnce,
    probe: Option<BoxFuture<'static, ()>>,
}

type ProbeOnce = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

impl<T> Supervised<T> {
    fn new(
        make: impl Fn() -> BoxStream<'static, watcher::Result<T>> + Send + 'static,
        probe_once: impl Fn() -> BoxFuture<'static, bool> + Send + Sync + 'static,
    ) -> Self {
        Self {
            stream: make(),
            make: Box::new(make),
            probe_once: Arc::new(probe_once),
            probe: None,
        }
    }

    async fn next(&mut self) -> Option<watcher::Result<T>> {
        loop {
            let stream = &mut self.stream;
            let probe = &mut self.probe;
            tokio::select! {
                item = stream.next() => {
                    match &item {
                        Some(Err(error))
                            if classify(error) != FailureReason::Gone && self.probe.is_none() =>
                        {
                            self.probe = Some(probe_until_ok(self.probe_once.clone()));
                        }
                        Some(Ok(_)) => self.probe = None,
                        _ => {}
                    }
                    return item;
                }
                _ = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                    self.probe = None;
                    info!("API server answers again: restarting the watch");
                    self.stream = (self.make)();
                }
            }
        }
    }
}

/// Retries `probe_once` every second until it succeeds.
fn probe_until_ok(probe_once: ProbeOnce) -> BoxFuture<'static, ()> {
    async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if probe_once().await {
                return;
            }
        }
    }
    .boxed()
}

impl KubernetesSource {
    /// Watches only Pods that carry the weight label, metadata only: the
    /// cost grows with weighted Pods, not with all Pods.
    async fn watch_pod_weights(self, namespace: Option<String>, streaming: bool) {
        // An Api of PartialObjectMeta makes metadata-only requests.
        let api: Api<PartialObjectMeta<Pod>> = match &namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let (scope, part) = match &namespace {
            Some(ns) => (
                Scope::Namespace(ns.as_str().into()),
                format!("{POD_RESOURCE}/{ns}"),
            ),
            None => (Scope::All, POD_RESOURCE.to_string()),
        };
        let mut config = watcher::Config::default().labels(WEIGHT_KEY);
        if streaming {
            config = config.streaming_lists();
        }
        let probe_api = api.clone();
        let mut stream = Supervised::new(
            move || {
                watcher::watcher(api.clone(), config.clone())
                    .default_backoff()
                    .boxed()
            },
            move || {
                let api = probe_api.clone();
                async move { api.list(&ListParams::default().limit(1)).await.is_ok() }.boxed()
            },
        );
        let mut buffer: Vec<(PodKey, u32)> = Vec::new();
        let mut errors = ErrorLog::default();
        let metrics = self.metrics.clone();
        let weight_of = |pod: &PartialObjectMeta<Pod>| -> Option<u32> {
            let text = pod.labels().get(WEIGHT_KEY)?;
            match parse_weight(text) {
                Ok(weight) => Some(weight),
                Err(error) => {
                    warn!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                        "ignoring invalid {WEIGHT_KEY} label: {error}");
                    metrics.record_invalid_weight("pod");
                    None
                }
            }
        };
        let key_of = |pod: &PartialObjectMeta<Pod>| -> PodKey {
            (
                pod.namespace().unwrap_or_default().into(),
                pod.name_any().into(),
            )
        };
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(err) => {
                    self.metrics
                        .record_api_error(POD_RESOURCE, classify(&err).label());
                    let message = describe(&err, POD_RESOURCE, &namespace);
                    self.status.failed(&part, &message);
                    errors.log(&message);
                    continue;
                }
            };
            if let Some(outage) = errors.recovered() {
                info!(resource = POD_RESOURCE, outage = ?outage, "watch recovered");
            }
            self.status.succeeded(&part);
            match event {
                Event::Init => buffer.clear(),
                Event::InitApply(pod) => {
                    if let Some(weight) = weight_of(&pod) {
                        buffer.push((key_of(&pod), weight));
                    }
                }
                Event::InitDone => {
                    self.index
                        .replace_pod_weights(&scope, std::mem::take(&mut buffer), &part);
                }
                Event::Apply(pod) => {
                    let weight = weight_of(&pod);
                    self.index
                        .apply([Change::SetPodWeight(key_of(&pod), weight)]);
                }
                Event::Delete(pod) => {
                    self.index.apply([Change::SetPodWeight(key_of(&pod), None)]);
                }
            }
        }
    }
}

/// Reads this node's zone from its Node's `topology.kubernetes.io/zone`
/// label. None (with a warning) when the Node cannot be read: the agent then
/// runs without a zone rather than not at all.
pub async fn zone_of_node(client: &Client, node: &str) -> Option<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let lookup = tokio::time::timeout(Duration::from_secs(10), nodes.get_metadata(node)).await;
    match lookup {
        Ok(Ok(meta)) => {
            let zone = meta.labels().get("topology.kubernetes.io/zone").cloned();
            match &zone {
                Some(zone) => info!(node, zone, "zone read from the Node"),
                None => warn!(
                    node,
                    "the Node has no topology.kubernetes.io/zone label; running without a zone"
                ),
            }
            zone
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
            warn!(
                node,
                "RBAC forbids get on nodes: running without a zone (grant it, pass --zone, or --zone-from-node=false)"
            );
            None
        }
        Ok(Err(error)) => {
            warn!(
                node,
                "cannot read the Node for its zone: {error}; running without a zone"
            );
            None
        }
        Err(_) => {
            warn!(
                node,
                "reading the Node for its zone timed out; running without a zone"
            );
            None
        }
    }
}

/// Why a watch failed, for the `reason` label of the API error metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureReason {
    Forbidden,
    Unauthorized,
    Unreachable,
    Gone,
    Other,
}

impl FailureReason {
    fn label(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::Unreachable => "unreachable",
            Self::Gone => "gone",
            Self::Other => "other",
        }
    }
}

fn inner_client_error(error: &watcher::Error) -> Option<&kube::Error> {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => Some(e),
        _ => None,
    }
}

fn classify(error: &watcher::Error) -> FailureReason {
    let code = match error {
        watcher::Error::WatchError(status) => Some(status.code),
        other => match inner_client_error(other) {
            Some(kube::Error::Api(status)) => Some(status.code),
            Some(kube::Error::HyperError(_) | kube::Error::Service(_)) => {
                return FailureReason::Unreachable;
            }
            _ => None,
        },
    };
    match code {
        Some(403) => FailureReason::Forbidden,
        Some(401) => FailureReason::Unauthorized,
        Some(410) => FailureReason::Gone,
        _ => FailureReason::Other,
    }
}

/// One line that names the cause, in words an operator can act on.
fn describe(error: &watcher::Error, resource: &str, namespace: &Option<String>) -> String {
    let scope = match namespace {
        Some(ns) => format!("{resource} in namespace {ns}"),
        None => format!("{resource} in all namespaces"),
    };
    let detail = match error {
        watcher::Error::WatchError(status) => status.message.clone(),
        other => match inner_client_error(other) {
            Some(kube::Error::Api(status)) => status.message.clone(),
            Some(inner) => inner.to_string(),
            None => other.to_string(),
        },
    };
    match classify(error) {
        FailureReason::Forbidden => {
            format!("RBAC forbids list/watch of {scope} (grant get/list/watch): {detail}")
        }
        FailureReason::Unauthorized => {
            format!("the API server rejected our credentials watching {scope}: {detail}")
        }
        FailureReason::Unreachable => {
            format!("API server unreachable while watching {scope}: {detail}")
        }
        FailureReason::Gone => format!("watch of {scope} expired (410 Gone), re-listing"),
        FailureReason::Other => format!("watch of {scope} failed: {detail}"),
    }
}

/// Logs a failure once per outage (again only when its cause changes),
/// not once per retry; the recovery is logged with how long it lasted.
#[derive(Default)]
struct ErrorLog {
    /// The last message logged, and when the outage began.
    last: Option<(String, Instant)>,
}

impl ErrorLog {
    fn log(&mut self, message: &str) {
        let started = match &self.last {
            Some((last, _)) if last == message => return,
            Some((_, started)) => *started,
            None => Instant::now(),
        };
        if message.contains("410 Gone") {
            warn!("{message}");
        } else {
            error!("{message}; serving the last known state, retrying with backoff");
        }
        self.last = Some((message.to_string(), started));
    }

    /// Some(outage length) once, on the first success after a failure.
    fn recovered(&mut self) -> Option<Duration> {
        self.last.take().map(|(_, started)| started.elapsed())
    }
}
