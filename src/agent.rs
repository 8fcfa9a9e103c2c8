//! `kubedisco agent`: wires a source, the index and the front ends together
//! from a [`Config`], and shuts them down in order: on SIGTERM/SIGINT
//! ([`run`], what the binary does) or when asked ([`Agent`], in-process).
//!
//! Knows every layer, and is known by `cli` only: it never reads flags.

mod config;
mod ports;
mod source;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use self::config::{Config, LinkLocalConfig, Source};
use self::ports::{
    bind_dns, http_socket, join_dns, take_over_cache, tcp_addresses_overlap, wait_for_successor,
    wait_to_join,
};
use self::source::locality;
use crate::balance::Pickers;
use crate::dns::DnsServer;
use crate::handover::{Lifecycle, others_serving};
use crate::http::server::ServeConfig;
use crate::http::{AppState, HttpConfig, HttpContext};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::netif::{LinkLocal, NetifError};
use crate::sockets::Transport;
use crate::source::SourceError;
use crate::status::SourceStatus;
use crate::warmstart;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    LinkLocal(#[from] NetifError),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Xds(#[from] crate::xds::XdsError),
    #[error(
        "--http-addr {http} and --dns-addr {dns} overlap: DNS also serves TCP, and both \
         sockets share ports by design (SO_REUSEPORT), so they would split each other's \
         connections; give them different ports"
    )]
    SamePort { http: SocketAddr, dns: SocketAddr },
}

/// Runs an agent until SIGTERM or SIGINT, then shuts it down in order
/// (lame duck, hand-over, drain): `kubedisco agent`.
pub(crate) async fn run(config: Config) -> Result<(), AgentError> {
    raise_open_files_limit();
    let mut agent = Agent::start(config).await?;
    tokio::select! {
        signal = shutdown_signal() => agent.shutdown_handle.shutdown(signal),
        ended = &mut agent.task => return ended_with(ended),
    }
    ended_with(agent.task.await)
}

/// A started agent: its sockets are bound and its source runs. It serves
/// at once, or, when another process serves its ports and it has no
/// snapshot to answer from, joins them once synced; until it is told to
/// stop ([`ShutdownHandle`], [`Agent::stop`]) or dropped.
pub struct Agent {
    http_addr: SocketAddr,
    dns_addr: SocketAddr,
    xds_addr: Option<SocketAddr>,
    shutdown_handle: ShutdownHandle,
    task: JoinHandle<Result<(), AgentError>>,
}

/// Starts an [`Agent`]'s shutdown, as SIGTERM does for the binary: it goes
/// unready, waits for a successor that is joining its ports, lets what is
/// in flight finish, and ends. Dropping every handle and the agent itself
/// does the same.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<Option<&'static str>>>);

impl ShutdownHandle {
    /// `why` opens the log line ("SIGTERM: shutting down"); only the first
    /// call counts.
    pub fn shutdown(&self, why: &'static str) {
        self.0.send_if_modified(|reason| {
            let first = reason.is_none();
            if first {
                *reason = Some(why);
            }
            first
        });
    }
}

/// Resolves with the reason once shutdown is asked for (again at once on
/// later calls).
async fn shutdown_requested(requested: &mut watch::Receiver<Option<&'static str>>) -> &'static str {
    match requested.wait_for(Option::is_some).await {
        Ok(reason) => reason.unwrap_or("shutdown requested"),
        Err(_) => "the agent's handle was dropped",
    }
}

/// What the agent's task ended with; a panic in it goes on as a panic of
/// the caller, as it did when the agent ran in the caller's own future.
fn ended_with(
    ended: Result<Result<(), AgentError>, tokio::task::JoinError>,
) -> Result<(), AgentError> {
    match ended {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Cancelled: only when the runtime itself shuts down.
        Err(_) => Ok(()),
    }
}

impl Agent {
    /// Sets up the node-local address (if configured), loads a warm-start
    /// snapshot, binds both ports and starts the source; fails fast (and
    /// leaves nothing behind) when any of that fails. Then serves in a task
    /// of the current runtime.
    pub async fn start(config: Config) -> Result<Agent, AgentError> {
        // The node-local address must exist before any socket binds to it, and
        // goes away after every socket is closed, however the agent ends.
        let link_local = match &config.link_local {
            Some(link) => Some(LinkLocal::setup(link.ip, &link.interface).await?),
            None => None,
        };
        let bound = match Bound::new(config) {
            Ok(bound) => bound,
            Err(error) => {
                if let Some(link_local) = link_local {
                    link_local.teardown().await;
                }
                return Err(error);
            }
        };
        let (http_addr, dns_addr) = (bound.http_addr, bound.dns_addr);
        let xds_addr = bound.xds.as_ref().map(|(_, addr)| *addr);
        let (sender, requested) = watch::channel(None);
        let task = tokio::spawn(async move {
            let result = bound.serve(requested).await;
            if let Some(link_local) = link_local {
                link_local.teardown().await;
            }
            result
        });
        Ok(Agent {
            http_addr,
            dns_addr,
            xds_addr,
            shutdown_handle: ShutdownHandle(Arc::new(sender)),
            task,
        })
    }

    /// Where the HTTP API listens (the port chosen when the configured one
    /// was 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where DNS listens, UDP and TCP (the port chosen when the configured
    /// one was 0).
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// Where the xDS server listens, when it is on (the port chosen when
    /// the configured one was 0).
    pub fn xds_addr(&self) -> Option<SocketAddr> {
        self.xds_addr
    }

    /// For whoever should be able to stop the agent without owning it.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown_handle.clone()
    }

    /// Shuts the agent down and waits until it has (what SIGTERM does).
    pub async fn stop(self) -> Result<(), AgentError> {
        self.shutdown_handle.shutdown("stop requested");
        ended_with(self.task.await)
    }
}

/// The HTTP port: listening, or (while deferring to the process that
/// serves it) bound only.
enum HttpPort {
    Bound(TcpSocket),
    Listening(TcpListener),
}

fn listen(socket: TcpSocket, addr: SocketAddr) -> Result<TcpListener, AgentError> {
    socket.listen(1024).map_err(|source| AgentError::Bind {
        addr,
        what: "HTTP",
        source,
    })
}

/// An agent between binding and serving: its ports are bound (and, unless
/// it defers to the process serving them, listening), and the source (and
/// snapshot writer) run.
struct Bound {
    config: Config,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
    status: Arc<SourceStatus>,
    shutdown: CancellationToken,
    http: HttpPort,
    http_addr: SocketAddr,
    dns: DnsServer,
    dns_addr: SocketAddr,
    /// The xDS server's socket, listening (streams wait for the first sync).
    xds: Option<(TcpListener, SocketAddr)>,
    /// Another process serves the ports and we cannot answer yet: join
    /// them once synced.
    defer: bool,
    source_task: JoinHandle<()>,
    snapshot_task: Option<JoinHandle<()>>,
}

impl Bound {
    fn new(config: Config) -> Result<Bound, AgentError> {
        if tcp_addresses_overlap(config.http_addr, config.dns_addr) {
            return Err(AgentError::SamePort {
                http: config.http_addr,
                dns: config.dns_addr,
            });
        }
        let metrics = Arc::new(Metrics::new());
        let index = Arc::new(Index::new(metrics.index.clone()));
        let status = Arc::new(SourceStatus::default());
        let shutdown = CancellationToken::new();

        // Warm start, before any socket serves: a valid snapshot makes the
        // agent answer (stale) from its first instant.
        index.set_locality(locality(&config, config.zone.clone()));
        let coverage = warmstart::Coverage {
            source: config.source.kind().to_string(),
            namespaces: config.namespaces.clone(),
            pod_weights: config.pod_weights,
        };
        let warm = config
            .snapshot
            .as_ref()
            .is_some_and(|snapshot| warmstart::warm_start(snapshot, &coverage, &index, &status));

        // Rolling update: another agent may serve our ports already. Unless we
        // can answer at once (warm), it keeps them alone until we have synced.
        let predecessor = others_serving(config.dns_addr, Transport::Udp) > 0
            || others_serving(config.http_addr, Transport::Tcp) > 0;
        let defer = predecessor && !warm;

        // Fail fast on a taken port, before anything is watched: both ports
        // are bound now (joining the port group comes with listen()).
        let http_socket = http_socket(config.http_addr).map_err(|source| AgentError::Bind {
            addr: config.http_addr,
            what: "HTTP",
            source,
        })?;
        let dns = bind_dns(&config, index.clone(), metrics.clone(), !defer)?;
        let dns_addr = dns.local_addr().unwrap_or(config.dns_addr);
        let http_addr = http_socket.local_addr().unwrap_or(config.http_addr);
        let xds = config.xds_addr.map(bind_xds).transpose()?;

        let source_task = source::start(
            &config,
            index.clone(),
            metrics.clone(),
            status.clone(),
            &shutdown,
        )?;
        let snapshot_task = config.snapshot.clone().map(|snapshot| {
            tokio::spawn(warmstart::run_writer(
                snapshot,
                coverage,
                index.clone(),
                status.clone(),
                metrics.snapshot.clone(),
                shutdown.clone(),
            ))
        });
        // Listening now (unless deferring), so that whoever learns the
        // address from [`Agent::http_addr`] can connect at once.
        let http = if defer {
            HttpPort::Bound(http_socket)
        } else {
            match listen(http_socket, http_addr) {
                Ok(listener) => HttpPort::Listening(listener),
                Err(error) => {
                    shutdown.cancel();
                    return Err(error);
                }
            }
        };
        Ok(Bound {
            config,
            index,
            metrics,
            status,
            shutdown,
            http,
            http_addr,
            dns,
            dns_addr,
            xds,
            defer,
            source_task,
            snapshot_task,
        })
    }

    /// Joins the ports (after the predecessor, when deferring), serves until
    /// shutdown is requested, then goes lame duck, hands over and drains.
    async fn serve(
        mut self,
        mut requested: watch::Receiver<Option<&'static str>>,
    ) -> Result<(), AgentError> {
        let lifecycle = Arc::new(Lifecycle::default());
        if self.defer {
            info!(
                dns = %self.dns_addr,
                http = %self.http_addr,
                "another process serves these ports (the agent this one replaces?): joining them once synced"
            );
            tokio::select! {
                why = wait_to_join(&self.index, self.dns_addr, self.http_addr) => info!("{why}: joining the ports"),
                why = shutdown_requested(&mut requested) => {
                    info!("{why} before joining the ports: stopping");
                    self.shutdown.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.source_task).await;
                    return Ok(());
                }
            }
            take_over_cache(&self.dns, self.http_addr).await;
            join_dns(&mut self.dns)
                .await
                .map_err(|source| AgentError::Bind {
                    addr: self.dns_addr,
                    what: "DNS",
                    source,
                })?;
        }
        let listener = match self.http {
            HttpPort::Listening(listener) => listener,
            HttpPort::Bound(socket) => listen(socket, self.http_addr)?,
        };
        let dns_cache = Some(self.dns.cache_view());
        let mut dns_task = tokio::spawn(self.dns.run(self.shutdown.clone()));

        let state = AppState::new(HttpContext {
            index: self.index.clone(),
            metrics: self.metrics.http.clone(),
            registry: self.metrics.registry.clone(),
            status: self.status,
            pickers: Arc::new(Pickers::default()),
            config: Arc::new(HttpConfig::default()),
            shutdown: self.shutdown.clone(),
            lifecycle: lifecycle.clone(),
            watch_slots: Arc::new(Semaphore::new(self.config.max_watch_streams)),
            dns_cache,
        });
        let serve_config = ServeConfig {
            max_connections: self.config.http_max_connections,
            idle_timeout: self.config.http_idle_timeout,
            header_timeout: self.config.http_header_timeout,
            max_header_bytes: self.config.http_max_header_bytes,
        };
        let mut http_task = tokio::spawn(crate::http::serve(listener, state, serve_config));
        let xds_task = self.xds.take().map(|(listener, addr)| {
            info!(xds = %addr, "xDS server started");
            tokio::spawn(crate::xds::serve(
                listener,
                self.index.clone(),
                self.metrics.xds.clone(),
                self.config.cluster_domain.clone(),
                self.shutdown.clone(),
            ))
        });
        info!(http = %self.http_addr, dns = %self.dns_addr, version = crate::VERSION, "kubedisco agent started");

        {
            let index = self.index.clone();
            tokio::spawn(async move {
                index.wait_synced().await;
                let snapshot = index.load();
                info!(
                    services = snapshot.services.len(),
                    endpoints = snapshot.endpoint_count,
                    "synced: ready"
                );
            });
        }

        tokio::select! {
            why = shutdown_requested(&mut requested) => info!("{why}: shutting down"),
            result = &mut http_task => {
                self.shutdown.cancel();
                self.source_task.abort();
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(AgentError::Serve(e)),
                    Err(e) => Err(AgentError::Serve(std::io::Error::other(e))),
                };
            }
        }

        // Lame duck: unready first, so probes and load balancers move away;
        // then, if the next agent has started but not joined the ports yet, a
        // bounded wait for it; then no new work, while what is in flight
        // finishes.
        lifecycle.start_draining();
        if !self.config.handover_wait.is_zero() {
            wait_for_successor(self.dns_addr, self.http_addr, self.config.handover_wait).await;
        }
        self.shutdown.cancel();
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            let http = (&mut http_task).await;
            let _ = (&mut dns_task).await;
            http
        })
        .await;
        match drained {
            Ok(Ok(Err(e))) => return Err(AgentError::Serve(e)),
            Ok(_) => {}
            Err(_) => {
                warn!(
                    "in-flight requests did not finish within {:?}; exiting anyway",
                    self.config.shutdown_grace
                );
                http_task.abort();
                dns_task.abort();
            }
        }
        if let Some(task) = xds_task {
            match tokio::time::timeout(Duration::from_secs(1), task).await {
                Ok(Ok(Err(error))) => warn!("{error}"),
                Ok(_) => {}
                Err(_) => warn!("the xDS server did not stop within 1s"),
            }
        }
        if let Some(task) = self.snapshot_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.source_task).await;
        info!("stopped");
        Ok(())
    }
}

/// Binds and listens on the xDS address, with SO_REUSEPORT as the HTTP
/// port has, so the next agent of a rolling update can bind it too.
fn bind_xds(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AgentError> {
    let bind_error = |source| AgentError::Bind {
        addr,
        what: "xDS",
        source,
    };
    let socket = http_socket(addr).map_err(bind_error)?;
    let bound = socket.local_addr().unwrap_or(addr);
    let listener = socket.listen(1024).map_err(bind_error)?;
    Ok((listener, bound))
}

/// Raises the soft open-files limit to the hard one: the connection caps,
/// not the common 1024-descriptor default, should bound the agent.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => debug!(from = soft, to = hard, "raised the open-files limit"),
            Err(error) => warn!("cannot raise the open-files limit from {soft}: {error}"),
        },
        Ok(_) => {}
        Err(error) => debug!("cannot read the open-files limit: {error}"),
    }
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::source::manifest::ManifestOrigin;

    /// Started in-process, an agent serves on ports the kernel picked, and
    /// once stopped it has closed them.
    #[tokio::test]
    async fn an_agent_started_in_process_serves_until_stopped() {
        // An address of its own, so nothing else takes the port it closes.
        let ip = IpAddr::V4(Ipv4Addr::new(127, 80, 0, 1));
        let agent = Agent::start(Config {
            source: Source::Manifests {
                origin: ManifestOrigin::Demo,
                poll_interval: Duration::from_secs(1),
            },
            http_addr: SocketAddr::new(ip, 0),
            dns_addr: SocketAddr::new(ip, 0),
            // The discard port: nothing forwarded leaves loopback.
            upstream: vec![SocketAddr::new(ip, 9)],
            ..Config::default()
        })
        .await
        .unwrap();
        let http = agent.http_addr();
        assert_eq!(http.ip(), ip);
        assert_ne!(http.port(), 0);
        assert_ne!(agent.dns_addr().port(), 0);
        let health = reqwest::get(format!("http://{http}/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);

        agent.shutdown_handle().shutdown("the test is done");
        agent.stop().await.unwrap();
        assert!(tokio::net::TcpStream::connect(http).await.is_err());
    }
}
