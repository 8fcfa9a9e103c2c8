//! List and watch in Kubernetes' protobuf encoding ([`super::proto`]),
//! yielding what kube-runtime's watcher yields, so the rest of the source
//! (sync parts, error accounting, backoff, outage probes) cannot tell the
//! two apart.
//!
//! The states and transitions are kube-runtime's (`watcher::watcher`):
//! a streaming list (`sendInitialEvents`, ended by the bookmark annotated
//! `k8s.io/initial-events-end`) or a paginated list, then a watch from the
//! listed resourceVersion that is resumed when the API server ends it and
//! started over with a fresh list after `410 Gone`. Only the encoding
//! differs: requests ask for `application/vnd.kubernetes.protobuf`, and an
//! answer in another encoding is an error that says what to do
//! (`--api-encoding json`). Every request carries the watch's label
//! selector, and the body bytes received are counted.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use http::{Request, header};
use http_body_util::BodyExt;
use kube::Client;
use kube::Resource;
use kube::client::Body;
use kube::core::Status;
use kube::runtime::watcher::{Error, Event};
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, error};

use super::proto::{self, MEDIA_TYPE, ProtoError};

/// A kind that can be read from its protobuf message.
pub trait ProtoResource: Resource<DynamicType = ()> + Sized + Send + 'static {
    fn from_protobuf(message: &[u8]) -> Result<Self, ProtoError>;
}

impl ProtoResource for super::slice::Slice {
    fn from_protobuf(message: &[u8]) -> Result<Self, ProtoError> {
        Self::from_protobuf(message)
    }
}

impl ProtoResource for super::service::LeanService {
    fn from_protobuf(message: &[u8]) -> Result<Self, ProtoError> {
        Self::from_protobuf(message)
    }
}

/// The API server ends a watch after this long (kube-runtime's value);
/// the watch then resumes from the last resourceVersion.
const WATCH_TIMEOUT_SECS: u64 = 290;
/// With bookmarks on, a healthy watch says something well within this;
/// silence this long means a dead connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(WATCH_TIMEOUT_SECS + 30);
/// Objects per page of a paginated list (kube-runtime's default).
const PAGE_SIZE: u32 = 500;
/// The largest watch frame accepted: far above any object etcd stores.
const MAX_FRAME: usize = 64 << 20;
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

enum State<K> {
    Empty,
    InitPage {
        continue_token: Option<String>,
        objects: VecDeque<K>,
        resource_version: Option<String>,
    },
    InitialWatch {
        stream: Frames,
    },
    InitListed {
        resource_version: String,
    },
    Watching {
        resource_version: String,
        stream: Frames,
    },
}

struct Watcher {
    client: Client,
    /// `/api/v1/services`, `/apis/discovery.k8s.io/v1/namespaces/x/endpointslices`.
    path: String,
    /// `&labelSelector=...`, or empty.
    selector: String,
    streaming: bool,
    /// Body bytes received, lists and watches.
    received: Counter,
}

/// A watch stream of the `K` in `namespace` (all when None) that match
/// `label_selector` (all when None), with a streaming or a paginated initial
/// list; body bytes are counted in `received`.
pub fn watcher<K: ProtoResource>(
    client: Client,
    namespace: Option<&str>,
    label_selector: Option<&str>,
    streaming: bool,
    received: Counter,
) -> impl Stream<Item = Result<Event<K>, Error>> + Send + 'static {
    let watcher = Watcher {
        client,
        path: K::url_path(&(), namespace),
        selector: label_selector
            .map(|selector| format!("&labelSelector={}", encode(selector)))
            .unwrap_or_default(),
        streaming,
        received,
    };
    futures::stream::unfold(
        (watcher, State::<K>::Empty),
        |(watcher, mut state)| async move {
            loop {
                let (event, next) = watcher.step(state).await;
                state = next;
                if let Some(event) = event {
                    return Some((event, (watcher, state)));
                }
            }
        },
    )
}

type Step<K> = (Option<Result<Event<K>, Error>>, State<K>);

impl Watcher {
    async fn step<K: ProtoResource>(&self, state: State<K>) -> Step<K> {
        match state {
            State::Empty if self.streaming => {
                let query = format!(
                    "watch=true&timeoutSeconds={WATCH_TIMEOUT_SECS}&allowWatchBookmarks=true\
                     &sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                );
                match self.open(&query).await {
                    Ok(stream) => (Some(Ok(Event::Init)), State::InitialWatch { stream }),
                    Err(err) => (Some(Err(Error::WatchStartFailed(err))), State::Empty),
                }
            }
            State::Empty => (
                Some(Ok(Event::Init)),
                State::InitPage {
                    continue_token: None,
                    objects: VecDeque::new(),
                    resource_version: None,
                },
            ),
            State::InitPage {
                continue_token,
                mut objects,
                resource_version,
            } => {
                if let Some(object) = objects.pop_front() {
                    let state = State::InitPage {
                        continue_token,
                        objects,
                        resource_version,
                    };
                    return (Some(Ok(Event::InitApply(object))), state);
                }
                if continue_token.is_none()
                    && let Some(resource_version) = resource_version
                {
                    return (
                        Some(Ok(Event::InitDone)),
                        State::InitListed { resource_version },
                    );
                }
                match self.list_page::<K>(continue_token.as_deref()).await {
                    Ok((objects, resource_version, continue_token)) => {
                        if resource_version.is_none() && continue_token.is_none() {
                            return (Some(Err(Error::NoResourceVersion)), State::Empty);
                        }
                        let state = State::InitPage {
                            continue_token,
                            objects,
                            resource_version,
                        };
                        (None, state)
                    }
                    Err(err) => (Some(Err(Error::InitialListFailed(err))), State::Empty),
                }
            }
            State::InitialWatch { mut stream } => match stream.next_event::<K>().await {
                Some(Ok(WatchItem::Object(object))) => (
                    Some(Ok(Event::InitApply(object))),
                    State::InitialWatch { stream },
                ),
                Some(Ok(WatchItem::Deleted(_))) => {
                    // Impossible by the API's documentation of streaming lists.
                    error!("a DELETED event during the initial events of a streaming list");
                    (None, State::InitialWatch { stream })
                }
                Some(Ok(WatchItem::Bookmark {
                    resource_version,
                    initial_events_end,
                })) => {
                    if initial_events_end {
                        let state = State::Watching {
                            resource_version,
                            stream,
                        };
                        (Some(Ok(Event::InitDone)), state)
                    } else {
                        (None, State::InitialWatch { stream })
                    }
                }
                Some(Ok(WatchItem::Error(status))) => {
                    let next = if status.code == 410 {
                        State::Empty
                    } else {
                        State::InitialWatch { stream }
                    };
                    (Some(Err(Error::WatchError(status))), next)
                }
                Some(Err(err)) => (Some(Err(Error::WatchFailed(err))), State::Empty),
                None => (None, State::Empty),
            },
            State::InitListed { resource_version } => {
                let query = format!(
                    "watch=true&timeoutSeconds={WATCH_TIMEOUT_SECS}&allowWatchBookmarks=true\
                     &resourceVersion={}",
                    encode(&resource_version)
                );
                match self.open(&query).await {
                    Ok(stream) => (
                        None,
                        State::Watching {
                            resource_version,
                            stream,
                        },
                    ),
                    Err(err) => (
                        Some(Err(Error::WatchStartFailed(err))),
                        State::InitListed { resource_version },
                    ),
                }
            }
            State::Watching {
                resource_version,
                mut stream,
            } => match stream.next_event::<K>().await {
                Some(Ok(WatchItem::Object(object))) => resumed(Event::Apply, object, stream),
                Some(Ok(WatchItem::Deleted(object))) => resumed(Event::Delete, object, stream),
                Some(Ok(WatchItem::Bookmark {
                    resource_version, ..
                })) => (
                    None,
                    State::Watching {
                        resource_version,
                        stream,
                    },
                ),
                Some(Ok(WatchItem::Error(status))) => {
                    let next = if status.code == 410 {
                        State::Empty
                    } else {
                        State::Watching {
                            resource_version,
                            stream,
                        }
                    };
                    (Some(Err(Error::WatchError(status))), next)
                }
                // A broken stream: watch again from where it broke.
                Some(Err(err)) => (
                    Some(Err(Error::WatchFailed(err))),
                    State::InitListed { resource_version },
                ),
                // The API server ended the watch (timeoutSeconds): resume.
                None => (None, State::InitListed { resource_version }),
            },
        }
    }

    fn request(&self, query: &str) -> Request<Body> {
        Request::get(format!("{}?{query}{}", self.path, self.selector))
            .header(header::ACCEPT, MEDIA_TYPE)
            .body(Body::empty())
            .expect("a GET of a valid path is a valid request")
    }

    /// Sends a GET and checks the answer: a success in protobuf, or the
    /// API server's error as [`kube::Error::Api`] (as kube reports it).
    async fn get(&self, query: &str) -> Result<http::Response<Body>, kube::Error> {
        let response = self.client.send(self.request(query)).await?;
        let code = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("no content type")
            .to_string();
        if code.is_success() && content_type.starts_with(MEDIA_TYPE) {
            return Ok(response);
        }
        let status = if code.is_success() {
            // (The body, perhaps a whole list in another encoding, is not read.)
            Status::failure(
                &format!(
                    "the API server (or a proxy in front of it) answered {content_type} to a \
                     request for {MEDIA_TYPE}; run the agent with --api-encoding json"
                ),
                "UnsupportedMediaType",
            )
        } else {
            let body = response.into_body().collect_bytes().await?;
            error_status(code.as_u16(), &content_type, &body)
        };
        Err(kube::Error::Api(Box::new(status)))
    }

    async fn open(&self, query: &str) -> Result<Frames, kube::Error> {
        let response = self.get(query).await?;
        Ok(Frames {
            body: response.into_body(),
            buffer: BytesMut::new(),
            received: self.received.clone(),
        })
    }

    /// One page of a list: its objects, resourceVersion and continue token.
    async fn list_page<K: ProtoResource>(
        &self,
        continue_token: Option<&str>,
    ) -> Result<(VecDeque<K>, Option<String>, Option<String>), kube::Error> {
        let mut query = format!("limit={PAGE_SIZE}");
        if let Some(token) = continue_token {
            query.push_str("&continue=");
            query.push_str(&encode(token));
        }
        let body = self.get(&query).await?.into_body().collect_bytes().await?;
        self.received.inc_by(body.len() as u64);
        let list = proto::list(&body).map_err(decode_error)?;
        let objects = list
            .items
            .iter()
            .map(|item| K::from_protobuf(item))
            .collect::<Result<VecDeque<K>, _>>()
            .map_err(decode_error)?;
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Ok((
            objects,
            non_empty(list.resource_version),
            non_empty(list.continue_token),
        ))
    }
}

/// A watched change: passed on, and the watch goes on from its
/// resourceVersion (without one, nothing can resume: list again).
fn resumed<K: ProtoResource>(event: fn(K) -> Event<K>, object: K, stream: Frames) -> Step<K> {
    match object.meta().resource_version.clone() {
        Some(resource_version) if !resource_version.is_empty() => (
            Some(Ok(event(object))),
            State::Watching {
                resource_version,
                stream,
            },
        ),
        _ => (Some(Err(Error::NoResourceVersion)), State::Empty),
    }
}

/// The API server's error answer as a Status: protobuf or JSON as it was
/// sent, else its text.
fn error_status(code: u16, content_type: &str, body: &[u8]) -> Status {
    let decoded = if content_type.starts_with(MEDIA_TYPE) {
        proto::unwrap_envelope(body).and_then(proto::status).ok()
    } else {
        serde_json::from_slice::<Status>(body).ok()
    };
    match decoded {
        Some(mut status) => {
            if status.code == 0 {
                status.code = code;
            }
            status
        }
        None => Status::failure(String::from_utf8_lossy(body).trim(), "Unknown").with_code(code),
    }
}

fn decode_error(error: ProtoError) -> kube::Error {
    kube::Error::Service(Box::new(error))
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What one watch frame says.
enum WatchItem<K> {
    /// ADDED or MODIFIED.
    Object(K),
    Deleted(K),
    Bookmark {
        resource_version: String,
        initial_events_end: bool,
    },
    Error(Box<Status>),
}

/// The frames of a watch response body.
struct Frames {
    body: Body,
    buffer: BytesMut,
    received: Counter,
}

impl Frames {
    /// The next frame's bytes; None when the API server ended the stream.
    async fn next_frame(&mut self) -> Option<Result<Bytes, kube::Error>> {
        loop {
            match proto::next_frame(&mut self.buffer, MAX_FRAME) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(error) => return Some(Err(decode_error(error))),
            }
            let chunk = match tokio::time::timeout(IDLE_TIMEOUT, self.body.frame()).await {
                Err(_) => {
                    return Some(Err(kube::Error::Service(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no watch event for {IDLE_TIMEOUT:?}"),
                    )))));
                }
                Ok(None) => {
                    if !self.buffer.is_empty() {
                        debug!(bytes = self.buffer.len(), "watch ended inside a frame");
                    }
                    return None;
                }
                Ok(Some(Err(error))) => return Some(Err(error)),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = chunk.into_data() {
                self.received.inc_by(data.len() as u64);
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    async fn next_event<K: ProtoResource>(&mut self) -> Option<Result<WatchItem<K>, kube::Error>> {
        let frame = match self.next_frame().await? {
            Ok(frame) => frame,
            Err(error) => return Some(Err(error)),
        };
        Some(decode_event(&frame).map_err(decode_error))
    }
}

fn decode_event<K: ProtoResource>(frame: &[u8]) -> Result<WatchItem<K>, ProtoError> {
    let event = proto::watch_event(frame)?;
    Ok(match event.kind {
        "ADDED" | "MODIFIED" => WatchItem::Object(K::from_protobuf(event.object)?),
        "DELETED" => WatchItem::Deleted(K::from_protobuf(event.object)?),
        "BOOKMARK" => {
            let meta = proto::metadata_of(event.object, &[INITIAL_EVENTS_END])?;
            WatchItem::Bookmark {
                resource_version: meta.resource_version.unwrap_or_default(),
                initial_events_end: meta
                    .annotations
                    .is_some_and(|a| a.get(INITIAL_EVENTS_END).is_some_and(|v| v == "true")),
            }
        }
        "ERROR" => WatchItem::Error(Box::new(proto::status(event.object)?)),
        other => return Err(ProtoError(format!("watch event of unknown type {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::super::proto::encode;
    use super::super::slice::Slice;
    use super::*;

    fn frame(kind: &str, object: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        encode::bytes(&mut raw, 1, &encode::envelope(object));
        let mut event = Vec::new();
        encode::text(&mut event, 1, kind);
        encode::bytes(&mut event, 2, &raw);
        event
    }

    fn slice_message(name: &str, rv: &str, annotations: &[(&str, &str)]) -> Vec<u8> {
        let mut slice = Vec::new();
        encode::bytes(
            &mut slice,
            1,
            &encode::meta(name, "ns", rv, &[], annotations),
        );
        slice
    }

    #[test]
    fn watch_events_decode_by_type() {
        let added = decode_event::<Slice>(&frame("ADDED", &slice_message("a", "5", &[]))).unwrap();
        assert!(matches!(added, WatchItem::Object(s) if s.metadata.name.as_deref() == Some("a")));
        let end = decode_event::<Slice>(&frame(
            "BOOKMARK",
            &slice_message("", "9", &[(INITIAL_EVENTS_END, "true")]),
        ))
        .unwrap();
        assert!(matches!(
            end,
            WatchItem::Bookmark { resource_version, initial_events_end: true } if resource_version == "9"
        ));
        let plain =
            decode_event::<Slice>(&frame("BOOKMARK", &slice_message("", "10", &[]))).unwrap();
        assert!(matches!(
            plain,
            WatchItem::Bookmark {
                initial_events_end: false,
                ..
            }
        ));
        assert!(decode_event::<Slice>(&frame("SURPRISE", &[])).is_err());
    }

    /// A proxy that answers JSON to a protobuf request: the error says
    /// what to do, and nothing is applied.
    #[tokio::test]
    async fn a_json_answer_is_an_error_that_names_the_fix() {
        use futures::StreamExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            let body = r#"{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion":"1"},"items":[]}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let mut events = Box::pin(watcher::<Slice>(
            client,
            None,
            None,
            false,
            Counter::default(),
        ));
        assert!(matches!(events.next().await, Some(Ok(Event::Init))));
        match events.next().await {
            Some(Err(Error::InitialListFailed(kube::Error::Api(status)))) => {
                assert!(status.message.contains("--api-encoding json"), "{status:?}");
                assert!(status.message.contains("application/json"), "{status:?}");
            }
            other => panic!("expected the list to fail, got {other:?}"),
        }
    }

    /// Lists and watches alike ask for the selected objects only.
    #[tokio::test]
    async fn every_request_carries_the_label_selector() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let watcher = Watcher {
            client: Client::try_from(config).unwrap(),
            path: "/apis/discovery.k8s.io/v1/endpointslices".into(),
            selector: format!("&labelSelector={}", encode("a=true,!b.io/c")),
            streaming: false,
            received: Counter::default(),
        };
        for query in ["limit=500", "watch=true&resourceVersion=1"] {
            let uri = watcher.request(query).uri().to_string();
            assert!(
                uri.ends_with(&format!("?{query}&labelSelector=a%3Dtrue%2C%21b.io%2Fc")),
                "{uri}"
            );
        }
    }

    #[test]
    fn error_answers_become_statuses() {
        let status = error_status(
            403,
            "application/json",
            br#"{"kind":"Status","message":"forbidden: no","reason":"Forbidden","code":403}"#,
        );
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        let status = error_status(502, "text/html", b"<html>bad gateway</html>\n");
        assert_eq!(status.code, 502);
        assert!(status.message.contains("bad gateway"));
    }
}
