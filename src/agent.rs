//! `kubedisco agent`: wires a source, the index and the front ends together,
//! and shuts them down in order on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::balance::Pickers;
use crate::balance::topology::Locality;
use crate::cli::AgentArgs;
use crate::cli::args::SourceArg;
use crate::dns::answer::Zone;
use crate::dns::forward::{Forwarder, upstreams_from_resolv_conf};
use crate::dns::{DnsConfig, DnsServer};
use crate::http::{AppState, HttpConfig};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::netif::{LinkLocal, NetifError};
use crate::source::SourceError;
use crate::source::kubernetes::{KubernetesSource, zone_of_node};
use crate::source::manifest::ManifestSource;
use crate::source::status::SourceStatus;

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
}

/// A listener with SO_REUSEPORT, so that during a rolling update the new
/// agent can bind while the old one still drains.
pub fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
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
    let metrics = Arc::new(Metrics::new());
    let index = Arc::new(Index::new(metrics.index.clone()));
    let status = Arc::new(SourceStatus::default());
    let shutdown = CancellationToken::new();

    // Fail fast on a taken port, before anything is watched.
    let listener = reuseport_listener(args.http_addr).map_err(|source| AgentError::Bind {
        addr: args.http_addr,
        what: "HTTP",
        source,
    })?;

    let dns = bind_dns(&args, index.clone(), metrics.clone())?;
    let dns_addr = dns.local_addr().unwrap_or(args.dns_addr);
    let dns_task = tokio::spawn(dns.run(shutdown.clone()));

    let source_task = match args.source.clone() {
        SourceArg::Kubernetes => {
            let client = KubernetesSource::client().await?;
            let zone = match (&args.zone, &args.node_name) {
                (Some(zone), _) => Some(zone.clone()),
                (None, Some(node)) if args.zone_from_node => zone_of_node(&client, node).await,
                _ => None,
            };
            index.set_locality(locality(&args, zone));
            let source = KubernetesSource {
                client,
                namespaces: args.namespaces.clone(),
                list_strategy: args.list_strategy,
                pod_weights: args.pod_weights,
                index: index.clone(),
                metrics: metrics.clone(),
                status: status.clone(),
            };
            tokio::spawn(source.run(shutdown.clone()))
        }
        SourceArg::Manifests(origin) => {
            ManifestSource::check(&origin)?;
            index.set_locality(locality(&args, args.zone.clone()));
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

    let state = AppState {
        index: index.clone(),
        metrics,
        status,
        pickers: Arc::new(Pickers::default()),
        config: Arc::new(HttpConfig::default()),
        shutdown: shutdown.clone(),
    };
    let http_addr = listener.local_addr().unwrap_or(args.http_addr);
    let mut http_task = tokio::spawn(crate::http::serve(listener, state));
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
        signal = shutdown_signal() => info!("{signal}: shutting down"),
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
    shutdown.cancel();
    match tokio::time::timeout(args.shutdown_grace, &mut http_task).await {
        Ok(Ok(Err(e))) => return Err(AgentError::Serve(e)),
        Ok(_) => {}
        Err(_) => {
            warn!(
                "in-flight requests did not finish within {:?}; exiting anyway",
                args.shutdown_grace
            );
            http_task.abort();
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), dns_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), source_task).await;
    info!("stopped");
    Ok(())
}

fn locality(args: &AgentArgs, zone: Option<String>) -> Locality {
    let locality = Locality {
        node: args.node_name.as_deref().map(Into::into),
        zone: zone.as_deref().map(Into::into),
        default_topology: args.default_topology,
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
        tcp_idle_timeout: Duration::from_secs(10),
        tcp_read_timeout: Duration::from_secs(5),
        udp_sockets: 0,
    };
    DnsServer::bind(args.dns_addr, config, index, metrics.dns.clone()).map_err(|source| {
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
