//! Balancing micro-benchmarks: picks per second for each picker, and what a
//! weight change costs the index when a Service has 10 000 endpoints (one
//! Pod label edit re-merges that Service). Run: `cargo bench --bench balance`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubedisco::balance::{Candidate, Pickers, SmoothRoundRobin, pick_by_key, pick_weighted_random};
use kubedisco::index::objects::{
    Protocol, ServiceKey, ServiceObject, SliceEndpoint, SliceKey, SliceObject, SlicePort, TargetRef,
};
use kubedisco::index::{Change, Index, Scope};
use rand::SeedableRng;

fn candidates(n: usize) -> (Vec<String>, Vec<u32>) {
    let ids = (0..n)
        .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
        .collect();
    let weights = (0..n).map(|i| 50 + (i as u32 % 7) * 25).collect();
    (ids, weights)
}

fn pickers(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group.throughput(Throughput::Elements(1));
    for n in [10usize, 100] {
        let (ids, weights) = candidates(n);
        let list: Vec<Candidate<'_>> = ids
            .iter()
            .zip(&weights)
            .map(|(id, &weight)| Candidate { id, weight })
            .collect();
        let mut rr = SmoothRoundRobin::default();
        group.bench_function(format!("smooth_wrr/{n}"), |b| {
            b.iter(|| black_box(rr.next(&list)))
        });
        let shared = Pickers::default();
        let key = ServiceKey::new("shop", "orders");
        group.bench_function(format!("smooth_wrr_shared_state/{n}"), |b| {
            b.iter(|| black_box(shared.round_robin(&key, "http", 1, &list)))
        });
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        group.bench_function(format!("weighted_random/{n}"), |b| {
            b.iter(|| black_box(pick_weighted_random(&list, &mut rng)))
        });
        let mut k = 0u64;
        group.bench_function(format!("rendezvous_hash/{n}"), |b| {
            b.iter(|| {
                k += 1;
                black_box(pick_by_key(&list, &k.to_string()))
            })
        });
    }
    group.finish();
}

fn slice_of(service: &str, name: &str, first: u32, count: u32) -> SliceObject {
    SliceObject {
        key: SliceKey {
            namespace: "shop".into(),
            name: name.into(),
        },
        service: Some(service.into()),
        ports: vec![SlicePort {
            name: "http".into(),
            port: Some(8080),
            protocol: Protocol::Tcp,
        }],
        endpoints: (first..first + count)
            .map(|i| {
                Arc::new(SliceEndpoint {
                    address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                    ready: true,
                    serving: true,
                    terminating: false,
                    hostname: None,
                    node: Some(format!("node-{}", i % 100).into()),
                    zone: Some(format!("zone-{}", i % 3).into()),
                    target_ref: Some(TargetRef {
                        kind: "Pod".into(),
                        namespace: Some("shop".into()),
                        name: format!("pod-{i}").into(),
                    }),
                    hints: None,
                })
            })
            .collect(),
        weight: None,
        headless_label: true,
    }
}

fn weight_change(c: &mut Criterion) {
    // One Service of 10 000 endpoints (100 slices of 100).
    let index = Index::default();
    index.expect_parts(["bench"]);
    let service = ServiceObject {
        traffic_distribution: Some("PreferSameZone".into()),
        ..ServiceObject::headless(ServiceKey::new("shop", "big"))
    };
    let slices = (0..100)
        .map(|s| slice_of("big", &format!("big-{s}"), s * 100, 100))
        .collect();
    index.replace(&Scope::All, Some(vec![service]), Some(slices), "bench");
    let mut group = c.benchmark_group("weight_change");
    group.sample_size(20);
    let mut w = 1u32;
    group.bench_function("pod_label_in_a_10k_endpoint_service", |b| {
        b.iter(|| {
            w = w % 1000 + 1;
            index.apply([Change::SetPodWeight(
                ("shop".into(), "pod-42".into()),
                Some(w),
            )]);
        })
    });
    group.finish();
}

criterion_group!(benches, pickers, weight_change);
criterion_main!(benches);
