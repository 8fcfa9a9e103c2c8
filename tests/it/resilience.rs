//! The Service annotations that tune clients' ejection and retries, from
//! the real API server (the agent's protobuf watch) to `GET /v1/services`.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::{Agent, TestNamespace, eventually};

async fn annotate(ns: &TestNamespace, annotations: Value) {
    let patch = json!({"metadata": {"annotations": annotations}});
    ns.api::<Service>()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate service");
}

async fn wait_for_resilience(agent: &Agent, ns: &TestNamespace, want: &Value, what: &str) {
    eventually(what, || async {
        let body = agent.service(&ns.name, "web").await?;
        if body.get("resilience").unwrap_or(&Value::Null) == want {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
}

/// Valid settings are served as `resilience`; an invalid one is left out
/// and counted by key; removing the annotations removes `resilience`.
#[tokio::test]
async fn resilience_annotations_are_served_and_invalid_ones_counted() {
    let ns = TestNamespace::new("resilience").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("web", json!({"selector": null})).await;
    annotate(
        &ns,
        json!({
            "kubedisco.io/outlier-consecutive-failures": "2",
            "kubedisco.io/outlier-base-ejection-time": "1500ms",
            "kubedisco.io/retry-on": "unavailable,resource-exhausted",
            "kubedisco.io/retry-max-attempts": "9",
        }),
    )
    .await;
    let want = json!({
        "outlier": {"consecutiveFailures": 2, "baseEjectionTime": "1.5s"},
        "retry": {"on": ["resource-exhausted", "unavailable"]}
    });
    wait_for_resilience(&agent, &ns, &want, "the valid settings").await;
    eventually("the invalid one counted", || async {
        let metrics = agent.metrics().await;
        if metrics.contains(
            "kubedisco_invalid_annotations_total{annotation=\"kubedisco.io/retry-max-attempts\"} 1",
        ) {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
    annotate(
        &ns,
        json!({
            "kubedisco.io/outlier-consecutive-failures": null,
            "kubedisco.io/outlier-base-ejection-time": null,
            "kubedisco.io/retry-on": null,
            "kubedisco.io/retry-max-attempts": null,
        }),
    )
    .await;
    wait_for_resilience(&agent, &ns, &Value::Null, "no resilience").await;
    ns.delete().await;
}
