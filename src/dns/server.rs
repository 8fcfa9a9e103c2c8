//! UDP and TCP listeners.
//!
//! UDP: one socket per core, all bound with SO_REUSEPORT (the kernel spreads
//! queries over them, and a new agent can bind the same port during a
//! rolling update). Each socket is served by one task that answers in place
//! from the current snapshot; only forwarded queries get a task of their own,
//! so a slow upstream never delays local answers.
//!
//! TCP: RFC 7766 framing, several queries per connection (pipelined,
//! answered in order), a cap on concurrent connections (beyond it new ones
//! are closed at once), an idle timeout between queries and a read timeout
//! within one, so no client can hold resources for free.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::answer::{Outcome, Zone, answer};
use super::forward::Forwarder;
use super::metrics::DnsMetrics;
use super::wire::{self, ParseError, Response, rcode};
use crate::index::{Index, Snapshot};

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub zone: Zone,
    pub forwarder: Forwarder,
    pub max_tcp_connections: usize,
    /// How long a TCP connection may sit idle between queries.
    pub tcp_idle_timeout: Duration,
    /// How long one framed query may take to arrive once started.
    pub tcp_read_timeout: Duration,
    /// UDP sockets (and tasks) sharing the port; 0 means one per core.
    pub udp_sockets: usize,
}

pub struct DnsServer {
    config: DnsConfig,
    index: Arc<Index>,
    metrics: Arc<DnsMetrics>,
    udp: Vec<Arc<UdpSocket>>,
    tcp: TcpListener,
}

fn reuseport_socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// What handling one packet produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Reply,
    Forward,
    Drop,
}

impl DnsServer {
    /// Binds every socket now, so a taken port fails the agent at start.
    pub fn bind(
        addr: SocketAddr,
        config: DnsConfig,
        index: Arc<Index>,
        metrics: Arc<DnsMetrics>,
    ) -> std::io::Result<Self> {
        let count = match config.udp_sockets {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut udp = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = reuseport_socket(addr, Type::DGRAM, Protocol::UDP)?;
            // A deeper receive queue rides out bursts instead of dropping.
            let _ = socket.set_recv_buffer_size(4 << 20);
            udp.push(Arc::new(UdpSocket::from_std(socket.into())?));
        }
        let tcp = reuseport_socket(addr, Type::STREAM, Protocol::TCP)?;
        tcp.listen(1024)?;
        let tcp = TcpListener::from_std(tcp.into())?;
        Ok(Self {
            config,
            index,
            metrics,
            udp,
            tcp,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = Arc::new(Shared {
            config: self.config,
            index: self.index,
            metrics: self.metrics,
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (i, socket) in self.udp.into_iter().enumerate() {
            tasks.spawn(serve_udp(
                socket,
                shared.clone(),
                shutdown.clone(),
                i as u64,
            ));
        }
        tasks.spawn(serve_tcp(self.tcp, shared, shutdown.clone()));
        shutdown.cancelled().await;
        // Give in-flight answers a moment, then stop.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }
}

struct Shared {
    config: DnsConfig,
    index: Arc<Index>,
    metrics: Arc<DnsMetrics>,
}

/// Answers `packet` into `response` when the agent can; says what else to
/// do. Pure apart from `rng`: the server and the fuzz target share it.
/// Returns the query type too, for metrics (0 when unknown).
pub fn handle_packet(
    zone: &Zone,
    snapshot: &Snapshot,
    packet: &[u8],
    over_udp: bool,
    response: &mut Response,
    rng: &mut impl rand::Rng,
) -> (Handled, u16) {
    let query = match wire::parse_query(packet) {
        Ok(query) => query,
        Err(ParseError::TooShort | ParseError::NotAQuery) => return (Handled::Drop, 0),
        Err(ParseError::Malformed) => {
            let Ok((id, opcode, rd)) = wire::read_header(packet) else {
                return (Handled::Drop, 0);
            };
            response.start_bare(id, opcode, rd, false);
            response.set_rcode(rcode::FORMERR);
            response.finish();
            return (Handled::Reply, 0);
        }
    };
    if query.opcode != 0 {
        response.start(&query, false);
        response.set_rcode(rcode::NOTIMP);
        response.finish();
        return (Handled::Reply, query.qtype);
    }
    if query.edns.is_some_and(|e| e.version > 0) {
        response.start(&query, false);
        response.opt((rcode::BADVERS >> 4) as u8);
        response.finish();
        return (Handled::Reply, query.qtype);
    }
    match answer(zone, snapshot, &query, response, rng) {
        Outcome::Forward => (Handled::Forward, query.qtype),
        Outcome::Answered => {
            if query.edns.is_some() {
                response.opt(0);
            }
            response.finish();
            let limit = if over_udp {
                query.max_udp_size()
            } else {
                u16::MAX as usize
            };
            if response.len() > limit {
                response.truncate_to_question(&query);
            }
            (Handled::Reply, query.qtype)
        }
    }
}

impl Shared {
    fn handle(
        &self,
        packet: &[u8],
        over_udp: bool,
        response: &mut Response,
        rng: &mut SmallRng,
    ) -> Handled {
        let snapshot = self.index.load();
        let (handled, qtype) = handle_packet(
            &self.config.zone,
            &snapshot,
            packet,
            over_udp,
            response,
            rng,
        );
        if let Handled::Reply = handled {
            if response.is_truncated() {
                self.metrics.truncated.inc();
            }
            self.metrics.count(qtype, response.rcode());
        }
        handled
    }

    /// Forwards and returns the bytes to send back (SERVFAIL when upstream
    /// fails).
    async fn forward(&self, packet: &[u8], over_tcp: bool) -> Option<Vec<u8>> {
        self.metrics.forwarded.inc();
        let query = wire::parse_query(packet).ok()?;
        match self.config.forwarder.forward(packet, over_tcp).await {
            Ok(answer) => {
                self.metrics.count(query.qtype, answer[3] & 0x0F);
                Some(answer)
            }
            Err(error) => {
                debug!(reason = error.label(), "upstream failed");
                self.metrics.upstream_error(error.label());
                let mut response = Response::default();
                response.start(&query, false);
                response.set_rcode(rcode::SERVFAIL);
                if query.edns.is_some() {
                    response.opt(0);
                }
                response.finish();
                self.metrics.count(query.qtype, rcode::SERVFAIL);
                Some(response.buf)
            }
        }
    }
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    seed: u64,
) {
    let mut buffer = vec![0u8; 65535];
    let mut response = Response::default();
    let mut rng = SmallRng::seed_from_u64(rand::random::<u64>() ^ seed);
    loop {
        let (len, peer) = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    // ICMP errors from earlier sends surface here on Linux;
                    // they concern one peer, not the socket.
                    debug!("udp receive: {error}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let started = Instant::now();
        let packet = &buffer[..len];
        match shared.handle(packet, true, &mut response, &mut rng) {
            Handled::Reply => {
                let _ = socket.send_to(&response.buf, peer).await;
                shared
                    .metrics
                    .duration
                    .observe(started.elapsed().as_secs_f64());
            }
            Handled::Drop => {}
            Handled::Forward => {
                let packet = packet.to_vec();
                let socket = socket.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Some(answer) = shared.forward(&packet, false).await {
                        let _ = socket.send_to(&answer, peer).await;
                    }
                    shared
                        .metrics
                        .duration
                        .observe(started.elapsed().as_secs_f64());
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(shared.config.max_tcp_connections));
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
            _ = shutdown.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.metrics.tcp_rejected.inc();
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_connection(stream, &shared, shutdown).await;
        });
    }
}

async fn serve_connection(mut stream: TcpStream, shared: &Shared, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let mut response = Response::default();
    let mut rng = SmallRng::seed_from_u64(rand::random());
    let mut packet = Vec::new();
    loop {
        let len = tokio::select! {
            len = tokio::time::timeout(shared.config.tcp_idle_timeout, stream.read_u16()) => match len {
                Ok(Ok(len)) => len as usize,
                _ => return, // idle too long, closed, or broken
            },
            _ = shutdown.cancelled() => return,
        };
        packet.resize(len, 0);
        let read = tokio::time::timeout(
            shared.config.tcp_read_timeout,
            stream.read_exact(&mut packet),
        )
        .await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let started = Instant::now();
        let reply: Option<Vec<u8>> = match shared.handle(&packet, false, &mut response, &mut rng) {
            Handled::Reply => None,
            Handled::Drop => continue,
            Handled::Forward => match shared.forward(&packet, true).await {
                Some(answer) => Some(answer),
                None => continue,
            },
        };
        let bytes: &[u8] = reply.as_deref().unwrap_or(&response.buf);
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
        shared
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
    }
}
