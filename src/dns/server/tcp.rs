//! DNS over TCP (RFC 7766): one task per connection, queries answered in
//! order, admitted through the connection limiter ([`crate::connlimit`]),
//! which it shares in kind with HTTP. A connection that gets no slot has
//! its queries answered REFUSED; every close is gentle. It owns only the
//! connection's life; answers come from the parent's `Shared`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::super::wire::{self, ParseError, Response, rcode};
use super::{Handled, Shared, formerr};
use crate::connlimit::{self, CloseReason, Front, Slot};
use crate::handover::drain_accept_queue;

/// At shutdown, how long a connection that has asked nothing yet may take
/// to send its first query (it connected before the listener closed).
const FIRST_QUERY_AT_SHUTDOWN: Duration = Duration::from_secs(1);

pub(super) async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("dns tcp accept: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        shared.limiter.dispatch(&shared, stream, false);
    }
    // Lame duck: connections already queued get their query answered.
    drain_accept_queue(listener, |stream| {
        shared.limiter.dispatch(&shared, stream, true)
    });
}

impl Front for Shared {
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        slot: Slot,
        draining: bool,
    ) -> (CloseReason, Option<TcpStream>) {
        let mut stream = stream;
        let reason = serve_connection(&mut stream, slot, &self, draining).await;
        (reason, Some(stream))
    }

    /// Answers every query that arrives within the refusal wait with
    /// REFUSED (FORMERR when it cannot be parsed), in order.
    async fn refuse(&self, stream: &mut TcpStream) {
        let deadline = tokio::time::Instant::now() + connlimit::REFUSE_WAIT;
        let mut packet = Vec::new();
        let mut response = Response::default();
        loop {
            let read = async {
                let len = stream.read_u16().await? as usize;
                packet.resize(len, 0);
                stream.read_exact(&mut packet).await
            };
            if !matches!(tokio::time::timeout_at(deadline, read).await, Ok(Ok(_))) {
                return;
            }
            if !refusal(&packet, &mut response) {
                continue;
            }
            self.metrics.count(0, response.rcode());
            let mut framed = Vec::with_capacity(response.len() + 2);
            framed.extend_from_slice(&(response.len() as u16).to_be_bytes());
            framed.extend_from_slice(&response.buf);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

/// Writes REFUSED for `packet` into `response` (FORMERR when it is not a
/// query that can be parsed); false when it is no query at all.
fn refusal(packet: &[u8], response: &mut Response) -> bool {
    match wire::parse_query(packet) {
        Ok(query) => {
            response.start(&query, false);
            response.set_rcode(rcode::REFUSED);
        }
        Err(ParseError::Malformed) => return formerr(packet, response),
        Err(ParseError::TooShort | ParseError::NotAQuery) => return false,
    }
    response.finish();
    true
}

/// Serves one connection's queries in order; returns why it closed.
/// `draining`: a connection taken from the listener's queue at shutdown:
/// one query, then close.
async fn serve_connection(
    stream: &mut TcpStream,
    slot: Slot,
    shared: &Shared,
    draining: bool,
) -> CloseReason {
    let shutdown = &shared.shutdown;
    let _ = stream.set_nodelay(true);
    let mut response = Response::default();
    let mut rng = SmallRng::seed_from_u64(rand::random());
    let mut packet = Vec::new();
    let first_wait = if draining {
        shared.config.tcp_read_timeout
    } else {
        shared.config.tcp_idle_timeout
    };
    let mut answered = 0usize;
    loop {
        slot.idle();
        let wait = if answered == 0 {
            first_wait
        } else {
            shared.config.tcp_idle_timeout
        };
        let mut deadline = tokio::time::Instant::now() + wait;
        let mut shutdown_seen = draining;
        let len = {
            let read = stream.read_u16();
            tokio::pin!(read);
            loop {
                tokio::select! {
                    // The read first: a query that has arrived is answered
                    // even when an eviction came at the same moment.
                    biased;
                    len = &mut read => match len {
                        Ok(len) => break len as usize,
                        Err(_) => return CloseReason::client, // closed or broken
                    },
                    // Another client needs the slot; this one was idle the longest.
                    _ = slot.evicted() => return CloseReason::evicted,
                    _ = tokio::time::sleep_until(deadline) => {
                        return if shutdown_seen { CloseReason::shutdown } else { CloseReason::idle_timeout };
                    }
                    _ = shutdown.cancelled(), if !shutdown_seen => {
                        // Between queries: close (clients retry elsewhere).
                        if answered > 0 {
                            return CloseReason::shutdown;
                        }
                        // Accepted just before: its first query gets a moment.
                        shutdown_seen = true;
                        deadline = deadline.min(tokio::time::Instant::now() + FIRST_QUERY_AT_SHUTDOWN);
                    }
                }
            }
        };
        slot.busy();
        packet.resize(len, 0);
        let read = tokio::time::timeout(
            shared.config.tcp_read_timeout,
            stream.read_exact(&mut packet),
        )
        .await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return CloseReason::client,
            Err(_) => return CloseReason::read_timeout,
        }
        let started = Instant::now();
        let reply: Option<Vec<u8>> = match shared.handle(&packet, false, &mut response, &mut rng) {
            Handled::Reply => None,
            Handled::Drop => continue,
            handled @ (Handled::Forward | Handled::Chase(_)) => {
                match shared.elsewhere(&packet, handled, true).await {
                    Some(answer) => Some(answer),
                    None => continue,
                }
            }
        };
        let bytes: &[u8] = reply.as_deref().unwrap_or(&response.buf);
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(bytes);
        if stream.write_all(&framed).await.is_err() {
            return CloseReason::client;
        }
        shared
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        answered += 1;
        if draining || shutdown.is_cancelled() {
            return CloseReason::shutdown;
        }
    }
}
