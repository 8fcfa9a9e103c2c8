//! Weights and tiers end to end: Pod labels, slice and Service annotations,
//! trafficDistribution, through HTTP, `dig` and Go's SRV selection.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::agent::dig;
use crate::support::cluster::repo_root;
use crate::support::kube::ip_range;
use crate::support::{Agent, TestNamespace, eventually, tools};

fn weight_of(body: &Value, ip: &str) -> Option<u64> {
    body["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["ip"] == ip)?["weight"]
        .as_u64()
}

fn dig_srv(agent: &Agent, name: &str) -> Vec<(String, u16, u16)> {
    dig(agent, &["+short", name, "SRV"])
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some((
                f.get(3)?.to_string(),
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
            ))
        })
        .collect()
}

/// Waits until the agent's HTTP answer for Service `web` gives `ip` this weight.
async fn wait_for_http_weight(agent: &Agent, ns: &TestNamespace, ip: &str, want: u64, what: &str) {
    eventually(what, || async {
        let body = agent.service(&ns.name, "web").await?;
        if weight_of(&body, ip) == Some(want) {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
}

async fn label_pod(ns: &TestNamespace, pod: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"labels": {"kubedisco.io/weight": value}}});
    ns.api::<Pod>()
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label pod");
}

/// Sets the Service's `kubedisco.io/default-weight` annotation.
async fn set_default_weight(ns: &TestNamespace, service: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"kubedisco.io/default-weight": value}}});
    ns.api::<k8s_openapi::api::core::v1::Service>()
        .patch(service, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate service");
}

#[tokio::test]
async fn a_pod_label_sets_the_weight_seen_over_http_and_srv() {
    tools::require("dig");
    let ns = TestNamespace::new("podweight").await;
    let agent = Agent::start(&["--namespaces", &ns.name, "--pod-weights"]).await;
    ns.create_service("web", json!({})).await;
    let pods = ns.create_pods("web", 3).await;
    let first = Ipv4Addr::new(10, 130, 0, 1);
    ns.mark_ready(&pods, first).await;
    ns.wait_for_ready_addresses("web", &ip_range(first, 3))
        .await;
    let srv_name = format!("_http._tcp.web.{}.svc.cluster.local", ns.name);
    let target = format!("web-0.web.{}.svc.cluster.local.", ns.name);

    label_pod(&ns, "web-0", Some("300")).await;
    eventually("weight 300 over HTTP and SRV", || async {
        let body = agent.service(&ns.name, "web").await?;
        let srv = dig_srv(&agent, &srv_name);
        let srv_weight = srv
            .iter()
            .find(|(t, _, _)| *t == target)
            .map(|(_, _, w)| *w);
        if weight_of(&body, "10.130.0.1") == Some(300) && srv_weight == Some(300) {
            Ok(())
        } else {
            Err(format!("{:?} {srv:?}", weight_of(&body, "10.130.0.1")))
        }
    })
    .await;

    // A bad value is reported and ignored: back to the default.
    label_pod(&ns, "web-0", Some("heavy")).await;
    wait_for_http_weight(&agent, &ns, "10.130.0.1", 100, "the invalid label ignored").await;
    assert!(
        agent
            .log()
            .contains("ignoring invalid kubedisco.io/weight label"),
        "{}",
        agent.log_tail()
    );
    let metrics = agent.metrics().await;
    assert!(
        metrics.contains("kubedisco_invalid_weights_total{source=\"pod\"}"),
        "{metrics}"
    );

    label_pod(&ns, "web-0", Some("7")).await;
    wait_for_http_weight(&agent, &ns, "10.130.0.1", 7, "weight 7").await;
    // The label removed: the default again.
    label_pod(&ns, "web-0", None).await;
    wait_for_http_weight(&agent, &ns, "10.130.0.1", 100, "the default weight").await;
    ns.delete().await;
}

#[tokio::test]
async fn service_and_slice_annotations_set_weights_and_go_follows_them() {
    let ns = TestNamespace::new("annotated").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("api", json!({"selector": null})).await;
    set_default_weight(&ns, "api", "50").await;
    let slice = |name: &str, ip: &str, weight: Option<&str>| {
        let mut meta = json!({"name": name, "labels": {"kubernetes.io/service-name": "api", "service.kubernetes.io/headless": ""}});
        if let Some(weight) = weight {
            meta["annotations"] = json!({"kubedisco.io/weight": weight});
        }
        json!({
            "metadata": meta, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "hostname": name}]
        })
    };
    let _: EndpointSlice = ns.create(slice("light", "10.131.0.1", None)).await;
    let _: EndpointSlice = ns.create(slice("heavy", "10.131.0.2", Some("150"))).await;
    eventually("weights 50 and 150", || async {
        let body = agent.service(&ns.name, "api").await?;
        match (
            weight_of(&body, "10.131.0.1"),
            weight_of(&body, "10.131.0.2"),
        ) {
            (Some(50), Some(150)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Go's resolver orders SRV records by RFC 2782's weighted selection: the
    // weight-150 target should come first about 3 times in 4.
    let srv_name = format!("_http._tcp.api.{}.svc.cluster.local", ns.name);
    let output = Command::new("go")
        .current_dir(repo_root().join("tests/go-resolver"))
        .args([
            "run",
            ".",
            &agent.dns.to_string(),
            &format!("api.{}.svc.cluster.local", ns.name),
            &srv_name,
            "4000",
        ])
        .output()
        .expect("go");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first: BTreeMap<String, u32> = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"first")).then(|| (f[1].to_string(), f[2].parse().unwrap()))
        })
        .collect();
    let heavy = first
        .get(&format!("heavy.api.{}.svc.cluster.local.", ns.name))
        .copied()
        .unwrap_or(0);
    let share = f64::from(heavy) / 4000.0;
    // Binomial(4000, 0.75): sd ≈ 0.007; ±0.04 is > 5 sd.
    assert!(
        (0.71..0.79).contains(&share),
        "heavy first {share}: {first:?}"
    );
    ns.delete().await;
}

/// An annotation weight that is not 0-65535 is ignored, as an invalid Pod
/// label is, and counted in the same metric under the object's kind.
#[tokio::test]
async fn invalid_annotation_weights_are_ignored_and_counted() {
    let ns = TestNamespace::new("badweight").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("web", json!({"selector": null})).await;
    set_default_weight(&ns, "web", "-1").await;
    let _: EndpointSlice = ns
        .create(json!({
            "metadata": {"name": "web-bad", "labels": {"kubernetes.io/service-name": "web", "service.kubernetes.io/headless": ""},
                         "annotations": {"kubedisco.io/weight": "heavy"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.132.0.1"]}]
        }))
        .await;
    wait_for_http_weight(&agent, &ns, "10.132.0.1", 100, "the default weight").await;
    eventually("both invalid annotations counted", || async {
        let metrics = agent.metrics().await;
        let counted = |source: &str| {
            metrics.contains(&format!(
                "kubedisco_invalid_weights_total{{source=\"{source}\"}}"
            ))
        };
        if counted("endpointslice") && counted("service") {
            Ok(())
        } else {
            Err(metrics.clone())
        }
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn prefer_same_zone_puts_local_endpoints_first_and_spills_when_they_fail() {
    tools::require("dig");
    let ns = TestNamespace::new("zones").await;
    let agent = Agent::start(&[
        "--namespaces",
        &ns.name,
        "--zone",
        "zone-a",
        "--node-name",
        "node-a",
    ])
    .await;
    ns.create_service("near", json!({"trafficDistribution": "PreferSameZone"}))
        .await;
    // Pods spread over node-a/zone-a, node-b/zone-b, node-c/zone-c, ...
    let pods = ns.create_pods("near", 6).await;
    let first = Ipv4Addr::new(10, 132, 0, 1);
    ns.mark_ready(&pods, first).await;
    ns.wait_for_ready_addresses("near", &ip_range(first, 6))
        .await;
    let priorities = |body: &Value| -> BTreeMap<String, u64> {
        body["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["zone"].as_str().unwrap_or("-").to_string() + "/" + e["ip"].as_str().unwrap(),
                    e["priority"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let body = eventually("zone-a preferred", || async {
        let body = agent.service(&ns.name, "near").await?;
        let p = priorities(&body);
        let ok = p.len() == 6 && p.iter().all(|(k, v)| (*v == 0) == k.starts_with("zone-a/"));
        if ok { Ok(body) } else { Err(format!("{p:?}")) }
    })
    .await;
    let _ = body;
    // The same through DNS: zone-a's targets have SRV priority 0, others 1.
    let srv = dig_srv(
        &agent,
        &format!("_http._tcp.near.{}.svc.cluster.local", ns.name),
    );
    assert_eq!(srv.iter().filter(|(_, p, _)| *p == 0).count(), 2, "{srv:?}");
    // /v1/pick only picks from the preferred tier.
    for _ in 0..10 {
        let (_, picked) = agent
            .get(&format!("/v1/pick/{}/near", ns.name))
            .await
            .unwrap();
        assert_eq!(picked["endpoint"]["zone"], "zone-a", "{picked}");
    }

    // Zone a's endpoints stop being ready: below the panic threshold the
    // next tier joins (here: everything ready is priority 0).
    for (i, pod) in pods.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        ns.set_pod_status(pod, Ipv4Addr::from(u32::from(first) + i as u32), false)
            .await;
    }
    eventually("spill-over", || async {
        let body = agent.service(&ns.name, "near").await?;
        let p = priorities(&body);
        if p.len() == 4 && p.values().all(|v| *v == 0) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    ns.delete().await;
}
