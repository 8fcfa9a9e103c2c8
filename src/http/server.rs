//! The HTTP accept loop and connection handling, with the limits that keep
//! the agent's memory bounded whatever clients do:
//!
//! - at most `max_connections` connections ([`crate::connlimit`]): at the cap
//!   a new one queues while the longest-idle one is closed to make room; one
//!   that gets no slot is answered 503 (`too_many_connections`) with
//!   `Connection: close`;
//! - a request head must arrive whole within `header_timeout` of its first
//!   byte (slowloris) and fit in `max_header_bytes` (else 431, the JSON
//!   error of [`super::own_answers`], as for every head hyper refuses);
//! - a connection idle for `idle_timeout` (no request in progress, no byte
//!   of a new one) is closed;
//! - requests with a body are refused (413; the API is GET-only), so no
//!   body is ever read.
//!
//! Every close is gentle ([`connlimit::close_gently`]): hyper hands the
//! socket back instead of dropping it, so unread bytes never turn a close
//! into a reset.
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

use super::metrics::HttpMetrics;
use super::own_answers::OwnAnswers;
use super::{ApiError, RequestClass};
use crate::connlimit::{self, CloseReason, Front, Limiter, Slot};

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
    metrics: Arc<HttpMetrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limiter = Limiter::new(config.max_connections, metrics.connection_limits.clone());
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
        let _ = stream.set_nodelay(true);
        limiter.dispatch(&shared, stream, false);
    }
    // Lame duck: what the kernel already queued for us gets an answer
    // (one request each); then the listener closes and new connections go
    // to the next agent sharing the port.
    let drained = crate::handover::drain_accept_queue(listener, |stream| {
        let _ = stream.set_nodelay(true);
        limiter.dispatch(&shared, stream, true)
    });
    debug!(drained, "http listener closed");
    limiter.wait_all_closed().await;
    Ok(())
}

struct Shared {
    router: Router,
    direct: Direct,
    config: ServeConfig,
    metrics: Arc<HttpMetrics>,
    shutdown: CancellationToken,
}

impl Front for Shared {
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        slot: Slot,
        draining: bool,
    ) -> (CloseReason, Option<TcpStream>) {
        serve_connection(stream, slot, self, !draining).await
    }

    async fn refuse(&self, stream: &mut TcpStream) {
        refuse(stream).await;
    }
}

/// How much of a refused connection's request head is read at most.
const REFUSED_HEAD_BYTES: usize = 64 << 10;

/// Answers a connection the agent will not serve with 503 and
/// `Connection: close` once its request head has arrived (within
/// [`connlimit::REFUSE_WAIT`]): an answer, never a reset. A connection that
/// sends nothing in that time is just closed.
async fn refuse(stream: &mut TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read in small pieces, keeping only the last three bytes: a refusal
    // in a flood should cost little more than its socket.
    let mut piece = [0u8; 512];
    let mut tail = [0u8; 3];
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + connlimit::REFUSE_WAIT;
    'head: while read < REFUSED_HEAD_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut piece)).await {
            Ok(Ok(n)) if n > 0 => {
                read += n;
                let mut window = tail.to_vec();
                window.extend_from_slice(&piece[..n]);
                if window.windows(4).any(|w| w == b"\r\n\r\n") {
                    break 'head;
                }
                tail.copy_from_slice(&window[window.len() - 3..]);
            }
            Ok(_) => return, // the client left
            Err(_) => break,
        }
    }
    if read == 0 {
        return; // nothing asked: nothing to answer
    }
    let response = ApiError::too_many_connections().to_http1();
    let _ = stream.write_all(&response).await;
}

/// At shutdown, how long a connection that has sent nothing yet may take
/// to send its request (it connected before the listener closed).
const FIRST_BYTE_AT_SHUTDOWN: Duration = Duration::from_secs(1);

/// How long a connection told to close while idle may take to do so.
const CLOSE_BOUND: Duration = Duration::from_secs(1);

async fn serve_connection(
    stream: TcpStream,
    slot: Slot,
    shared: Arc<Shared>,
    keep_alive: bool,
) -> (CloseReason, Option<TcpStream>) {
    let slot = Arc::new(slot);
    let config = &shared.config;
    // Until its first byte a connection costs only its socket: hyper's
    // buffers come when there is something to read.
    let mut keep_alive = keep_alive;
    if keep_alive {
        let mut first = [0u8; 1];
        let mut deadline = tokio::time::Instant::now() + config.idle_timeout;
        loop {
            tokio::select! {
                biased;
                // (peek, not readable(): that may resolve without data.)
                // First, so a request that has arrived is served even when
                // an eviction came at the same moment.
                peeked = stream.peek(&mut first) => {
                    if !matches!(peeked, Ok(1..)) {
                        return (CloseReason::client, Some(stream)); // closed before a byte, or broken
                    }
                    break;
                }
                _ = slot.evicted() => return (CloseReason::evicted, Some(stream)),
                _ = tokio::time::sleep_until(deadline) => {
                    let reason = if keep_alive { CloseReason::idle_timeout } else { CloseReason::shutdown };
                    return (reason, Some(stream));
                }
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
    Box::pin(serve_http(stream, slot, shared.clone(), keep_alive)).await
}

async fn serve_http(
    stream: TcpStream,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    keep_alive: bool,
) -> (CloseReason, Option<TcpStream>) {
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
    // The socket comes back when hyper is done with it, to be closed
    // gently (hyper would drop it, and a drop with unread data is a reset).
    let (give_back, given_back) = tokio::sync::oneshot::channel();
    let io = TokioIo::new(Watched {
        inner: Some(stream),
        give_back: Some(give_back),
        head: head.clone(),
        answers: OwnAnswers::new(config.max_header_bytes, shared.metrics.clone()),
    });
    // Boxed so that it can be dropped before the function ends, which
    // hands the socket back.
    let mut connection = Box::pin(builder.serve_connection(io, service));
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
    // Set when the agent decides to close; otherwise the client did.
    let mut closing: Option<CloseReason> = None;
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
                let reason = match result {
                    Ok(()) => closing.unwrap_or(CloseReason::client),
                    Err(error) => {
                        debug!("http connection: {error}");
                        closing.unwrap_or(CloseReason::error)
                    }
                };
                drop(connection);
                return (reason, given_back.await.ok());
            }
            Wake::HeadBegan(started) => {
                let head_deadline = started + config.header_timeout;
                if head_deadline < timer.deadline() {
                    timer.as_mut().reset(head_deadline);
                }
            }
            Wake::Evicted => {
                closing = Some(CloseReason::evicted);
                connection.as_mut().graceful_shutdown();
                close_by = Some(now + CLOSE_BOUND);
                timer.as_mut().reset(now + CLOSE_BOUND);
            }
            Wake::Shutdown => {
                // In-flight requests finish; the agent's grace bounds them.
                closing = Some(CloseReason::shutdown);
                connection.as_mut().graceful_shutdown();
                let bound = now + Duration::from_secs(86_400);
                close_by = Some(bound);
                timer.as_mut().reset(bound);
            }
            // Idle, yet not closed by hyper (e.g. half a head read).
            Wake::Timer if close_by.is_some() => {
                drop(connection);
                let reason = closing.unwrap_or(CloseReason::read_timeout);
                return (reason, given_back.await.ok());
            }
            Wake::Timer => {
                // Idle: the idle timeout, or the head timeout once a head
                // started; busy: look again an idle timeout from now.
                let deadline = match (slot.idle_deadline(config.idle_timeout), head.started()) {
                    (Some(_), Some(started)) => started + config.header_timeout,
                    (Some(idle), None) => idle,
                    (None, _) => now + config.idle_timeout,
                };
                if deadline <= now {
                    closing = Some(if head.started().is_some() {
                        CloseReason::read_timeout
                    } else {
                        CloseReason::idle_timeout
                    });
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

/// The connection's socket, noting when request bytes arrive, putting
/// the agent's JSON errors in place of hyper's own answers, and handed
/// back when hyper drops it.
struct Watched {
    /// Some until dropped.
    inner: Option<TcpStream>,
    give_back: Option<tokio::sync::oneshot::Sender<TcpStream>>,
    head: Arc<HeadClock>,
    answers: OwnAnswers,
}

impl Watched {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.inner.as_mut().expect("the socket until drop"))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let (Some(stream), Some(give_back)) = (self.inner.take(), self.give_back.take()) {
            let _ = give_back.send(stream);
        }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = this.stream().poll_read(cx, buf);
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
        this.answers.poll_write(
            this.inner.as_mut().expect("the socket until drop"),
            cx,
            buf,
            hyper_may_answer,
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let hyper_may_answer = this.head.hyper_may_answer();
        this.answers.poll_write_vectored(
            this.inner.as_mut().expect("the socket until drop"),
            cx,
            bufs,
            hyper_may_answer,
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let flushed = this
            .answers
            .poll_flush(this.inner.as_mut().expect("the socket until drop"), cx);
        // hyper flushes only once all it buffered is written.
        if matches!(flushed, Poll::Ready(Ok(()))) {
            this.head.flushed();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.answers
            .poll_shutdown(this.inner.as_mut().expect("the socket until drop"), cx)
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
    metrics: Arc<HttpMetrics>,
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
