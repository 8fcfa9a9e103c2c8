//! One watched part's health as its watch proves it: what an event proves
//! about the API server ([`Evidence`]), the part's failure and recovery in
//! [`SourceStatus`] and the API error metric ([`PartHealth`]), and a log
//! line per outage rather than per retry ([`ErrorLog`]).
//!
//! Knows nothing of the objects a watch carries or of the index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::watcher::{self, Event};
use tracing::{error, info, warn};

use super::failure::{FailureReason, classify, describe};
use super::metrics::SourceMetrics;
use crate::status::SourceStatus;

/// What one event of a watcher proves about the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Evidence {
    /// Nothing: a watcher emits `Init` before its list request is even
    /// sent (kube-runtime's, and [`super::watch`] as it), so every retry
    /// against an API server that is down emits one.
    Nothing,
    /// The API server answered (a listed object), but what the index
    /// serves is still the state from before the list.
    Answered,
    /// The index holds what the API server said: a list swapped in, or a
    /// watch event after one.
    Current,
}

impl Evidence {
    pub(super) fn of<K>(event: &Event<K>) -> Self {
        match event {
            Event::Init => Self::Nothing,
            Event::InitApply(_) => Self::Answered,
            Event::InitDone | Event::Apply(_) | Event::Delete(_) => Self::Current,
        }
    }
}

/// One watched part's health as its watch proves it: a failure is
/// reported at once (and logged once per cause); the recovery is logged
/// on the first answer from the API server, and the part counts as fresh
/// again once the index holds what it answered.
pub(super) struct PartHealth {
    resource: &'static str,
    namespace: Option<String>,
    part: String,
    status: Arc<SourceStatus>,
    metrics: Arc<SourceMetrics>,
    errors: ErrorLog,
}

impl PartHealth {
    pub(super) fn new(
        resource: &'static str,
        namespace: Option<String>,
        part: String,
        status: Arc<SourceStatus>,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        Self {
            resource,
            namespace,
            part,
            status,
            metrics,
            errors: ErrorLog::default(),
        }
    }

    pub(super) fn failed(&mut self, error: &watcher::Error) {
        let reason = classify(error);
        self.metrics.record_api_error(self.resource, reason.label());
        let message = describe(error, reason, self.resource, &self.namespace);
        self.status.failed(&self.part, &message);
        self.errors.log(reason, &message);
    }

    /// Takes an event's evidence (after the event is in the index); the
    /// outage's length when this event ended one.
    pub(super) fn observed(&mut self, evidence: Evidence) -> Option<Duration> {
        if evidence == Evidence::Nothing {
            return None;
        }
        let outage = self.errors.recovered();
        if let Some(outage) = outage {
            info!(resource = self.resource, outage = ?outage, "watch recovered");
        }
        if evidence == Evidence::Current {
            self.status.succeeded(&self.part);
        }
        outage
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
    /// True when the message was logged (not a repeat).
    fn log(&mut self, reason: FailureReason, message: &str) -> bool {
        let started = match &self.last {
            Some((last, _)) if last == message => return false,
            Some((_, started)) => *started,
            None => Instant::now(),
        };
        if reason == FailureReason::Gone {
            // Routine: the watcher re-lists by itself.
            warn!("{message}");
        } else {
            error!("{message}; serving the last known state, retrying with backoff");
        }
        self.last = Some((message.to_string(), started));
        true
    }

    /// Some(outage length) once, on the first success after a failure.
    fn recovered(&mut self) -> Option<Duration> {
        self.last.take().map(|(_, started)| started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::failure::tests::unreachable;
    use kube::core::Status;

    fn health(status: &Arc<SourceStatus>) -> PartHealth {
        PartHealth::new(
            "endpointslices",
            None,
            "endpointslices".into(),
            status.clone(),
            Arc::default(),
        )
    }

    #[test]
    fn init_proves_nothing_a_listed_object_an_answer_a_swapped_list_freshness() {
        assert_eq!(Evidence::of(&Event::<()>::Init), Evidence::Nothing);
        assert_eq!(Evidence::of(&Event::InitApply(())), Evidence::Answered);
        assert_eq!(Evidence::of(&Event::<()>::InitDone), Evidence::Current);
        assert_eq!(Evidence::of(&Event::Apply(())), Evidence::Current);
        assert_eq!(Evidence::of(&Event::Delete(())), Evidence::Current);
    }

    /// What a watcher emits while the API server is down from the start:
    /// `Init`, a failed list, `Init`, ... Nothing of it is a recovery.
    #[test]
    fn retries_against_a_dead_api_server_never_recover_or_turn_fresh() {
        let status = Arc::new(SourceStatus::default());
        let mut health = health(&status);
        for _ in 0..5 {
            health.failed(&unreachable());
            assert_eq!(health.observed(Evidence::of(&Event::<()>::Init)), None);
            assert!(status.stale_for().is_some());
        }
        // The API server answers: the first listed object ends the outage,
        // but the index still serves the old state until the list is in.
        assert!(
            health
                .observed(Evidence::of(&Event::InitApply(())))
                .is_some()
        );
        assert!(status.stale_for().is_some());
        assert_eq!(health.observed(Evidence::Answered), None, "logged once");
        assert_eq!(health.observed(Evidence::of(&Event::<()>::InitDone)), None);
        assert!(status.stale_for().is_none());
    }

    #[test]
    fn an_empty_list_recovers_and_is_fresh_at_once() {
        let status = Arc::new(SourceStatus::default());
        let mut health = health(&status);
        health.failed(&unreachable());
        health.observed(Evidence::Nothing);
        assert!(health.observed(Evidence::Current).is_some());
        assert!(status.stale_for().is_none());
    }

    #[test]
    fn a_410_is_stale_until_the_re_list_is_in() {
        let status = Arc::new(SourceStatus::default());
        let mut health = health(&status);
        let gone = watcher::Error::WatchError(Box::new(
            Status::failure("too old resource version", "Expired").with_code(410),
        ));
        health.failed(&gone);
        assert_eq!(
            status.stale_reason().as_deref(),
            Some("watch of endpointslices in all namespaces expired (410 Gone), re-listing")
        );
        health.observed(Evidence::Nothing);
        health.observed(Evidence::Answered);
        assert!(status.stale_for().is_some());
        health.observed(Evidence::Current);
        assert!(status.stale_for().is_none());
    }

    #[test]
    fn each_cause_is_logged_once_per_outage() {
        let mut log = ErrorLog::default();
        assert!(log.log(FailureReason::Unreachable, "down"));
        assert!(!log.log(FailureReason::Unreachable, "down"));
        assert!(log.log(FailureReason::Forbidden, "forbidden"));
        assert!(log.recovered().is_some());
        assert!(log.recovered().is_none());
        assert!(log.log(FailureReason::Unreachable, "down"));
    }
}
