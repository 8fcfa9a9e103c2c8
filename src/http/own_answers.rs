//! hyper answers some requests itself, before any service is called: 400
//! for a head it cannot parse, 431 for one larger than
//! `--http-max-header-bytes`, 414 for a request target over 64 KiB. It
//! writes those with an empty body and offers no way to change that.
//! [`OwnAnswers`], on the connection's socket, puts the agent's JSON error
//! in their place, from the same builder as every route ([`ApiError`]),
//! with `Connection: close`.
//!
//! hyper stays the one parser that decides: counting the head's bytes here
//! as well would be a second reading of HTTP that could disagree with it
//! (pipelined heads, bodies in the same packet). What lets the socket tell
//! such an answer from a route's is when it is written: hyper only answers
//! itself when it reads a new head, and it reads one only after the answer
//! before it is flushed. So a write while no request is being answered
//! (no service call in progress, nothing of its answer left unflushed) is
//! hyper's own.
//!
//! After the answer the write side is shut and what the client still sends
//! is read and dropped until it closes: closing with unread bytes would
//! make the kernel reset the connection, and a client still sending its
//! oversized head could lose the answer to that reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::metrics::HttpMetrics;
use super::{ApiError, ErrorCode};

/// The most bytes read and dropped after an answer; a client sending more
/// gets its connection closed (reset) without more waiting. The time bound
/// is the connection's head timeout, which keeps running meanwhile.
const LINGER_MAX_BYTES: usize = 1 << 20;

enum State {
    /// Writes go to the socket.
    PassThrough,
    /// hyper is writing an answer of its own: its bytes are dropped.
    Replacing(ErrorCode),
    /// Our answer, partly written.
    Writing {
        bytes: Vec<u8>,
        written: usize,
    },
    /// Our answer is out; the write side is shut next.
    Answered,
    /// Reading what the client still sends, until it closes.
    Lingering {
        dropped: usize,
    },
    Closed,
}

pub(super) struct OwnAnswers {
    state: State,
    max_header_bytes: usize,
    metrics: Arc<HttpMetrics>,
}

impl OwnAnswers {
    pub(super) fn new(max_header_bytes: usize, metrics: Arc<HttpMetrics>) -> Self {
        Self {
            state: State::PassThrough,
            max_header_bytes,
            metrics,
        }
    }

    /// A write from hyper. `hyper_may_answer`: no request on the connection
    /// is being answered or has bytes of its answer unflushed, so this
    /// write can only be an answer of hyper's own.
    pub(super) fn poll_write(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
        buf: &[u8],
        hyper_may_answer: bool,
    ) -> Poll<io::Result<usize>> {
        if hyper_may_answer {
            self.notice(buf);
        }
        match self.state {
            State::PassThrough => Pin::new(io).poll_write(cx, buf),
            _ => Poll::Ready(Ok(buf.len())),
        }
    }

    /// As [`Self::poll_write`], for hyper's vectored writes.
    pub(super) fn poll_write_vectored(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
        hyper_may_answer: bool,
    ) -> Poll<io::Result<usize>> {
        if hyper_may_answer && let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.notice(first);
        }
        match self.state {
            State::PassThrough => Pin::new(io).poll_write_vectored(cx, bufs),
            _ => Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
        }
    }

    /// Starts replacing when `first` begins an answer hyper gives itself
    /// (hyper writes an answer's head in one buffer, so its status line is
    /// at the start of the first write).
    fn notice(&mut self, first: &[u8]) {
        if !matches!(self.state, State::PassThrough) {
            return;
        }
        if let Some(code) = refused_head(first) {
            self.metrics.record_rejected(match code {
                ErrorCode::HeaderTooLarge => "header_too_large",
                ErrorCode::UriTooLong => "uri_too_long",
                _ => "malformed_head",
            });
            self.state = State::Replacing(code);
        }
    }

    pub(super) fn poll_flush(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if let State::Replacing(code) = self.state {
            self.state = State::Writing {
                bytes: self.answer(code).to_http1(),
                written: 0,
            };
        }
        if let State::Writing { bytes, written } = &mut self.state {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            self.state = State::Answered;
        }
        Pin::new(io).poll_flush(cx)
    }

    pub(super) fn poll_shutdown(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(io, cx))?;
        loop {
            match &mut self.state {
                State::PassThrough => return Pin::new(io).poll_shutdown(cx),
                State::Answered => {
                    ready!(Pin::new(&mut *io).poll_shutdown(cx))?;
                    self.state = State::Lingering { dropped: 0 };
                }
                State::Lingering { dropped } => {
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {
                            *dropped += buf.filled().len();
                            if *dropped > LINGER_MAX_BYTES {
                                self.state = State::Closed;
                            }
                        }
                        // The client closed (or broke) its side: done.
                        _ => self.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
                State::Replacing(_) | State::Writing { .. } => {
                    unreachable!("poll_flush finished the answer")
                }
            }
        }
    }

    fn answer(&self, code: ErrorCode) -> ApiError {
        let message = match code {
            ErrorCode::HeaderTooLarge => format!(
                "the request head is larger than {} bytes (--http-max-header-bytes)",
                self.max_header_bytes
            ),
            ErrorCode::UriTooLong => "the request target is longer than 65534 bytes".into(),
            _ => "the request head is not valid HTTP/1.1".into(),
        };
        ApiError::new(code, message)
    }
}

/// The code for the answer whose head starts `head`, when it is one of
/// those hyper writes itself.
fn refused_head(head: &[u8]) -> Option<ErrorCode> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..4)?;
    match status {
        b"400 " => Some(ErrorCode::BadRequest),
        b"414 " => Some(ErrorCode::UriTooLong),
        b"431 " => Some(ErrorCode::HeaderTooLarge),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_statuses_hyper_answers_itself_are_replaced() {
        assert_eq!(
            refused_head(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            Some(ErrorCode::HeaderTooLarge)
        );
        assert_eq!(
            refused_head(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            refused_head(b"HTTP/1.1 414 URI Too Long\r\n"),
            Some(ErrorCode::UriTooLong)
        );
        for other in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"HTTP/1.1 4311",
            b"HTTP/1.1 43",
            b"{\"error\":",
            b"",
        ] {
            assert_eq!(
                refused_head(other),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
