//! The two API encodings (`--api-encoding protobuf`, the default, and
//! `json`) against the real API server: the same objects give the same
//! answers, field for field, through every way of listing and watching.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::support::agent::ips_of;
use crate::support::{Agent, TestNamespace, eventually};

/// Everything the index reads from a Service and a slice, in both
/// encodings: named and unnamed ports, int and string target ports,
/// trafficDistribution, publishNotReadyAddresses, weights, hostnames,
/// zones, nodes, target refs, hints, all conditions, IPv6, an FQDN slice.
async fn write_objects(ns: &TestNamespace) {
    ns.create_service(
        "db",
        json!({"selector": null, "publishNotReadyAddresses": true,
               "trafficDistribution": "PreferClose",
               "ports": [{"name": "pg", "port": 5432, "targetPort": 5432},
                         {"name": "metrics", "port": 9187, "protocol": "UDP", "targetPort": "prom"}]}),
    )
    .await;
    ns.create::<k8s_openapi::api::core::v1::Service>(json!({
        "metadata": {"name": "web", "labels": {"kubedisco.io/expose": "true"}, "annotations": {
            "kubedisco.io/expose": "true", "kubedisco.io/default-weight": "40"}},
        "spec": {"ports": [{"port": 80}]}
    }))
    .await;
    ns.create::<k8s_openapi::api::core::v1::Service>(json!({
        "metadata": {"name": "ext", "annotations": {"kubedisco.io/expose": "true"}},
        "spec": {"type": "ExternalName", "externalName": "example.org"}
    }))
    .await;
    let _: EndpointSlice = ns
        .create(json!({
            "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db", "service.kubernetes.io/headless": ""},
                         "annotations": {"kubedisco.io/weight": "250"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"},
                      {"name": "metrics", "port": 9187, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.30.0.1"], "hostname": "db-0", "nodeName": "node-a", "zone": "zone-a",
                 "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "db-0", "namespace": ns.name},
                 "hints": {"forZones": [{"name": "zone-a"}]}},
                {"addresses": ["10.30.0.2"], "nodeName": "node-b", "zone": "zone-b",
                 "conditions": {"ready": false, "serving": true, "terminating": true},
                 "hints": {"forZones": [{"name": "zone-b"}]}},
                {"addresses": ["10.30.0.3", "10.30.0.99"], "zone": "zone-c",
                 "conditions": {"ready": false, "serving": false},
                 "hints": {"forZones": [{"name": "zone-c"}]}}
            ]
        }))
        .await;
    let _: EndpointSlice = ns
        .create(json!({
            "metadata": {"name": "db-2", "labels": {"kubernetes.io/service-name": "db", "service.kubernetes.io/headless": ""}},
            "addressType": "IPv6",
            "ports": [{"name": "pg", "port": 5432}],
            "endpoints": [{"addresses": ["fd00::7"], "nodeName": "node-c"}]
        }))
        .await;
    let _: EndpointSlice = ns
        .create(json!({
            "metadata": {"name": "db-fqdn", "labels": {"kubernetes.io/service-name": "db", "service.kubernetes.io/headless": ""}},
            "addressType": "FQDN",
            "ports": [{"name": "pg", "port": 5432}],
            "endpoints": [{"addresses": ["db.example.org"]}]
        }))
        .await;
    let _: EndpointSlice = ns
        .create(json!({
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web", "kubedisco.io/expose": "true"}},
            "addressType": "IPv4",
            "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.30.1.1"]}, {"addresses": ["10.30.1.2"]}]
        }))
        .await;
}

/// An answer without what differs between two agents by design (their
/// revision counters, and staleness timing).
fn comparable(mut body: Value) -> Value {
    if let Some(object) = body.as_object_mut() {
        object.remove("revision");
        object.remove("generation");
    }
    if let Some(services) = body["services"].as_array_mut() {
        for service in services {
            service.as_object_mut().map(|s| s.remove("revision"));
        }
    }
    body
}

async fn same_answers(protobuf: &Agent, json_agent: &Agent, ns: &str) -> Value {
    eventually("both encodings to give the same answers", || async {
        let mut answers = Vec::new();
        for agent in [protobuf, json_agent] {
            let mut one = Vec::new();
            for name in ["db", "web", "ext"] {
                let (status, body) = agent.get(&format!("/v1/services/{ns}/{name}")).await?;
                one.push(json!({"status": status, "body": comparable(body)}));
            }
            // Every Service's type and addresses, served or not.
            let (status, body) = agent.get("/v1/services").await?;
            one.push(json!({"status": status, "body": comparable(body)}));
            answers.push(Value::Array(one));
        }
        if answers[0] == answers[1] {
            Ok(answers.swap_remove(0))
        } else {
            Err(format!("protobuf: {}\njson: {}", answers[0], answers[1]))
        }
    })
    .await
}

#[tokio::test]
async fn protobuf_and_json_agents_serve_the_same_state() {
    let ns = TestNamespace::new("encoding").await;
    write_objects(&ns).await;
    // One agent lists by streaming, the other by pages: every pair of
    // encoding and list strategy is covered by this and the next test.
    let protobuf = Agent::start(&["--namespaces", &ns.name, "--api-encoding", "protobuf"]).await;
    let json_agent = Agent::start(&[
        "--namespaces",
        &ns.name,
        "--api-encoding",
        "json",
        "--list-strategy",
        "list",
    ])
    .await;

    let answers = same_answers(&protobuf, &json_agent, &ns.name).await;
    // And they are right, not merely equal.
    let db = &answers[0]["body"];
    assert_eq!(answers[0]["status"], 200);
    assert_eq!(db["headless"], true);
    let endpoints = db["endpoints"].as_array().unwrap();
    // publishNotReadyAddresses: every endpoint counts; FQDN ignored.
    let mut ips: Vec<&str> = endpoints
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    ips.sort();
    assert_eq!(ips, ["10.30.0.1", "10.30.0.2", "10.30.0.3", "fd00::7"]);
    let first = endpoints.iter().find(|e| e["ip"] == "10.30.0.1").unwrap();
    assert_eq!(first["hostname"], "db-0");
    assert_eq!(
        (&first["node"], &first["zone"]),
        (&json!("node-a"), &json!("zone-a"))
    );
    assert_eq!(first["weight"], 250);
    assert_eq!(first["targetRef"]["name"], "db-0");
    let second = endpoints.iter().find(|e| e["ip"] == "10.30.0.2").unwrap();
    assert_eq!(
        (&second["ready"], &second["serving"], &second["terminating"]),
        (&json!(false), &json!(true), &json!(true))
    );
    let ports = db["ports"].to_string();
    assert!(
        ports.contains("\"prom\"") && ports.contains("UDP"),
        "{ports}"
    );
    let web = &answers[1]["body"];
    assert_eq!(web["headless"], false);
    assert_eq!(ips_of(web), ["10.30.1.1", "10.30.1.2"]);
    assert_eq!(web["endpoints"][0]["weight"], 40);
    // ExternalName: never served, whatever its annotations.
    assert_eq!(answers[2]["status"], 404);
    // The list has every Service with its type and addresses.
    let listed = answers[3]["body"]["services"].as_array().unwrap();
    let row = |name: &str| listed.iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(row("db")["type"], "ClusterIP");
    assert_eq!(row("db")["headless"], true);
    assert!(row("db")["clusterIPs"].is_null(), "headless: no cluster IP");
    assert_eq!(row("web")["served"], true);
    let cluster_ip = row("web")["clusterIPs"][0].as_str().unwrap().to_string();
    assert!(
        cluster_ip.parse::<std::net::IpAddr>().is_ok(),
        "{cluster_ip}"
    );
    assert_eq!(row("ext")["type"], "ExternalName");
    assert_eq!(row("ext")["externalName"], "example.org");
    assert_eq!(row("ext")["served"], false);

    // Watch events, in both encodings: a change and a delete.
    let slices = ns.api::<EndpointSlice>();
    slices
        .delete("web-1", &DeleteParams::default())
        .await
        .expect("delete web-1");
    let _: EndpointSlice = slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web-2", "namespace": ns.name,
                             "labels": {"kubernetes.io/service-name": "web", "kubedisco.io/expose": "true"},
                             "annotations": {"kubedisco.io/weight": "7"}},
                "addressType": "IPv4",
                "ports": [{"port": 80}],
                "endpoints": [{"addresses": ["10.30.1.9"], "conditions": {"ready": true}}]
            }))
            .unwrap(),
        )
        .await
        .expect("create web-2");
    let answers = eventually("the change to reach both", || async {
        let answers = same_answers(&protobuf, &json_agent, &ns.name).await;
        if ips_of(&answers[1]["body"]) == ["10.30.1.9"] {
            Ok(answers)
        } else {
            Err(answers[1].to_string())
        }
    })
    .await;
    assert_eq!(answers[1]["body"]["endpoints"][0]["weight"], 7);
    ns.delete().await;
}

/// A paginated protobuf list (more objects than one page of 500) and a
/// streaming JSON list agree.
#[tokio::test]
async fn paginated_protobuf_lists_read_every_page() {
    let ns = TestNamespace::new("pages").await;
    ns.create_service("many", json!({"selector": null})).await;
    let slices = ns.api::<EndpointSlice>();
    let writes = (0..520).map(|i| {
        let slices = slices.clone();
        let body: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("many-{i}"), "namespace": ns.name,
                         "labels": {"kubernetes.io/service-name": "many", "service.kubernetes.io/headless": ""}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [format!("10.31.{}.{}", i / 250, i % 250 + 1)]}]
        }))
        .unwrap();
        async move {
            slices
                .create(&PostParams::default(), &body)
                .await
                .map(|_| ())
        }
    });
    for result in futures::future::join_all(writes).await {
        result.expect("create slice");
    }
    let paged = Agent::start(&["--namespaces", &ns.name, "--list-strategy", "list"]).await;
    let streamed = Agent::start(&["--namespaces", &ns.name, "--api-encoding", "json"]).await;
    for agent in [&paged, &streamed] {
        let ips = eventually("all 520 endpoints", || async {
            let ips = agent.endpoint_ips(&ns.name, "many").await?;
            if ips.len() == 520 {
                Ok(ips)
            } else {
                Err(format!("{} endpoints", ips.len()))
            }
        })
        .await;
        assert!(ips.contains(&"10.31.2.20".to_string()));
    }
    ns.delete().await;
}
