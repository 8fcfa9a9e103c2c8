//! The HTTP API's contract at its edges: JSON errors for bad input, the
//! pickers' behaviour, SSE, health and metrics. Served from the built-in
//! demo, so these need no control plane.

use std::collections::BTreeMap;

use crate::support::{Agent, InProcessAgent};

#[tokio::test]
async fn bad_paths_and_parameters_get_json_errors() {
    let agent = InProcessAgent::demo().await;
    let cases = [
        ("/v1/services/shop/orders?index=abc", 400, "invalid index"),
        ("/v1/services/shop/orders?wait=10s", 400, "wait needs index"),
        (
            "/v1/services/shop/orders?index=1&wait=forever",
            400,
            "invalid wait",
        ),
        (
            "/v1/services/shop/orders?bogus=1",
            400,
            "unknown query parameter",
        ),
        ("/v1/services/Shop/orders", 400, "invalid namespace"),
        ("/v1/services/shop/no_such", 400, "invalid service name"),
        ("/v1/services/shop/missing", 404, "not served"),
        ("/v1/pick/shop/orders", 400, "several ports"),
        ("/v1/pick/shop/orders?port=smtp", 400, "no port named"),
        ("/v1/watch/shop/orders?format=xml", 400, "invalid format"),
        ("/v2/anything", 404, "no such route"),
        ("/v1/services/shop/orders/extra", 404, "no such route"),
    ];
    for (path, status, message) in cases {
        let (got, body) = agent.get(path).await.unwrap();
        assert_eq!(got, status, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{path}: {error:?} lacks {message:?}"
        );
    }
    let response = agent
        .client
        .post(agent.url("/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("use GET"));
}

#[tokio::test]
async fn pick_follows_weights_and_keys_stick() {
    let agent = Agent::start(&["--source", "demo"]).await;
    // orders: two endpoints of weight 100 and one of 300.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..500 {
        let (status, body) = agent.get("/v1/pick/shop/orders?port=grpc").await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body["address"].as_str().unwrap().ends_with(":9090"));
        *counts
            .entry(body["ip"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    // Smooth weighted round-robin is exact over every window of 5 picks.
    assert_eq!(counts["10.244.2.21"], 300, "{counts:?}");
    assert_eq!(counts["10.244.1.11"], 100, "{counts:?}");
    assert_eq!(counts["10.244.1.12"], 100, "{counts:?}");

    let (_, first) = agent
        .get("/v1/pick/shop/orders?port=http&key=user-42")
        .await
        .unwrap();
    for _ in 0..20 {
        let (_, again) = agent
            .get("/v1/pick/shop/orders?port=http&key=user-42")
            .await
            .unwrap();
        assert_eq!(again["address"], first["address"]);
    }
    // IPv6 endpoints come back ready to dial.
    let mut saw_v6 = false;
    for _ in 0..8 {
        let (_, body) = agent.get("/v1/pick/shop/catalog").await.unwrap();
        saw_v6 |= body["address"].as_str().unwrap().starts_with("[fd00:");
    }
    assert!(saw_v6);
}

#[tokio::test]
async fn watch_speaks_sse_when_asked() {
    let agent = Agent::start(&["--source", "demo"]).await;
    let mut response = agent
        .client
        .get(agent.url("/v1/watch/shop/payments"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let chunk = response.chunk().await.unwrap().unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    assert!(text.starts_with("event: state\n"), "{text}");
    assert!(text.contains("\"10.244.3.31\""), "{text}");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let agent = Agent::start(&["--source", "demo"]).await;
    let (status, health) = agent.get("/healthz").await.unwrap();
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, ready) = agent.get("/readyz").await.unwrap();
    assert_eq!((status, &ready["ready"]), (200, &serde_json::json!(true)));
    agent.get("/v1/services/shop/orders").await.unwrap();
    let metrics = agent.metrics().await;
    for series in [
        "kubedisco_synced 1",
        "kubedisco_services 4",
        "kubedisco_endpoints 10",
        "kubedisco_http_requests_total{route=\"/v1/services/{namespace}/{name}\",code=\"200\"}",
        "kubedisco_http_request_duration_seconds_bucket",
        "kubedisco_last_sync_timestamp_seconds",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn sigterm_stops_the_agent_cleanly_even_with_open_streams() {
    let agent = Agent::start(&["--source", "demo"]).await;
    let _stream = agent.open_watch("/v1/watch/shop/orders").await;
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
}
