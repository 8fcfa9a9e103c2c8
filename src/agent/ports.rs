//! The agent's two ports: binding them (refusing an HTTP and a DNS address
//! that would share connections) and, in a rolling update, sharing them
//! with the agent before and the agent after this one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpSocket;
use tracing::{debug, info, warn};

use super::{AgentError, Config};
use crate::dns::answer::Zone;
use crate::dns::forward::{Forwarder, upstreams_from_resolv_conf};
use crate::dns::{DnsConfig, DnsServer};
use crate::handover::{others_serving, others_waiting};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::sockets::Transport;
use crate::sockets::listen::reuseport_socket;

/// True when TCP sockets bound to `a` and `b` could take the same
/// connections: same port, and one address is the other or a wildcard
/// (`[::]` counts as covering IPv4 too). That is stricter than the sockets
/// need since they are IPv6-only ([`reuseport_socket`]); accepting the
/// pairs it refuses would be a change of its own, not part of binding.
pub(super) fn tcp_addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wide: SocketAddr, other: SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// The HTTP socket, bound like the DNS ones ([`reuseport_socket`]), not yet
/// listening.
pub(super) fn http_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::from_std_stream(reuseport_socket(addr, Transport::Tcp)?.into());
    socket.set_nodelay(true)?;
    Ok(socket)
}

pub(super) fn bind_dns(
    config: &Config,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
    join: bool,
) -> Result<DnsServer, AgentError> {
    let upstreams = if config.upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        upstreams_from_resolv_conf(&text, config.dns_addr)
    } else {
        config.upstream.clone()
    };
    if upstreams.is_empty() {
        warn!(
            "no upstream DNS server (none given, none usable in /etc/resolv.conf): names the agent does not serve get SERVFAIL"
        );
    } else {
        info!(?upstreams, "forwarding other names upstream");
    }
    for (domain, upstream) in &config.forward {
        info!(%domain, %upstream, "forwarding a domain to its own upstream");
    }
    let ttl = u32::try_from(config.ttl.as_secs()).unwrap_or(u32::MAX);
    let dns_config = DnsConfig {
        zone: Zone::new(&config.cluster_domain, ttl)
            .watching(&config.namespaces)
            .with_pod_records(config.pod_records),
        forwarder: Forwarder::new(upstreams, &config.forward, config.upstream_timeout),
        cache: config.cache.clone(),
        max_tcp_connections: config.dns_max_tcp_connections,
        tcp_idle_timeout: config.dns_tcp_idle_timeout,
        tcp_read_timeout: config.dns_tcp_query_timeout,
        udp_sockets: 0,
        drain_timeout: config.shutdown_grace,
    };
    let addr = config.dns_addr;
    DnsServer::bind(addr, dns_config, index, metrics.dns.clone(), join).map_err(|source| {
        AgentError::Bind {
            addr,
            what: "DNS",
            source,
        }
    })
}

/// Before a deferred agent joins the ports, takes over the DNS cache of the
/// agent serving them now (its HTTP port is ours too, but only it listens
/// yet), so the handover starts warm. Best effort: on any failure the cache
/// starts cold, which costs upstream queries, not answers.
pub(super) async fn take_over_cache(dns: &DnsServer, http: SocketAddr) {
    let ip = match http.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let url = format!(
        "http://{}/debug/cache/export",
        SocketAddr::new(ip, http.port())
    );
    #[derive(serde::Deserialize)]
    struct Export {
        entries: Vec<crate::dns::cache::export::ExportedEntry>,
    }
    let started = tokio::time::Instant::now();
    let fetched = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?;
        let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice::<Export>(&body).map_err(|e| e.to_string())
    };
    match fetched.await {
        Ok(export) => {
            let offered = export.entries.len();
            let taken = dns.cache_view().import(export.entries);
            info!(taken, offered, took = ?started.elapsed(), "DNS cache taken over from the agent before: starting warm");
        }
        Err(error) => info!("DNS cache not taken over ({url}: {error}): starting cold"),
    }
}

/// Resolves when a deferred agent should join its ports: once it can
/// answer (synced, or seeded), or when nobody else serves them any more.
pub(super) async fn wait_to_join(index: &Index, dns: SocketAddr, http: SocketAddr) -> &'static str {
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
pub(super) async fn join_dns(dns: &mut DnsServer) -> std::io::Result<()> {
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
pub(super) async fn wait_for_successor(dns: SocketAddr, http: SocketAddr, wait: Duration) {
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
