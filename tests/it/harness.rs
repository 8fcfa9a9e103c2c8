//! Proof that the test control plane is real: the EndpointSlice controller
//! writes and shrinks slices for Pods we mark Ready, and RBAC is enforced;
//! and that a failing test cleans up after itself.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use crate::support::TestNamespace;
use crate::support::cluster::admin_client;
use crate::support::kube::{client_from, ip_range};

#[tokio::test]
async fn controller_writes_and_shrinks_slices_for_ready_pods() {
    let ns = TestNamespace::new("harness").await;
    ns.create_service("web", json!({})).await;
    let pods = ns.create_pods("web", 150).await;
    let first: Ipv4Addr = "10.10.0.1".parse().unwrap();
    ns.mark_ready(&pods, first).await;

    let slices = ns
        .wait_for_ready_addresses("web", &ip_range(first, 150))
        .await;
    assert!(
        slices.len() >= 2,
        "150 endpoints fit one slice? {}",
        slices.len()
    );
    for slice in &slices {
        assert!(
            slice.endpoints.len() <= 100,
            "a slice holds {}",
            slice.endpoints.len()
        );
        let port = &slice.ports.as_ref().expect("ports")[0];
        assert_eq!(port.port, Some(8080));
        assert_eq!(port.name.as_deref(), Some("http"));
    }
    // The controller fills in topology from the Pods and their Nodes.
    let endpoint = &slices[0].endpoints[0];
    assert!(
        endpoint
            .node_name
            .as_deref()
            .is_some_and(|n| n.starts_with("node-"))
    );
    assert!(
        endpoint
            .zone
            .as_deref()
            .is_some_and(|z| z.starts_with("zone-"))
    );
    assert_eq!(
        endpoint.target_ref.as_ref().unwrap().kind.as_deref(),
        Some("Pod")
    );

    for pod in &pods[50..] {
        ns.delete_pod(pod).await;
    }
    ns.wait_for_ready_addresses("web", &ip_range(first, 50))
        .await;
    ns.delete().await;
}

#[tokio::test]
async fn rbac_forbids_what_a_role_does_not_grant() {
    let ns = TestNamespace::new("rbac").await;
    let kubeconfig = ns
        .service_account_kubeconfig(
            "pod-reader",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
        )
        .await;
    let client = client_from(&kubeconfig).await;

    // The token works...
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.list(&ListParams::default())
        .await
        .expect("pods are granted");
    // ...and RBAC refuses what the Role does not grant.
    let slices: Api<EndpointSlice> = Api::namespaced(client, &ns.name);
    match slices.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
    ns.delete().await;
}

#[tokio::test]
async fn a_test_that_panics_leaves_no_namespace_behind() {
    // A test of its own, on a runtime of its own (as #[tokio::test] makes
    // one), that fails with its namespace in scope.
    let (named, name) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let ns = TestNamespace::new("panics").await;
            named.send(ns.name.clone()).unwrap();
            panic!("a deliberate failure, with namespace {} in scope", ns.name);
        })
    })
    .join();
    assert!(failed.is_err(), "the inner test failed");
    let name = name.recv().unwrap();
    // The drop returns once the API server has taken the delete: the
    // namespace is terminating, or already gone.
    let namespaces: Api<Namespace> = Api::all(admin_client().await);
    let left = namespaces.get_opt(&name).await.unwrap();
    assert!(
        left.as_ref()
            .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
        "{left:?}"
    );
}
