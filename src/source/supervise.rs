//! Running one watched part: its watch stream supervised so that it recovers
//! promptly after an outage ([`Supervised`], with its outage probe), and the
//! one loop every kind's watch runs ([`WatchedPart::follow`]): failures and
//! recoveries go to the part's [`PartHealth`], events to the kind's handler.
//!
//! What an event does to the index is the caller's ([`super::kinds`],
//! [`super::pod_weights`]); this module never touches the index.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use tracing::info;

use super::failure::{FailureReason, classify};
use super::health::{Evidence, PartHealth};
use super::kinds::Selection;
use super::metrics::SourceMetrics;
use crate::index::{Index, Scope};
use crate::status::SourceStatus;

/// One resource watched in one namespace (or in all): where its objects go
/// and where its health is reported.
pub(super) struct WatchedPart {
    pub client: Client,
    /// The plural resource name, for logs, metrics and the sync part.
    pub resource: &'static str,
    /// None: all namespaces.
    pub namespace: Option<String>,
    /// Initial lists as streaming lists (WatchList).
    pub streaming: bool,
    /// Which of the kind's objects the watch selects.
    pub selection: Selection,
    /// What the part's lists replace in the index.
    pub scope: Scope,
    /// The sync part the index and [`SourceStatus`] know it by.
    pub part: String,
    pub index: Arc<Index>,
    pub metrics: Arc<SourceMetrics>,
    pub status: Arc<SourceStatus>,
}

impl WatchedPart {
    /// The Api of the part's namespace, or of all namespaces.
    pub(super) fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Runs the watch `make` starts (again after an outage, once
    /// `probe_once` succeeds) until it ends: an error is reported to the
    /// part's health; an event goes to `apply`, and only then does its
    /// evidence count, since "fresh" must not come before the event is in
    /// the index.
    pub(super) async fn follow<K>(
        &self,
        make: impl Fn() -> BoxStream<'static, watcher::Result<Event<K>>> + Send + 'static,
        probe_once: impl Fn() -> BoxFuture<'static, bool> + Send + Sync + 'static,
        mut apply: impl FnMut(Event<K>),
    ) {
        let mut stream = Supervised::new(make, probe_once);
        let mut health = PartHealth::new(
            self.resource,
            self.namespace.clone(),
            self.part.clone(),
            self.status.clone(),
            self.metrics.clone(),
        );
        while let Some(item) = stream.next().await {
            match item {
                Err(error) => health.failed(&error),
                Ok(event) => {
                    let evidence = Evidence::of(&event);
                    apply(event);
                    health.observed(evidence);
                }
            }
        }
    }
}

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
struct Supervised<K> {
    make: Box<dyn Fn() -> BoxStream<'static, watcher::Result<Event<K>>> + Send>,
    stream: BoxStream<'static, watcher::Result<Event<K>>>,
    probe_once: ProbeOnce,
    probe: Option<BoxFuture<'static, ()>>,
}

type ProbeOnce = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

impl<K> Supervised<K> {
    fn new(
        make: impl Fn() -> BoxStream<'static, watcher::Result<Event<K>>> + Send + 'static,
        probe_once: impl Fn() -> BoxFuture<'static, bool> + Send + Sync + 'static,
    ) -> Self {
        Self {
            stream: make(),
            make: Box::new(make),
            probe_once: Arc::new(probe_once),
            probe: None,
        }
    }

    async fn next(&mut self) -> Option<watcher::Result<Event<K>>> {
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
                        // Not on `Init`: a retry against a dead API server
                        // emits one before its request fails.
                        Some(Ok(event)) if Evidence::of(event) != Evidence::Nothing => {
                            self.probe = None
                        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::stream;
    use kube::core::Status;

    use super::*;
    use crate::source::failure::tests::unreachable;

    type Items = Vec<watcher::Result<Event<u32>>>;

    /// A watch that yields `items`, then stays silent: what kube-runtime's
    /// watcher does once it has resumed and nothing changes.
    fn then_silent(items: Items) -> BoxStream<'static, watcher::Result<Event<u32>>> {
        stream::iter(items).chain(stream::pending()).boxed()
    }

    /// A watch whose n-th start yields `starts[n]`; counts the starts.
    fn watches(
        starts: Vec<fn() -> Items>,
    ) -> (
        Arc<AtomicUsize>,
        impl Fn() -> BoxStream<'static, watcher::Result<Event<u32>>> + Send + 'static,
    ) {
        let started = Arc::new(AtomicUsize::new(0));
        let count = started.clone();
        let make = move || {
            let n = count.fetch_add(1, Ordering::SeqCst);
            then_silent(starts.get(n).map(|items| items()).unwrap_or_default())
        };
        (started, make)
    }

    /// A probe that fails `failures` times, then succeeds; counts its calls.
    fn probe(
        failures: usize,
    ) -> (
        Arc<AtomicUsize>,
        impl Fn() -> BoxFuture<'static, bool> + Send + Sync + 'static,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let probe_once = move || {
            let n = count.fetch_add(1, Ordering::SeqCst);
            async move { n >= failures }.boxed()
        };
        (calls, probe_once)
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_outage_the_watch_restarts_once_the_probe_succeeds() {
        let (started, make) = watches(vec![|| vec![Err(unreachable())], || {
            vec![Ok(Event::Init), Ok(Event::InitDone)]
        }]);
        let (probes, probe_once) = probe(2);
        let mut stream = Supervised::new(make, probe_once);
        assert!(matches!(stream.next().await, Some(Err(_))));
        // The first watch stays silent: the next items are the restarted
        // watch's re-list, after two failed probes and a good one.
        assert!(matches!(stream.next().await, Some(Ok(Event::Init))));
        assert!(matches!(stream.next().await, Some(Ok(Event::InitDone))));
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(probes.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_410_is_left_to_the_watcher_s_own_re_list() {
        let (started, make) = watches(vec![|| {
            vec![Err(watcher::Error::WatchError(Box::new(
                Status::failure("too old resource version", "Expired").with_code(410),
            )))]
        }]);
        let (probes, probe_once) = probe(0);
        let mut stream = Supervised::new(make, probe_once);
        assert!(matches!(stream.next().await, Some(Err(_))));
        let quiet = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
        assert!(quiet.is_err(), "no restart: {quiet:?}");
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(probes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_from_the_api_server_ends_the_probing() {
        let (started, make) = watches(vec![|| {
            vec![Err(unreachable()), Ok(Event::Init), Ok(Event::InitApply(1))]
        }]);
        let (probes, probe_once) = probe(usize::MAX);
        let mut stream = Supervised::new(make, probe_once);
        assert!(matches!(stream.next().await, Some(Err(_))));
        // `Init` proves nothing (a retry emits one before its request).
        assert!(matches!(stream.next().await, Some(Ok(Event::Init))));
        assert!(stream.probe.is_some(), "still probing after Init");
        assert!(matches!(stream.next().await, Some(Ok(Event::InitApply(1)))));
        assert!(stream.probe.is_none(), "a listed object ends the probing");
        let quiet = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
        assert!(quiet.is_err(), "no restart: {quiet:?}");
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(probes.load(Ordering::SeqCst), 0);
    }
}
