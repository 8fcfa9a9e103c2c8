//! `kubedisco agent` flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use std::str::FromStr;

use clap::Args;
use clap::builder::{BoolValueParser, EnumValueParser, PathBufValueParser};

use super::checked::{Checked, checked, refused};
use super::choices::{
    ApiEncodingArg, DefaultTopologyArg, ListStrategyArg, LogFormatArg, PodRecordsArg,
    WatchSlicesArg,
};
use crate::agent::{Config, LinkLocalConfig, Source};
use crate::dns::CacheConfig;
use crate::duration::parse_duration;
use crate::logging::LogFormat;
use crate::source::manifest::ManifestOrigin;
use crate::warmstart::WarmStartConfig;

/// Where the agent's Services and EndpointSlices come from.
#[derive(Clone, Debug)]
pub(crate) enum SourceArg {
    /// The API server (in-cluster config, else the kubeconfig).
    Kubernetes,
    Manifests(ManifestOrigin),
}

fn parse_source(text: &str) -> Result<SourceArg, String> {
    match text {
        "" => Err("empty source: use kubernetes, demo, or a path".into()),
        "kubernetes" => Ok(SourceArg::Kubernetes),
        "demo" => Ok(SourceArg::Manifests(ManifestOrigin::Demo)),
        path => Ok(SourceArg::Manifests(ManifestOrigin::Path(PathBuf::from(
            path,
        )))),
    }
}

fn parse_domain(text: &str) -> Result<String, String> {
    let domain = text.trim_end_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(domain)
    } else {
        Err(format!("{text:?} is not a DNS domain (e.g. cluster.local)"))
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a fraction from 0 to 1 (e.g. 0.5)")),
    }
}

fn parse_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a positive whole number")),
    }
}

fn parse_cache_size(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n <= 10_000_000 => Ok(n),
        _ => Err(format!("{text:?} is not an entry count from 0 to 10000000")),
    }
}

/// A byte count, with an optional binary suffix (Ki, Mi, Gi); at least 64 KiB.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => trimmed.split_at(at),
        None => (trimmed, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => {
            return Err(format!(
                "{text:?} is not a byte count (e.g. 33554432 or 32Mi)"
            ));
        }
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
    {
        Some(n) if n >= 64 << 10 => Ok(n),
        _ => Err(format!("{text:?} is not a byte count of at least 64Ki")),
    }
}

fn parse_header_bytes(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1024..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a byte count from 1024 to 1048576")),
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?}: must be more than 0")),
        d => Ok(d),
    }
}

fn parse_namespace(text: &str) -> Result<String, String> {
    crate::names::check_dns_label("namespace", text).map(|()| text.to_string())
}

#[derive(Clone, Debug, Args)]
pub struct AgentArgs {
    /// `kubernetes` (in-cluster config or kubeconfig), `demo` (the built-in
    /// demo manifests), or a file/directory of Service and EndpointSlice YAML
    /// (re-read when it changes).
    #[arg(long, env = "KUBEDISCO_SOURCE", default_value = "kubernetes", value_parser = checked(parse_source))]
    pub(crate) source: Checked<SourceArg>,

    /// DNS listen address (UDP and TCP).
    #[arg(long, env = "KUBEDISCO_DNS_ADDR", default_value = "127.0.0.1:1053", value_parser = checked(SocketAddr::from_str))]
    pub(crate) dns_addr: Checked<SocketAddr>,

    /// HTTP API listen address.
    #[arg(long, env = "KUBEDISCO_HTTP_ADDR", default_value = "127.0.0.1:8053", value_parser = checked(SocketAddr::from_str))]
    pub(crate) http_addr: Checked<SocketAddr>,

    /// The xDS (ADS) server for proxyless gRPC clients (`xds:///` targets);
    /// off when empty.
    #[arg(long, env = "KUBEDISCO_XDS_ADDR", value_parser = checked(SocketAddr::from_str))]
    pub(crate) xds_addr: Option<Checked<SocketAddr>>,

    /// The cluster's DNS domain.
    #[arg(long, env = "KUBEDISCO_CLUSTER_DOMAIN", default_value = "cluster.local", value_parser = checked(parse_domain))]
    pub(crate) cluster_domain: Checked<String>,

    /// TTL of DNS answers (e.g. 5s; 0 allowed).
    #[arg(long, env = "KUBEDISCO_TTL", default_value = "5s", value_parser = checked(parse_duration))]
    pub(crate) ttl: Checked<Duration>,

    /// Watch only these namespaces (comma-separated); all when empty.
    #[arg(long, env = "KUBEDISCO_NAMESPACES", value_delimiter = ',', value_parser = checked(parse_namespace))]
    pub(crate) namespaces: Vec<Checked<String>>,

    /// This node's name (from the downward API), for topology-aware balancing.
    #[arg(long, env = "KUBEDISCO_NODE_NAME")]
    pub(crate) node_name: Option<String>,

    /// This node's zone, for topology-aware balancing. When empty and
    /// --node-name is set, read from the Node's topology.kubernetes.io/zone
    /// label (needs get on nodes) unless --zone-from-node=false.
    #[arg(long, env = "KUBEDISCO_ZONE")]
    pub(crate) zone: Option<String>,

    /// Read the zone from this node's Node object when --zone is not given.
    #[arg(long, env = "KUBEDISCO_ZONE_FROM_NODE", default_value = "true", action = clap::ArgAction::Set, value_parser = checked(BoolValueParser::new()))]
    pub(crate) zone_from_node: Checked<bool>,

    /// Tiering for Services that set no spec.trafficDistribution (and have
    /// no topology hints): none (all endpoints equal) or zone (same zone first).
    #[arg(
        long,
        env = "KUBEDISCO_DEFAULT_TOPOLOGY",
        default_value = "none",
        value_parser = checked(EnumValueParser::<DefaultTopologyArg>::new())
    )]
    pub(crate) default_topology: Checked<DefaultTopologyArg>,

    /// Pod names `<a-b-c-d>.<ns>.pod.<cluster-domain>`: insecure (answer
    /// the address the name spells, as kubeadm's CoreDNS) or disabled
    /// (NXDOMAIN).
    #[arg(
        long,
        env = "KUBEDISCO_POD_RECORDS",
        default_value = "insecure",
        value_parser = checked(EnumValueParser::<PodRecordsArg>::new())
    )]
    pub(crate) pod_records: Checked<PodRecordsArg>,

    /// Share of a tier's weight that must be ready for it to be used alone;
    /// below it, the next tier joins (Envoy's panic threshold). 0 to 1.
    #[arg(long, env = "KUBEDISCO_PANIC_THRESHOLD", default_value = "0.5", value_parser = checked(parse_fraction))]
    pub(crate) panic_threshold: Checked<f64>,

    /// Take weights from Pod labels kubedisco.io/weight (watches labelled
    /// Pods' metadata; needs list/watch on pods).
    #[arg(long, env = "KUBEDISCO_POD_WEIGHTS")]
    pub(crate) pod_weights: bool,

    /// Upstream DNS servers for names the agent does not serve
    /// (comma-separated ip[:port]); default: the nameservers of /etc/resolv.conf.
    #[arg(long, env = "KUBEDISCO_UPSTREAM", value_delimiter = ',', value_parser = checked(crate::dns::forward::parse_upstream))]
    pub(crate) upstream: Vec<Checked<SocketAddr>>,

    /// How long one upstream may take to answer a forwarded query.
    #[arg(long, env = "KUBEDISCO_UPSTREAM_TIMEOUT", default_value = "2s", value_parser = checked(parse_duration))]
    pub(crate) upstream_timeout: Checked<Duration>,

    /// Per-domain upstreams, as stubDomains: `domain=ip[:port]`,
    /// comma-separated (repeat a domain for several); a name in the
    /// longest matching domain goes there instead of --upstream.
    #[arg(long, env = "KUBEDISCO_FORWARD", value_delimiter = ',', value_parser = checked(crate::dns::forward::parse_route))]
    pub(crate) forward: Vec<Checked<(String, SocketAddr)>>,

    /// Most answers of forwarded names cached (0: no cache). NodeLocal
    /// DNSCache keeps 9984 positive and 9984 negative; this is both.
    #[arg(long, env = "KUBEDISCO_CACHE_SIZE", default_value = "20000", value_parser = checked(parse_cache_size))]
    pub(crate) cache_size: Checked<usize>,

    /// Most bytes the cached answers hold (suffix Ki, Mi or Gi); the cache
    /// stops at this or --cache-size, whichever comes first.
    #[arg(long, env = "KUBEDISCO_CACHE_MAX_BYTES", default_value = "32Mi", value_parser = checked(parse_bytes))]
    pub(crate) cache_max_bytes: Checked<u64>,

    /// Longest a positive answer is cached, whatever its TTL says.
    #[arg(long, env = "KUBEDISCO_CACHE_MAX_TTL", default_value = "1h", value_parser = checked(parse_positive_duration))]
    pub(crate) cache_max_ttl: Checked<Duration>,

    /// Longest an NXDOMAIN or NODATA answer is cached (RFC 2308: the SOA's
    /// minimum, capped by this).
    #[arg(long, env = "KUBEDISCO_CACHE_MAX_NEGATIVE_TTL", default_value = "5m", value_parser = checked(parse_duration))]
    pub(crate) cache_max_negative_ttl: Checked<Duration>,

    /// How long past its expiry a cached answer may still be served (TTL
    /// 30 s) when the upstreams fail or are slow (RFC 8767); 0 turns it off.
    #[arg(long, env = "KUBEDISCO_SERVE_STALE", default_value = "1h", value_parser = checked(parse_duration))]
    pub(crate) serve_stale: Checked<Duration>,

    /// How long a client asking for an expired name waits for its refresh
    /// before it gets the stale answer (RFC 8767's client response timer;
    /// 1.8 s is below the stub resolvers' first retry). 0 answers stale at
    /// once and refreshes in the background (optimistic caching): no client
    /// waits for a name it asked before, but one may get an answer up to
    /// --serve-stale old once.
    #[arg(long, env = "KUBEDISCO_STALE_CLIENT_TIMEOUT", default_value = "1800ms", value_parser = checked(parse_duration))]
    pub(crate) stale_client_timeout: Checked<Duration>,

    /// Most concurrent TCP connections to the DNS port. At the cap a new
    /// connection waits (up to 2 s) while the longest-idle one is closed to
    /// make room; one that gets no slot has its queries answered REFUSED.
    #[arg(
        long,
        env = "KUBEDISCO_DNS_MAX_TCP_CONNECTIONS",
        default_value = "1024",
        value_parser = checked(parse_count)
    )]
    pub(crate) dns_max_tcp_connections: Checked<usize>,

    /// A DNS TCP connection with no query for this long is closed.
    #[arg(long, env = "KUBEDISCO_DNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = checked(parse_positive_duration))]
    pub(crate) dns_tcp_idle_timeout: Checked<Duration>,

    /// A DNS query over TCP must arrive whole within this of its length
    /// prefix (slow-client guard).
    #[arg(long, env = "KUBEDISCO_DNS_TCP_QUERY_TIMEOUT", default_value = "5s", value_parser = checked(parse_positive_duration))]
    pub(crate) dns_tcp_query_timeout: Checked<Duration>,

    /// Most concurrent HTTP connections. At the cap a new connection waits
    /// (up to 2 s) while the longest-idle one is closed to make room; one
    /// that gets no slot is answered 503 (code too_many_connections).
    #[arg(long, env = "KUBEDISCO_HTTP_MAX_CONNECTIONS", default_value = "2048", value_parser = checked(parse_count))]
    pub(crate) http_max_connections: Checked<usize>,

    /// An HTTP connection idle this long between requests is closed.
    #[arg(long, env = "KUBEDISCO_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = checked(parse_positive_duration))]
    pub(crate) http_idle_timeout: Checked<Duration>,

    /// A request's headers must arrive within this (slowloris guard).
    #[arg(long, env = "KUBEDISCO_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = checked(parse_positive_duration))]
    pub(crate) http_header_timeout: Checked<Duration>,

    /// Largest request head (request line and headers) in bytes; larger
    /// gets 431.
    #[arg(long, env = "KUBEDISCO_HTTP_MAX_HEADER_BYTES", default_value = "16384", value_parser = checked(parse_header_bytes))]
    pub(crate) http_max_header_bytes: Checked<usize>,

    /// Most concurrently open /v1/watch streams; more get 503
    /// (code too_many_watch_streams).
    #[arg(long, env = "KUBEDISCO_MAX_WATCH_STREAMS", default_value = "1024", value_parser = checked(parse_count))]
    pub(crate) max_watch_streams: Checked<usize>,

    /// Save the index to this file (atomically, checksummed, at most every
    /// --snapshot-interval while it changes) and, at start, serve a valid
    /// one at once, flagged stale, until the source has listed.
    #[arg(long, env = "KUBEDISCO_SNAPSHOT_PATH", value_parser = checked(PathBufValueParser::new()))]
    pub(crate) snapshot_path: Option<Checked<PathBuf>>,

    /// Least time between two snapshot writes.
    #[arg(long, env = "KUBEDISCO_SNAPSHOT_INTERVAL", default_value = "5s", value_parser = checked(parse_positive_duration))]
    pub(crate) snapshot_interval: Checked<Duration>,

    /// A snapshot whose data is older than this is ignored at start.
    #[arg(long, env = "KUBEDISCO_SNAPSHOT_MAX_AGE", default_value = "1h", value_parser = checked(parse_positive_duration))]
    pub(crate) snapshot_max_age: Checked<Duration>,

    /// Put this address on an interface the agent owns (created when
    /// missing) before binding, and remove it on shutdown: the node-local
    /// address of DaemonSet mode (e.g. 169.254.20.25). Needs CAP_NET_ADMIN.
    /// Set --dns-addr and --http-addr to it as well.
    #[arg(long, env = "KUBEDISCO_LINK_LOCAL_IP", value_parser = checked(crate::netif::parse_link_local_ip))]
    pub(crate) link_local_ip: Option<Checked<IpAddr>>,

    /// The interface that holds --link-local-ip (a dummy interface the agent
    /// creates; an existing interface is used as it is and never deleted).
    #[arg(long, env = "KUBEDISCO_LINK_LOCAL_INTERFACE", default_value = crate::netif::DEFAULT_INTERFACE, value_parser = checked(crate::netif::parse_interface_name))]
    pub(crate) link_local_interface: Checked<String>,

    /// How the Kubernetes watchers fetch their initial state.
    #[arg(
        long,
        env = "KUBEDISCO_LIST_STRATEGY",
        default_value = "auto",
        value_parser = checked(EnumValueParser::<ListStrategyArg>::new())
    )]
    pub(crate) list_strategy: Checked<ListStrategyArg>,

    /// The encoding Services and EndpointSlices are listed and watched in:
    /// protobuf (what kube-proxy and CoreDNS use; the API server spends
    /// about a fifth of the CPU on it) or json (for a proxy in front of the
    /// API server that passes only JSON).
    #[arg(
        long,
        env = "KUBEDISCO_API_ENCODING",
        default_value = "protobuf",
        value_parser = checked(EnumValueParser::<ApiEncodingArg>::new())
    )]
    pub(crate) api_encoding: Checked<ApiEncodingArg>,

    /// Which EndpointSlices to receive: served (those of headless Services
    /// and of Services labelled kubedisco.io/expose=true, selected by label
    /// on the API server; a Service exposed by the annotation alone gets no
    /// endpoints and is warned about) or all (every slice in the cluster,
    /// most of them of ClusterIP Services the agent answers without).
    #[arg(
        long,
        env = "KUBEDISCO_WATCH_SLICES",
        default_value = "served",
        value_parser = checked(EnumValueParser::<WatchSlicesArg>::new())
    )]
    pub(crate) watch_slices: Checked<WatchSlicesArg>,

    /// How often a manifest source is checked for changes.
    #[arg(long, env = "KUBEDISCO_MANIFEST_POLL_INTERVAL", default_value = "1s", value_parser = checked(parse_duration))]
    pub(crate) manifest_poll_interval: Checked<Duration>,

    /// How long in-flight requests may take to finish on SIGTERM.
    #[arg(long, env = "KUBEDISCO_SHUTDOWN_GRACE", default_value = "10s", value_parser = checked(parse_duration))]
    pub(crate) shutdown_grace: Checked<Duration>,

    /// On SIGTERM, when the next agent of a rolling update has started on
    /// the same ports but not joined them yet (it joins once synced), keep
    /// answering (unready) up to this long for it. No successor: no wait.
    #[arg(long, env = "KUBEDISCO_HANDOVER_WAIT", default_value = "10s", value_parser = checked(parse_duration))]
    pub(crate) handover_wait: Checked<Duration>,

    /// Log format.
    #[arg(long, env = "KUBEDISCO_LOG_FORMAT", default_value = "text", value_parser = checked(EnumValueParser::<LogFormatArg>::new()))]
    pub(crate) log_format: Checked<LogFormatArg>,

    /// Log level or env-filter directives (RUST_LOG wins when set).
    #[arg(long, env = "KUBEDISCO_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
}

/// How `kubedisco agent` logs: the process's concern, not the agent's.
#[derive(Debug)]
pub(crate) struct Logging {
    pub(crate) format: LogFormat,
    pub(crate) level: String,
}

impl AgentArgs {
    /// How to log, and the agent's configuration; or one error naming every
    /// value that was refused (clap's: status 2, the flag in each line).
    pub(crate) fn into_parts(self) -> Result<(Logging, Config), clap::Error> {
        if let Some(error) = refused(&[
            &self.source,
            &self.dns_addr,
            &self.http_addr,
            &self.xds_addr,
            &self.cluster_domain,
            &self.ttl,
            &self.namespaces,
            &self.zone_from_node,
            &self.default_topology,
            &self.pod_records,
            &self.panic_threshold,
            &self.upstream,
            &self.upstream_timeout,
            &self.forward,
            &self.cache_size,
            &self.cache_max_bytes,
            &self.cache_max_ttl,
            &self.cache_max_negative_ttl,
            &self.serve_stale,
            &self.stale_client_timeout,
            &self.dns_max_tcp_connections,
            &self.dns_tcp_idle_timeout,
            &self.dns_tcp_query_timeout,
            &self.http_max_connections,
            &self.http_idle_timeout,
            &self.http_header_timeout,
            &self.http_max_header_bytes,
            &self.max_watch_streams,
            &self.snapshot_path,
            &self.snapshot_interval,
            &self.snapshot_max_age,
            &self.link_local_ip,
            &self.link_local_interface,
            &self.list_strategy,
            &self.api_encoding,
            &self.watch_slices,
            &self.manifest_poll_interval,
            &self.shutdown_grace,
            &self.handover_wait,
            &self.log_format,
        ]) {
            return Err(error);
        }
        let source = match self.source.value()? {
            SourceArg::Kubernetes => Source::Kubernetes {
                list_strategy: self.list_strategy.value()?.into(),
                api_encoding: self.api_encoding.value()?.into(),
                watch_slices: self.watch_slices.value()?.into(),
            },
            SourceArg::Manifests(origin) => Source::Manifests {
                origin,
                poll_interval: self.manifest_poll_interval.value()?,
            },
        };
        let snapshot = match self.snapshot_path.map(Checked::value).transpose()? {
            Some(path) => Some(WarmStartConfig {
                path,
                interval: self.snapshot_interval.value()?,
                max_age: self.snapshot_max_age.value()?,
            }),
            None => None,
        };
        let link_local = match self.link_local_ip.map(Checked::value).transpose()? {
            Some(ip) => Some(LinkLocalConfig {
                ip,
                interface: self.link_local_interface.value()?,
            }),
            None => None,
        };
        let logging = Logging {
            format: self.log_format.value()?.into(),
            level: self.log_level,
        };
        let config = Config {
            source,
            dns_addr: self.dns_addr.value()?,
            http_addr: self.http_addr.value()?,
            xds_addr: self.xds_addr.map(Checked::value).transpose()?,
            cluster_domain: self.cluster_domain.value()?,
            ttl: self.ttl.value()?,
            namespaces: values(self.namespaces)?,
            node_name: self.node_name,
            zone: self.zone,
            zone_from_node: self.zone_from_node.value()?,
            default_topology: self.default_topology.value()?.into(),
            pod_records: self.pod_records.value()?.into(),
            panic_threshold: self.panic_threshold.value()?,
            pod_weights: self.pod_weights,
            upstream: values(self.upstream)?,
            upstream_timeout: self.upstream_timeout.value()?,
            forward: values(self.forward)?,
            cache: CacheConfig {
                size: self.cache_size.value()?,
                max_bytes: self.cache_max_bytes.value()?,
                max_ttl: self.cache_max_ttl.value()?,
                max_negative_ttl: self.cache_max_negative_ttl.value()?,
                serve_stale: self.serve_stale.value()?,
                stale_client_timeout: self.stale_client_timeout.value()?,
            },
            dns_max_tcp_connections: self.dns_max_tcp_connections.value()?,
            dns_tcp_idle_timeout: self.dns_tcp_idle_timeout.value()?,
            dns_tcp_query_timeout: self.dns_tcp_query_timeout.value()?,
            http_max_connections: self.http_max_connections.value()?,
            http_idle_timeout: self.http_idle_timeout.value()?,
            http_header_timeout: self.http_header_timeout.value()?,
            http_max_header_bytes: self.http_max_header_bytes.value()?,
            max_watch_streams: self.max_watch_streams.value()?,
            snapshot,
            link_local,
            shutdown_grace: self.shutdown_grace.value()?,
            handover_wait: self.handover_wait.value()?,
        };
        Ok((logging, config))
    }
}

fn values<T>(list: Vec<Checked<T>>) -> Result<Vec<T>, clap::Error> {
    list.into_iter().map(Checked::value).collect()
}

#[cfg(test)]
mod tests;
