//! The kinds the agent watches in full, Services and EndpointSlices: how
//! each one's objects reach the index ([`Watched`]), and their watch loop,
//! which buffers every list (the first and each re-list) and hands it to
//! the index as one [`Index::replace`], so readers never see a half-listed
//! state.
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

use super::metrics::InvalidWeights;
use super::service::LeanService;
use super::slice::Slice;
use super::supervise::WatchedPart;
use super::watch::ProtoResource;
use crate::index::objects::{ServiceKey, SliceKey};
use crate::index::{Change, Index, Scope, ServiceObject, SliceObject};

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
    fn deleted(&self) -> Change;
    fn replace(index: &Index, scope: &Scope, items: Vec<Self::Compact>, part: &str);
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
    fn compact(self, invalid_weights: &InvalidWeights) -> Option<SliceObject> {
        self.into_object(invalid_weights)
    }
    fn share_listed(index: &Index, compact: SliceObject) -> SliceObject {
        index.share_listed(compact)
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

/// Watches one kind in one part until the task is aborted: in Kubernetes
/// protobuf ([`super::watch`]) when `protobuf`, else in JSON through
/// kube-runtime's watcher.
pub(super) async fn watch<K: Watched>(part: WatchedPart, protobuf: bool) {
    let api = part.api::<K>();
    let mut config = watcher::Config::default();
    if part.streaming {
        config = config.streaming_lists();
    }
    let (client, namespace, streaming) =
        (part.client.clone(), part.namespace.clone(), part.streaming);
    let probe_api = api.clone();
    let make = move || {
        if protobuf {
            super::watch::watcher::<K>(client.clone(), namespace.as_deref(), streaming)
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
        let api = probe_api.clone();
        async move {
            api.list_metadata(&ListParams::default().limit(1))
                .await
                .is_ok()
        }
        .boxed()
    };
    let mut buffer: Vec<K::Compact> = Vec::new();
    let mut listed_once = false;
    let apply = |event: Event<K>| match event {
        Event::Init => {
            buffer.clear();
            if listed_once {
                part.metrics.record_watch_restart(K::RESOURCE);
                info!(resource = K::RESOURCE, "re-listing");
            }
        }
        Event::InitApply(object) => buffer.extend(
            object
                .compact(&part.metrics.invalid_weights)
                .map(|compact| K::share_listed(&part.index, compact)),
        ),
        Event::InitDone => {
            let count = buffer.len();
            K::replace(
                &part.index,
                &part.scope,
                std::mem::take(&mut buffer),
                &part.part,
            );
            if !listed_once {
                info!(resource = K::RESOURCE, count, "listed");
            }
            listed_once = true;
        }
        Event::Apply(object) => {
            if let Some(compact) = object.compact(&part.metrics.invalid_weights) {
                part.index.apply([K::applied(compact)]);
            }
        }
        Event::Delete(object) => part.index.apply([object.deleted()]),
    };
    part.follow(make, probe_once, apply).await;
}
