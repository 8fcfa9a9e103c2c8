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

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

mod socket;
mod tracked;

use socket::{HeadClock, Watched};
use tracked::Tracked;

use super::ApiError;
use super::metrics::HttpMetrics;
use super::own_answers::OwnAnswers;
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

#[cfg(test)]
mod tests {
    //! The connection timers, each alone: every test sets the timer under
    //! test short and the others an hour, so the close it waits for (within
    //! a bound) can only come from the one under test.
    use std::io::{Read, Write};

    use super::*;

    const SHORT: Duration = Duration::from_millis(200);
    const HOUR: Duration = Duration::from_secs(3600);

    /// An agent's HTTP serve loop with `config` on a loopback port, answering
    /// `GET /` with `ok`.
    async fn serving(config: ServeConfig) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let direct: Direct = Arc::new(|_, _| None);
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            router,
            direct,
            config,
            Arc::default(),
            shutdown.clone(),
        ));
        (addr, shutdown)
    }

    fn config(idle: Duration, header: Duration) -> ServeConfig {
        ServeConfig {
            idle_timeout: idle,
            header_timeout: header,
            ..ServeConfig::default()
        }
    }

    /// What the server sends until it closes the connection (bounded by a
    /// 30 s read timeout: a connection left open fails the test).
    fn until_closed(mut stream: std::net::TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut read = Vec::new();
        stream
            .read_to_end(&mut read)
            .expect("the server closes the connection");
        String::from_utf8_lossy(&read).into_owned()
    }

    async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(work).await.unwrap()
    }

    #[tokio::test]
    async fn a_head_that_stops_halfway_is_cut_by_the_head_timeout() {
        let (addr, shutdown) = serving(config(HOUR, SHORT)).await;
        let answer = blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
            until_closed(stream)
        })
        .await;
        assert_eq!(answer, "", "no answer to half a head");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_connection_that_never_speaks_is_closed_by_the_idle_timeout() {
        let (addr, shutdown) = serving(config(SHORT, HOUR)).await;
        let answer =
            blocking(move || until_closed(std::net::TcpStream::connect(addr).unwrap())).await;
        assert_eq!(answer, "");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_closed_an_idle_timeout_after_its_answer() {
        let (addr, shutdown) = serving(config(SHORT, HOUR)).await;
        let answer = blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            until_closed(stream)
        })
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with("ok"),
            "one answer, then the close: {answer}"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_head_timeout_does_not_run_while_a_kept_alive_connection_waits() {
        // Head timeout short, idle an hour: after its answer the connection
        // waits for the next request without being cut, and serves it.
        let (addr, shutdown) = serving(config(HOUR, SHORT)).await;
        let answers = blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut answers = Vec::new();
            for _ in 0..2 {
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                    .unwrap();
                let mut buffer = [0u8; 512];
                let n = stream.read(&mut buffer).unwrap();
                answers.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                // Longer than the head timeout, between two requests.
                std::thread::sleep(SHORT * 3);
            }
            answers
        })
        .await;
        for answer in answers {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        shutdown.cancel();
    }
}
