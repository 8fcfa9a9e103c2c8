//! What a connection limiter reports: accepted, open, queued, evicted and
//! refused connections, and why each one closed. It knows nothing of the
//! limiter's state; the limiter and the front ends only count through it.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Why a connection closed: one label value per path, so an operator can
/// tell a client that left from one the agent turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values, as Prometheus shows them
pub enum CloseReason {
    /// The client closed it (or reset it).
    client,
    /// No query or request within the idle timeout.
    idle_timeout,
    /// A query or request head did not arrive whole in time.
    read_timeout,
    /// Closed while idle to make room for a new connection at the cap.
    evicted,
    /// Refused: the cap was reached and the queue was full.
    refused_queue_full,
    /// Refused: no slot came free within [`SLOT_WAIT`].
    refused_wait_timeout,
    /// The agent is shutting down (lame duck).
    shutdown,
    /// A protocol error (bad framing, oversized head) or a broken socket.
    error,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CloseLabels {
    pub reason: CloseReason,
}

/// What a [`Limiter`] reports.
#[derive(Clone, Debug, Default)]
pub struct LimiterMetrics {
    /// Connections accepted from the listener.
    pub accepted: Counter,
    /// Connections holding a slot now.
    pub open: Gauge,
    /// Connections queued for a slot now.
    pub waiting: Gauge,
    /// Idle connections told to close to make room.
    pub evictions: Counter,
    /// Connections refused (queue full or no slot in time).
    pub refused: Counter,
    /// Closed connections by reason.
    pub closed: Family<CloseLabels, Counter>,
}

impl LimiterMetrics {
    /// Registers the series as `{prefix}_{accepted,…}`, `what` naming the
    /// connections in the help texts and `cap_flag` the flag of their cap.
    pub fn register(
        registry: &mut prometheus_client::registry::Registry,
        names: &LimiterNames,
    ) -> Self {
        let LimiterNames { what, cap_flag, .. } = names;
        let metrics = Self::default();
        registry.register(
            names.accepted,
            format!("{what} connections accepted (then served, or refused at {cap_flag})"),
            metrics.accepted.clone(),
        );
        registry.register(
            names.open,
            format!("Open {what} connections"),
            metrics.open.clone(),
        );
        registry.register(
            names.waiting,
            format!("New {what} connections queued for a slot at {cap_flag}"),
            metrics.waiting.clone(),
        );
        registry.register(
            names.evicted,
            format!("Idle {what} connections closed to make room for a new one at {cap_flag}"),
            metrics.evictions.clone(),
        );
        registry.register(
            names.rejected,
            format!(
                "{what} connections refused with an answer at {cap_flag} (queue full, or no slot in time)"
            ),
            metrics.refused.clone(),
        );
        registry.register(
            names.closed,
            format!("{what} connections closed, by reason"),
            metrics.closed.clone(),
        );
        metrics
    }

    pub(super) fn closed(&self, reason: CloseReason) {
        self.closed.get_or_create(&CloseLabels { reason }).inc();
    }
}

/// The series names of one front end's [`LimiterMetrics`].
pub struct LimiterNames {
    pub what: &'static str,
    pub cap_flag: &'static str,
    pub accepted: &'static str,
    pub open: &'static str,
    pub waiting: &'static str,
    pub evicted: &'static str,
    pub rejected: &'static str,
    pub closed: &'static str,
}
