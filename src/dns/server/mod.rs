//! UDP and TCP listeners.
//!
//! UDP: one socket per core, all bound with SO_REUSEPORT (the kernel spreads
//! queries over them, and a new agent can bind the same port during a
//! rolling update). Each socket is served by one task that answers in place
//! from the current snapshot; only forwarded queries get a task of their own
//! (at most [`MAX_FORWARDS`] at once), so a slow upstream never delays local
//! answers.
//!
//! TCP: RFC 7766 framing, several queries per connection (pipelined,
//! answered in order), a cap on concurrent connections shared in kind with
//! HTTP ([`crate::connlimit`]: at the cap a new connection queues while the
//! longest-idle one makes room; one that gets no slot has its queries
//! answered REFUSED before the close), an idle timeout between queries
//! (`--dns-tcp-idle-timeout`) and a read timeout within one
//! (`--dns-tcp-query-timeout`), so no client can hold resources for free.
//! Every close is gentle: no reset for bytes the agent did not read.
//!
//! Shutdown is a lame duck (see [`crate::handover`]): each UDP socket leaves
//! the port group without losing what is queued on it, answers that, and
//! closes once it stays empty; the TCP listener hands over its queued
//! connections and closes; open connections finish their query; forwarded
//! queries get their answer. All of it within `drain_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use socket2::Socket;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod tcp;

use super::answer::{Outcome, Zone, answer};
use super::cache::export::ExportedEntry;
use super::cache::{CacheConfig, CachedName};
use super::chase::Chaser;
use super::forward::Forwarder;
use super::metrics::DnsMetrics;
use super::resolve::Resolver;
use super::wire::{self, ParseError, Response, rcode};
use crate::connlimit::Limiter;
use crate::handover::detach_peer;
use crate::index::{Index, Snapshot};
use crate::sockets::Transport;
use crate::sockets::listen::reuseport_socket;

/// Forwarded UDP queries in flight at most; more get SERVFAIL at once.
pub const MAX_FORWARDS: usize = 4096;

/// A lame-duck UDP socket closes once no datagram came for this long.
const UDP_QUIET: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub zone: Zone,
    pub forwarder: Forwarder,
    pub cache: CacheConfig,
    pub max_tcp_connections: usize,
    /// How long a TCP connection may sit idle between queries.
    pub tcp_idle_timeout: Duration,
    /// How long one framed query may take to arrive once started.
    pub tcp_read_timeout: Duration,
    /// UDP sockets (and tasks) sharing the port; 0 means one per core.
    pub udp_sockets: usize,
    /// How long shutdown may take to answer what is queued and in flight.
    pub drain_timeout: Duration,
}

pub struct DnsServer {
    config: DnsConfig,
    index: Arc<Index>,
    metrics: Arc<DnsMetrics>,
    resolver: Arc<Resolver>,
    addr: SocketAddr,
    /// Empty until [`DnsServer::join`].
    udp: Vec<Arc<UdpSocket>>,
    /// Bound at once (so a taken port fails the agent at start); listening
    /// only after [`DnsServer::join`].
    tcp: Socket,
    /// Before joining: a UDP socket bound to the address and connected
    /// away, so other agents see this one waiting (see [`crate::handover`]).
    /// Whatever the kernel queued on it in the instant between bind and
    /// connect is answered once the server runs.
    marker: Option<Arc<UdpSocket>>,
    joined: bool,
}

/// What handling one packet produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Reply,
    Forward,
    /// An ExternalName Service's name: the CNAME to this target and the
    /// target's records, chased by the server ([`crate::dns::chase`]).
    Chase(Arc<str>),
    Drop,
}

impl DnsServer {
    /// Binds the TCP socket now, so a taken port fails the agent at start;
    /// with `join`, also the UDP sockets, and listens: the server is then
    /// in the port group. Without, [`DnsServer::join`] does that later.
    pub fn bind(
        addr: SocketAddr,
        config: DnsConfig,
        index: Arc<Index>,
        metrics: Arc<DnsMetrics>,
        join: bool,
    ) -> std::io::Result<Self> {
        let tcp = reuseport_socket(addr, Transport::Tcp)?;
        let addr = tcp.local_addr()?.as_socket().unwrap_or(addr);
        let resolver = Arc::new(Resolver::new(
            &config.cache,
            config.forwarder.clone(),
            metrics.clone(),
        ));
        let mut server = Self {
            config,
            index,
            metrics,
            resolver,
            addr,
            udp: Vec::new(),
            tcp,
            marker: None,
            joined: false,
        };
        if join {
            server.join()?;
        } else {
            let marker = reuseport_socket(addr, Transport::Udp)?;
            marker.connect(&detach_peer(addr).into())?;
            server.marker = Some(Arc::new(UdpSocket::from_std(marker.into())?));
        }
        Ok(server)
    }

    /// Joins the port group: binds the UDP sockets and listens on TCP.
    pub fn join(&mut self) -> std::io::Result<()> {
        if self.joined {
            return Ok(());
        }
        let count = match self.config.udp_sockets {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut udp = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = reuseport_socket(self.addr, Transport::Udp)?;
            // A deeper receive queue rides out bursts instead of dropping.
            let _ = socket.set_recv_buffer_size(4 << 20);
            udp.push(Arc::new(UdpSocket::from_std(socket.into())?));
        }
        self.tcp.listen(1024)?;
        self.udp = udp;
        self.joined = true;
        Ok(())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }

    /// A read-only view of the cache of forwarded answers (for
    /// `/debug/cache`).
    pub fn cache_view(&self) -> CacheView {
        CacheView(self.resolver.clone())
    }

    /// Serves until `shutdown` fires, then drains (lame duck). Joins the
    /// port group first if that has not happened yet.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Err(error) = self.join() {
            warn!("dns: cannot serve on {}: {error}", self.addr);
            return;
        }
        let tcp = match TcpListener::from_std(std::net::TcpListener::from(self.tcp)) {
            Ok(tcp) => tcp,
            Err(error) => {
                warn!("dns: tcp listener: {error}");
                return;
            }
        };
        {
            // Entries past --serve-stale go, so memory and the gauges follow
            // what can still be served.
            let resolver = self.resolver.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_EVERY);
                loop {
                    tokio::select! {
                        _ = tick.tick() => resolver.cache().sweep(Instant::now()),
                        _ = shutdown.cancelled() => return,
                    }
                }
            });
        }
        let shared = Arc::new(Shared {
            resolver: self.resolver,
            limiter: Limiter::new(self.config.max_tcp_connections, self.metrics.tcp.clone()),
            shutdown: shutdown.clone(),
            config: self.config,
            index: self.index,
            metrics: self.metrics,
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            drained_udp: AtomicU64::new(0),
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
        tasks.spawn(tcp::serve_tcp(tcp, shared.clone(), shutdown.clone()));
        if let Some(marker) = self.marker {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65535];
                let mut response = Response::default();
                let mut rng = SmallRng::seed_from_u64(rand::random());
                drain_udp(&marker, &shared, &mut buffer, &mut response, &mut rng).await;
            });
        }
        shutdown.cancelled().await;
        let started = Instant::now();
        let drain = async {
            while tasks.join_next().await.is_some() {}
            shared.limiter.wait_all_closed().await;
            // Forwarded queries hold a permit until their answer is sent.
            let _ = shared.forwards.acquire_many(MAX_FORWARDS as u32).await;
        };
        let drained = tokio::time::timeout(shared.config.drain_timeout, drain).await;
        tasks.abort_all();
        let queued = shared.drained_udp.load(Ordering::Relaxed);
        match drained {
            Ok(()) => info!(
                queued_udp_answered = queued,
                took = ?started.elapsed(),
                "dns: drained and closed"
            ),
            Err(_) => warn!(
                queued_udp_answered = queued,
                "dns: drain did not finish within {:?}; closing anyway",
                shared.config.drain_timeout
            ),
        }
    }
}

/// A read-only view of the DNS server's cache.
#[derive(Clone, Debug)]
pub struct CacheView(Arc<Resolver>);

impl CacheView {
    /// Every cached name with its remaining TTL.
    pub fn list(&self) -> Vec<CachedName> {
        self.0.cache().list(Instant::now())
    }

    /// Every servable entry, for the next agent of a rolling update.
    pub fn export(&self) -> Vec<ExportedEntry> {
        self.0.cache().export(Instant::now())
    }

    /// Takes over what the agent before exported; how many were taken.
    pub fn import(&self, entries: Vec<ExportedEntry>) -> usize {
        self.0.cache().import(entries, Instant::now())
    }
}

/// How often expired entries past `--serve-stale` are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Shared {
    config: DnsConfig,
    resolver: Arc<Resolver>,
    index: Arc<Index>,
    metrics: Arc<DnsMetrics>,
    limiter: Arc<Limiter>,
    shutdown: CancellationToken,
    /// One permit per forwarded UDP query in flight.
    forwards: Arc<Semaphore>,
    /// UDP queries answered after leaving the port group (lame duck).
    drained_udp: AtomicU64,
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
            return if formerr(packet, response) {
                (Handled::Reply, 0)
            } else {
                (Handled::Drop, 0)
            };
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
        Outcome::Chase(target) => (Handled::Chase(target), query.qtype),
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

    /// The answer to a query the zone did not answer by itself (`handled`
    /// is Forward or Chase): the bytes to send back, SERVFAIL when upstream
    /// fails. None for anything else.
    async fn elsewhere(&self, packet: &[u8], handled: Handled, over_tcp: bool) -> Option<Vec<u8>> {
        match handled {
            Handled::Forward => self.forward(packet, over_tcp).await,
            Handled::Chase(target) => self.chase(packet, target, over_tcp).await,
            Handled::Reply | Handled::Drop => None,
        }
    }

    async fn chase(&self, packet: &[u8], target: Arc<str>, over_tcp: bool) -> Option<Vec<u8>> {
        let query = wire::parse_query(packet).ok()?;
        let chaser = Chaser {
            zone: &self.config.zone,
            index: &self.index,
            resolver: &self.resolver,
        };
        match chaser.answer(packet, target, !over_tcp).await {
            Ok(answer) => {
                self.metrics.count(query.qtype, answer[3] & 0x0F);
                Some(answer)
            }
            Err(error) => {
                debug!(%error, "external name not chased");
                if let Some(label) = error.upstream_label() {
                    self.metrics.upstream_error(label);
                }
                Some(self.servfail(&query))
            }
        }
    }

    /// The answer from the cache or upstream (SERVFAIL when there is
    /// none).
    async fn forward(&self, packet: &[u8], over_tcp: bool) -> Option<Vec<u8>> {
        let query = wire::parse_query(packet).ok()?;
        match self.resolver.resolve(&query, !over_tcp).await {
            Ok((answer, _)) => {
                self.metrics.count(query.qtype, answer[3] & 0x0F);
                Some(answer)
            }
            Err(error) => {
                debug!(reason = error.label(), "upstream failed");
                Some(self.servfail(&query))
            }
        }
    }

    /// The answer when the cache has it without waiting (no task needed).
    fn forward_cached(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let query = wire::parse_query(packet).ok()?;
        let answer = self.resolver.cached(&query, true)?;
        self.metrics.count(query.qtype, answer[3] & 0x0F);
        Some(answer)
    }

    fn servfail(&self, query: &wire::Query<'_>) -> Vec<u8> {
        self.metrics.count(query.qtype, rcode::SERVFAIL);
        super::resolve::servfail(query)
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
            _ = shutdown.cancelled() => break,
        };
        answer_datagram(
            &socket,
            &shared,
            &buffer[..len],
            peer,
            &mut response,
            &mut rng,
        )
        .await;
    }
    // Lame duck: leave the port group (a connected socket is skipped by
    // SO_REUSEPORT selection; what is queued stays), answer the queue.
    let local = socket.local_addr();
    if let Ok(local) = local
        && let Err(error) = socket.connect(detach_peer(local)).await
    {
        // Still answer the queue; the close below ends the rest.
        warn!("dns: cannot leave the port group gracefully: {error}");
    }
    drain_udp(&socket, &shared, &mut buffer, &mut response, &mut rng).await;
}

/// Answers what is queued on a socket that left the port group, until it
/// stays empty for [`UDP_QUIET`].
async fn drain_udp(
    socket: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    buffer: &mut [u8],
    response: &mut Response,
    rng: &mut SmallRng,
) {
    loop {
        match tokio::time::timeout(UDP_QUIET, socket.recv_from(buffer)).await {
            Ok(Ok((len, peer))) => {
                shared.drained_udp.fetch_add(1, Ordering::Relaxed);
                answer_datagram(socket, shared, &buffer[..len], peer, response, rng).await;
            }
            Ok(Err(error)) => debug!("udp receive: {error}"),
            Err(_) => return,
        }
    }
}

async fn answer_datagram(
    socket: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    packet: &[u8],
    peer: SocketAddr,
    response: &mut Response,
    rng: &mut SmallRng,
) {
    let started = Instant::now();
    match shared.handle(packet, true, response, rng) {
        Handled::Reply => {
            let _ = socket.send_to(&response.buf, peer).await;
            shared
                .metrics
                .duration
                .observe(started.elapsed().as_secs_f64());
        }
        Handled::Drop => {}
        Handled::Forward if let Some(answer) = shared.forward_cached(packet) => {
            // A cache hit is answered in place, like the zone's names.
            let _ = socket.send_to(&answer, peer).await;
            shared
                .metrics
                .duration
                .observe(started.elapsed().as_secs_f64());
        }
        handled @ (Handled::Forward | Handled::Chase(_)) => {
            // Each forwarded UDP query is a task until upstream answers (or
            // times out): capped, so a flood of names the agent does not
            // serve cannot grow memory without bound.
            let Ok(running) = shared.forwards.clone().try_acquire_owned() else {
                shared.metrics.upstream_error("overloaded");
                if let Ok(query) = wire::parse_query(packet) {
                    let _ = socket.send_to(&shared.servfail(&query), peer).await;
                }
                return;
            };
            let packet = packet.to_vec();
            let socket = socket.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let _running = running;
                if let Some(answer) = shared.elsewhere(&packet, handled, false).await {
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

/// FORMERR for a packet with a readable header but no parseable question;
/// false when not even the header can be read.
pub(super) fn formerr(packet: &[u8], response: &mut Response) -> bool {
    let Ok((id, opcode, rd)) = wire::read_header(packet) else {
        return false;
    };
    response.start_bare(id, opcode, rd, false);
    response.set_rcode(rcode::FORMERR);
    response.finish();
    true
}
