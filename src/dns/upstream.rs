//! One upstream resolver's health as the forwarder sees it: smoothed RTT,
//! failures in a row and the pause they earn, and whether it has gone
//! silent with a query waiting (see [`super::forward`] for how they are
//! used).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Consecutive failures after which an upstream is left out for a while.
pub(super) const DOWN_AFTER: u32 = 3;
/// The first pause of an upstream that is down; doubled per further
/// failure up to [`MAX_PAUSE`]. After it, one query probes it.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// An upstream that has answered nothing for this long (or 8 smoothed RTTs,
/// if longer) while a query to it waits counts as failing: its names' stale
/// entries go out without waiting for the client timer. A silent upstream
/// is noticed this soon instead of at its first timeout.
pub(super) const SILENT_AFTER: Duration = Duration::from_millis(250);

/// One upstream server and what the agent has seen of it.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    /// Smoothed RTT in µs (7/8 old + 1/8 new); 0: never measured, so it
    /// is tried early and gets measured.
    srtt_us: AtomicU32,
    failures: AtomicU32,
    /// Left out until this many ms after the forwarder's `base`.
    paused_until_ms: AtomicU64,
    /// When (ms after `base`, at least 1) the oldest query sent since its
    /// last answer went out; 0: every query so far was answered.
    unanswered_since_ms: AtomicU64,
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            srtt_us: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            paused_until_ms: AtomicU64::new(0),
            unanswered_since_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn sending(&self, since_base: Duration) {
        let ms = u64::try_from(since_base.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        // Only the first unanswered query sets it.
        let _ =
            self.unanswered_since_ms
                .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether its last exchange failed, or it has been silent (see
    /// [`SILENT_AFTER`]) with a query waiting.
    pub(super) fn failing(&self, since_base: Duration) -> bool {
        if self.failures.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let since = self.unanswered_since_ms.load(Ordering::Relaxed);
        let srtt = Duration::from_micros(self.srtt_us.load(Ordering::Relaxed).into());
        since != 0
            && since_base.saturating_sub(Duration::from_millis(since)) > SILENT_AFTER.max(srtt * 8)
    }

    pub(super) fn succeeded(&self, rtt: Duration) {
        let sample = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
        let old = self.srtt_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            ((u64::from(old) * 7 + u64::from(sample)) / 8) as u32
        };
        self.srtt_us.store(new, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.paused_until_ms.store(0, Ordering::Relaxed);
        self.unanswered_since_ms.store(0, Ordering::Relaxed);
    }

    pub(super) fn failed(&self, since_base: Duration) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= DOWN_AFTER {
            let doublings = (failures - DOWN_AFTER).min(8);
            let pause = (FIRST_PAUSE * (1 << doublings)).min(MAX_PAUSE);
            let until = (since_base + pause).as_millis();
            self.paused_until_ms
                .store(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// Smoothed RTT in µs; 0 until measured.
    pub(super) fn srtt_us(&self) -> u32 {
        self.srtt_us.load(Ordering::Relaxed)
    }

    pub(super) fn paused(&self, since_base: Duration) -> bool {
        since_base.as_millis() < u128::from(self.paused_until_ms.load(Ordering::Relaxed))
    }
}
