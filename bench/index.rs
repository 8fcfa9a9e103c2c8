//! Index micro-benchmarks: how fast sources can apply events, how long a
//! full re-list takes, and what a reader pays per lookup, at 10 000 Services
//! × 10 endpoints. Run: `cargo bench --bench index`; numbers in RESULTS.md.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kubedisco::index::objects::{
    Protocol, ServiceKey, ServiceObject, SliceEndpoint, SliceKey, SliceObject, SlicePort,
};
use kubedisco::index::{Change, Index, Scope};

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

fn service(i: usize) -> ServiceObject {
    ServiceObject::headless(ServiceKey::new(
        &format!("ns-{}", i % 100),
        &format!("svc-{i}"),
    ))
}

fn slice(i: usize, generation: u32) -> SliceObject {
    let base = 0x0a00_0000 + (i as u32) * 16;
    SliceObject {
        key: SliceKey {
            namespace: format!("ns-{}", i % 100).into(),
            name: format!("svc-{i}-abcde").into(),
        },
        service: Some(format!("svc-{i}").into()),
        ports: vec![SlicePort {
            name: "http".into(),
            port: Some(8080),
            protocol: Protocol::Tcp,
        }],
        endpoints: (0..ENDPOINTS as u32)
            .map(|e| {
                Arc::new(SliceEndpoint {
                    address: IpAddr::V4(Ipv4Addr::from(base + e)),
                    // Flip one endpoint's readiness per generation, so every
                    // applied event really changes the served state.
                    ready: !(e == 0 && generation % 2 == 1),
                    serving: true,
                    terminating: false,
                    hostname: None,
                    node: Some(format!("node-{}", e % 50).into()),
                    zone: Some(format!("zone-{}", e % 3).into()),
                    target_ref: None,
                    hints: None,
                })
            })
            .collect(),
        weight: None,
        headless_label: true,
    }
}

fn populated() -> Index {
    let index = Index::default();
    index.expect_parts(["all"]);
    index.replace(
        &Scope::All,
        Some((0..SERVICES).map(service).collect()),
        Some((0..SERVICES).map(|i| slice(i, 0)).collect()),
        "all",
    );
    index
}

fn benchmarks(c: &mut Criterion) {
    let index = populated();
    let mut group = c.benchmark_group("index_10k_services_x_10_endpoints");
    group.sample_size(20);

    group.throughput(Throughput::Elements(1));
    let mut generation = 0u32;
    let mut next = 0usize;
    group.bench_function("apply_one_slice_update", |b| {
        b.iter_batched(
            || {
                generation += 1;
                next = (next + 7919) % SERVICES;
                slice(next, generation)
            },
            |update| index.apply([Change::ApplySlice(update)]),
            BatchSize::SmallInput,
        )
    });

    group.bench_function("lookup_one_service", |b| {
        let keys: Vec<ServiceKey> = (0..SERVICES).step_by(97).map(|i| service(i).key).collect();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            let snapshot = index.load();
            black_box(snapshot.services.get(&keys[i]).map(|s| s.endpoints.len()))
        })
    });

    group.throughput(Throughput::Elements(SERVICES as u64));
    group.sample_size(10);
    group.bench_function("relist_all_services", |b| {
        b.iter_batched(
            || (0..SERVICES).map(|i| slice(i, 2)).collect::<Vec<_>>(),
            |slices| index.replace(&Scope::All, None, Some(slices), "all"),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
