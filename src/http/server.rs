//! The HTTP accept loop and connection handling, with the limits that keep
//! the agent's memory bounded whatever clients do:
//!
//! - at most `max_connections` connections; at the cap the longest-idle one
//!   is closed to make room, and only when all are busy is a new one closed
//!   at once ([`crate::connlimit`]);
//! - a request head must arrive whole within `header_timeout` of its first
//!   byte (slowloris) and fit in `max_header_bytes` (else 431, the JSON
//!   error of [`super::own_answers`], as for every head hyper refuses);
//! - a connection idle for `idle_timeout` (no request in progress, no byte
//!   of a new one) is closed;
//! - requests with a body are refused (413; the API is GET-only), so no
//!   body is ever read.
//!
//! On shutdown (lame duck) the loop takes the connections already queued on
//! the listener (each gets one answer), then closes the listener; open
//! connections finish the request in progress and close.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::RequestClass;
use super::own_answers::OwnAnswers;
use crate::connlimit::{Admission, Limiter, LimiterMetrics, Slot};
use crate::metrics::Metrics;

/// Connection-level limits (`--http-*` flags).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
        }
    }
}

/// hyper's smallest read buffer; a header limit below it is raised to it.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Answers the requests it can without the router (None: the router's
/// turn); see [`super::services::get_one_direct`].
pub type Direct = Arc<
    dyn Fn(&axum::http::Method, &axum::http::Uri) -> Option<axum::response::Response> + Send + Sync,
>;

/// Serves `router` on `listener` until `shutdown` fires, then finishes the
/// work in progress; returns when every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    direct: Direct,
    config: ServeConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limiter = Limiter::new(
        config.max_connections,
        LimiterMetrics {
            evictions: metrics.http_connections_evicted.clone(),
            waiting: metrics.http_connections_waiting.clone(),
        },
    );
    let shared = Arc::new(Shared {
        router,
        direct,
        config,
        metrics,
        shutdown: shutdown.clone(),
    });
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("http accept: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        admit(&limiter, &shared, stream, true);
    }
    // Lame duck: what the kernel already queued for us gets an answer
    // (one request each); then the listener closes and new connections go
    // to the next agent sharing the port.
    let drained = crate::handover::drain_accept_queue(listener, |stream| {
        admit(&limiter, &shared, stream, false)
    });
    debug!(drained, "http listener closed");
    limiter.wait_all_closed().await;
    Ok(())
}

struct Shared {
    router: Router,
    direct: Direct,
    config: ServeConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

fn admit(limiter: &Arc<Limiter>, shared: &Arc<Shared>, stream: TcpStream, keep_alive: bool) {
    let _ = stream.set_nodelay(true);
    shared.metrics.http_connections_accepted.inc();
    match limiter.admit() {
        Admission::Admitted(slot) => {
            tokio::spawn(serve_connection(stream, slot, shared.clone(), keep_alive));
        }
        Admission::AfterEviction(pending) | Admission::Wait(pending) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                match pending.slot().await {
                    Some(slot) => serve_connection(stream, slot, shared, keep_alive).await,
                    None => {
                        shared.metrics.http_connections_rejected.inc();
                    }
                }
            });
        }
        Admission::Rejected => {
            shared.metrics.http_connections_rejected.inc();
            drop(stream);
        }
    }
}

/// At shutdown, how long a connection that has sent nothing yet may take
/// to send its request (it connected before the listener closed).
const FIRST_BYTE_AT_SHUTDOWN: Duration = Duration::from_secs(1);

/// How long a connection told to close while idle may take to do so.
const CLOSE_BOUND: Duration = Duration::from_secs(1);

async fn serve_connection(stream: TcpStream, slot: Slot, shared: Arc<Shared>, keep_alive: bool) {
    let slot = Arc::new(slot);
    shared.metrics.http_connections.inc();
    let _gauge = GaugeGuard(shared.metrics.http_connections.clone());
    let config = &shared.config;
    // Until its first byte a connection costs only its socket: hyper's
    // buffers come when there is something to read. (Closing it here is
    // always safe: nothing was asked.)
    let mut keep_alive = keep_alive;
    if keep_alive {
        let mut first = [0u8; 1];
        let mut deadline = tokio::time::Instant::now() + config.idle_timeout;
        loop {
            tokio::select! {
                biased;
                // (peek, not readable(): that may resolve without data.)
                peeked = stream.peek(&mut first) => {
                    if !matches!(peeked, Ok(1..)) {
                        return; // closed before a byte, or broken
                    }
                    break;
                }
                _ = slot.evicted() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = shared.shutdown.cancelled(), if keep_alive => {
                    // Connected before the listener closed: its request
                    // gets a moment, and one answer.
                    keep_alive = false;
                    deadline = deadline.min(tokio::time::Instant::now() + FIRST_BYTE_AT_SHUTDOWN);
                }
            }
        }
    }
    // Boxed: the waiting future above stays small.
    Box::pin(serve_http(stream, slot, shared.clone(), keep_alive)).await;
}

async fn serve_http(stream: TcpStream, slot: Arc<Slot>, shared: Arc<Shared>, keep_alive: bool) {
    let config = &shared.config;
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timeout also runs while a keep-alive connection
    // waits for its next request, which would make it the idle timeout;
    // the loop below times heads from their first byte instead.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_header_size(config.max_header_bytes)
        .keep_alive(keep_alive);
    let head = Arc::new(HeadClock::default());
    let service = Tracked {
        router: shared.router.clone(),
        direct: shared.direct.clone(),
        slot: slot.clone(),
        head: head.clone(),
        metrics: shared.metrics.clone(),
    };
    let io = TokioIo::new(Watched {
        inner: stream,
        head: head.clone(),
        answers: OwnAnswers::new(config.max_header_bytes, shared.metrics.clone()),
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let evicted = slot.evicted();
    tokio::pin!(evicted);
    let shutdown = shared.shutdown.cancelled();
    tokio::pin!(shutdown);
    // One timer for the connection's life, moved rather than made anew:
    // set to the idle deadline, pulled in when a head begins, and checked
    // against the real deadline when it fires (so a finished request costs
    // no timer work).
    let timer = tokio::time::sleep_until(
        slot.idle_deadline(config.idle_timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + config.idle_timeout),
    );
    tokio::pin!(timer);
    let mut close_by: Option<tokio::time::Instant> = None;
    let mut head_seen: Option<tokio::time::Instant> = None;
    loop {
        // The connection is polled first; a head that began while it was
        // polled is reported here, not by waking the task again.
        let wake = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(Wake::Closed(result));
            }
            if close_by.is_none() {
                let started = head.started();
                if started != head_seen {
                    head_seen = started;
                    if let Some(started) = started {
                        return Poll::Ready(Wake::HeadBegan(started));
                    }
                }
                if evicted.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Evicted);
                }
                // (A connection taken from the queue at shutdown has
                // keep-alive off already: it gets its one answer.)
                if keep_alive && shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Shutdown);
                }
            }
            timer.as_mut().poll(cx).map(|()| Wake::Timer)
        })
        .await;
        let now = tokio::time::Instant::now();
        match wake {
            Wake::Closed(result) => {
                if let Err(error) = result {
                    debug!("http connection: {error}");
                }
                return;
            }
            Wake::HeadBegan(started) => {
                let head_deadline = started + config.header_timeout;
                if head_deadline < timer.deadline() {
                    timer.as_mut().reset(head_deadline);
                }
            }
            Wake::Evicted => {
                connection.as_mut().graceful_shutdown();
                close_by = Some(now + CLOSE_BOUND);
                timer.as_mut().reset(now + CLOSE_BOUND);
            }
            Wake::Shutdown => {
                // In-flight requests finish; the agent's grace bounds them.
                connection.as_mut().graceful_shutdown();
                let bound = now + Duration::from_secs(86_400);
                close_by = Some(bound);
                timer.as_mut().reset(bound);
            }
            // Idle, yet not closed by hyper (e.g. half a head read): drop.
            Wake::Timer if close_by.is_some() => return,
            Wake::Timer => {
                // Idle: the idle timeout, or the head timeout once a head
                // started; busy: look again an idle timeout from now.
                let deadline = match (slot.idle_deadline(config.idle_timeout), head.started()) {
                    (Some(_), Some(started)) => started + config.header_timeout,
                    (Some(idle), None) => idle,
                    (None, _) => now + config.idle_timeout,
                };
                if deadline <= now {
                    connection.as_mut().graceful_shutdown();
                    close_by = Some(now + CLOSE_BOUND);
                    timer.as_mut().reset(now + CLOSE_BOUND);
                } else {
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// Why [`serve_http`]'s loop woke.
enum Wake {
    Closed(Result<(), hyper::Error>),
    HeadBegan(tokio::time::Instant),
    Evicted,
    Shutdown,
    Timer,
}

/// When the head of the next request began to arrive: set by the first
/// byte read while no request is in progress, cleared when the head is
/// complete (the service is called).
#[derive(Default)]
struct HeadClock {
    started: std::sync::Mutex<Option<tokio::time::Instant>>,
    in_request: std::sync::atomic::AtomicBool,
    /// A response has ended but hyper has not flushed it yet.
    unflushed: std::sync::atomic::AtomicBool,
}

impl HeadClock {
    fn started(&self) -> Option<tokio::time::Instant> {
        *self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bytes_arrived(&self) {
        if !self.in_request.load(std::sync::atomic::Ordering::Relaxed) {
            let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
            if started.is_none() {
                *started = Some(tokio::time::Instant::now());
            }
        }
    }

    fn head_complete(&self) {
        self.in_request
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn response_done(&self) {
        self.unflushed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.in_request
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn flushed(&self) {
        self.unflushed
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Nothing of a response is in progress or unflushed, so what hyper
    /// writes now is an answer of its own (see [`OwnAnswers`]).
    fn hyper_may_answer(&self) -> bool {
        !self.in_request.load(std::sync::atomic::Ordering::Relaxed)
            && !self.unflushed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The connection's socket, noting when request bytes arrive and putting
/// the agent's JSON errors in place of hyper's own answers.
struct Watched {
    inner: TcpStream,
    head: Arc<HeadClock>,
    answers: OwnAnswers,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.head.bytes_arrived();
        }
        result
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let hyper_may_answer = this.head.hyper_may_answer();
        this.answers
            .poll_write(&mut this.inner, cx, buf, hyper_may_answer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let hyper_may_answer = this.head.hyper_may_answer();
        this.answers
            .poll_write_vectored(&mut this.inner, cx, bufs, hyper_may_answer)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let flushed = this.answers.poll_flush(&mut this.inner, cx);
        // hyper flushes only once all it buffered is written.
        if matches!(flushed, Poll::Ready(Ok(()))) {
            this.head.flushed();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.answers.poll_shutdown(&mut this.inner, cx)
    }
}

struct GaugeGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The router as a hyper service that marks its connection busy from the
/// request's head until the response body's end (a watch stream keeps its
/// connection busy; a finished request leaves it idle, so evictable).
///
/// It also counts and times every request, and refuses bodies, here rather
/// than in axum middleware: two middleware layers cost as much per request
/// as the rest of the route.
struct Tracked {
    router: Router,
    direct: Direct,
    slot: Arc<Slot>,
    head: Arc<HeadClock>,
    metrics: Arc<Metrics>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = hyper::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.slot.busy();
        self.head.head_complete();
        let busy = Busy(self.slot.clone(), self.head.clone());
        let started = Instant::now();
        let class = RequestClass::of(request.uri());
        let immediate = super::refuse_body(request.headers(), &self.metrics)
            .or_else(|| (self.direct)(request.method(), request.uri()));
        let router = self.router.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = match immediate {
                Some(response) => response,
                None => router.oneshot(request.map(Body::new)).await?,
            };
            class.record(&metrics, response.status(), started);
            Ok(response.map(|body| {
                Body::new(Guarded {
                    inner: body,
                    _busy: busy,
                })
            }))
        })
    }
}

/// Marks the connection idle again when dropped.
struct Busy(Arc<Slot>, Arc<HeadClock>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.1.response_done();
        self.0.idle();
    }
}

/// A response body that holds its connection busy until it is done.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
