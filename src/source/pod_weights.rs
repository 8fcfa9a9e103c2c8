//! Pod weights (`--pod-weights`): a metadata-only watch of the Pods that
//! carry the `kubedisco.io/weight` label, so the cost grows with weighted
//! Pods, not with all Pods. Each list replaces the part's Pod weights in the
//! index; each event sets or clears one.
//!
//! The stream's supervision and health are [`super::supervise`]'s, the
//! label's rules [`super::convert`]'s.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tracing::warn;

use super::convert::{WEIGHT_KEY, parse_weight};
use super::metrics::InvalidWeights;
use super::supervise::WatchedPart;
use crate::index::{Change, PodKey};

/// The resource name of Pods, for logs, metrics and sync parts.
pub(super) const POD_RESOURCE: &str = "pods";

/// Watches the weighted Pods of one part until the task is aborted.
pub(super) async fn watch(part: WatchedPart) {
    // An Api of PartialObjectMeta makes metadata-only requests.
    let api = part.api::<PartialObjectMeta<Pod>>();
    let mut config = watcher::Config::default().labels(WEIGHT_KEY);
    if part.streaming {
        config = config.streaming_lists();
    }
    let probe_api = api.clone();
    let make = move || {
        watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed()
    };
    let probe_once = move || {
        let api = probe_api.clone();
        async move { api.list(&ListParams::default().limit(1)).await.is_ok() }.boxed()
    };
    let invalid_weights = &part.metrics.invalid_weights;
    let mut buffer: Vec<(PodKey, u32)> = Vec::new();
    let apply = |event: Event<PartialObjectMeta<Pod>>| match event {
        Event::Init => buffer.clear(),
        Event::InitApply(pod) => {
            if let Some(weight) = weight_of(&pod, invalid_weights) {
                buffer.push((key_of(&pod), weight));
            }
        }
        Event::InitDone => {
            part.index
                .replace_pod_weights(&part.scope, std::mem::take(&mut buffer), &part.part);
        }
        Event::Apply(pod) => {
            let weight = weight_of(&pod, invalid_weights);
            part.index
                .apply([Change::SetPodWeight(key_of(&pod), weight)]);
        }
        Event::Delete(pod) => {
            part.index.apply([Change::SetPodWeight(key_of(&pod), None)]);
        }
    };
    part.follow(make, probe_once, apply).await;
}

/// The Pod's weight label; None when absent or invalid (an invalid value
/// is logged and counted).
fn weight_of(pod: &PartialObjectMeta<Pod>, invalid_weights: &InvalidWeights) -> Option<u32> {
    let text = pod.labels().get(WEIGHT_KEY)?;
    match parse_weight(text) {
        Ok(weight) => Some(weight),
        Err(error) => {
            warn!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                "ignoring invalid {WEIGHT_KEY} label: {error}");
            invalid_weights.record("pod");
            None
        }
    }
}

fn key_of(pod: &PartialObjectMeta<Pod>) -> PodKey {
    (
        pod.namespace().unwrap_or_default().into(),
        pod.name_any().into(),
    )
}
