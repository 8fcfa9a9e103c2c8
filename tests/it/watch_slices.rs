//! `--watch-slices served` (the default) against the real control plane and
//! its real EndpointSlice controller: the slices of plain ClusterIP
//! Services never reach the agent, those of headless Services and of
//! Services labelled `kubedisco.io/expose=true` do, in both API encodings;
//! a Service exposed by the annotation alone is warned about and counted.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::kube::{headless_service, ip_range};
use crate::support::{Agent, TestNamespace, eventually};

const RECEIVED: &str = r#"kubedisco_watch_objects_received_total{resource="endpointslices"}"#;
const UNLABELLED: &str = "kubedisco_services_exposed_without_label";

async fn patch_metadata(ns: &TestNamespace, service: &str, metadata: Value) {
    ns.api::<Service>()
        .patch(
            service,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "metadata": metadata })),
        )
        .await
        .expect("patch service");
}

/// A Service `name` of `spec` with two Ready Pods from `first`, once the
/// controller's slices hold them and carry `label` (when given).
async fn service_with_pods(
    ns: &TestNamespace,
    name: &str,
    spec: Value,
    metadata: Value,
    first: Ipv4Addr,
    label: Option<&str>,
) {
    ns.create_service(name, spec).await;
    patch_metadata(ns, name, metadata).await;
    let pods = ns.create_pods(name, 2).await;
    ns.mark_ready(&pods, first).await;
    ns.wait_for_ready_addresses(name, &ip_range(first, 2)).await;
    if let Some(label) = label {
        eventually(
            &format!("the slices of {name} labelled {label}"),
            || async {
                let slices: Vec<EndpointSlice> = ns.slices_of(name).await;
                let labelled = slices.iter().all(|slice| {
                    slice
                        .metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key(label))
                });
                if labelled && !slices.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{slices:?}"))
                }
            },
        )
        .await;
    }
}

async fn received(agent: &Agent) -> f64 {
    agent.metric(RECEIVED).await.unwrap_or(0.0)
}

#[tokio::test]
async fn only_the_slices_of_served_services_are_received() {
    let ns = TestNamespace::new("select").await;
    let expose = json!({"kubedisco.io/expose": "true"});
    let cluster_ip = json!({"clusterIP": null});
    service_with_pods(
        &ns,
        "plain",
        cluster_ip.clone(),
        json!({}),
        Ipv4Addr::new(10, 90, 0, 1),
        None,
    )
    .await;
    service_with_pods(
        &ns,
        "headless",
        json!({}),
        json!({}),
        Ipv4Addr::new(10, 90, 1, 1),
        Some("service.kubernetes.io/headless"),
    )
    .await;
    service_with_pods(
        &ns,
        "labelled",
        cluster_ip.clone(),
        json!({ "labels": expose }),
        Ipv4Addr::new(10, 90, 2, 1),
        Some("kubedisco.io/expose"),
    )
    .await;
    service_with_pods(
        &ns,
        "annotated",
        cluster_ip.clone(),
        json!({ "annotations": expose }),
        Ipv4Addr::new(10, 90, 3, 1),
        None,
    )
    .await;

    let only = ["--namespaces", ns.name.as_str()];
    let protobuf = Agent::start(&only).await;
    let json_agent = Agent::start(&[&only[..], &["--api-encoding", "json"]].concat()).await;
    let all = Agent::start(&[&only[..], &["--watch-slices", "all"]].concat()).await;

    // Listed: one slice each of the headless and the labelled Service; the
    // old behaviour lists all four.
    for agent in [&protobuf, &json_agent] {
        assert_eq!(received(agent).await, 2.0, "{}", agent.metrics().await);
        assert_eq!(
            agent.endpoint_ips(&ns.name, "headless").await.unwrap(),
            ["10.90.1.1", "10.90.1.2"]
        );
        assert_eq!(
            agent.endpoint_ips(&ns.name, "labelled").await.unwrap(),
            ["10.90.2.1", "10.90.2.2"]
        );
        let (status, _) = agent
            .get(&format!("/v1/services/{}/plain", ns.name))
            .await
            .unwrap();
        assert_eq!(status, 404);
        // Served (it is exposed) but without endpoints, and said why.
        assert!(
            agent
                .endpoint_ips(&ns.name, "annotated")
                .await
                .unwrap()
                .is_empty()
        );
        agent
            .wait_log(&format!(
                "kubectl label service -n {} annotated kubedisco.io/expose=true",
                ns.name
            ))
            .await;
        assert_eq!(agent.metric(UNLABELLED).await, Some(1.0));
    }
    assert_eq!(received(&all).await, 4.0);
    assert_eq!(
        all.endpoint_ips(&ns.name, "annotated").await.unwrap(),
        ["10.90.3.1", "10.90.3.2"]
    );
    assert_eq!(all.metric(UNLABELLED).await, Some(0.0));

    // A change to the plain Service's slice reaches the old behaviour only.
    ns.set_pod_status("plain-1", Ipv4Addr::new(10, 90, 0, 2), false)
        .await;
    eventually(
        "the plain Service's change to reach --watch-slices all",
        || async {
            let count = received(&all).await;
            if count > 4.0 { Ok(()) } else { Err(count) }
        },
    )
    .await;
    // A barrier: one new headless slice, written by hand as the controller
    // would label it. Once an agent serves it, it has received exactly that
    // one event more than its list.
    headless_service(
        &ns.client,
        &ns.name,
        "barrier",
        &[("barrier-1", vec!["10.90.9.1".to_string()])],
    )
    .await;
    for agent in [&protobuf, &json_agent] {
        eventually("the barrier Service", || async {
            agent.endpoint_ips(&ns.name, "barrier").await
        })
        .await;
        assert_eq!(received(agent).await, 3.0, "{}", agent.metrics().await);
    }

    // Labelling the annotated Service brings its endpoints and ends the
    // warning; unlabelling the labelled one takes its slices away (the
    // API server sends a DELETED when a slice leaves the selector).
    patch_metadata(&ns, "annotated", json!({ "labels": expose })).await;
    patch_metadata(
        &ns,
        "labelled",
        json!({"labels": {"kubedisco.io/expose": null}}),
    )
    .await;
    for agent in [&protobuf, &json_agent] {
        eventually("the relabelled Services", || async {
            let annotated = agent.endpoint_ips(&ns.name, "annotated").await?;
            let unlabelled = agent
                .get(&format!("/v1/services/{}/labelled", ns.name))
                .await?
                .0;
            let warned = agent.metric(UNLABELLED).await;
            if annotated.len() == 2 && unlabelled == 404 && warned == Some(0.0) {
                Ok(())
            } else {
                Err(format!("{annotated:?} {unlabelled} {warned:?}"))
            }
        })
        .await;
    }
    ns.delete().await;
}
