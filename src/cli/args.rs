//! `kubedisco agent` flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::choices::{ApiEncodingArg, DefaultTopologyArg, ListStrategyArg, LogFormatArg};
use crate::duration::parse_duration;
use crate::source::manifest::ManifestOrigin;

/// Where the agent's Services and EndpointSlices come from.
#[derive(Clone, Debug)]
pub enum SourceArg {
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
    #[arg(long, env = "KUBEDISCO_SOURCE", default_value = "kubernetes", value_parser = parse_source)]
    pub(crate) source: SourceArg,

    /// DNS listen address (UDP and TCP).
    #[arg(long, env = "KUBEDISCO_DNS_ADDR", default_value = "127.0.0.1:1053")]
    pub(crate) dns_addr: SocketAddr,

    /// HTTP API listen address.
    #[arg(long, env = "KUBEDISCO_HTTP_ADDR", default_value = "127.0.0.1:8053")]
    pub(crate) http_addr: SocketAddr,

    /// The cluster's DNS domain.
    #[arg(long, env = "KUBEDISCO_CLUSTER_DOMAIN", default_value = "cluster.local", value_parser = parse_domain)]
    pub(crate) cluster_domain: String,

    /// TTL of DNS answers (e.g. 5s; 0 allowed).
    #[arg(long, env = "KUBEDISCO_TTL", default_value = "5s", value_parser = parse_duration)]
    pub(crate) ttl: Duration,

    /// Watch only these namespaces (comma-separated); all when empty.
    #[arg(long, env = "KUBEDISCO_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub(crate) namespaces: Vec<String>,

    /// This node's name (from the downward API), for topology-aware balancing.
    #[arg(long, env = "KUBEDISCO_NODE_NAME")]
    pub(crate) node_name: Option<String>,

    /// This node's zone, for topology-aware balancing. When empty and
    /// --node-name is set, read from the Node's topology.kubernetes.io/zone
    /// label (needs get on nodes) unless --zone-from-node=false.
    #[arg(long, env = "KUBEDISCO_ZONE")]
    pub(crate) zone: Option<String>,

    /// Read the zone from this node's Node object when --zone is not given.
    #[arg(long, env = "KUBEDISCO_ZONE_FROM_NODE", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) zone_from_node: bool,

    /// Tiering for Services that set no spec.trafficDistribution (and have
    /// no topology hints): none (all endpoints equal) or zone (same zone first).
    #[arg(
        long,
        env = "KUBEDISCO_DEFAULT_TOPOLOGY",
        value_enum,
        default_value = "none"
    )]
    pub(crate) default_topology: DefaultTopologyArg,

    /// Share of a tier's weight that must be ready for it to be used alone;
    /// below it, the next tier joins (Envoy's panic threshold). 0 to 1.
    #[arg(long, env = "KUBEDISCO_PANIC_THRESHOLD", default_value = "0.5", value_parser = parse_fraction)]
    pub(crate) panic_threshold: f64,

    /// Take weights from Pod labels kubedisco.io/weight (watches labelled
    /// Pods' metadata; needs list/watch on pods).
    #[arg(long, env = "KUBEDISCO_POD_WEIGHTS")]
    pub(crate) pod_weights: bool,

    /// Upstream DNS servers for names the agent does not serve
    /// (comma-separated ip[:port]); default: the nameservers of /etc/resolv.conf.
    #[arg(long, env = "KUBEDISCO_UPSTREAM", value_delimiter = ',', value_parser = crate::dns::forward::parse_upstream)]
    pub(crate) upstream: Vec<SocketAddr>,

    /// How long one upstream may take to answer a forwarded query.
    #[arg(long, env = "KUBEDISCO_UPSTREAM_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub(crate) upstream_timeout: Duration,

    /// Most concurrent TCP connections to the DNS port. At the cap a new
    /// connection waits (up to 2 s) while the longest-idle one is closed to
    /// make room; one that gets no slot has its queries answered REFUSED.
    #[arg(
        long,
        env = "KUBEDISCO_DNS_MAX_TCP_CONNECTIONS",
        default_value = "1024",
        value_parser = parse_count
    )]
    pub(crate) dns_max_tcp_connections: usize,

    /// A DNS TCP connection with no query for this long is closed.
    #[arg(long, env = "KUBEDISCO_DNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub(crate) dns_tcp_idle_timeout: Duration,

    /// A DNS query over TCP must arrive whole within this of its length
    /// prefix (slow-client guard).
    #[arg(long, env = "KUBEDISCO_DNS_TCP_QUERY_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub(crate) dns_tcp_query_timeout: Duration,

    /// Most concurrent HTTP connections. At the cap a new connection waits
    /// (up to 2 s) while the longest-idle one is closed to make room; one
    /// that gets no slot is answered 503 (code too_many_connections).
    #[arg(long, env = "KUBEDISCO_HTTP_MAX_CONNECTIONS", default_value = "2048", value_parser = parse_count)]
    pub(crate) http_max_connections: usize,

    /// An HTTP connection idle this long between requests is closed.
    #[arg(long, env = "KUBEDISCO_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub(crate) http_idle_timeout: Duration,

    /// A request's headers must arrive within this (slowloris guard).
    #[arg(long, env = "KUBEDISCO_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub(crate) http_header_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; larger
    /// gets 431.
    #[arg(long, env = "KUBEDISCO_HTTP_MAX_HEADER_BYTES", default_value = "16384", value_parser = parse_header_bytes)]
    pub(crate) http_max_header_bytes: usize,

    /// Most concurrently open /v1/watch streams; more get 503
    /// (code too_many_watch_streams).
    #[arg(long, env = "KUBEDISCO_MAX_WATCH_STREAMS", default_value = "1024", value_parser = parse_count)]
    pub(crate) max_watch_streams: usize,

    /// Save the index to this file (atomically, checksummed, at most every
    /// --snapshot-interval while it changes) and, at start, serve a valid
    /// one at once, flagged stale, until the source has listed.
    #[arg(long, env = "KUBEDISCO_SNAPSHOT_PATH")]
    pub(crate) snapshot_path: Option<PathBuf>,

    /// Least time between two snapshot writes.
    #[arg(long, env = "KUBEDISCO_SNAPSHOT_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub(crate) snapshot_interval: Duration,

    /// A snapshot whose data is older than this is ignored at start.
    #[arg(long, env = "KUBEDISCO_SNAPSHOT_MAX_AGE", default_value = "1h", value_parser = parse_positive_duration)]
    pub(crate) snapshot_max_age: Duration,

    /// Put this address on an interface the agent owns (created when
    /// missing) before binding, and remove it on shutdown: the node-local
    /// address of DaemonSet mode (e.g. 169.254.20.25). Needs CAP_NET_ADMIN.
    /// Set --dns-addr and --http-addr to it as well.
    #[arg(long, env = "KUBEDISCO_LINK_LOCAL_IP", value_parser = crate::netif::parse_link_local_ip)]
    pub(crate) link_local_ip: Option<IpAddr>,

    /// The interface that holds --link-local-ip (a dummy interface the agent
    /// creates; an existing interface is used as it is and never deleted).
    #[arg(long, env = "KUBEDISCO_LINK_LOCAL_INTERFACE", default_value = crate::netif::DEFAULT_INTERFACE, value_parser = crate::netif::parse_interface_name)]
    pub(crate) link_local_interface: String,

    /// How the Kubernetes watchers fetch their initial state.
    #[arg(
        long,
        env = "KUBEDISCO_LIST_STRATEGY",
        value_enum,
        default_value = "auto"
    )]
    pub(crate) list_strategy: ListStrategyArg,

    /// The encoding Services and EndpointSlices are listed and watched in:
    /// protobuf (what kube-proxy and CoreDNS use; the API server spends
    /// about a fifth of the CPU on it) or json (for a proxy in front of the
    /// API server that passes only JSON).
    #[arg(
        long,
        env = "KUBEDISCO_API_ENCODING",
        value_enum,
        default_value = "protobuf"
    )]
    pub(crate) api_encoding: ApiEncodingArg,

    /// How often a manifest source is checked for changes.
    #[arg(long, env = "KUBEDISCO_MANIFEST_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub(crate) manifest_poll_interval: Duration,

    /// How long in-flight requests may take to finish on SIGTERM.
    #[arg(long, env = "KUBEDISCO_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub(crate) shutdown_grace: Duration,

    /// On SIGTERM, when the next agent of a rolling update has started on
    /// the same ports but not joined them yet (it joins once synced), keep
    /// answering (unready) up to this long for it. No successor: no wait.
    #[arg(long, env = "KUBEDISCO_HANDOVER_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) handover_wait: Duration,

    /// Log format.
    #[arg(long, env = "KUBEDISCO_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormatArg,

    /// Log level or env-filter directives (RUST_LOG wins when set).
    #[arg(long, env = "KUBEDISCO_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn agent(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        let mut argv = vec!["kubedisco", "agent"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Agent(args) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_are_local_and_documented() {
        let args = agent(&[]).unwrap();
        assert!(matches!(args.source, SourceArg::Kubernetes));
        assert_eq!(args.http_addr.to_string(), "127.0.0.1:8053");
        assert_eq!(args.cluster_domain, "cluster.local");
        assert_eq!(args.ttl, Duration::from_secs(5));
        assert!(args.namespaces.is_empty());
    }

    #[test]
    fn flags_parse_and_bad_values_name_the_flag() {
        let args = agent(&["--namespaces", "a,b", "--ttl", "0", "--source", "demo"]).unwrap();
        assert_eq!(args.namespaces, ["a", "b"]);
        assert_eq!(args.ttl, Duration::ZERO);
        assert!(matches!(
            args.source,
            SourceArg::Manifests(ManifestOrigin::Demo)
        ));
        for (flag, value) in [
            ("--http-addr", "localhost"),
            ("--ttl", "5 parsecs"),
            ("--cluster-domain", "bad..domain"),
            ("--namespaces", "Shop"),
            ("--log-format", "xml"),
            ("--panic-threshold", "1.5"),
            ("--default-topology", "region"),
            ("--zone-from-node", "maybe"),
            ("--http-max-connections", "0"),
            ("--dns-max-tcp-connections", "0"),
            ("--max-watch-streams", "many"),
            ("--http-max-header-bytes", "100"),
            ("--http-idle-timeout", "0s"),
            ("--dns-tcp-idle-timeout", "0s"),
            ("--dns-tcp-query-timeout", "soon"),
            ("--snapshot-max-age", "old"),
            ("--snapshot-interval", "0"),
            ("--handover-wait", "soon"),
        ] {
            let error = agent(&[flag, value]).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            assert!(error.to_string().contains(flag), "{flag}: {error}");
        }
    }
}
