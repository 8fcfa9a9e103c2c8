//! The kinds the agent watches in full, Services and EndpointSlices: how
//! each one's objects reach the index ([`Watched`]), which slices a watch
//! selects ([`Selection`]), and their watch loop, which buffers every list
//! (the first and each re-list) and hands it to the index as one
//! [`Index::replace`], so readers never see a half-listed state.
//!
//! The stream's supervision and health are [`super::supervise`]'s; the
//! objects' decoding is [`super::service`]'s and [`super::slice`]'s.

use std::fmt::Debug;

use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::info;

use super::convert::HEADLESS_LABEL;
use super::metrics::InvalidWeights;
use super::service::LeanService;
use super::slice::Slice;
use super::supervise::WatchedPart;
use super::watch::ProtoResource;
use crate::index::objects::{ServiceKey, SliceKey};
use crate::index::{Change, Index, Scope, ServiceObject, SliceObject, Slices};

/// What one watch of a kind selects: a label selector, and which side of
/// the slices its lists replace in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Selection {
    /// Sent as `labelSelector`; None: every object.
    pub label_selector: Option<&'static str>,
    pub side: Slices,
    /// Added to the sync part's name, so the two slice watches of one
    /// namespace are two parts.
    pub name: Option<&'static str>,
}

impl Selection {
    /// Every object of the kind.
    pub const EVERYTHING: Selection = Selection {
        label_selector: None,
        side: Slices::All,
        name: None,
    };

    /// `--watch-slices served`: the slices of headless Services, and those of
    /// ClusterIP Services labelled `kubedisco.io/expose=true`. Disjoint, so
    /// no slice arrives twice; together everything the agent serves. The
    /// EndpointSlice controller sets [`HEADLESS_LABEL`] and copies the
    /// Service's labels onto its slices; the slices of every other Service,
    /// most of a cluster's, never reach the agent.
    pub const SERVED_SLICES: [Selection; 2] = [
        Selection {
            label_selector: Some(HEADLESS_LABEL),
            side: Slices::Headless,
            name: Some("headless"),
        },
        Selection {
            label_selector: Some("kubedisco.io/expose=true,!service.kubernetes.io/headless"),
            side: Slices::NotHeadless,
            name: Some("exposed"),
        },
    ];
}

/// Told of every object a Service or slice watch receives: what a kind
/// reports besides the index (see [`super::unlabelled`]). `()` reports
/// nothing.
pub(super) trait Observe<K>: Send {
    /// A list (the first or a re-list) begins.
    fn list_started(&mut self) {}
    /// An object of the list in progress, or a watched change.
    fn seen(&mut self, _object: &K) {}
    /// The list in progress is complete.
    fn list_done(&mut self) {}
    fn deleted(&mut self, _object: &K) {}
}

impl<K> Observe<K> for () {}

/// A kind the agent watches, and how its objects reach the index.
pub(super) trait Watched:
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
    fn compact(self, invalid_weights: &InvalidWeights) -> Option<Self::Compact>;
    /// A listed object, made to share what the index holds of it unchanged.
    fn share_listed(index: &Index, compact: Self::Compact) -> Self::Compact;
    fn applied(compact: Self::Compact) -> Change;
    /// The change a DELETED event makes, in a watch of `side`.
    fn deleted(&self, side: Slices) -> Change;
    fn replace(index: &Index, scope: &Scope, side: Slices, items: Vec<Self::Compact>, part: &str);
}

/// Services, like slices, are decoded straight into what the index keeps
/// ([`LeanService`]).
impl Watched for LeanService {
    type Compact = ServiceObject;
    const RESOURCE: &'static str = "services";
    fn compact(self, invalid_weights: &InvalidWeights) -> Option<ServiceObject> {
        Some(self.into_object(invalid_weights))
    }
    /// A Service is a few small fields: a second copy while a list is
    /// buffered costs little (the endpoints are in the slices).
    fn share_listed(_: &Index, compact: ServiceObject) -> ServiceObject {
        compact
    }
    fn applied(compact: ServiceObject) -> Change {
        Change::ApplyService(compact)
    }
    fn deleted(&self, _: Slices) -> Change {
        Change::DeleteService(ServiceKey::new(
            self.namespace().as_deref().unwrap_or("default"),
            &self.name_any(),
        ))
    }
    fn replace(index: &Index, scope: &Scope, _: Slices, items: Vec<ServiceObject>, part: &str) {
        index.replace(scope, Some(items), None, part);
    }
}

/// EndpointSlices are decoded straight into what the index keeps
/// ([`Slice`]): at start-up every slice in the cluster is listed at once.
impl Watched for Slice {
    type Compact = SliceObject;
    const RESOURCE: &'static str = "endpointslices";
    fn compact(self, invalid_weights: &InvalidWeights) -> Option<SliceObject> {
        self.into_object(invalid_weights)
    }
    fn share_listed(index: &Index, compact: SliceObject) -> SliceObject {
        index.share_listed(compact)
    }
    fn applied(compact: SliceObject) -> Change {
        Change::ApplySlice(compact)
    }
    fn deleted(&self, side: Slices) -> Change {
        let key = SliceKey {
            namespace: self.namespace().as_deref().unwrap_or("default").into(),
            name: self.name_any().into(),
        };
        match side {
            Slices::All => Change::DeleteSlice(key),
            side => Change::DeleteSliceOf(key, side),
        }
    }
    fn replace(index: &Index, scope: &Scope, side: Slices, items: Vec<SliceObject>, part: &str) {
        index.replace_slices(scope, side, items, part);
    }
}

/// Watches one kind in one part until the task is aborted: in Kubernetes
/// protobuf ([`super::watch`]) when `protobuf`, else in JSON through
/// kube-runtime's watcher. `observer` is told of every object.
pub(super) async fn watch<K: Watched>(
    part: WatchedPart,
    protobuf: bool,
    mut observer: impl Observe<K>,
) {
    let api = part.api::<K>();
    let selection = part.selection;
    let mut config = watcher::Config::default();
    if part.streaming {
        config = config.streaming_lists();
    }
    let mut probe = ListParams::default().limit(1);
    if let Some(selector) = selection.label_selector {
        config = config.labels(selector);
        probe = probe.labels(selector);
    }
    let (client, namespace, streaming) =
        (part.client.clone(), part.namespace.clone(), part.streaming);
    let received_bytes = part.metrics.received_bytes(K::RESOURCE);
    let received_objects = part.metrics.received_objects(K::RESOURCE);
    let probe_api = api.clone();
    let make = move || {
        if protobuf {
            super::watch::watcher::<K>(
                client.clone(),
                namespace.as_deref(),
                selection.label_selector,
                streaming,
                received_bytes.clone(),
            )
            .default_backoff()
            .boxed()
        } else {
            // The lean types never decode managedFields.
            watcher::watcher(api.clone(), config.clone())
                .default_backoff()
                .boxed()
        }
    };
    let probe_once = move || {
        let (api, probe) = (probe_api.clone(), probe.clone());
        async move { api.list_metadata(&probe).await.is_ok() }.boxed()
    };
    let mut buffer: Vec<K::Compact> = Vec::new();
    let mut listed_once = false;
    let apply = |event: Event<K>| match event {
        Event::Init => {
            buffer.clear();
            observer.list_started();
            if listed_once {
                part.metrics.record_watch_restart(K::RESOURCE);
                info!(resource = K::RESOURCE, "re-listing");
            }
        }
        Event::InitApply(object) => {
            received_objects.inc();
            observer.seen(&object);
            buffer.extend(
                object
                    .compact(&part.metrics.invalid_weights)
                    .map(|compact| K::share_listed(&part.index, compact)),
            )
        }
        Event::InitDone => {
            let count = buffer.len();
            K::replace(
                &part.index,
                &part.scope,
                selection.side,
                std::mem::take(&mut buffer),
                &part.part,
            );
            observer.list_done();
            if !listed_once {
                info!(
                    resource = K::RESOURCE,
                    selection = selection.name,
                    count,
                    "listed"
                );
            }
            listed_once = true;
        }
        Event::Apply(object) => {
            received_objects.inc();
            observer.seen(&object);
            if let Some(compact) = object.compact(&part.metrics.invalid_weights) {
                part.index.apply([K::applied(compact)]);
            }
        }
        Event::Delete(object) => {
            received_objects.inc();
            observer.deleted(&object);
            part.index.apply([object.deleted(selection.side)])
        }
    };
    part.follow(make, probe_once, apply).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::convert::EXPOSE_LABEL;

    /// The served selections split the slices by the headless label, and
    /// the exposed one asks for exactly the label a Service is exposed by.
    #[test]
    fn the_served_selections_are_disjoint_and_name_the_labels() {
        let [headless, exposed] = Selection::SERVED_SLICES;
        assert_eq!(headless.label_selector, Some(HEADLESS_LABEL));
        assert_eq!(
            exposed.label_selector,
            Some(format!("{EXPOSE_LABEL}=true,!{HEADLESS_LABEL}").as_str())
        );
        assert_eq!(
            (headless.side, exposed.side),
            (Slices::Headless, Slices::NotHeadless)
        );
        assert_ne!(headless.name, exposed.name);
    }
}
