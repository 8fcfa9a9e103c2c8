//! Property tests of the HTTP API's parameters, in process: whatever the
//! path and query, the API answers a JSON error or a 200, never panics,
//! never a 500, and the parsing functions agree with their specification.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use kubedisco::duration::{format_duration, parse_duration};
use kubedisco::http::query;
use proptest::prelude::*;
use tower::ServiceExt;

fn router() -> axum::Router {
    kubedisco::http::router(state())
}

fn state() -> kubedisco::http::AppState {
    use kubedisco::http::{AppState, HttpConfig, HttpContext};
    use kubedisco::index::{Index, Scope};
    use kubedisco::source::manifest::demo_objects;
    use std::sync::Arc;
    let index = Arc::new(Index::default());
    index.expect_parts(["demo"]);
    let demo = demo_objects();
    index.replace(&Scope::All, Some(demo.services), Some(demo.slices), "demo");
    AppState::new(HttpContext {
        index,
        metrics: Arc::default(),
        registry: Arc::default(),
        status: Arc::default(),
        pickers: Arc::default(),
        // Blocking queries return within milliseconds here.
        config: Arc::new(HttpConfig {
            max_wait: Duration::from_millis(20),
            default_wait: Duration::from_millis(20),
            heartbeat: Duration::from_secs(15),
        }),
        shutdown: Default::default(),
        lifecycle: Arc::default(),
        watch_slots: Arc::new(tokio::sync::Semaphore::new(1 << 20)),
        dns_cache: None,
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("shop".to_string()),
        Just("orders".to_string()),
        Just("platform".to_string()),
        Just("auth".to_string()),
        "[a-z0-9-]{0,70}",
        "\\PC{0,12}",
        Just("%2F".to_string()),
        Just("..".to_string()),
    ]
}

fn param() -> impl Strategy<Value = (String, String)> {
    let key = prop_oneof![
        Just("index"),
        Just("wait"),
        Just("port"),
        Just("key"),
        Just("strategy"),
        Just("format"),
        Just("x"),
        Just(""),
    ];
    let value = prop_oneof![
        Just("0".to_string()),
        Just("999999".to_string()),
        Just("18446744073709551616".to_string()),
        Just("5ms".to_string()),
        Just("1h".to_string()),
        Just("-1s".to_string()),
        Just("grpc".to_string()),
        Just("random".to_string()),
        Just("sse".to_string()),
        "\\PC{0,10}",
    ];
    (key.prop_map(String::from), value)
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_request_gets_a_json_answer_never_a_panic_or_500(
        route in prop_oneof![Just("services"), Just("watch"), Just("pick"), Just("debug")],
        ns in segment(),
        name in segment(),
        params in proptest::collection::vec(param(), 0..4),
    ) {
        let path = match route {
            "debug" => "/debug/endpoints".to_string(),
            route => format!("/v1/{route}/{}/{}", encode(&ns), encode(&name)),
        };
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        let uri = if query.is_empty() { path } else { format!("{path}?{}", query.join("&")) };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, content_type, body) = runtime.block_on(async {
            let request = Request::get(&uri).body(Body::empty()).unwrap();
            let response = router().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            // A watch stream that started never ends: read its head only.
            let body = if status == 200 && route == "watch" {
                Vec::new()
            } else {
                axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap().to_vec()
            };
            (status, content_type, body)
        });
        prop_assert!([200, 400, 404, 503].contains(&status), "{uri}: {status}");
        if status != 200 || route != "watch" {
            prop_assert!(content_type.starts_with("application/json"), "{uri}: {content_type}");
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if status >= 400 {
                prop_assert!(json["code"].is_string() && json["error"].is_string(), "{uri}: {json}");
            }
        }
    }

    #[test]
    fn the_direct_single_service_answer_is_the_routers(namespace in segment(), name in segment()) {
        let path = format!("/v1/services/{}/{}", encode(&namespace), encode(&name));
        let Ok(uri) = path.parse::<axum::http::Uri>() else { return Ok(()) };
        let state = state();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let direct = kubedisco::http::services::get_one_direct(&state, &axum::http::Method::GET, &uri);
            let Some(direct) = direct else { return Ok(()) };
            let request = Request::get(uri.clone()).body(Body::empty()).unwrap();
            let routed = kubedisco::http::router(state.clone()).oneshot(request).await.unwrap();
            prop_assert_eq!(direct.status(), routed.status(), "{}", path);
            for header in ["content-type", "x-kubedisco-index"] {
                prop_assert_eq!(direct.headers().get(header), routed.headers().get(header), "{} {}", path, header);
            }
            let direct = axum::body::to_bytes(direct.into_body(), 1 << 20).await.unwrap();
            let routed = axum::body::to_bytes(routed.into_body(), 1 << 20).await.unwrap();
            prop_assert_eq!(direct, routed, "{}", path);
            Ok(())
        })?;
    }

    #[test]
    fn query_parsing_accepts_exactly_known_unique_parameters(raw in "\\PC{0,40}") {
        let allowed = ["index", "wait"];
        if let Ok(params) = query::parse(Some(&raw), &allowed) {
            let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes()).into_owned().collect();
            prop_assert_eq!(params.len(), pairs.len(), "every pair kept, none repeated");
            for (key, value) in pairs {
                prop_assert!(allowed.contains(&key.as_str()));
                prop_assert_eq!(params.get(&key), Some(&value));
            }
        }
    }

    #[test]
    fn encoded_known_parameters_round_trip(index in any::<u64>(), wait in "\\PC{0,12}") {
        let raw = format!("index={index}&wait={}", encode(&wait));
        let params = query::parse(Some(&raw), &["index", "wait"]).unwrap();
        prop_assert_eq!(params.get("index"), Some(&index.to_string()));
        prop_assert_eq!(params.get("wait"), Some(&wait));
        let repeated = format!("{raw}&index=1");
        prop_assert!(query::parse(Some(&repeated), &["index", "wait"]).is_err());
    }

    #[test]
    fn names_are_exactly_dns_labels(name in "[a-z0-9-]{0,70}|\\PC{0,8}") {
        let expected = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        prop_assert_eq!(query::validate_name("namespace", &name).is_ok(), expected);
    }

    #[test]
    fn durations_parse_without_panics_and_round_trip(text in "\\PC{0,16}", millis in 0u64..10_000_000_000) {
        let _ = parse_duration(&text);
        let d = Duration::from_millis(millis);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        prop_assert_eq!(parse_duration(&format!("{millis}ms")), Ok(d));
        let negative = format!("-{millis}s");
        prop_assert!(parse_duration(&negative).is_err());
    }
}
