//! Health, readiness, metrics and the debug dump.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::view::DebugService;
use super::{ApiError, AppState, query};

/// Liveness: the process answers. Never depends on the API server, so an
/// outage does not get the agent restarted (and its cache thrown away).
pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok", "version": crate::VERSION })).into_response()
}

/// Readiness: the first full sync is done (or a snapshot was loaded at
/// start), and the agent is not shutting down. Staying ready through a
/// later outage is deliberate: a slightly stale answer beats none.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let snapshot = state.index.load();
    let failures = state.status.failures();
    let staleness = super::view::Staleness::of(&state.status);
    let draining = state.lifecycle.is_draining();
    let ready = snapshot.synced && !draining;
    let body = serde_json::json!({
        "ready": ready,
        "synced": snapshot.synced,
        "draining": draining,
        "stale": staleness.stale,
        "staleSeconds": staleness.seconds,
        "staleReason": staleness.reason,
        "failures": failures,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &state.registry);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// Everything in the index, served or not; what `kubedisco dump` prints.
pub async fn debug_endpoints(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    query::parse(raw.as_deref(), &[])?;
    let snapshot = state.index.load();
    let services: Vec<DebugService<'_>> = snapshot
        .zone
        .sorted()
        .into_iter()
        .map(|s| DebugService::new(s, snapshot.services.get(&s.key).map(|s| &**s)))
        .collect();
    let failures = state.status.failures();
    Ok(Json(serde_json::json!({
        "synced": snapshot.synced,
        "stale": !failures.is_empty(),
        "staleSeconds": super::view::Staleness::of(&state.status).seconds,
        "staleReason": super::view::Staleness::of(&state.status).reason,
        "failures": failures,
        "generation": snapshot.generation,
        "services": services,
    }))
    .into_response())
}

fn dns_cache(state: &AppState) -> Result<&crate::dns::CacheView, ApiError> {
    state.dns_cache.as_ref().ok_or_else(|| {
        ApiError::new(
            super::ErrorCode::NotFound,
            "this process serves no DNS, so it has no DNS cache",
        )
    })
}

/// The DNS cache of forwarded names with each entry's remaining TTL; what
/// `kubedisco dump --cache` prints. Read-only: listing changes nothing.
pub async fn debug_cache(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    query::parse(raw.as_deref(), &[])?;
    let cache = dns_cache(&state)?;
    let names = cache.list();
    Ok(Json(serde_json::json!({
        "entries": names.len(),
        "names": names,
    }))
    .into_response())
}

/// The DNS cache's entries whole (answer bytes and age), which the next
/// agent of a rolling update reads before it joins the ports, so that it
/// starts warm. Read-only.
pub async fn debug_cache_export(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    query::parse(raw.as_deref(), &[])?;
    let cache = dns_cache(&state)?;
    let entries = cache.export();
    Ok(Json(serde_json::json!({ "entries": entries })).into_response())
}
