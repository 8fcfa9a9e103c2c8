//! The HTTP front end: JSON API, watch streams, picks, health and metrics.
//!
//! - [`services`]: `/v1/services`, `/v1/services/{ns}/{name}` (blocking
//!   queries with `?index=&wait=`).
//! - [`watch`]: `/v1/watch/{ns}/{name}`, NDJSON or SSE.
//! - [`pick`]: `/v1/pick/{ns}/{name}` (one endpoint).
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, `/debug/endpoints`.
//! - [`view`]: the JSON shapes, shared by the routes above.
//! - [`error`]: the one JSON error shape every route uses.
//! - [`server`]: the accept loop and connection limits (cap with idle
//!   eviction, header timeout and size, idle timeout, lame duck).
//!
//! Handlers only read [`Index`] snapshots; nothing here talks to Kubernetes.

pub mod error;
pub mod ops;
pub mod pick;
pub mod query;
pub mod server;
pub mod services;
pub mod view;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::balance::Pickers;
use crate::handover::Lifecycle;
use crate::index::Index;
use crate::metrics::{Metrics, RequestLabels, RouteLabels};
use crate::source::status::SourceStatus;
pub use error::ApiError;

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
    pub metrics: Arc<Metrics>,
    pub status: Arc<SourceStatus>,
    pub pickers: Arc<Pickers>,
    pub config: Arc<HttpConfig>,
    /// Fires on shutdown: blocking queries answer at once, streams end.
    pub shutdown: CancellationToken,
    /// Draining (SIGTERM): `/readyz` says 503 while answers go on.
    pub lifecycle: Arc<Lifecycle>,
    /// One permit per open watch stream (`--max-watch-streams`).
    pub watch_slots: Arc<Semaphore>,
}

/// Every route, in the order of [`router`]; also the `route` label of the
/// request metrics.
const ROUTES: [&str; 8] = [
    "/v1/services",
    "/v1/services/{namespace}/{name}",
    "/v1/watch/{namespace}/{name}",
    "/v1/pick/{namespace}/{name}",
    "/debug/endpoints",
    "/healthz",
    "/readyz",
    "/metrics",
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), refuse_bodies))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
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
    server::serve(listener, router(state), config, metrics, shutdown).await
}

/// Every route is a GET: a request with a body is refused before a byte of
/// the body is read (the connection then closes; nothing is buffered).
async fn refuse_bodies(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if has_body {
        state.metrics.record_http_rejected("body");
        let mut response = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted: every route is a GET",
        )
        .with_code("body_not_allowed")
        .into_response();
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(request).await
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such route: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{method} is not allowed on {}; use GET",
        uri.path()
    ))
}

/// Counts every request by route and code; times the ones that do not wait
/// on purpose (blocking queries and streams would drown the histogram).
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|matched| ROUTES.into_iter().find(|route| *route == matched.as_str()))
        .unwrap_or("unmatched");
    let waits = route.starts_with("/v1/watch")
        || request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("index=")));
    let started = Instant::now();
    let response = next.run(request).await.into_response();
    state
        .metrics
        .http_requests
        .get_or_create(&RequestLabels {
            route,
            code: response.status().as_u16(),
        })
        .inc();
    if !waits {
        state
            .metrics
            .http_duration
            .get_or_create(&RouteLabels { route })
            .observe(started.elapsed().as_secs_f64());
    }
    response
}
