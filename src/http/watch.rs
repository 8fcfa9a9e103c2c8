//! `GET /v1/watch/{namespace}/{name}`: the Service's full state first, then
//! its full state again after every change, until the client goes away.
//!
//! NDJSON by default (`{"type":"state","service":{...}}` per line); SSE when
//! the client sends `Accept: text/event-stream` or `?format=sse`. An idle
//! stream carries a heartbeat every 15 s so that proxies and clients can
//! tell a quiet Service from a dead connection. Every state is complete, so
//! a client never has to apply diffs, and one that misses a state (slow
//! reader) simply gets the newest.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::query::{self, ServicePath};
use super::view::{ServiceView, Staleness};
use super::{ApiError, AppState, ErrorCode};
use crate::index::ServiceKey;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    NdJson,
    Sse,
}

/// Keeps the open-streams gauge honest however the stream ends.
struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct WatchState {
    app: AppState,
    key: ServiceKey,
    changes: watch::Receiver<u64>,
    /// The revision of the last state sent; None before the first.
    sent: Option<(u64, bool)>,
    format: Format,
    _guard: StreamGuard,
    /// This stream's place under `--max-watch-streams`.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

pub async fn watch(
    State(app): State<AppState>,
    ServicePath(key): ServicePath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = query::parse(raw.as_deref(), &["format"])?;
    let format = match params.get("format").map(String::as_str) {
        Some("sse") => Format::Sse,
        Some("ndjson") => Format::NdJson,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid format {other:?}: use ndjson or sse"
            )));
        }
        None => {
            let wants_sse = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/event-stream"));
            if wants_sse {
                Format::Sse
            } else {
                Format::NdJson
            }
        }
    };
    let Ok(slot) = app.watch_slots.clone().try_acquire_owned() else {
        app.metrics.record_rejected("watch_streams");
        return Err(ApiError::new(
            ErrorCode::TooManyWatchStreams,
            "too many open watch streams (--max-watch-streams); retry later or use blocking queries",
        ));
    };
    let changes = app.index.notifier().subscribe(&key);
    app.metrics.watch_streams.inc();
    let state = WatchState {
        _guard: StreamGuard(app.metrics.watch_streams.clone()),
        _slot: slot,
        app,
        key,
        changes,
        sent: None,
        format,
    };
    let body = Body::from_stream(stream::unfold(state, next_frame));
    let content_type = match format {
        Format::NdJson => "application/x-ndjson",
        Format::Sse => "text/event-stream",
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Produces the next frame: a state when something changed, else a
/// heartbeat; None ends the stream (agent shutting down).
async fn next_frame(
    mut state: WatchState,
) -> Option<(Result<Bytes, std::convert::Infallible>, WatchState)> {
    let heartbeat = state.app.config.heartbeat;
    if state.sent.is_none() && !state.app.index.load().synced {
        // Full state first, but only a true one: wait for the first sync,
        // with heartbeats meanwhile so the client knows the stream lives.
        tokio::select! {
            _ = state.app.index.wait_synced() => {}
            _ = tokio::time::sleep(heartbeat) => {
                let frame = heartbeat_frame(state.format);
                return Some((Ok(frame), state));
            }
            _ = state.app.shutdown.cancelled() => return None,
        }
    }
    loop {
        let snapshot = state.app.index.load();
        let staleness = Staleness::of(&state.app.status);
        let revision = snapshot.revision_of(&state.key);
        if state.sent != Some((revision, staleness.stale)) {
            state.sent = Some((revision, staleness.stale));
            let view_json = match snapshot.services.get(&state.key) {
                // Every stream on this Service shares one encoding per change.
                Some(service) if !staleness.stale => service.encoded.get_or_init(|| {
                    super::services::encode(&ServiceView::found(service, staleness))
                }),
                Some(service) => super::services::encode(&ServiceView::found(service, staleness)),
                None => super::services::encode(&ServiceView::missing(
                    &state.key.namespace,
                    &state.key.name,
                    revision,
                    staleness,
                )),
            };
            let frame = encode_state(state.format, &view_json, revision);
            return Some((Ok(frame), state));
        }
        tokio::select! {
            changed = state.changes.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            _ = tokio::time::sleep(heartbeat) => {
                let frame = heartbeat_frame(state.format);
                return Some((Ok(frame), state));
            }
            _ = state.app.shutdown.cancelled() => return None,
        }
    }
}

fn heartbeat_frame(format: Format) -> Bytes {
    match format {
        Format::NdJson => Bytes::from_static(b"{\"type\":\"heartbeat\"}\n"),
        Format::Sse => Bytes::from_static(b": heartbeat\n\n"),
    }
}

/// A state frame around a Service view already encoded as JSON.
fn encode_state(format: Format, view_json: &[u8], revision: u64) -> Bytes {
    const OPEN: &[u8] = b"{\"type\":\"state\",\"service\":";
    let mut frame = Vec::with_capacity(view_json.len() + OPEN.len() + 48);
    if format == Format::Sse {
        frame.extend_from_slice(format!("event: state\nid: {revision}\ndata: ").as_bytes());
    }
    frame.extend_from_slice(OPEN);
    frame.extend_from_slice(view_json);
    frame.push(b'}');
    frame.extend_from_slice(match format {
        Format::NdJson => b"\n",
        Format::Sse => b"\n\n",
    });
    frame.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_frames_wrap_the_view_as_json() {
        let view = br#"{"namespace":"shop","name":"web","revision":7}"#;
        let line = encode_state(Format::NdJson, view, 7);
        assert!(line.ends_with(b"}\n"));
        let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(event["type"], "state");
        assert_eq!(event["service"]["name"], "web");

        let sse = encode_state(Format::Sse, view, 7);
        let text = std::str::from_utf8(&sse).unwrap();
        let data = text
            .strip_prefix("event: state\nid: 7\ndata: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .expect("an SSE event with id and data");
        let event: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(event["service"]["revision"], 7);
    }
}
