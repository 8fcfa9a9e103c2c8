//! The Envoy v3 resources one Service port becomes, as gRPC's xDS client
//! reads them (gRFC A27, A28, A42, A48, A50).
//!
//! - Listener: an `api_listener` HttpConnectionManager with its route
//!   configuration inline (no RDS round trip) and the router filter last;
//!   one route, every path, to the port's Cluster.
//! - Cluster: EDS over the same ADS stream, with the Service's balancing
//!   policy and outlier detection ([`Policy`]).
//! - ClusterLoadAssignment: the served endpoints (ready ones, or the
//!   serving-terminating fallback the index applies), HEALTHY, with their
//!   kubedisco priority (this node's tiers after the panic rule).
//!
//! Weights: gRPC's round_robin and least_request ignore endpoint weights
//! and weigh localities only, so every endpoint is a locality of its own
//! (`zone` = its zone, `sub_zone` = its address) whose locality weight is
//! the kubedisco weight. ring_hash weighs an endpoint by locality weight
//! times endpoint weight (A42), so under it the endpoint weight is 1, or
//! the weight would count twice; elsewhere it is the kubedisco weight too,
//! for clients that read it.
//!
//! Pure functions of a snapshot's [`ServedService`]: nothing here reads
//! the index, keeps state or talks to clients.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use prost::{Message, Name};

use super::names::Target;
use crate::index::ServedService;

pub(crate) const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub(crate) const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub(crate) const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub(crate) const ENDPOINTS: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

pub use crate::index::resilience::{LbPolicy, Outlier};

/// How clients balance one Service, from its annotations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub lb: LbPolicy,
    /// ring_hash: the request header whose value is hashed; without it,
    /// gRPC hashes a random number per call (no affinity).
    pub hash_header: Option<String>,
    /// The `kubedisco.io/outlier-*` settings; None: no outlier detection.
    pub outlier: Option<Outlier>,
}

/// The Go client's defaults (which are A50's) for the two ejection rules
/// when the Service sets outlier detection but not this rule: ejection is
/// on there by default, so it is here once the Service asks for it.
const CONSECUTIVE_FAILURES: u32 = 5;
const FAILURE_PERCENTAGE: u32 = 85;

/// Envoy's OutlierDetection for `o`, as gRFC A50 maps it: the durations
/// and max_ejection_percent as they are (unset: the client's default),
/// failure-percentage ejection enforced at the threshold, success-rate
/// ejection off (Envoy and gRPC turn it on when `enforcing_success_rate`
/// is unset; kubedisco's clients have no such rule). consecutive_5xx is
/// for Envoy: gRPC's xDS clients ignore it (A50 implements only the
/// success-rate and failure-percentage rules).
fn outlier_detection(o: &Outlier) -> cluster::OutlierDetection {
    let enforced = |n: u32| uint(if n == 0 { 0 } else { 100 });
    let consecutive = o.consecutive_failures.unwrap_or(CONSECUTIVE_FAILURES);
    let percentage = o.failure_percentage.unwrap_or(FAILURE_PERCENTAGE);
    cluster::OutlierDetection {
        consecutive_5xx: uint(consecutive),
        enforcing_consecutive_5xx: enforced(consecutive),
        interval: o.interval.and_then(duration),
        base_ejection_time: o.base_ejection_time.and_then(duration),
        max_ejection_time: o.max_ejection_time.and_then(duration),
        max_ejection_percent: o.max_ejection_percent.and_then(uint),
        enforcing_success_rate: uint(0),
        failure_percentage_threshold: uint(percentage),
        enforcing_failure_percentage: enforced(percentage),
        ..Default::default()
    }
}

fn pack<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

fn uint(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn duration(value: Duration) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or(0),
    })
}

/// The Listener named `name` for `target`, or None when the Service has no
/// such port.
pub(crate) fn listener(
    name: &str,
    target: &Target,
    service: &ServedService,
    policy: &Policy,
) -> Option<Any> {
    let port = target.select(&service.ports)?;
    let hash_policy = match (&policy.lb, &policy.hash_header) {
        (LbPolicy::RingHash, Some(header)) => vec![route::route_action::HashPolicy {
            policy_specifier: Some(route::route_action::hash_policy::PolicySpecifier::Header(
                route::route_action::hash_policy::Header {
                    header_name: header.clone(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        _ => Vec::new(),
    };
    let routes = route::RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![route::VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".into()],
            routes: vec![route::Route {
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                        target.cluster_name(port),
                    )),
                    hash_policy,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let manager = hcm::HttpConnectionManager {
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            routes,
        )),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Some(pack(&listener::Listener {
        name: name.to_owned(),
        api_listener: Some(listener::ApiListener {
            api_listener: Some(pack(&manager)),
        }),
        ..Default::default()
    }))
}

/// The Cluster named `name`, or None when the Service has no such port.
pub(crate) fn cluster(
    name: &str,
    target: &Target,
    service: &ServedService,
    policy: &Policy,
) -> Option<Any> {
    target.select(&service.ports)?;
    let (lb_policy, lb_config) = match policy.lb {
        LbPolicy::RoundRobin => (cluster::cluster::LbPolicy::RoundRobin, None),
        LbPolicy::LeastRequest => (
            cluster::cluster::LbPolicy::LeastRequest,
            Some(cluster::cluster::LbConfig::LeastRequestLbConfig(
                cluster::cluster::LeastRequestLbConfig {
                    choice_count: uint(2),
                    ..Default::default()
                },
            )),
        ),
        LbPolicy::RingHash => (
            cluster::cluster::LbPolicy::RingHash,
            Some(cluster::cluster::LbConfig::RingHashLbConfig(
                cluster::cluster::RingHashLbConfig {
                    hash_function: cluster::cluster::ring_hash_lb_config::HashFunction::XxHash
                        as i32,
                    ..Default::default()
                },
            )),
        ),
    };
    let outlier_detection = policy.outlier.as_ref().map(outlier_detection);
    Some(pack(&cluster::Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(core::ConfigSource {
                config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                    core::AggregatedConfigSource {},
                )),
                resource_api_version: core::ApiVersion::V3 as i32,
                ..Default::default()
            }),
            service_name: String::new(),
        }),
        lb_policy: lb_policy as i32,
        lb_config,
        outlier_detection,
        ..Default::default()
    }))
}

/// The ClusterLoadAssignment named `name`, or None when the Service has no
/// such port. A Service without endpoints has an empty one.
pub(crate) fn assignment(
    name: &str,
    target: &Target,
    service: &ServedService,
    policy: &Policy,
) -> Option<Any> {
    let port = target.select(&service.ports)?;
    let ring_hash = policy.lb == LbPolicy::RingHash;
    let localities = service
        .endpoints
        .iter()
        .filter_map(|e| {
            let port = e.port(&port.name, Some(port.protocol))?;
            // Weight 0 is "drained": the index puts such endpoints in a
            // last tier of their own; gRPC ignores a zero-weight locality
            // (and refuses a zero-weight endpoint), so 1 keeps the tier.
            let weight = e.weight.max(1);
            Some(endpoint::LocalityLbEndpoints {
                locality: Some(core::Locality {
                    region: String::new(),
                    zone: e.zone().unwrap_or_default().to_owned(),
                    sub_zone: e.ip().to_string(),
                }),
                lb_endpoints: vec![endpoint::LbEndpoint {
                    health_status: core::HealthStatus::Healthy as i32,
                    load_balancing_weight: uint(if ring_hash { 1 } else { weight }),
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(core::Address {
                                address: Some(core::address::Address::SocketAddress(
                                    core::SocketAddress {
                                        address: e.ip().to_string(),
                                        port_specifier: Some(
                                            core::socket_address::PortSpecifier::PortValue(
                                                u32::from(port.port),
                                            ),
                                        ),
                                        ..Default::default()
                                    },
                                )),
                            }),
                            hostname: e.hostname().unwrap_or_default().to_owned(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                load_balancing_weight: uint(weight),
                priority: e.priority,
                ..Default::default()
            })
        })
        .collect::<Vec<_>>();
    Some(pack(&endpoint::ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: contiguous_priorities(localities),
        ..Default::default()
    }))
}

/// gRPC refuses an assignment whose priorities skip a number; the index's
/// are contiguous over all ports, but an endpoint lacking this port can
/// leave a gap, so they are renumbered in order.
fn contiguous_priorities(
    mut localities: Vec<endpoint::LocalityLbEndpoints>,
) -> Vec<endpoint::LocalityLbEndpoints> {
    let mut seen: Vec<u32> = localities.iter().map(|l| l.priority).collect();
    seen.sort_unstable();
    seen.dedup();
    for locality in &mut localities {
        locality.priority = seen.binary_search(&locality.priority).unwrap_or(0) as u32;
    }
    localities
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::merge::tests::{endpoint, service, slice};
    use crate::index::objects::{Protocol, ServicePort};
    use crate::index::topology::{DefaultTopology, Locality};
    use crate::index::{Change, Index};

    /// A Service "web" with port "http" (80 → 8080) and two endpoints:
    /// 10.0.0.1 (weight 1, zone a) and 10.0.0.2 (weight 3, zone b), served
    /// by an agent in zone a that prefers its zone.
    fn web() -> Arc<ServedService> {
        let index = Index::default();
        index.set_locality(Locality {
            zone: Some("a".into()),
            default_topology: DefaultTopology::Zone,
            ..Locality::default()
        });
        let mut svc = service("web");
        svc.ports = vec![ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Tcp,
            target_port: None,
        }];
        let in_zone = |ip, zone: &str, weight| {
            let mut e = endpoint(ip);
            e.zone = Some(zone.into());
            let mut s = slice(ip, "web", 8080, vec![e]);
            s.weight = Some(weight);
            s
        };
        index.apply([
            Change::ApplyService(svc),
            Change::ApplySlice(in_zone("10.0.0.1", "a", 1)),
            Change::ApplySlice(in_zone("10.0.0.2", "b", 3)),
        ]);
        index
            .load()
            .services
            .get(&ServiceKey::new("ns", "web"))
            .unwrap()
            .clone()
    }

    use crate::index::ServiceKey;

    fn target(name: &str) -> Target {
        Target::parse(name, "cluster.local").unwrap()
    }

    fn decode_assignment(any: Any) -> endpoint::ClusterLoadAssignment {
        assert_eq!(any.type_url, ENDPOINTS);
        endpoint::ClusterLoadAssignment::decode(&*any.value).unwrap()
    }

    #[test]
    fn every_endpoint_is_a_weighted_locality_in_its_tier() {
        let web = web();
        let any = assignment(
            "web.ns:http",
            &target("web.ns:http"),
            &web,
            &Policy::default(),
        );
        let cla = decode_assignment(any.unwrap());
        assert_eq!(cla.cluster_name, "web.ns:http");
        let seen: Vec<_> = cla
            .endpoints
            .iter()
            .map(|l| {
                let locality = l.locality.as_ref().unwrap();
                let lb = &l.lb_endpoints[0];
                let Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) = &lb.host_identifier
                else {
                    panic!("no endpoint")
                };
                let Some(core::address::Address::SocketAddress(socket)) =
                    &e.address.as_ref().unwrap().address
                else {
                    panic!("no socket address")
                };
                let Some(core::socket_address::PortSpecifier::PortValue(port)) =
                    socket.port_specifier
                else {
                    panic!("no port")
                };
                (
                    locality.zone.clone(),
                    socket.address.clone(),
                    port,
                    l.load_balancing_weight.unwrap().value,
                    l.priority,
                    lb.health_status,
                )
            })
            .collect();
        let healthy = core::HealthStatus::Healthy as i32;
        assert_eq!(
            seen,
            [
                ("a".into(), "10.0.0.1".into(), 8080, 1, 0, healthy),
                ("b".into(), "10.0.0.2".into(), 8080, 3, 1, healthy),
            ]
        );
    }

    #[test]
    fn ring_hash_counts_the_weight_once() {
        let web = web();
        let policy = Policy {
            lb: LbPolicy::RingHash,
            hash_header: Some("x-user".into()),
            outlier: None,
        };
        let cla = decode_assignment(
            assignment("web.ns:http", &target("web.ns:http"), &web, &policy).unwrap(),
        );
        for locality in &cla.endpoints {
            assert_eq!(
                locality.lb_endpoints[0]
                    .load_balancing_weight
                    .unwrap()
                    .value,
                1
            );
        }
        let any = cluster("web.ns:http", &target("web.ns:http"), &web, &policy).unwrap();
        let decoded = cluster::Cluster::decode(&*any.value).unwrap();
        assert_eq!(
            decoded.lb_policy,
            cluster::cluster::LbPolicy::RingHash as i32
        );
    }

    fn decode_cluster(policy: &Policy) -> cluster::Cluster {
        let any = cluster("web.ns:http", &target("web.ns:http"), &web(), policy).unwrap();
        cluster::Cluster::decode(&*any.value).unwrap()
    }

    /// The annotations map onto Envoy's fields one to one (gRFC A50);
    /// what the Service leaves out is left unset (the client's default)
    /// except the two rules, which are on as in the Go client.
    #[test]
    fn outlier_annotations_map_as_a50_does() {
        let outlier = Outlier {
            consecutive_failures: Some(3),
            failure_percentage: Some(60),
            interval: Some(Duration::from_millis(500)),
            base_ejection_time: Some(Duration::from_secs(2)),
            max_ejection_time: Some(Duration::from_secs(20)),
            max_ejection_percent: Some(40),
        };
        let od = decode_cluster(&Policy {
            outlier: Some(outlier),
            ..Policy::default()
        })
        .outlier_detection
        .unwrap();
        let value = |v: Option<UInt32Value>| v.map(|v| v.value);
        assert_eq!(value(od.consecutive_5xx), Some(3));
        assert_eq!(value(od.enforcing_consecutive_5xx), Some(100));
        assert_eq!(value(od.failure_percentage_threshold), Some(60));
        assert_eq!(value(od.enforcing_failure_percentage), Some(100));
        assert_eq!(value(od.enforcing_success_rate), Some(0));
        assert_eq!(value(od.max_ejection_percent), Some(40));
        let pb = |d: Option<PbDuration>| d.map(|d| (d.seconds, d.nanos));
        assert_eq!(pb(od.interval), Some((0, 500_000_000)));
        assert_eq!(pb(od.base_ejection_time), Some((2, 0)));
        assert_eq!(pb(od.max_ejection_time), Some((20, 0)));
        // gRPC's defaults for these (5 hosts, 50 calls) are the Go client's.
        assert_eq!(od.failure_percentage_minimum_hosts, None);
        assert_eq!(od.failure_percentage_request_volume, None);

        let off = decode_cluster(&Policy {
            outlier: Some(Outlier {
                consecutive_failures: Some(0),
                failure_percentage: Some(0),
                ..Outlier::default()
            }),
            ..Policy::default()
        })
        .outlier_detection
        .unwrap();
        assert_eq!(value(off.enforcing_consecutive_5xx), Some(0));
        assert_eq!(value(off.enforcing_failure_percentage), Some(0));
        assert_eq!(off.interval, None);
        assert_eq!(off.max_ejection_percent, None);

        let defaults = decode_cluster(&Policy {
            outlier: Some(Outlier {
                base_ejection_time: Some(Duration::from_secs(1)),
                ..Outlier::default()
            }),
            ..Policy::default()
        })
        .outlier_detection
        .unwrap();
        assert_eq!(value(defaults.consecutive_5xx), Some(5));
        assert_eq!(value(defaults.failure_percentage_threshold), Some(85));
        assert_eq!(value(defaults.enforcing_failure_percentage), Some(100));

        assert_eq!(decode_cluster(&Policy::default()).outlier_detection, None);
    }

    #[test]
    fn a_listener_routes_everything_to_the_ports_cluster() {
        let web = web();
        let any = listener(
            "web.ns.svc.cluster.local:80",
            &target("web.ns.svc.cluster.local:80"),
            &web,
            &Policy::default(),
        )
        .unwrap();
        assert_eq!(any.type_url, LISTENER);
        let decoded = listener::Listener::decode(&*any.value).unwrap();
        let api = decoded.api_listener.unwrap().api_listener.unwrap();
        let manager = hcm::HttpConnectionManager::decode(&*api.value).unwrap();
        let last = manager.http_filters.last().unwrap();
        assert_eq!(last.name, "envoy.filters.http.router");
        let Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(routes)) =
            manager.route_specifier
        else {
            panic!("routes not inline")
        };
        let action = routes.virtual_hosts[0].routes[0].action.clone().unwrap();
        let route::route::Action::Route(action) = action else {
            panic!("not a route action")
        };
        assert_eq!(
            action.cluster_specifier,
            Some(route::route_action::ClusterSpecifier::Cluster(
                "web.ns:http".into()
            )),
            "both name forms share the Cluster named by the port's name"
        );
    }

    #[test]
    fn a_port_the_service_lacks_has_no_resources() {
        let web = web();
        let missing = target("web.ns:grpc");
        let policy = Policy::default();
        assert!(listener("web.ns:grpc", &missing, &web, &policy).is_none());
        assert!(cluster("web.ns:grpc", &missing, &web, &policy).is_none());
        assert!(assignment("web.ns:grpc", &missing, &web, &policy).is_none());
    }
}
