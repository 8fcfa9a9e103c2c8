//! The connection's socket as hyper sees it: notes when request bytes
//! arrive (for the head timeout), puts the agent's JSON errors in place of
//! hyper's own answers, and is handed back when hyper drops it so that the
//! close can be gentle. Knows nothing of routes or of the limiter.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

use super::super::own_answers::OwnAnswers;

/// When the head of the next request began to arrive: set by the first
/// byte read while no request is in progress, cleared when the head is
/// complete (the service is called).
#[derive(Default)]
pub(super) struct HeadClock {
    pub(super) started: std::sync::Mutex<Option<tokio::time::Instant>>,
    pub(super) in_request: std::sync::atomic::AtomicBool,
    /// A response has ended but hyper has not flushed it yet.
    pub(super) unflushed: std::sync::atomic::AtomicBool,
}

impl HeadClock {
    pub(super) fn started(&self) -> Option<tokio::time::Instant> {
        *self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn bytes_arrived(&self) {
        if !self.in_request.load(std::sync::atomic::Ordering::Relaxed) {
            let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
            if started.is_none() {
                *started = Some(tokio::time::Instant::now());
            }
        }
    }

    pub(super) fn head_complete(&self) {
        self.in_request
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(super) fn response_done(&self) {
        self.unflushed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.in_request
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn flushed(&self) {
        self.unflushed
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Nothing of a response is in progress or unflushed, so what hyper
    /// writes now is an answer of its own (see [`OwnAnswers`]).
    pub(super) fn hyper_may_answer(&self) -> bool {
        !self.in_request.load(std::sync::atomic::Ordering::Relaxed)
            && !self.unflushed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The connection's socket, noting when request bytes arrive, putting
/// the agent's JSON errors in place of hyper's own answers, and handed
/// back when hyper drops it.
pub(super) struct Watched {
    /// Some until dropped.
    pub(super) inner: Option<TcpStream>,
    pub(super) give_back: Option<tokio::sync::oneshot::Sender<TcpStream>>,
    pub(super) head: Arc<HeadClock>,
    pub(super) answers: OwnAnswers,
}

impl Watched {
    pub(super) fn stream(&mut self) -> Pin<&mut TcpStream> {
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
