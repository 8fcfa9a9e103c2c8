//! `GET /v1/services` and `GET /v1/services/{namespace}/{name}`.
//!
//! The single-Service route supports Consul-style blocking queries: with
//! `?index=N` it answers once the Service's revision passes N, or when
//! `wait` (default 5m, capped at 10m, plus up to 1/16 jitter so that many
//! clients do not return in lockstep) runs out. Only a change to this Service
//! wakes the request. The revision is in the body and in `X-Kubedisco-Index`.

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;

use super::query::{self, ServicePath};
use super::view::{ServiceList, ServiceView, Staleness};
use super::{ApiError, AppState};
use crate::duration::parse_duration;
use crate::index::{ServiceKey, Snapshot};

pub const INDEX_HEADER: &str = "x-kubedisco-index";

/// The JSON of a Service view (the single-Service answer and, wrapped, a
/// watch stream's state frame).
pub(super) fn encode(view: &ServiceView<'_>) -> bytes::Bytes {
    // Serializing borrowed views cannot fail (string keys, no maps of
    // non-string keys, no failing Serialize impls).
    serde_json::to_vec(view)
        .expect("a service view serializes")
        .into()
}

pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    query::parse(raw.as_deref(), &[])?;
    let snapshot = state.index.load();
    Ok(Json(ServiceList::new(&snapshot, Staleness::of(&state.status))).into_response())
}

/// The blocking part of a request, when it has one.
struct Blocking {
    index: u64,
    wait: Duration,
}

fn blocking_params(
    raw: Option<&str>,
    config: &super::HttpConfig,
) -> Result<Option<Blocking>, ApiError> {
    let params = query::parse(raw, &["index", "wait"])?;
    let wait = match params.get("wait") {
        None => None,
        Some(text) => Some(
            parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("invalid wait: {e} (e.g. wait=30s)")))?,
        ),
    };
    let Some(index_text) = params.get("index") else {
        if wait.is_some() {
            return Err(ApiError::bad_request(
                "wait needs index: pass the revision you have (X-Kubedisco-Index)",
            ));
        }
        return Ok(None);
    };
    let index: u64 = index_text.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid index {index_text:?}: expected a non-negative integer revision"
        ))
    })?;
    let wait = wait.unwrap_or(config.default_wait).min(config.max_wait);
    let jitter = rand::rng().random_range(0..=wait.as_millis() as u64 / 16);
    Ok(Some(Blocking {
        index,
        wait: wait + Duration::from_millis(jitter),
    }))
}

pub async fn get_one(
    State(state): State<AppState>,
    ServicePath(key): ServicePath,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let blocking = blocking_params(raw.as_deref(), &state.config)?;

    let snapshot = match blocking {
        // Index 0 never blocks: it is what a client sends before it knows any.
        Some(Blocking { index, wait }) if index > 0 => wait_past(&state, &key, index, wait).await,
        _ => state.index.load(),
    };
    answer(&snapshot, &key, Staleness::of(&state.status))
}

/// `GET /v1/services/{namespace}/{name}` without parameters, the request
/// clients poll most, answered without the router: the same name checks
/// and the same [`answer`] as [`get_one`], minus routing, extractors and
/// their allocations. None for anything else, and for a request whose
/// answer would be an error about the request itself (percent-encoded or
/// invalid names): the router answers those, so every message stays in one
/// place. The tests check both paths give the same answers.
pub fn get_one_direct(
    state: &AppState,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
) -> Option<Response> {
    if method != axum::http::Method::GET || uri.query().is_some() {
        return None;
    }
    let rest = uri.path().strip_prefix("/v1/services/")?;
    let (namespace, name) = rest.split_once('/')?;
    if name.contains('/') || rest.contains('%') {
        return None;
    }
    query::validate_name("namespace", namespace).ok()?;
    query::validate_name("service name", name).ok()?;
    let key = ServiceKey::new(namespace, name);
    let snapshot = state.index.load();
    Some(
        answer(&snapshot, &key, Staleness::of(&state.status))
            .unwrap_or_else(IntoResponse::into_response),
    )
}

/// Waits until `key`'s revision passes `index`, the wait ends, or the agent
/// shuts down; returns the snapshot to answer from.
async fn wait_past(
    state: &AppState,
    key: &ServiceKey,
    index: u64,
    wait: Duration,
) -> std::sync::Arc<Snapshot> {
    // Subscribe before the first read, so no change can slip in between.
    let mut changes = state.index.notifier().subscribe(key);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let snapshot = state.index.load();
        if snapshot.revision_of(key) > index {
            return snapshot;
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return snapshot;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return state.index.load(),
            _ = state.shutdown.cancelled() => return state.index.load(),
        }
    }
}

fn answer(snapshot: &Snapshot, key: &ServiceKey, stale: Staleness) -> Result<Response, ApiError> {
    // Before the first sync a Service may lack slices still on their way:
    // no answer rather than a partial one.
    if !snapshot.synced {
        return Err(ApiError::not_synced());
    }
    let (mut response, revision) = match snapshot.services.get(key) {
        // The usual answer is the same bytes until the Service changes.
        Some(service) if !stale.stale => (
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                service
                    .encoded
                    .get_or_init(|| encode(&ServiceView::found(service, stale))),
            )
                .into_response(),
            service.revision,
        ),
        Some(service) => (
            Json(ServiceView::found(service, stale)).into_response(),
            service.revision,
        ),
        // A client that blocks with this index wakes when the Service
        // appears: every later revision is larger.
        None => (
            ApiError::service_not_found(key).into_response(),
            snapshot.generation,
        ),
    };
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(revision));
    Ok(response)
}
