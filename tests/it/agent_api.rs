//! The agent against the real control plane: what is written through the
//! API (by tests, and by the EndpointSlice controller from Pods) is what the
//! HTTP API serves.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::agent::ips_of;
use crate::support::kube::ip_range;
use crate::support::{Agent, TestNamespace, eventually};

/// A hand-written slice of a headless Service (as a custom controller
/// would write one, with the labels the EndpointSlice controller sets).
fn slice(name: &str, service: &str, endpoints: Value) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service, "service.kubernetes.io/headless": ""}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "metrics", "port": 9100, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

async fn replace_slice(ns: &TestNamespace, name: &str, body: Value) {
    let mut body = body;
    body["apiVersion"] = json!("discovery.k8s.io/v1");
    body["kind"] = json!("EndpointSlice");
    body["metadata"]["namespace"] = json!(ns.name);
    ns.api::<EndpointSlice>()
        .patch(
            name,
            &PatchParams::apply("kubedisco-tests").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("apply slice");
}

#[tokio::test]
async fn written_services_and_slices_are_served_with_all_their_fields() {
    let ns = TestNamespace::new("fields").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service(
        "api",
        json!({"selector": null, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "metrics", "port": 9100}
        ]}),
    )
    .await;
    let _: EndpointSlice = ns
        .create(slice("api-1", "api", json!([
            {"addresses": ["10.20.0.1"], "hostname": "api-0", "nodeName": "node-a", "zone": "zone-a",
             "conditions": {"ready": true},
             "targetRef": {"kind": "Pod", "name": "api-0", "namespace": ns.name}},
            {"addresses": ["10.20.0.2"], "nodeName": "node-b", "zone": "zone-b",
             "conditions": {"ready": false, "serving": false}}
        ])))
        .await;

    let body = eventually("api to be served", || async {
        let body = agent.service(&ns.name, "api").await?;
        if ips_of(&body) == ["10.20.0.1"] {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert_eq!(body["exists"], true);
    assert_eq!(body["headless"], true);
    let endpoint = &body["endpoints"][0];
    assert_eq!(endpoint["hostname"], "api-0");
    assert_eq!(endpoint["node"], "node-a");
    assert_eq!(endpoint["zone"], "zone-a");
    assert_eq!(endpoint["ready"], true);
    assert_eq!(endpoint["serving"], true, "missing serving means true");
    assert_eq!(
        endpoint["terminating"], false,
        "missing terminating means false"
    );
    assert_eq!(endpoint["targetRef"]["name"], "api-0");
    assert_eq!(endpoint["weight"], 100);
    let ports: Vec<(String, u64)> = endpoint["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [("http".to_string(), 8080), ("metrics".to_string(), 9100)]
    );
    let revision = body["revision"].as_u64().unwrap();

    // Updates propagate: the second endpoint becomes ready.
    replace_slice(&ns, "api-1", slice("api-1", "api", json!([
        {"addresses": ["10.20.0.1"], "hostname": "api-0", "nodeName": "node-a", "zone": "zone-a"},
        {"addresses": ["10.20.0.2"], "nodeName": "node-b", "zone": "zone-b"}
    ])))
    .await;
    let body = eventually("the update", || async {
        let body = agent.service(&ns.name, "api").await?;
        if ips_of(&body) == ["10.20.0.1", "10.20.0.2"] {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert!(body["revision"].as_u64().unwrap() > revision);

    // No slices left: the Service exists with no endpoints (200, not 404).
    ns.api::<EndpointSlice>()
        .delete("api-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the slice deletion", || async {
        let body = agent.service(&ns.name, "api").await?;
        if body["exists"] == true && ips_of(&body).is_empty() {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;

    // The Service deleted: 404 with a JSON error.
    ns.api::<Service>()
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the service deletion", || async {
        match agent.get(&format!("/v1/services/{}/api", ns.name)).await? {
            (404, body) if body["error"].is_string() && body["exists"] == false => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn a_service_of_250_pods_in_three_slices_is_one_list() {
    let ns = TestNamespace::new("merge").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("big", json!({})).await;
    let pods = ns.create_pods("big", 250).await;
    let first: Ipv4Addr = "10.30.0.1".parse().unwrap();
    ns.mark_ready(&pods, first).await;
    let expected = ip_range(first, 250);
    let slices = ns.wait_for_ready_addresses("big", &expected).await;
    assert!(slices.len() >= 3, "{} slices", slices.len());

    let served = eventually("250 endpoints served", || async {
        let ips = agent.endpoint_ips(&ns.name, "big").await?;
        if ips.len() == 250 {
            Ok(ips)
        } else {
            Err(format!("{} endpoints", ips.len()))
        }
    })
    .await;
    assert_eq!(
        served
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    ns.delete().await;
}

#[tokio::test]
async fn an_endpoint_moving_between_slices_never_leaves_the_watch_stream() {
    let ns = TestNamespace::new("move").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("mover", json!({"selector": null})).await;
    let _: EndpointSlice = ns
        .create(slice(
            "mover-a",
            "mover",
            json!([
                {"addresses": ["10.40.0.1"]}, {"addresses": ["10.40.0.2"]}
            ]),
        ))
        .await;
    eventually("mover served", || async {
        let ips = agent.endpoint_ips(&ns.name, "mover").await?;
        if ips.len() == 2 {
            Ok(())
        } else {
            Err(format!("{ips:?}"))
        }
    })
    .await;

    // Record every state the stream delivers.
    let response = agent
        .client
        .get(agent.url(&format!("/v1/watch/{}/mover", ns.name)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let states: Arc<Mutex<Vec<Value>>> = Arc::default();
    let recorder = {
        let states = states.clone();
        tokio::spawn(async move {
            let mut stream = response.bytes_stream();
            let mut buffer = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let event: Value = serde_json::from_slice(&line).expect("NDJSON line");
                    if event["type"] == "state" {
                        states.lock().unwrap().push(event["service"].clone());
                    }
                }
            }
        })
    };
    // The first state is the full state.
    eventually("the first state", || async {
        match states.lock().unwrap().first() {
            Some(first) if ips_of(first) == ["10.40.0.1", "10.40.0.2"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Move 10.40.0.2 from slice a to slice b, as the controller does: add to
    // the new slice, then remove from the old one, then drop the old one.
    let _: EndpointSlice = ns
        .create(slice(
            "mover-b",
            "mover",
            json!([{"addresses": ["10.40.0.2"]}, {"addresses": ["10.40.0.3"]}]),
        ))
        .await;
    replace_slice(
        &ns,
        "mover-a",
        slice("mover-a", "mover", json!([{"addresses": ["10.40.0.1"]}])),
    )
    .await;
    ns.api::<EndpointSlice>()
        .delete("mover-a", &DeleteParams::default())
        .await
        .unwrap();

    eventually("the final state on the stream", || async {
        match states.lock().unwrap().last() {
            Some(last) if ips_of(last) == ["10.40.0.2", "10.40.0.3"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    recorder.abort();
    let states = std::mem::take(&mut *states.lock().unwrap());
    assert!(
        states.len() >= 3,
        "expected several states, got {}",
        states.len()
    );
    for state in states.iter() {
        assert!(
            ips_of(state).contains(&"10.40.0.2".to_string()),
            "10.40.0.2 vanished mid-move: {state}"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn terminating_endpoints_are_served_only_when_none_is_ready() {
    let ns = TestNamespace::new("terminating").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("roll", json!({"selector": null})).await;
    let _: EndpointSlice = ns
        .create(slice("roll-1", "roll", json!([
            {"addresses": ["10.50.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.50.0.2"], "conditions": {"ready": false, "serving": false, "terminating": true}}
        ])))
        .await;
    let body = eventually("the serving-terminating fallback", || async {
        let body = agent.service(&ns.name, "roll").await?;
        if ips_of(&body) == ["10.50.0.1"] {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert_eq!(body["terminatingFallback"], true);
    assert_eq!(body["endpoints"][0]["terminating"], true);
    // DNS applies the same rule (kube-proxy's; CoreDNS answers NXDOMAIN).
    let name = format!("roll.{}.svc.cluster.local", ns.name);
    assert_eq!(agent.resolve(&["--short", &name]).1, "10.50.0.1\n");

    // A ready endpoint appears: only it is served.
    replace_slice(&ns, "roll-1", slice("roll-1", "roll", json!([
        {"addresses": ["10.50.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        {"addresses": ["10.50.0.3"], "conditions": {"ready": true}}
    ])))
    .await;
    let body = eventually("the ready endpoint to take over", || async {
        let body = agent.service(&ns.name, "roll").await?;
        if ips_of(&body) == ["10.50.0.3"] {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert_eq!(body["terminatingFallback"], false);
    assert_eq!(agent.resolve(&["--short", &name]).1, "10.50.0.3\n");
    ns.delete().await;
}

#[tokio::test]
async fn publish_not_ready_addresses_serves_pods_that_are_not_ready() {
    let ns = TestNamespace::new("notready").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("early", json!({"publishNotReadyAddresses": true}))
        .await;
    ns.create_service("strict", json!({"selector": {"app": "early"}}))
        .await;
    let pods = ns.create_pods("early", 3).await;
    for (i, pod) in pods.iter().enumerate() {
        ns.set_pod_status(pod, Ipv4Addr::new(10, 60, 0, 1 + i as u8), false)
            .await;
    }
    let ips = eventually("not-ready pods to be published", || async {
        let ips = agent.endpoint_ips(&ns.name, "early").await?;
        if ips.len() == 3 {
            Ok(ips)
        } else {
            Err(format!("{ips:?}"))
        }
    })
    .await;
    assert_eq!(ips, ["10.60.0.1", "10.60.0.2", "10.60.0.3"]);
    // The same Pods behind a Service without the flag are not served. Wait
    // until the controller has written that slice so the check means something.
    eventually("the strict Service's slice", || async {
        let slices = ns.slices_of("strict").await;
        let listed: usize = slices.iter().map(|s| s.endpoints.len()).sum();
        if listed == 3 { Ok(()) } else { Err(listed) }
    })
    .await;
    eventually(
        "the strict Service to list its endpoints as unusable",
        || async {
            let (_, debug) = agent.get("/debug/endpoints").await?;
            let strict = debug["services"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == "strict")
                .cloned()
                .unwrap_or(Value::Null);
            if strict["unusable"].as_array().map(Vec::len) == Some(3) {
                Ok(strict)
            } else {
                Err(strict.to_string())
            }
        },
    )
    .await;
    assert!(
        agent
            .endpoint_ips(&ns.name, "strict")
            .await
            .unwrap()
            .is_empty()
    );
    ns.delete().await;
}

#[tokio::test]
async fn cluster_ip_services_are_served_only_when_exposed() {
    let ns = TestNamespace::new("expose").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("plain", json!({"clusterIP": null})).await;
    let pods = ns.create_pods("plain", 2).await;
    ns.mark_ready(&pods, Ipv4Addr::new(10, 70, 0, 1)).await;
    ns.wait_for_ready_addresses("plain", &ip_range(Ipv4Addr::new(10, 70, 0, 1), 2))
        .await;
    // The slices exist and the agent is synced, yet a ClusterIP Service is
    // not served.
    let (status, body) = agent
        .get(&format!("/v1/services/{}/plain", ns.name))
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");

    // By label: the controller copies it onto the slices, which the agent
    // then receives (see watch_slices for the annotation alone).
    let patch = json!({"metadata": {"labels": {"kubedisco.io/expose": "true"}}});
    ns.api::<Service>()
        .patch("plain", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let body = eventually("the exposed Service", || async {
        let body = agent.service(&ns.name, "plain").await?;
        if ips_of(&body).len() == 2 {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert_eq!(body["headless"], false);
    ns.delete().await;
}

#[tokio::test]
async fn namespace_filter_serves_only_the_chosen_namespaces() {
    let watched = TestNamespace::new("watched").await;
    let ignored = TestNamespace::new("ignored").await;
    let agent = Agent::start(&["--namespaces", &watched.name]).await;
    for ns in [&watched, &ignored] {
        ns.create_service("svc", json!({"selector": null})).await;
        let _: EndpointSlice = ns
            .create(slice("svc-1", "svc", json!([{"addresses": ["10.80.0.1"]}])))
            .await;
    }
    eventually("the watched namespace's Service", || async {
        agent.endpoint_ips(&watched.name, "svc").await.map(|_| ())
    })
    .await;
    let (status, _) = agent
        .get(&format!("/v1/services/{}/svc", ignored.name))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (_, list) = agent.get("/v1/services").await.unwrap();
    let namespaces: Vec<&str> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, [watched.name.as_str()]);
    watched.delete().await;
    ignored.delete().await;
}

#[tokio::test]
async fn a_blocking_query_returns_on_its_own_service_only() {
    let ns = TestNamespace::new("blocking").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    for name in ["watched", "other"] {
        ns.create_service(name, json!({"selector": null})).await;
        let _: EndpointSlice = ns
            .create(slice(
                &format!("{name}-1"),
                name,
                json!([{"addresses": ["10.90.0.1"]}]),
            ))
            .await;
    }
    let body = eventually("both served", || async {
        agent.endpoint_ips(&ns.name, "other").await?;
        agent.service(&ns.name, "watched").await
    })
    .await;
    let revision = body["revision"].as_u64().unwrap();

    let url = format!("/v1/services/{}/watched?index={revision}&wait=60s", ns.name);
    let mut blocked = Box::pin(agent.get(&url));
    // Nothing changed yet: the query is still waiting.
    assert!(futures::poll!(blocked.as_mut()).is_pending());

    // Churn on another Service...
    replace_slice(
        &ns,
        "other-1",
        slice(
            "other-1",
            "other",
            json!([
                {"addresses": ["10.90.0.1"]}, {"addresses": ["10.90.0.2"]}
            ]),
        ),
    )
    .await;
    eventually("the other Service's change", || async {
        let ips = agent.endpoint_ips(&ns.name, "other").await?;
        if ips.len() == 2 {
            Ok(())
        } else {
            Err(format!("{ips:?}"))
        }
    })
    .await;
    // ...is served, and yet the blocking query on ours has not returned.
    let woke = tokio::time::timeout(std::time::Duration::from_millis(300), blocked.as_mut()).await;
    assert!(woke.is_err(), "woken by another Service's change: {woke:?}");

    // A change to ours returns it with the new state.
    replace_slice(
        &ns,
        "watched-1",
        slice(
            "watched-1",
            "watched",
            json!([
                {"addresses": ["10.90.0.1"]}, {"addresses": ["10.90.0.3"]}
            ]),
        ),
    )
    .await;
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(30), blocked)
        .await
        .expect("the blocking query returns after its Service changed")
        .unwrap();
    assert_eq!(status, 200);
    assert!(body["revision"].as_u64().unwrap() > revision);
    assert_eq!(ips_of(&body), ["10.90.0.1", "10.90.0.3"]);
    ns.delete().await;
}

/// RBAC rules to read Services, and EndpointSlices when `slices`.
fn read_rules(slices: bool) -> Value {
    let read = json!(["get", "list", "watch"]);
    let mut rules = vec![json!({"apiGroups": [""], "resources": ["services"], "verbs": read})];
    if slices {
        rules.push(json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read}));
    }
    Value::Array(rules)
}

/// An agent (not waited for) whose ServiceAccount may read the Services of
/// `ns` but not its EndpointSlices, until [`read_rules`]`(true)` is set.
async fn agent_reading_services_only(ns: &TestNamespace) -> Agent {
    let kubeconfig = ns
        .service_account_kubeconfig("agent", read_rules(false))
        .await;
    Agent::spawn_with_env(
        &["--namespaces", &ns.name],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
}

#[tokio::test]
async fn a_forbidden_agent_says_why_stays_unready_and_recovers_when_granted() {
    let ns = TestNamespace::new("forbidden").await;
    let agent = agent_reading_services_only(&ns).await;
    eventually("a clear RBAC error in the log", || async {
        let log = agent.log();
        if log.contains("RBAC forbids list/watch of endpointslices") {
            Ok(())
        } else {
            Err(agent.log_tail())
        }
    })
    .await;
    let (status, body) = agent.get("/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body["failures"].to_string().contains("RBAC forbids"),
        "{body}"
    );

    ns.set_role_rules("agent", read_rules(true)).await;
    agent.wait_ready().await;
    ns.delete().await;
}

/// Before the first sync, `/v1/pick` says `not_synced` as the Service's
/// own route does, even for a Service already listed whose slices have not
/// arrived: never a pick from part of its endpoints (here: from none).
#[tokio::test]
async fn before_the_first_sync_pick_says_not_synced_even_for_a_listed_service() {
    let ns = TestNamespace::new("pick-unsynced").await;
    ns.create_service(
        "api",
        json!({"selector": null, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
    )
    .await;
    let _: EndpointSlice = ns
        .create(slice(
            "api-1",
            "api",
            json!([{"addresses": ["10.21.0.1"], "conditions": {"ready": true}}]),
        ))
        .await;
    // Services may be listed; EndpointSlices may not (yet).
    let agent = agent_reading_services_only(&ns).await;
    eventually(
        "the Service listed while the slices are forbidden",
        || async {
            let (status, body) = agent.get("/v1/services").await?;
            let listed = body["services"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "api"));
            match (
                status,
                listed,
                agent
                    .log()
                    .contains("RBAC forbids list/watch of endpointslices"),
            ) {
                (200, true, true) => Ok(()),
                other => Err(format!("{other:?}: {body}")),
            }
        },
    )
    .await;
    for path in [
        format!("/v1/pick/{}/api", ns.name),
        format!("/v1/pick/{}/api?port=http", ns.name),
        format!("/v1/services/{}/api", ns.name),
    ] {
        let (status, body) = agent.get(&path).await.unwrap();
        assert_eq!(
            (status, &body["code"]),
            (503, &json!("not_synced")),
            "{path}: {body}"
        );
    }

    ns.set_role_rules("agent", read_rules(true)).await;
    agent.wait_ready().await;
    let (status, body) = agent
        .get(&format!("/v1/pick/{}/api?port=http", ns.name))
        .await
        .unwrap();
    assert_eq!(
        (status, &body["address"]),
        (200, &json!("10.21.0.1:8080")),
        "{body}"
    );
    ns.delete().await;
}
