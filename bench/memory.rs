//! Heap bytes the index holds per endpoint, counted exactly by a counting
//! allocator: EndpointSlices as the controller writes them go as JSON
//! through the agent's own decoder (`source::slice`) into the index, and
//! what stays allocated afterwards is the index (writer side + published
//! snapshot).
//!
//! Also counts heap allocations per DNS query answered from the index:
//! none, for every kind of answer (asserted, so `cargo test --benches`
//! keeps it so).
//!
//! A second table is the heap during a re-list of the same objects: every
//! slice decoded again and buffered as the watcher buffers a list, then
//! swapped in whole; its peak (the most ever live at once) against what
//! the index held before, and what it holds after.
//!
//! Run: `cargo bench --bench memory` (prints the tables; numbers in
//! bench/RESULTS.md). Process RSS beside CoreDNS is measured by
//! `scripts/bench scale` and `scripts/bench relist`; this one says where
//! the bytes go.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubedisco::dns::answer::Zone;
use kubedisco::dns::wire::Response;
use kubedisco::dns::{Handled, handle_packet};
use kubedisco::index::{Change, Index, Scope, ServiceKey, ServiceObject, ServiceType, SliceObject};
use kubedisco::source::metrics::InvalidWeights;
use kubedisco::source::service::LeanService;
use kubedisco::source::slice::Slice;
use rand::SeedableRng;

/// Counts live heap bytes (requested sizes; the allocator's own rounding
/// and headers come on top, see RSS in the scale benchmark).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Calls to `alloc` and `realloc`.
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` has been since it was last reset to `LIVE`.
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only
// counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Old and new both live while realloc copies.
        grew(new_size);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NAMESPACES: usize = 10;
const NODES: usize = 100;
const PER_SLICE: usize = 100;

/// What the EndpointSlice controller writes for a Deployment's Pods:
/// targetRef, nodeName and zone on every endpoint (`full`), or only the
/// address and readiness (`!full`, what bench/scale's load generator writes).
fn slices(service: usize, endpoints: usize, full: bool) -> Vec<EndpointSlice> {
    let namespace = format!("scale-{}", service % NAMESPACES);
    (0..endpoints.div_ceil(PER_SLICE))
        .map(|s| {
            let range = s * PER_SLICE..endpoints.min((s + 1) * PER_SLICE);
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("svc-{service}-{s:05x}")),
                    namespace: Some(namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        "kubernetes.io/service-name".to_string(),
                        format!("svc-{service}"),
                    )])),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    protocol: Some("TCP".into()),
                    app_protocol: None,
                }]),
                endpoints: range
                    .map(|j| {
                        let ip = 0x0a00_0000u32 + (service * 1000 + j) as u32;
                        let node = (service * 7 + j) % NODES;
                        Endpoint {
                            addresses: vec![std::net::Ipv4Addr::from(ip).to_string()],
                            conditions: Some(EndpointConditions {
                                ready: Some(true),
                                serving: Some(true),
                                terminating: Some(false),
                            }),
                            node_name: full.then(|| format!("node-{node}")),
                            zone: full.then(|| format!("zone-{}", node % 3)),
                            target_ref: full.then(|| ObjectReference {
                                kind: Some("Pod".into()),
                                namespace: Some(namespace.clone()),
                                name: Some(format!("svc-{service}-7d9c8b5f4-{j:05x}")),
                                uid: Some(format!("{service:08x}-0000-4000-8000-{j:012x}")),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}")),
            namespace: Some(format!("scale-{}", i % NAMESPACES)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 8080,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Lists `services` × `endpoints` into `index` as the watchers do: each
/// object converted as it arrives (the API objects never all live at
/// once), buffered through `buffer_slice`, the lists swapped in whole.
fn list(
    index: &Index,
    services: usize,
    endpoints: usize,
    full: bool,
    buffer_slice: impl Fn(SliceObject) -> SliceObject,
) {
    let mut service_objects = Vec::with_capacity(services);
    let mut slice_objects = Vec::new();
    let invalid_weights = InvalidWeights::default();
    for i in 0..services {
        // Through JSON, as the API server sends them and the watcher
        // decodes them.
        let json = serde_json::to_vec(&service(i)).expect("a Service serializes");
        service_objects.push(
            serde_json::from_slice::<LeanService>(&json)
                .expect("the API's JSON decodes")
                .into_object(&invalid_weights),
        );
        slice_objects.extend(slices(i, endpoints, full).iter().filter_map(|slice| {
            let json = serde_json::to_vec(slice).expect("a slice serializes");
            serde_json::from_slice::<Slice>(&json)
                .expect("the API's JSON decodes")
                .into_object(&invalid_weights)
                .map(&buffer_slice)
        }));
    }
    index.replace(&Scope::All, Some(service_objects), None, "services");
    index.replace(&Scope::All, None, Some(slice_objects), "slices");
    assert_eq!(index.load().endpoint_count, services * endpoints);
}

/// An index holding `services` × `endpoints`, listed as the watchers list.
fn index_of(services: usize, endpoints: usize, full: bool) -> Index {
    let index = Index::default();
    index.expect_parts(["services", "slices"]);
    list(&index, services, endpoints, full, |slice| slice);
    index
}

/// Live heap bytes of an index holding `services` × `endpoints`.
fn measure(services: usize, endpoints: usize, full: bool) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    let index = index_of(services, endpoints, full);
    let held = LIVE.load(Ordering::Relaxed) - before;
    drop(index);
    held
}

/// Heap during a re-list of unchanged objects: (before, peak, after),
/// each the bytes the index (and the list in progress) held.
fn measure_relist(services: usize, endpoints: usize, full: bool) -> (usize, usize, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    let index = index_of(services, endpoints, full);
    let before = LIVE.load(Ordering::Relaxed) - base;
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    list(&index, services, endpoints, full, |slice| {
        index.share_listed(slice)
    });
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let after = LIVE.load(Ordering::Relaxed) - base;
    drop(index);
    (before, peak, after)
}

/// A query as a stub resolver sends it (EDNS, 1232 bytes).
fn query(name: &str, record_type: hickory_proto::rr::RecordType) -> Vec<u8> {
    let mut message = hickory_proto::op::Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii(name).expect("a valid name"),
        record_type,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    message.set_edns(edns);
    message.to_vec().expect("a query encodes")
}

/// Heap allocations per query for each kind of local answer, after one
/// warm-up pass in which the per-thread scratch lists grow.
fn dns_allocations(rounds: usize) -> Vec<(&'static str, f64)> {
    use hickory_proto::rr::RecordType;
    let index = index_of(10, 20, true);
    // A ClusterIP Service beside the headless ones: the zone's other names.
    let api = ServiceObject {
        headless: false,
        cluster_ips: ["10.96.0.10".parse().unwrap()].into(),
        ..ServiceObject::headless(ServiceKey::new("scale-0", "api"))
    };
    let alias = ServiceObject {
        service_type: ServiceType::ExternalName,
        headless: false,
        external_name: Some("api.scale-0.svc.cluster.local".into()),
        ..ServiceObject::headless(ServiceKey::new("scale-0", "alias"))
    };
    index.apply([Change::ApplyService(api), Change::ApplyService(alias)]);
    let snapshot = index.load();
    let zone = Zone::new("cluster.local", 5);
    // svc-0 in scale-0 holds 10.0.0.0 … 10.0.0.19.
    let kinds = [
        (
            "A of a Service",
            query("svc-0.scale-0.svc.cluster.local.", RecordType::A),
        ),
        (
            "SRV of a port",
            query(
                "_http._tcp.svc-0.scale-0.svc.cluster.local.",
                RecordType::SRV,
            ),
        ),
        (
            "NXDOMAIN (unknown host)",
            query("nope.svc-0.scale-0.svc.cluster.local.", RecordType::A),
        ),
        (
            "NODATA (AAAA of IPv4 Services)",
            query("svc-0.scale-0.svc.cluster.local.", RecordType::AAAA),
        ),
        (
            "PTR of an endpoint",
            query("1.0.0.10.in-addr.arpa.", RecordType::PTR),
        ),
        ("SOA of the zone", query("cluster.local.", RecordType::SOA)),
        (
            "A of a ClusterIP Service",
            query("api.scale-0.svc.cluster.local.", RecordType::A),
        ),
        (
            "PTR of a cluster IP",
            query("10.0.96.10.in-addr.arpa.", RecordType::PTR),
        ),
        (
            "NXDOMAIN (search-path expansion)",
            query("www.example.org.scale-0.svc.cluster.local.", RecordType::A),
        ),
        (
            "NODATA (a namespace)",
            query("scale-0.svc.cluster.local.", RecordType::A),
        ),
        (
            "A of an ExternalName (in-zone target)",
            query("alias.scale-0.svc.cluster.local.", RecordType::A),
        ),
        (
            "A of a pod name",
            query("10-1-2-3.scale-0.pod.cluster.local.", RecordType::A),
        ),
    ];
    let mut response = Response::default();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let mut answer = |packet: &[u8]| {
        let (handled, _) = handle_packet(&zone, &snapshot, packet, true, &mut response, &mut rng);
        assert_eq!(handled, Handled::Reply, "answered locally");
        u16::from_be_bytes([response.buf[6], response.buf[7]])
    };
    for (kind, packet) in &kinds {
        let negative = kind.starts_with("NXDOMAIN") || kind.starts_with("NODATA");
        assert_eq!(answer(packet) == 0, negative, "{kind}: answer records");
    }
    kinds
        .iter()
        .map(|(kind, packet)| {
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            for _ in 0..rounds {
                answer(packet);
            }
            let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
            (*kind, made as f64 / rounds as f64)
        })
        .collect()
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it once small.
    let quick = std::env::args().all(|arg| arg != "--bench");
    let points: &[(usize, usize)] = if quick {
        &[(100, 10)]
    } else {
        &[(1_000, 10), (1_000, 100), (10_000, 10)]
    };
    println!("| Services × endpoints | endpoint fields | index heap | per endpoint |");
    println!("|---|---|---:|---:|");
    for &(services, endpoints) in points {
        for full in [false, true] {
            let bytes = measure(services, endpoints, full);
            let total = services * endpoints;
            println!(
                "| {services} × {endpoints} | {} | {:.1} MiB | {} B |",
                if full {
                    "address, conditions, nodeName, zone, targetRef"
                } else {
                    "address, conditions"
                },
                bytes as f64 / (1 << 20) as f64,
                bytes / total
            );
        }
    }
    println!();
    println!(
        "| Services × endpoints | endpoint fields | before re-list | peak during | peak / before | after |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for &(services, endpoints) in points {
        let (before, peak, after) = measure_relist(services, endpoints, true);
        println!(
            "| {services} × {endpoints} | full | {} | {} | {:.2} | {} |",
            mib(before),
            mib(peak),
            peak as f64 / before as f64,
            mib(after)
        );
    }
    println!();
    println!("| DNS answer | heap allocations per query |");
    println!("|---|---:|");
    let rounds = if quick { 100 } else { 100_000 };
    let allocations = dns_allocations(rounds);
    for (kind, per_query) in &allocations {
        println!("| {kind} | {per_query} |");
    }
    // The query path allocates nothing: a regression fails here.
    for (kind, per_query) in allocations {
        assert_eq!(per_query, 0.0, "{kind} allocates");
    }
}
