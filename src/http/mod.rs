//! The HTTP front end: JSON API, watch streams, picks, health and metrics.
//!
//! - [`services`]: `/v1/services`, `/v1/services/{ns}/{name}` (blocking
//!   queries with `?index=&wait=`).
//! - [`watch`]: `/v1/watch/{ns}/{name}`, NDJSON or SSE.
//! - [`pick`]: `/v1/pick/{ns}/{name}` (one endpoint).
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, `/debug/endpoints`,
//!   `/debug/cache` (the DNS cache of forwarded names, read-only).
//! - [`view`]: the JSON shapes, shared by the routes above.
//! - [`error`]: the one JSON error shape every route uses.
//! - [`server`]: the accept loop and connection limits (cap with idle
//!   eviction, header timeout and size, idle timeout, lame duck).
//! - [`own_answers`]: the answers hyper gives itself (a head it refused)
//!   as the same JSON errors.
//! - [`metrics`]: what this front end reports.
//!
//! Handlers only read [`Index`] snapshots; nothing here talks to Kubernetes.

pub mod error;
pub mod metrics;
pub mod ops;
mod own_answers;
pub mod pick;
pub mod query;
pub mod server;
pub mod services;
pub mod view;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::balance::Pickers;
use crate::handover::Lifecycle;
use crate::index::Index;
use crate::status::SourceStatus;
pub use error::{ApiError, ErrorCode};
use metrics::{HttpMetrics, RequestLabels, RouteLabels};

/// Tunables of the HTTP front end.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The longest a blocking query may wait (longer `?wait=` is capped).
    pub max_wait: Duration,
    /// The wait of a blocking query that gives `index` but no `wait`.
    pub default_wait: Duration,
    /// How often an idle watch stream sends a heartbeat.
    pub heartbeat: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(600),
            default_wait: Duration::from_secs(300),
            heartbeat: Duration::from_secs(15),
        }
    }
}

/// What every handler gets: one `Arc`, because axum clones the state for
/// every handler and middleware of every request.
#[derive(Clone)]
pub struct AppState(Arc<HttpContext>);

impl AppState {
    pub fn new(context: HttpContext) -> Self {
        Self(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = HttpContext;

    fn deref(&self) -> &HttpContext {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct HttpContext {
    pub index: Arc<Index>,
    /// This front end's own series.
    pub metrics: Arc<HttpMetrics>,
    /// Every component's series, encoded at `/metrics`.
    pub registry: Arc<prometheus_client::registry::Registry>,
    pub status: Arc<SourceStatus>,
    pub pickers: Arc<Pickers>,
    pub config: Arc<HttpConfig>,
    /// Fires on shutdown: blocking queries answer at once, streams end.
    pub shutdown: CancellationToken,
    /// Draining (SIGTERM): `/readyz` says 503 while answers go on.
    pub lifecycle: Arc<Lifecycle>,
    /// One permit per open watch stream (`--max-watch-streams`).
    pub watch_slots: Arc<Semaphore>,
    /// The DNS server's cache of forwarded names, for `/debug/cache`;
    /// None when this process serves no DNS.
    pub dns_cache: Option<crate::dns::CacheView>,
}

/// Every route, in the order of [`router`]; also the `route` label of the
/// request metrics.
const ROUTES: [&str; 10] = [
    "/v1/services",
    "/v1/services/{namespace}/{name}",
    "/v1/watch/{namespace}/{name}",
    "/v1/pick/{namespace}/{name}",
    "/debug/endpoints",
    "/healthz",
    "/readyz",
    "/metrics",
    "/debug/cache",
    "/debug/cache/export",
];

pub fn router(state: AppState) -> Router {
    let [
        r_list,
        r_one,
        r_watch,
        r_pick,
        r_debug,
        r_healthz,
        r_readyz,
        r_metrics,
        r_cache,
        r_cache_export,
    ] = ROUTES;
    Router::new()
        .route(r_list, get(services::list))
        .route(r_one, get(services::get_one))
        .route(r_watch, get(watch::watch))
        .route(r_pick, get(pick::pick))
        .route(r_debug, get(ops::debug_endpoints))
        .route(r_healthz, get(ops::healthz))
        .route(r_readyz, get(ops::readyz))
        .route(r_metrics, get(ops::metrics))
        .route(r_cache, get(ops::debug_cache))
        .route(r_cache_export, get(ops::debug_cache_export))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves until `shutdown` fires, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    config: server::ServeConfig,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    let direct_state = state.clone();
    let direct: server::Direct = Arc::new(move |method: &Method, uri: &axum::http::Uri| {
        services::get_one_direct(&direct_state, method, uri)
    });
    server::serve(listener, router(state), direct, config, metrics, shutdown).await
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no such route: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}; use GET", uri.path()),
    )
}

/// The route pattern `path` matches in [`router`] (its metrics label),
/// or "unmatched": worked out from the path's segments, so that counting
/// a request needs no router extension (checked against the router in the
/// tests below).
pub fn route_label(path: &str) -> &'static str {
    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
    let parts = [(); 5].map(|_| segments.next());
    // (The router matches an empty segment too: `/v1/services//x` is the
    // single-Service route, answered 400 by its name check.)
    match parts {
        [Some("v1"), Some("services"), None, ..] => ROUTES[0],
        [Some("v1"), Some(kind), Some(_), Some(_), None] => match kind {
            "services" => ROUTES[1],
            "watch" => ROUTES[2],
            "pick" => ROUTES[3],
            _ => "unmatched",
        },
        [Some("debug"), Some("endpoints"), None, ..] => ROUTES[4],
        [Some("healthz"), None, ..] => ROUTES[5],
        [Some("readyz"), None, ..] => ROUTES[6],
        [Some("metrics"), None, ..] => ROUTES[7],
        [Some("debug"), Some("cache"), None, ..] => ROUTES[8],
        [Some("debug"), Some("cache"), Some("export"), None, ..] => ROUTES[9],
        _ => "unmatched",
    }
}

/// Every route is a GET: a request with a body is refused before a byte of
/// the body is read (the connection then closes; nothing is buffered).
pub fn refuse_body(headers: &axum::http::HeaderMap, metrics: &HttpMetrics) -> Option<Response> {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if !has_body {
        return None;
    }
    metrics.record_rejected("body");
    let mut response = ApiError::new(
        ErrorCode::BodyNotAllowed,
        "request bodies are not accepted: every route is a GET",
    )
    .into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    Some(response)
}

/// What a request is counted as: its route, and whether it waits on
/// purpose (blocking queries and streams would drown the latency
/// histogram).
pub struct RequestClass {
    pub route: &'static str,
    pub waits: bool,
}

impl RequestClass {
    pub fn of(uri: &axum::http::Uri) -> Self {
        let route = route_label(uri.path());
        let waits = route == ROUTES[2]
            || uri
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("index=")));
        Self { route, waits }
    }

    /// Counts a finished request by route and code; times it unless it waits.
    pub fn record(&self, metrics: &HttpMetrics, code: StatusCode, started: Instant) {
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route: self.route,
                code: code.as_u16(),
            })
            .inc();
        if !self.waits {
            metrics
                .duration
                .get_or_create(&RouteLabels { route: self.route })
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Scope;
    use crate::source::manifest::demo_objects;
    use axum::extract::{MatchedPath, Request};

    /// The demo's Services, and their slices unless `slices_listed` is
    /// false: then the index is not synced (slices still on their way).
    fn demo_state(slices_listed: bool) -> AppState {
        let index = Arc::new(Index::default());
        index.expect_parts(["services", "slices"]);
        let demo = demo_objects();
        index.replace(&Scope::All, Some(demo.services), None, "services");
        if slices_listed {
            index.replace(&Scope::All, None, Some(demo.slices), "slices");
        }
        AppState::new(HttpContext {
            index,
            metrics: Arc::default(),
            registry: Arc::default(),
            status: Arc::default(),
            pickers: Arc::default(),
            config: Arc::new(HttpConfig::default()),
            shutdown: CancellationToken::new(),
            lifecycle: Arc::default(),
            watch_slots: Arc::new(Semaphore::new(1)),
            dns_cache: None,
        })
    }

    /// Status and JSON body of `method path` through the router.
    async fn ask(state: &AppState, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(router(state.clone()), request)
            .await
            .unwrap();
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!(
                "{path}: {status} {content_type:?} is not JSON: {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, json)
    }

    /// Every way a request can go wrong at the router gets the one error
    /// shape, with a known code whose status is the answer's.
    #[tokio::test]
    async fn every_error_is_the_one_json_shape_with_its_codes_status() {
        let state = demo_state(true);
        // The one watch stream allowed, held open (never read to its end).
        let request = Request::get("/v1/watch/shop/orders")
            .body(axum::body::Body::empty())
            .unwrap();
        let open_stream = tower::ServiceExt::oneshot(router(state.clone()), request)
            .await
            .unwrap();
        assert_eq!(open_stream.status(), StatusCode::OK);
        for (method, path, code) in [
            (Method::GET, "/v2/services", "not_found"),
            (Method::GET, "/v1/services/shop/orders/x", "not_found"),
            (Method::POST, "/v1/services", "method_not_allowed"),
            (
                Method::DELETE,
                "/v1/services/shop/orders",
                "method_not_allowed",
            ),
            (Method::GET, "/v1/services?x=1", "bad_request"),
            (
                Method::GET,
                "/v1/services/shop/orders?index=-1",
                "bad_request",
            ),
            (
                Method::GET,
                "/v1/services/shop/orders?wait=5s",
                "bad_request",
            ),
            (Method::GET, "/v1/services/Shop/orders", "bad_request"),
            // Not UTF-8 once decoded: axum's own rejection is plain text.
            (Method::GET, "/v1/services/%FF/orders", "bad_request"),
            (Method::GET, "/v1/pick/shop/%C3", "bad_request"),
            (Method::GET, "/v1/watch/%FF/orders", "bad_request"),
            (Method::GET, "/v1/services/shop/gone", "service_not_found"),
            (Method::GET, "/v1/pick/shop/gone", "service_not_found"),
            (
                Method::GET,
                "/v1/pick/shop/orders?port=smtp",
                "no_such_port",
            ),
            (
                Method::GET,
                "/v1/pick/shop/orders?strategy=x",
                "bad_request",
            ),
            (
                Method::GET,
                "/v1/watch/shop/orders?format=xml",
                "bad_request",
            ),
            (
                Method::GET,
                "/v1/watch/shop/orders",
                "too_many_watch_streams",
            ),
            (Method::GET, "/debug/endpoints?x", "bad_request"),
        ] {
            let (status, body) = ask(&state, method.clone(), path).await;
            let known = ErrorCode::ALL
                .iter()
                .find(|c| body["code"] == c.as_str())
                .unwrap_or_else(|| panic!("{method} {path}: unknown code in {body}"));
            assert_eq!(body["code"], code, "{method} {path}: {body}");
            assert_eq!(status, known.status(), "{method} {path}: {body}");
            assert!(body["error"].is_string(), "{method} {path}: {body}");
        }
        let (_, gone) = ask(&state, Method::GET, "/v1/pick/shop/gone").await;
        assert_eq!(
            (&gone["namespace"], &gone["name"], &gone["exists"]),
            (&"shop".into(), &"gone".into(), &false.into()),
            "{gone}"
        );
    }

    /// Before the first sync every route about one Service says so, even
    /// for a Service whose slices have not been listed yet.
    #[tokio::test]
    async fn before_the_first_sync_no_service_is_answered_from_a_part_of_it() {
        let state = demo_state(false);
        assert!(
            state
                .index
                .load()
                .services
                .contains_key(&crate::index::ServiceKey::new("shop", "orders")),
            "the Service is known, its slices are not"
        );
        for path in [
            "/v1/services/shop/orders",
            "/v1/pick/shop/orders",
            "/v1/pick/shop/orders?port=grpc",
            "/v1/pick/shop/gone",
        ] {
            let (status, body) = ask(&state, Method::GET, path).await;
            assert_eq!(
                (status, &body["code"]),
                (StatusCode::SERVICE_UNAVAILABLE, &"not_synced".into()),
                "{path}: {body}"
            );
        }
        let synced = demo_state(true);
        let (status, body) = ask(&synced, Method::GET, "/v1/pick/shop/orders?port=grpc").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// route_label agrees with the router's own matching on every route,
    /// and on paths that only look like one.
    #[tokio::test]
    async fn route_labels_match_the_router() {
        let mut probe = Router::new();
        for route in ROUTES {
            probe = probe.route(
                route,
                get(|matched: MatchedPath| async move { matched.as_str().to_string() }),
            );
        }
        let probe = probe.fallback(|| async { "unmatched" });
        for path in [
            "/v1/services",
            "/v1/services/",
            "/v1/services/ns",
            "/v1/services/ns/name",
            "/v1/services/ns/name/",
            "/v1/services//name",
            "/v1/services/ns/name/x",
            "/v1/watch/ns/name",
            "/v1/watch/ns",
            "/v1/pick/ns/name",
            "/v1/pick/ns/name/more",
            "/v1/other/ns/name",
            "/debug/endpoints",
            "/debug/endpoints/x",
            "/healthz",
            "/healthz/",
            "/readyz",
            "/metrics",
            "/",
            "",
            "/v2/services",
            "/metrics/x",
        ] {
            let request = Request::get(if path.is_empty() { "/" } else { path })
                .body(axum::body::Body::empty())
                .unwrap();
            let response = tower::ServiceExt::oneshot(probe.clone(), request)
                .await
                .unwrap();
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            let expected = if path.is_empty() {
                route_label("/")
            } else {
                route_label(path)
            };
            assert_eq!(
                std::str::from_utf8(&body).unwrap(),
                expected,
                "path {path:?}"
            );
        }
    }
}
