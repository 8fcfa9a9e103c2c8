//! A cap on concurrent connections that keeps answering new clients.
//!
//! Both TCP front ends (DNS over TCP, HTTP) hold connections through a
//! [`Limiter`]. Below the cap a connection is admitted at once. At the cap,
//! the connection that has been idle longest (no query or request in
//! progress) is closed to make room — idle connections cost memory and do
//! nothing, so a flood of them can never lock out a client that has
//! something to ask. A connection idle for less than [`EVICTION_GRACE`] is
//! not taken (a new client gets the time to send its query, and a flood
//! cannot churn itself). When none can be taken, a new connection waits up
//! to [`SLOT_WAIT`] for a slot, with at most `capacity` of them waiting;
//! beyond that, or after that, it is closed. Memory stays bounded by twice
//! the cap whatever clients do.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a new connection may wait for a slot.
pub const SLOT_WAIT: Duration = Duration::from_secs(2);
/// How long a connection must have been idle before it can be evicted.
pub const EVICTION_GRACE: Duration = Duration::from_secs(1);

pub struct Limiter {
    slots: Arc<Semaphore>,
    capacity: usize,
    /// Idle connections by the order they became idle: the first is the
    /// longest idle.
    idle: Mutex<BTreeMap<u64, (Instant, CancellationToken)>>,
    sequence: AtomicU64,
    /// Woken when a connection turns idle or closes.
    freed: Notify,
    /// Connections waiting for a slot without having evicted anyone.
    waiting: AtomicUsize,
    metrics: LimiterMetrics,
}

/// What a [`Limiter`] reports.
#[derive(Clone, Debug, Default)]
pub struct LimiterMetrics {
    /// Idle connections closed to make room.
    pub evictions: Counter,
    /// Connections waiting for a slot now.
    pub waiting: Gauge,
}

/// What happened to a new connection.
pub enum Admission {
    /// A slot was free.
    Admitted(Slot),
    /// An idle connection was told to close; its slot comes with this.
    AfterEviction(Pending),
    /// None idle right now: wait (bounded) for a slot.
    Wait(Pending),
    /// Too many connections wait already: close the new one.
    Rejected,
}

/// A slot to come: once the evicted connection has closed, or (waiting)
/// when a connection turns idle or closes.
pub struct Pending {
    limiter: Arc<Limiter>,
    evicted: bool,
}

impl Pending {
    /// The slot, or None when none came within [`SLOT_WAIT`].
    pub async fn slot(self) -> Option<Slot> {
        let limiter = &self.limiter;
        let deadline = Instant::now() + SLOT_WAIT;
        if self.evicted {
            return limiter.acquire_until(deadline).await;
        }
        loop {
            let freed = limiter.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(permit) = limiter.slots.clone().try_acquire_owned() {
                return Some(limiter.slot(permit));
            }
            let retry = match limiter.evict_longest_idle() {
                Ok(()) => return limiter.acquire_until(deadline).await,
                Err(Some(evictable_at)) => evictable_at.min(deadline),
                Err(None) => deadline,
            };
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(retry) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.evicted {
            self.limiter.waiting.fetch_sub(1, Ordering::Relaxed);
            self.limiter.metrics.waiting.dec();
        }
    }
}

impl Limiter {
    pub fn new(capacity: usize, metrics: LimiterMetrics) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            idle: Mutex::new(BTreeMap::new()),
            sequence: AtomicU64::new(0),
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
            metrics,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Connections holding a slot now.
    pub fn in_use(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    pub fn admit(self: &Arc<Self>) -> Admission {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Admission::Admitted(self.slot(permit));
        }
        if self.evict_longest_idle().is_ok() {
            return Admission::AfterEviction(Pending {
                limiter: self.clone(),
                evicted: true,
            });
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) < self.capacity {
            self.metrics.waiting.inc();
            Admission::Wait(Pending {
                limiter: self.clone(),
                evicted: false,
            })
        } else {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            Admission::Rejected
        }
    }

    /// Waits until every slot is free again (all connections closed).
    pub async fn wait_all_closed(&self) {
        let _ = self.slots.acquire_many(self.capacity as u32).await;
    }

    /// Tells the longest-idle connection to close. Err(when the longest
    /// idle one becomes evictable), Err(None) when none is idle.
    fn evict_longest_idle(&self) -> Result<(), Option<Instant>> {
        let mut idle = self.lock_idle();
        let Some(entry) = idle.first_entry() else {
            return Err(None);
        };
        let evictable_at = entry.get().0 + EVICTION_GRACE;
        if evictable_at > Instant::now() {
            return Err(Some(evictable_at));
        }
        let (_, token) = entry.remove();
        drop(idle);
        token.cancel();
        self.metrics.evictions.inc();
        Ok(())
    }

    async fn acquire_until(self: &Arc<Self>, deadline: Instant) -> Option<Slot> {
        let permit = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(self.slot(permit))
    }

    fn slot(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let slot = Slot {
            limiter: self.clone(),
            _permit: permit,
            evict: CancellationToken::new(),
            state: Mutex::new(SlotState {
                idle_key: None,
                idle_since: Instant::now(),
            }),
        };
        // A new connection has asked nothing yet: it is idle.
        slot.idle();
        slot
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Instant, CancellationToken)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct SlotState {
    /// Its key in the limiter's idle set while idle.
    idle_key: Option<u64>,
    idle_since: Instant,
}

/// One admitted connection's hold on the cap; released on drop.
pub struct Slot {
    limiter: Arc<Limiter>,
    _permit: OwnedSemaphorePermit,
    evict: CancellationToken,
    state: Mutex<SlotState>,
}

impl Slot {
    /// The connection waits for its client: it may be evicted.
    pub fn idle(&self) {
        let mut state = self.lock_state();
        if state.idle_key.is_none() && !self.evict.is_cancelled() {
            let key = self.limiter.sequence.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            self.limiter
                .lock_idle()
                .insert(key, (now, self.evict.clone()));
            state.idle_key = Some(key);
            state.idle_since = now;
            drop(state);
            self.limiter.freed.notify_waiters();
        }
    }

    /// The connection works on a query or request: it is not evicted.
    pub fn busy(&self) {
        let mut state = self.lock_state();
        if let Some(key) = state.idle_key.take() {
            self.limiter.lock_idle().remove(&key);
        }
    }

    /// When the connection has been idle for `timeout`; None while busy.
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let state = self.lock_state();
        state.idle_key.map(|_| state.idle_since + timeout)
    }

    /// Resolves when another connection needs this one's slot.
    pub fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }

    pub fn is_evicted(&self) -> bool {
        self.evict.is_cancelled()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy();
        // The permit goes back right after this; waiters retry then.
        self.limiter.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_connection_makes_room() {
        let limiter = Limiter::new(2, LimiterMetrics::default());
        let Admission::Admitted(first) = limiter.admit() else {
            panic!("a free slot")
        };
        let Admission::Admitted(second) = limiter.admit() else {
            panic!("a free slot")
        };
        second.busy();
        // Too freshly idle to be taken: the newcomer waits.
        assert!(matches!(limiter.admit(), Admission::Wait(_)));
        tokio::time::advance(EVICTION_GRACE).await;
        let Admission::AfterEviction(pending) = limiter.admit() else {
            panic!("evicts the idle one")
        };
        assert!(first.is_evicted() && !second.is_evicted());
        drop(first);
        let third = pending.slot().await.expect("the evicted slot");
        assert_eq!(limiter.in_use(), 2);
        // Both busy now: nothing to evict; a new one waits...
        third.busy();
        let Admission::Wait(waiting) = limiter.admit() else {
            panic!("waits for a slot")
        };
        // ...with at most `capacity` waiting; more are refused.
        let Admission::Wait(_other) = limiter.admit() else {
            panic!("waits for a slot")
        };
        assert!(matches!(limiter.admit(), Admission::Rejected));
        // A connection idle for the grace period lets the waiter in (by
        // being evicted).
        let waiter = tokio::spawn(waiting.slot());
        tokio::task::yield_now().await;
        second.idle();
        tokio::time::sleep(EVICTION_GRACE + Duration::from_millis(1)).await;
        assert!(second.is_evicted());
        drop(second);
        let fourth = waiter.await.unwrap().expect("a slot");
        drop((third, fourth));
    }

    #[tokio::test]
    async fn idle_deadlines_only_while_idle() {
        let limiter = Limiter::new(1, LimiterMetrics::default());
        let Admission::Admitted(slot) = limiter.admit() else {
            panic!()
        };
        assert!(slot.idle_deadline(Duration::from_secs(1)).is_some());
        slot.busy();
        assert!(slot.idle_deadline(Duration::from_secs(1)).is_none());
        drop(slot);
        limiter.wait_all_closed().await;
        assert_eq!(limiter.in_use(), 0);
    }
}
