//! What an agent is told at start, as plain data. `cli` fills it from flags
//! and environment (and is the only part that knows both sides); a test or
//! an embedding program fills it directly. Nothing here parses or checks:
//! values arrive valid, or the agent refuses them when it starts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::dns::CacheConfig;
use crate::dns::answer::PodRecords;
use crate::index::topology::DefaultTopology;
use crate::source::kubernetes::{ApiEncoding, ListStrategy, WatchSlices};
use crate::source::manifest::ManifestOrigin;
use crate::warmstart::WarmStartConfig;

/// One agent's configuration. [`Config::default`] is `kubedisco agent`
/// with no flags (its tests hold the two together); the fields are its
/// flags, documented there.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub source: Source,
    /// DNS, UDP and TCP; port 0 picks a free one ([`super::Agent::dns_addr`]).
    pub dns_addr: SocketAddr,
    /// The HTTP API; port 0 picks a free one ([`super::Agent::http_addr`]).
    pub http_addr: SocketAddr,
    /// The xDS (ADS) server for gRPC clients; None: off. Port 0 picks a
    /// free one ([`super::Agent::xds_addr`]).
    pub xds_addr: Option<SocketAddr>,
    pub cluster_domain: String,
    pub ttl: Duration,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub zone_from_node: bool,
    pub default_topology: DefaultTopology,
    pub pod_records: PodRecords,
    pub panic_threshold: f64,
    pub pod_weights: bool,
    /// Empty: the nameservers of /etc/resolv.conf.
    pub upstream: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// Per-domain upstreams (`--forward`): lower-case domain, upstream.
    pub forward: Vec<(String, SocketAddr)>,
    /// The cache of forwarded answers (`--cache-*`, `--serve-stale`).
    pub cache: CacheConfig,
    pub dns_max_tcp_connections: usize,
    pub dns_tcp_idle_timeout: Duration,
    pub dns_tcp_query_timeout: Duration,
    pub http_max_connections: usize,
    pub http_idle_timeout: Duration,
    pub http_header_timeout: Duration,
    pub http_max_header_bytes: usize,
    pub max_watch_streams: usize,
    /// None: no warm start, no snapshot file.
    pub snapshot: Option<WarmStartConfig>,
    /// None: the agent binds addresses that already exist.
    pub link_local: Option<LinkLocalConfig>,
    pub shutdown_grace: Duration,
    pub handover_wait: Duration,
}

/// Where the agent's Services and EndpointSlices come from, with the
/// settings that only that source reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The API server (in-cluster config, else the kubeconfig).
    Kubernetes {
        list_strategy: ListStrategy,
        api_encoding: ApiEncoding,
        watch_slices: WatchSlices,
    },
    /// Manifest files (re-read every `poll_interval`), or the built-in demo.
    Manifests {
        origin: ManifestOrigin,
        poll_interval: Duration,
    },
}

impl Source {
    /// The name a warm-start snapshot records, so that one taken from
    /// another kind of source is not served.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Kubernetes { .. } => "kubernetes",
            Self::Manifests { .. } => "manifests",
        }
    }
}

/// The node-local address the agent puts on an interface of its own before
/// it binds, and removes when it ends (`--link-local-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkLocalConfig {
    pub ip: IpAddr,
    pub interface: String,
}

impl Default for Config {
    fn default() -> Self {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            source: Source::Kubernetes {
                list_strategy: ListStrategy::Auto,
                api_encoding: ApiEncoding::Protobuf,
                watch_slices: WatchSlices::Served,
            },
            dns_addr: loopback(1053),
            http_addr: loopback(8053),
            xds_addr: None,
            cluster_domain: "cluster.local".into(),
            ttl: Duration::from_secs(5),
            namespaces: Vec::new(),
            node_name: None,
            zone: None,
            zone_from_node: true,
            default_topology: DefaultTopology::None,
            pod_records: PodRecords::Insecure,
            panic_threshold: 0.5,
            pod_weights: false,
            upstream: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            forward: Vec::new(),
            cache: CacheConfig::default(),
            dns_max_tcp_connections: 1024,
            dns_tcp_idle_timeout: Duration::from_secs(10),
            dns_tcp_query_timeout: Duration::from_secs(5),
            http_max_connections: 2048,
            http_idle_timeout: Duration::from_secs(60),
            http_header_timeout: Duration::from_secs(10),
            http_max_header_bytes: 16 << 10,
            max_watch_streams: 1024,
            snapshot: None,
            link_local: None,
            shutdown_grace: Duration::from_secs(10),
            handover_wait: Duration::from_secs(10),
        }
    }
}
