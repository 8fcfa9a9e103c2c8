//! `kubedisco agent`: wires a source, the index and the front ends together,
//! and shuts them down in order on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::balance::Pickers;
use crate::balance::topology::Locality;
use crate::cli::AgentArgs;
use crate::cli::args::SourceArg;
use crate::dns::answer::Zone;
use crate::dns::forward::{Forwarder, upstreams_from_resolv_conf};
use crate::dns::{DnsConfig, DnsServer};
use crate::handover::{Lifecycle, others_serving, others_waiting};
use crate::http::server::ServeConfig;
use crate::http::{AppState, HttpConfig, HttpContext};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::netif::{LinkLocal, NetifError};
use crate::sockets::Transport;
use crate::sockets::listen::reuseport_socket;
use crate::source::SourceError;
use crate::source::kubernetes::{KubernetesSource, zone_of_node};
use crate::source::manifest::ManifestSource;
use crate::source::status::SourceStatus;
use crate::warmstart::{self, WarmStartConfig};

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
    #[error(
        "--http-addr {http} and --dns-addr {dns} overlap: DNS also serves TCP, and both \
         sockets share ports by design (SO_REUSEPORT), so they would split each other's \
         connections; give them different ports"
    )]
    SamePort { http: SocketAddr, dns: SocketAddr },
}

/// True when TCP sockets bound to `a` and `b` could take the same
/// connections: same port, and one address is the other or a wildcard
/// (`[::]` counts as covering IPv4 too). That is stricter than the sockets
/// need since they are IPv6-only ([`reuseport_socket`]); accepting the
/// pairs it refuses would be a change of its own, not part of binding.
fn tcp_addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wide: SocketAddr, other: SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// The HTTP socket, bound like the DNS ones ([`reuseport_socket`]), not yet
/// listening.
fn http_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::from_std_stream(reuseport_socket(addr, Transport::Tcp)?.into());
    socket.set_nodelay(true)?;
    Ok(socket)
}

pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    raise_open_files_limit();
    // The node-local address must exist before any socket binds to it, and
    // goes away after every socket is closed, however the agent ends.
    let link_local = match args.link_local_ip {
        Some(ip) => Some(LinkLocal::setup(ip, &args.link_local_interface).await?),
        None => None,
    };
    let result = run_agent(args).await;
    if let Some(link_local) = link_local {
        link_local.teardown().await;
    }
    result
}

async fn run_agent(args: AgentArgs) -> Result<(), AgentError> {
    if tcp_addresses_overlap(args.http_addr, args.dns_addr) {
        return Err(AgentError::SamePort {
            http: args.http_addr,
            dns: args.dns_addr,
        });
    }
    let metrics = Arc::new(Metrics::new());
    let index = Arc::new(Index::new(metrics.index.clone()));
    let status = Arc::new(SourceStatus::default());
    let lifecycle = Arc::new(Lifecycle::default());
    let shutdown = CancellationToken::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);

    // Warm start, before any socket serves: a valid snapshot makes the
    // agent answer (stale) from its first instant.
    index.set_locality(locality(&args, args.zone.clone()));
    let snapshot = args.snapshot_path.clone().map(|path| WarmStartConfig {
        path,
        interval: args.snapshot_interval,
        max_age: args.snapshot_max_age,
    });
    let coverage = warmstart::Coverage {
        source: match args.source {
            SourceArg::Kubernetes => "kubernetes",
            SourceArg::Manifests(_) => "manifests",
        }
        .to_string(),
        namespaces: args.namespaces.clone(),
        pod_weights: args.pod_weights,
    };
    let warm = snapshot
        .as_ref()
        .is_some_and(|config| warmstart::warm_start(config, &coverage, &index, &status));

    // Rolling update: another agent may serve our ports already. Unless we
    // can answer at once (warm), it keeps them alone until we have synced.
    let predecessor = others_serving(args.dns_addr, Transport::Udp) > 0
        || others_serving(args.http_addr, Transport::Tcp) > 0;
    let defer = predecessor && !warm;

    // Fail fast on a taken port, before anything is watched: both ports
    // are bound now (joining the port group comes with listen()).
    let http_socket = http_socket(args.http_addr).map_err(|source| AgentError::Bind {
        addr: args.http_addr,
        what: "HTTP",
        source,
    })?;
    let mut dns = bind_dns(&args, index.clone(), metrics.clone(), !defer)?;
    let dns_addr = dns.local_addr().unwrap_or(args.dns_addr);
    let http_addr = http_socket.local_addr().unwrap_or(args.http_addr);

    let source_task = match args.source.clone() {
        SourceArg::Kubernetes => {
            let args = args.clone();
            let index = index.clone();
            let metrics = metrics.clone();
            let status = status.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let Some(client) = kubernetes_client(&status, &metrics, &shutdown).await else {
                    return;
                };
                if args.zone.is_none()
                    && let Some(node) = &args.node_name
                    && args.zone_from_node
                {
                    let zone = zone_of_node(&client, node).await;
                    if zone.is_some() {
                        index.set_locality(locality(&args, zone));
                    }
                }
                let source = KubernetesSource {
                    client,
                    namespaces: args.namespaces.clone(),
                    list_strategy: args.list_strategy.into(),
                    api_encoding: args.api_encoding.into(),
                    pod_weights: args.pod_weights,
                    index,
                    metrics,
                    status,
                };
                source.run(shutdown).await;
            })
        }
        SourceArg::Manifests(origin) => {
            ManifestSource::check(&origin)?;
            let source = ManifestSource {
                origin,
                poll_interval: args.manifest_poll_interval,
                index: index.clone(),
                metrics: metrics.clone(),
                status: status.clone(),
            };
            tokio::spawn(source.run(shutdown.clone()))
        }
    };
    let snapshot_task = snapshot.map(|config| {
        tokio::spawn(warmstart::run_writer(
            config,
            coverage,
            index.clone(),
            status.clone(),
            metrics.clone(),
            shutdown.clone(),
        ))
    });

    if defer {
        info!(
            dns = %dns_addr,
            http = %http_addr,
            "another process serves these ports (the agent this one replaces?): joining them once synced"
        );
        tokio::select! {
            why = wait_to_join(&index, dns_addr, http_addr) => info!("{why}: joining the ports"),
            signal = &mut signal => {
                info!("{signal} before joining the ports: stopping");
                shutdown.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(1), source_task).await;
                return Ok(());
            }
        }
        join_dns(&mut dns)
            .await
            .map_err(|source| AgentError::Bind {
                addr: dns_addr,
                what: "DNS",
                source,
            })?;
    }
    let listener = http_socket
        .listen(1024)
        .map_err(|source| AgentError::Bind {
            addr: http_addr,
            what: "HTTP",
            source,
        })?;
    let mut dns_task = tokio::spawn(dns.run(shutdown.clone()));

    let state = AppState::new(HttpContext {
        index: index.clone(),
        metrics: metrics.clone(),
        status,
        pickers: Arc::new(Pickers::default()),
        config: Arc::new(HttpConfig::default()),
        shutdown: shutdown.clone(),
        lifecycle: lifecycle.clone(),
        watch_slots: Arc::new(Semaphore::new(args.max_watch_streams)),
    });
    let serve_config = ServeConfig {
        max_connections: args.http_max_connections,
        idle_timeout: args.http_idle_timeout,
        header_timeout: args.http_header_timeout,
        max_header_bytes: args.http_max_header_bytes,
    };
    let mut http_task = tokio::spawn(crate::http::serve(listener, state, serve_config));
    info!(http = %http_addr, dns = %dns_addr, version = crate::VERSION, "kubedisco agent started");

    {
        let index = index.clone();
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
        signal = &mut signal => info!("{signal}: shutting down"),
        result = &mut http_task => {
            shutdown.cancel();
            source_task.abort();
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
    if !args.handover_wait.is_zero() {
        wait_for_successor(dns_addr, http_addr, args.handover_wait).await;
    }
    shutdown.cancel();
    let drained = tokio::time::timeout(args.shutdown_grace, async {
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
                args.shutdown_grace
            );
            http_task.abort();
            dns_task.abort();
        }
    }
    if let Some(task) = snapshot_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), source_task).await;
    info!("stopped");
    Ok(())
}

/// Resolves when a deferred agent should join its ports: once it can
/// answer (synced, or seeded), or when nobody else serves them any more.
async fn wait_to_join(index: &Index, dns: SocketAddr, http: SocketAddr) -> &'static str {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = index.wait_synced() => return "synced",
            _ = tick.tick() => {
                if others_serving(dns, Transport::Udp) == 0 && others_serving(http, Transport::Tcp) == 0 {
                    return "the other process left the ports";
                }
            }
        }
    }
}

/// Joins the DNS port group; retries for a while, because the agent that
/// left may have removed the node-local address (which the address monitor
/// of `--link-local-ip` puts back).
async fn join_dns(dns: &mut DnsServer) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match dns.join() {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                debug!("joining the DNS port: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// When the next agent of a rolling update has started on our ports but
/// not joined them yet (its marker is there), waits (bounded) until it
/// serves both; returns at once when no successor is in sight.
async fn wait_for_successor(dns: SocketAddr, http: SocketAddr, wait: Duration) {
    let started = tokio::time::Instant::now();
    let mut announced = false;
    loop {
        if others_serving(dns, Transport::Udp) > 0 && others_serving(http, Transport::Tcp) > 0 {
            if announced {
                info!(waited = ?started.elapsed(), "the next agent serves the ports: handing over");
            } else {
                info!("another agent serves the ports: handing over");
            }
            return;
        }
        if others_waiting(dns) == 0 {
            debug!("no other agent on the ports: stopping");
            return;
        }
        if !announced {
            info!(
                "the next agent has not joined the ports yet: answering until it does (at most {wait:?})"
            );
            announced = true;
        }
        if started.elapsed() >= wait {
            warn!(
                "the next agent did not join the ports within {wait:?} (--handover-wait): stopping anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Kubernetes client, retried with backoff while the configuration
/// cannot be loaded (a broken kubeconfig, a missing service-account token):
/// the agent stays up and says why (log once per cause, `/readyz`), serving
/// its snapshot if it loaded one, and goes on when the file is fixed.
/// None when shutdown comes first.
async fn kubernetes_client(
    status: &SourceStatus,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Option<kube::Client> {
    const PART: &str = "kubeconfig";
    let mut delay = Duration::from_millis(500);
    let mut last: Option<String> = None;
    loop {
        match KubernetesSource::client().await {
            Ok(client) => {
                if last.is_some() {
                    status.succeeded(PART);
                    info!("Kubernetes client configuration loaded: going on");
                }
                return Some(client);
            }
            Err(error) => {
                let message = error.to_string();
                metrics.record_api_error(PART, "config");
                if last.as_deref() != Some(message.as_str()) {
                    error!(
                        "{message}; retrying with backoff (fix the kubeconfig, $KUBECONFIG, or the in-cluster service account)"
                    );
                }
                status.failed(PART, &message);
                last = Some(message);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
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

fn locality(args: &AgentArgs, zone: Option<String>) -> Locality {
    let locality = Locality {
        node: args.node_name.as_deref().map(Into::into),
        zone: zone.as_deref().map(Into::into),
        default_topology: args.default_topology.into(),
        panic_threshold: args.panic_threshold,
    };
    info!(
        node = ?locality.node,
        zone = ?locality.zone,
        default_topology = ?locality.default_topology,
        panic_threshold = locality.panic_threshold,
        "topology"
    );
    locality
}

fn bind_dns(
    args: &AgentArgs,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
    join: bool,
) -> Result<DnsServer, AgentError> {
    let upstreams = if args.upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        upstreams_from_resolv_conf(&text, args.dns_addr)
    } else {
        args.upstream.clone()
    };
    if upstreams.is_empty() {
        warn!(
            "no upstream DNS server (none given, none usable in /etc/resolv.conf): names the agent does not serve get SERVFAIL"
        );
    } else {
        info!(?upstreams, "forwarding other names upstream");
    }
    let ttl = u32::try_from(args.ttl.as_secs()).unwrap_or(u32::MAX);
    let config = DnsConfig {
        zone: Zone::new(&args.cluster_domain, ttl),
        forwarder: Forwarder {
            upstreams,
            timeout: args.upstream_timeout,
        },
        max_tcp_connections: args.dns_max_tcp_connections,
        tcp_idle_timeout: args.dns_tcp_idle_timeout,
        tcp_read_timeout: args.dns_tcp_query_timeout,
        udp_sockets: 0,
        drain_timeout: args.shutdown_grace,
    };
    DnsServer::bind(args.dns_addr, config, index, metrics.dns.clone(), join).map_err(|source| {
        AgentError::Bind {
            addr: args.dns_addr,
            what: "DNS",
            source,
        }
    })
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
    use super::*;

    #[test]
    fn http_and_dns_must_not_share_a_tcp_port() {
        let overlap =
            |a: &str, b: &str| tcp_addresses_overlap(a.parse().unwrap(), b.parse().unwrap());
        assert!(overlap("127.0.0.1:53", "127.0.0.1:53"));
        assert!(overlap("0.0.0.0:53", "127.0.0.1:53"));
        assert!(overlap("127.0.0.1:53", "[::]:53"));
        assert!(overlap("[::]:53", "[::1]:53"));
        assert!(!overlap("127.0.0.1:53", "127.0.0.1:8053"));
        assert!(!overlap("127.0.0.1:53", "127.0.0.2:53"));
        assert!(!overlap("0.0.0.0:53", "[::1]:53"));
        // Port 0: each socket gets its own port.
        assert!(!overlap("127.0.0.1:0", "127.0.0.1:0"));
    }
}
