//! Warm start: an agent killed and started again while the API server is
//! down answers from its snapshot at once (stale, and saying so) until live
//! data replaces it; a snapshot that is damaged, of another version, of
//! another agent's kind or too old is ignored with a warning and replaced.
//! Uses control planes of its own (it stops the API server) and the
//! snapshot format through `kubedisco::warmstart`; never a handover.

use std::time::{Duration, Instant};

use crate::support::agent::ips_of;
use crate::support::cluster::PrivateCluster;
use crate::support::dns::udp_a;
use crate::support::eventually::eventually_within;
use crate::support::kube::{apply_slice, headless_service};
use crate::support::{Agent, eventually};

/// `count` addresses 10.131.0.1, 10.131.0.2, ...
fn warm_ips(count: u8) -> Vec<String> {
    (1..=count).map(|i| format!("10.131.0.{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_restarts_warm_from_its_snapshot_while_the_api_server_is_down() {
    let cluster = PrivateCluster::start("warm");
    let client = cluster.client().await;
    headless_service(&client, "warm", "web", &[("web-a", warm_ips(3))]).await;
    let dir = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("warm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("index.snapshot");
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let args = [
        "--namespaces",
        "warm",
        "--snapshot-path",
        snapshot.to_str().unwrap(),
        "--snapshot-interval",
        "1s",
    ];

    let first = Agent::spawn_with_env(&args, &[("KUBECONFIG", &kubeconfig)]);
    first.wait_ready().await;
    eventually("the snapshot file", || async {
        let written = first
            .metric("kubedisco_snapshot_writes_total{result=\"ok\"}")
            .await;
        match written {
            Some(n) if n >= 1.0 && snapshot.exists() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Killed, not stopped: the snapshot on disk is the periodic one.
    drop(first);
    cluster.run(&["stop", "kube-apiserver"]);

    let started = Instant::now();
    let second = Agent::spawn_with_env(&args, &[("KUBECONFIG", &kubeconfig)]);
    let dns = second.dns;
    let (http_ms, body) = eventually_within(
        "an answer from the snapshot",
        Duration::from_secs(10),
        || async {
            match second.service("warm", "web").await {
                Ok(body) if ips_of(&body).len() == 3 => Ok((started.elapsed(), body)),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let dns_ms = eventually_within(
        "a DNS answer from the snapshot",
        Duration::from_secs(10),
        || async {
            match udp_a(
                dns,
                "web.warm.svc.cluster.local",
                Duration::from_millis(500),
            ) {
                Ok((0, 3)) => Ok(started.elapsed()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(body["stale"], true, "{body}");
    let reason = body["staleReason"].as_str().unwrap_or_default();
    assert!(reason.contains("serving the snapshot of"), "{body}");
    assert!(body["staleSeconds"].as_f64().is_some(), "{body}");
    let (status, ready) = second.get("/readyz").await.unwrap();
    assert_eq!(
        status, 200,
        "a valid snapshot makes the agent ready (stale): {ready}"
    );
    eprintln!(
        "warm start: first correct HTTP answer {:.0} ms after the process started, first DNS answer {:.0} ms (API server down)",
        http_ms.as_secs_f64() * 1000.0,
        dns_ms.as_secs_f64() * 1000.0
    );

    // The API server returns: live data replaces the snapshot, staleness goes.
    cluster.run(&["start", "kube-apiserver"]);
    apply_slice(&client, "warm", "web", "web-a", &warm_ips(4)).await;
    eventually("live data after the API server returns", || async {
        let body = second.service("warm", "web").await?;
        if ips_of(&body).len() == 4 && body["stale"] == false && body.get("staleReason").is_none() {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
    // And the next snapshot holds the new state.
    eventually("a snapshot of the new state", || async {
        let scope = kubedisco::warmstart::Coverage {
            source: "kubernetes".into(),
            namespaces: vec!["warm".into()],
            pod_weights: false,
        };
        let config = kubedisco::warmstart::WarmStartConfig {
            path: snapshot.clone(),
            interval: Duration::from_secs(1),
            max_age: Duration::from_secs(3600),
        };
        let loaded = kubedisco::warmstart::load(&config, &scope).map_err(|e| e.to_string())?;
        let endpoints: usize = loaded
            .contents
            .slices
            .iter()
            .map(|s| s.endpoints.len())
            .sum();
        if endpoints == 4 {
            Ok(())
        } else {
            Err(format!("{endpoints} endpoints in the snapshot"))
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_damaged_foreign_or_old_snapshot_is_ignored_with_a_warning() {
    let dir = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("bad-snapshots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A valid file of this agent's scope, to damage in several ways.
    let scope = kubedisco::warmstart::Coverage {
        source: "manifests".into(),
        namespaces: vec![],
        pod_weights: false,
    };
    // Its one Service, which only the snapshot could serve, read as the
    // manifest source reads Services.
    let ghost = kubedisco::source::manifest::parse_manifests(
        "{apiVersion: v1, kind: Service, metadata: {name: ghost, namespace: stale}, spec: {clusterIP: None}}",
        &Default::default(),
    )
    .unwrap();
    let index = kubedisco::index::Index::default();
    index.apply(
        ghost
            .services
            .into_iter()
            .map(kubedisco::index::Change::ApplyService),
    );
    let now = std::time::SystemTime::now();
    let good = kubedisco::warmstart::encode(&index.export(), &scope, now, now);
    let mut flipped = good.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 1;
    let mut foreign = good.clone();
    foreign[8] = 99;
    let old = kubedisco::warmstart::encode(
        &index.export(),
        &scope,
        now,
        now - Duration::from_secs(7200),
    );
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        ("corrupt", flipped, "checksum mismatch"),
        ("foreign-version", foreign, "format version 99"),
        (
            "not-a-snapshot",
            b"{\"services\": []}".to_vec(),
            "bad magic",
        ),
        ("too-old", old, "more than --snapshot-max-age"),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let agent = Agent::start(&[
            "--source",
            "demo",
            "--snapshot-path",
            path.to_str().unwrap(),
        ])
        .await;
        let log = agent.log();
        assert!(
            log.contains("ignoring the snapshot") && log.contains(reason),
            "{name}: no warning naming {reason:?}:\n{}",
            agent.log_tail()
        );
        // Served from the source alone: the snapshot's Service never shows.
        assert_eq!(
            agent.get("/v1/services/stale/ghost").await.unwrap().0,
            404,
            "{name}"
        );
        // The damaged file is replaced by a good one.
        eventually("a valid snapshot in its place", || async {
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            kubedisco::warmstart::decode(&bytes, &scope)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
