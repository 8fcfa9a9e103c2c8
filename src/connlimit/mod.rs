//! One cap on concurrent TCP connections, shared by both TCP front ends (DNS
//! over TCP and HTTP), that keeps answering new clients and never resets one.
//!
//! Admission: below the cap a connection is served at once. At the cap it
//! queues (FIFO, at most `capacity` queued) and the connection idle the
//! longest (no query or request in progress, idle for at least
//! [`EVICTION_GRACE`]) is told to close; its slot is handed straight to the
//! head of the queue, so no later arrival can take it first. Idle
//! connections cost memory and do nothing, so a flood of them can never lock
//! out a client with something to ask; the grace keeps a new client's first
//! second for its query, and stops a flood from churning itself. A queued
//! connection gets a slot within [`SLOT_WAIT`] or is refused.
//!
//! A refused connection (queue full, or no slot in time) is answered, not
//! dropped: the front end reads what the client sent, answers it (HTTP 503,
//! DNS REFUSED) and closes. Every close goes through [`close_gently`]: write
//! side first, then what the client still sends is read and discarded for a
//! moment. Linux answers a close with unread data in the socket with a
//! reset, which the client sees as a failed request; a gentle close makes it
//! an end of stream instead.
//!
//! Every connection ends with one [`CloseReason`], counted per front end
//! (`kubedisco_{http,dns_tcp}_connections_closed_total{reason}`).
//! Memory stays bounded by twice the cap plus the refusals in progress
//! (at most another cap; beyond that a refusal closes at once).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod close;
mod metrics;

use close::discard_ready;
pub use close::{REFUSE_WAIT, close_gently};
pub use metrics::{CloseLabels, CloseReason, LimiterMetrics, LimiterNames};

/// How long a queued connection may wait for a slot.
pub const SLOT_WAIT: Duration = Duration::from_secs(2);
/// How long a connection must have been idle before it can be evicted.
pub const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// A TCP front end: how it serves an admitted connection and how it answers
/// one it refuses.
pub trait Front: Send + Sync + 'static {
    /// Serves the connection until it closes; returns why, and the socket
    /// when the front end still has it (it is then closed gently).
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        slot: Slot,
        draining: bool,
    ) -> impl Future<Output = (CloseReason, Option<TcpStream>)> + Send;

    /// Answers whatever the client sends within [`REFUSE_WAIT`] with a
    /// refusal (HTTP 503, DNS REFUSED). The caller then closes gently.
    fn refuse(&self, stream: &mut TcpStream) -> impl Future<Output = ()> + Send;
}

pub struct Limiter {
    capacity: usize,
    state: Mutex<State>,
    /// Woken when an idle connection appears while the queue is short of
    /// evictions, so that a queued connection re-arms its eviction timer.
    idle_appeared: Notify,
    /// Woken when the last slot is released.
    all_closed: Notify,
    metrics: LimiterMetrics,
}

struct State {
    /// Slots held, including one on its way from a closing connection to
    /// the head of the queue.
    in_use: usize,
    /// Idle connections by the order they turned idle: the first is the
    /// longest idle.
    idle: BTreeMap<u64, (Instant, CancellationToken)>,
    next_key: u64,
    /// Connections waiting for a slot, oldest first.
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
    /// Told to close but not closed yet: each will free a slot for the queue.
    evicting: usize,
    /// Refusals in progress (each holds a socket for up to two REFUSE_WAITs).
    refusing: usize,
}

/// What admission decided.
enum Admission {
    Admitted(Slot),
    Queued(Queued),
    Refused,
}

/// A place in the queue.
struct Queued {
    limiter: Arc<Limiter>,
    key: u64,
    handed: oneshot::Receiver<()>,
}

impl Limiter {
    pub fn new(capacity: usize, metrics: LimiterMetrics) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                in_use: 0,
                idle: BTreeMap::new(),
                next_key: 0,
                queue: VecDeque::new(),
                evicting: 0,
                refusing: 0,
            }),
            idle_appeared: Notify::new(),
            all_closed: Notify::new(),
            metrics,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Connections holding a slot now.
    pub fn in_use(&self) -> usize {
        self.lock().in_use
    }

    /// Takes a new connection: serves it (now, or once a slot is handed to
    /// it) or refuses it with an answer. Never blocks the accept loop.
    pub fn dispatch<F: Front>(self: &Arc<Self>, front: &Arc<F>, stream: TcpStream, draining: bool) {
        self.metrics.accepted.inc();
        let limiter = self.clone();
        let front = front.clone();
        match self.admit() {
            Admission::Admitted(slot) => {
                tokio::spawn(async move { limiter.serve(front, stream, slot, draining).await });
            }
            Admission::Queued(queued) => {
                tokio::spawn(async move {
                    match queued.slot().await {
                        Some(slot) => limiter.serve(front, stream, slot, draining).await,
                        None => {
                            Box::pin(limiter.refuse(
                                &*front,
                                stream,
                                CloseReason::refused_wait_timeout,
                            ))
                            .await
                        }
                    }
                });
            }
            Admission::Refused => {
                tokio::spawn(async move {
                    limiter
                        .refuse(&*front, stream, CloseReason::refused_queue_full)
                        .await
                });
            }
        }
    }

    /// Waits until every slot is free again (all connections closed).
    pub async fn wait_all_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.lock().in_use == 0 {
                return;
            }
            closed.await;
        }
    }

    async fn serve<F: Front>(
        self: Arc<Self>,
        front: Arc<F>,
        stream: TcpStream,
        slot: Slot,
        draining: bool,
    ) {
        self.metrics.open.inc();
        let (reason, stream) = front.serve(stream, slot, draining).await;
        self.metrics.open.dec();
        self.metrics.closed(reason);
        if let Some(stream) = stream {
            // Boxed, here and below: a held connection's task should not
            // carry the close's buffers for its whole life.
            Box::pin(close_gently(stream)).await;
        }
    }

    async fn refuse<F: Front>(&self, front: &F, mut stream: TcpStream, reason: CloseReason) {
        self.metrics.refused.inc();
        self.metrics.closed(reason);
        let answered = {
            let mut state = self.lock();
            if state.refusing < self.capacity {
                state.refusing += 1;
                true
            } else {
                false
            }
        };
        if answered {
            Box::pin(front.refuse(&mut stream)).await;
            Box::pin(close_gently(stream)).await;
            self.lock().refusing -= 1;
        } else {
            // Beyond the bound of refusals in progress the flood is not a
            // client with a question: close at once (what it sent so far is
            // read first, so this is still an end of stream, not a reset).
            discard_ready(&stream);
            drop(stream);
        }
    }

    fn admit(self: &Arc<Self>) -> Admission {
        let mut state = self.lock();
        if state.in_use < self.capacity && state.queue.is_empty() {
            state.in_use += 1;
            drop(state);
            return Admission::Admitted(self.slot());
        }
        if state.queue.len() >= self.capacity {
            return Admission::Refused;
        }
        let key = state.next_key;
        state.next_key += 1;
        let (sender, handed) = oneshot::channel();
        state.queue.push_back((key, sender));
        self.metrics.waiting.inc();
        self.evict_for_queue(&mut state);
        Admission::Queued(Queued {
            limiter: self.clone(),
            key,
            handed,
        })
    }

    /// Tells as many evictable idle connections to close as the queue is
    /// short of slots. Returns when the next idle one becomes evictable,
    /// if the queue still needs one.
    fn evict_for_queue(&self, state: &mut State) -> Option<Instant> {
        let now = Instant::now();
        while state.evicting < state.queue.len() {
            let entry = state.idle.first_entry()?;
            let evictable_at = entry.get().0 + EVICTION_GRACE;
            if evictable_at > now {
                return Some(evictable_at);
            }
            let (_, token) = entry.remove();
            token.cancel();
            state.evicting += 1;
            self.metrics.evictions.inc();
        }
        None
    }

    fn slot(self: &Arc<Self>) -> Slot {
        let slot = Slot {
            limiter: self.clone(),
            evict: CancellationToken::new(),
            state: Mutex::new(SlotState {
                idle_key: None,
                idle_since: Instant::now(),
            }),
        };
        // A new connection has asked nothing yet: it is idle (and, after
        // the grace, evictable: a flood of silent connections must not
        // hold every slot).
        slot.idle();
        slot
    }

    /// A slot is given up: to the head of the queue if anyone waits.
    fn release(&self, evicted: bool) {
        let mut state = self.lock();
        if evicted {
            state.evicting -= 1;
        }
        while let Some((_, sender)) = state.queue.pop_front() {
            self.metrics.waiting.dec();
            if sender.send(()).is_ok() {
                return; // in_use unchanged: the slot changed hands
            }
        }
        state.in_use -= 1;
        let none_left = state.in_use == 0;
        drop(state);
        if none_left {
            self.all_closed.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Queued {
    /// The slot handed over, or None when none came within [`SLOT_WAIT`].
    async fn slot(mut self) -> Option<Slot> {
        let limiter = self.limiter.clone();
        let deadline = Instant::now() + SLOT_WAIT;
        loop {
            let appeared = limiter.idle_appeared.notified();
            tokio::pin!(appeared);
            appeared.as_mut().enable();
            let next_eviction = limiter.evict_for_queue(&mut limiter.lock());
            let wake = next_eviction.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                handed = &mut self.handed => {
                    // A closed sender means the limiter dropped this place
                    // (it cannot: only `Drop for Queued` removes it).
                    return handed.ok().map(|()| limiter.slot());
                }
                _ = appeared => {}
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return self.leave();
                    }
                }
            }
        }
    }

    /// Leaves the queue at the deadline, unless the slot came just now.
    fn leave(&mut self) -> Option<Slot> {
        let limiter = self.limiter.clone();
        let mut state = limiter.lock();
        if let Some(at) = state.queue.iter().position(|(key, _)| *key == self.key) {
            state.queue.remove(at);
            limiter.metrics.waiting.dec();
            return None;
        }
        drop(state);
        // Not queued any more: the slot was handed over.
        self.handed.try_recv().ok().map(|()| limiter.slot())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        if let Some(at) = state.queue.iter().position(|(key, _)| *key == self.key) {
            state.queue.remove(at);
            self.limiter.metrics.waiting.dec();
            return;
        }
        drop(state);
        // A slot handed over but never taken (the task was cancelled)
        // goes on to the next in the queue.
        if self.handed.try_recv().is_ok() {
            self.limiter.release(false);
        }
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
    evict: CancellationToken,
    state: Mutex<SlotState>,
}

impl Slot {
    /// The connection waits for its client: it may be evicted.
    pub fn idle(&self) {
        let mut state = self.lock_state();
        if state.idle_key.is_some() || self.evict.is_cancelled() {
            return;
        }
        let now = Instant::now();
        let mut limiter = self.limiter.lock();
        let key = limiter.next_key;
        limiter.next_key += 1;
        limiter.idle.insert(key, (now, self.evict.clone()));
        let short = limiter.evicting < limiter.queue.len();
        drop(limiter);
        state.idle_key = Some(key);
        state.idle_since = now;
        drop(state);
        if short {
            self.limiter.idle_appeared.notify_waiters();
        }
    }

    /// The connection works on a query or request: it is not evicted.
    pub fn busy(&self) {
        let mut state = self.lock_state();
        if let Some(key) = state.idle_key.take() {
            self.limiter.lock().idle.remove(&key);
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

    fn lock_state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy();
        self.limiter.release(self.evict.is_cancelled());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(limiter: &Arc<Limiter>) -> Slot {
        match limiter.admit() {
            Admission::Admitted(slot) => slot,
            _ => panic!("a free slot"),
        }
    }

    fn queued(limiter: &Arc<Limiter>) -> Queued {
        match limiter.admit() {
            Admission::Queued(queued) => queued,
            _ => panic!("queued"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_connection_makes_room_for_the_queue_head() {
        let limiter = Limiter::new(2, LimiterMetrics::default());
        let first = admitted(&limiter);
        let second = admitted(&limiter);
        second.busy();
        // Too freshly idle to be taken: the newcomer queues, nothing evicted.
        let waiting = tokio::spawn(queued(&limiter).slot());
        tokio::task::yield_now().await;
        assert!(!first.is_evicted());
        // After the grace the idle one is told to close...
        tokio::time::sleep(EVICTION_GRACE + Duration::from_millis(1)).await;
        assert!(first.is_evicted() && !second.is_evicted());
        // ...and its slot goes to the queue's head, not to a newcomer.
        drop(first);
        assert!(matches!(limiter.admit(), Admission::Queued(_)));
        let third = waiting.await.unwrap().expect("the evicted slot");
        assert_eq!(limiter.in_use(), 2);
        drop((second, third));
        assert_eq!(limiter.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_is_never_taken_past_the_queue() {
        let limiter = Limiter::new(1, LimiterMetrics::default());
        let busy = admitted(&limiter);
        busy.busy();
        let head = tokio::spawn(queued(&limiter).slot());
        tokio::task::yield_now().await;
        // The busy one finishes and closes: its slot is the head's, even
        // though a newcomer arrives before the head's task runs.
        drop(busy);
        assert!(matches!(limiter.admit(), Admission::Queued(_)));
        assert!(head.await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn evictions_match_the_queue_not_the_wakeups() {
        let limiter = Limiter::new(4, LimiterMetrics::default());
        let slots: Vec<Slot> = (0..4).map(|_| admitted(&limiter)).collect();
        tokio::time::advance(EVICTION_GRACE).await;
        // Two queued: exactly two of the four idle ones are told to close.
        let a = queued(&limiter);
        let b = queued(&limiter);
        let evicted = slots.iter().filter(|s| s.is_evicted()).count();
        assert_eq!(evicted, 2);
        // The longest idle first.
        assert!(slots[0].is_evicted() && slots[1].is_evicted());
        drop((a, b));
        drop(slots);
        assert_eq!(limiter.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_and_a_late_slot_is_a_refusal() {
        let limiter = Limiter::new(1, LimiterMetrics::default());
        let busy = admitted(&limiter);
        busy.busy();
        let waiting = queued(&limiter);
        assert!(matches!(limiter.admit(), Admission::Refused));
        // Nothing turns idle: no slot within SLOT_WAIT.
        assert!(waiting.slot().await.is_none());
        // The queue is empty again: the next one queues.
        assert!(matches!(limiter.admit(), Admission::Queued(_)));
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_turning_idle_is_evicted_for_a_waiting_one() {
        let limiter = Limiter::new(1, LimiterMetrics::default());
        let busy = admitted(&limiter);
        busy.busy();
        let waiter = tokio::spawn(queued(&limiter).slot());
        tokio::task::yield_now().await;
        // The only connection finishes its request and waits for its
        // client: after the grace it makes room.
        busy.idle();
        tokio::time::sleep(EVICTION_GRACE + Duration::from_millis(1)).await;
        assert!(busy.is_evicted());
        drop(busy);
        assert!(waiter.await.unwrap().is_some());
    }

    #[tokio::test]
    async fn idle_deadlines_only_while_idle() {
        let limiter = Limiter::new(1, LimiterMetrics::default());
        let slot = admitted(&limiter);
        assert!(slot.idle_deadline(Duration::from_secs(1)).is_some());
        slot.busy();
        assert!(slot.idle_deadline(Duration::from_secs(1)).is_none());
        drop(slot);
        limiter.wait_all_closed().await;
        assert_eq!(limiter.in_use(), 0);
    }
}
