//! The one JSON error every HTTP answer that is not a success uses:
//! `{"error": "...", "code": "..."}`. `code` is stable and machine-readable
//! (clients branch on it; the message is for people) and decides the
//! status, so one code never comes with two statuses. [`ErrorCode::ALL`] is
//! the complete list; a test keeps the README's table of codes equal to it.
//!
//! The routes answer with [`ApiError`] as an axum response; the connection
//! layer, which answers some requests before any route sees them (a head
//! hyper refused), writes the same answer as bytes ([`ApiError::to_http1`]).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;

use crate::index::ServiceKey;

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $text:literal, $status:ident;)+) => {
        /// What went wrong, for machines; see the module docs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl ErrorCode {
            /// Every code the agent can send.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code as it appears in the JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)+
                }
            }

            /// The HTTP status that comes with the code.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }
        }
    };
}

error_codes! {
    /// A malformed request: an unknown or repeated query parameter, a bad
    /// value, a name that is not a DNS label, or a request head that is not
    /// HTTP/1.1.
    BadRequest = "bad_request", BAD_REQUEST;
    /// No such route.
    NotFound = "not_found", NOT_FOUND;
    /// The Service is not served: no such Service, or a ClusterIP Service
    /// without the `kubedisco.io/expose` annotation.
    ServiceNotFound = "service_not_found", NOT_FOUND;
    /// `/v1/pick`: the Service has no port of that name.
    NoSuchPort = "no_such_port", BAD_REQUEST;
    /// `/v1/pick`: the Service has no usable endpoint with that port.
    NoEndpoints = "no_endpoints", SERVICE_UNAVAILABLE;
    /// The agent has not completed its first sync: no answer rather than a
    /// partial one.
    NotSynced = "not_synced", SERVICE_UNAVAILABLE;
    /// Anything but GET (and HEAD).
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    /// A request with a body (every route is a GET); refused before the
    /// body is read, and the connection closes.
    BodyNotAllowed = "body_not_allowed", PAYLOAD_TOO_LARGE;
    /// `--max-watch-streams` watch streams are open already.
    TooManyWatchStreams = "too_many_watch_streams", SERVICE_UNAVAILABLE;
    /// `--http-max-connections` connections are open and no slot came free
    /// within 2 s (or the queue for one is full); the connection closes.
    TooManyConnections = "too_many_connections", SERVICE_UNAVAILABLE;
    /// The request head is larger than `--http-max-header-bytes`; the
    /// connection closes.
    HeaderTooLarge = "header_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE;
    /// The request target is longer than 65 534 bytes (reachable only with
    /// `--http-max-header-bytes` above that); the connection closes.
    UriTooLong = "uri_too_long", URI_TOO_LONG;
}

#[derive(Debug, thiserror::Error)]
#[error("{} ({}): {message}", code.status(), code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The Service a `service_not_found` is about: its `namespace`, `name`
    /// and `exists: false` go into the body too, as in a Service's answer.
    service: Option<ServiceKey>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            service: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn too_many_connections() -> Self {
        Self::new(
            ErrorCode::TooManyConnections,
            "too many connections to the agent; retry shortly",
        )
    }

    pub fn not_synced() -> Self {
        Self::new(
            ErrorCode::NotSynced,
            "the agent has not completed its first sync yet; retry shortly",
        )
    }

    pub fn service_not_found(key: &ServiceKey) -> Self {
        Self {
            service: Some(key.clone()),
            ..Self::new(
                ErrorCode::ServiceNotFound,
                format!(
                    "service {key} is not served: no such Service, or a ClusterIP Service \
                     without the kubedisco.io/expose annotation"
                ),
            )
        }
    }

    fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "error": self.message, "code": self.code.as_str() });
        if let Some(key) = &self.service {
            body["namespace"] = (*key.namespace).into();
            body["name"] = (*key.name).into();
            body["exists"] = false.into();
        }
        body
    }

    /// The same answer as [`IntoResponse`] gives, as HTTP/1.1 bytes with
    /// `Connection: close` and a `Date`, for a connection that writes it
    /// itself and then closes.
    pub fn to_http1(self) -> Vec<u8> {
        let status = self.status();
        let (parts, body) = self.into_response().into_parts();
        // The body is a JSON value already in memory: ready at once.
        let body = axum::body::to_bytes(body, usize::MAX)
            .now_or_never()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        let mut header_line = |name: &str, value: &[u8]| {
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value);
            bytes.extend_from_slice(b"\r\n");
        };
        for (name, value) in &parts.headers {
            header_line(name.as_str(), value.as_bytes());
        }
        header_line(
            header::CONTENT_LENGTH.as_str(),
            body.len().to_string().as_bytes(),
        );
        header_line(header::CONNECTION.as_str(), b"close");
        header_line(
            header::DATE.as_str(),
            httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
        );
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&body);
        bytes
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of error codes: `| `code` | status | ... |` rows.
    fn readme_codes() -> Vec<(String, u16)> {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("| code | status | when |")
            .nth(1)
            .expect("the README has a table of error codes");
        table
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells[1].trim_matches('`').to_string();
                let status = cells[2].parse().unwrap_or_else(|_| panic!("{line}"));
                (code, status)
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_code_with_its_status_and_nothing_else() {
        let listed = readme_codes();
        let sent: Vec<(String, u16)> = ErrorCode::ALL
            .iter()
            .map(|code| (code.as_str().to_string(), code.status().as_u16()))
            .collect();
        assert_eq!(listed, sent);
    }

    #[test]
    fn codes_are_unique_and_every_one_is_an_error_status() {
        let mut texts: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn the_wire_form_is_the_response_and_closes() {
        let key = ServiceKey::new("shop", "gone");
        let bytes = ApiError::service_not_found(&key).to_http1();
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 404 Not Found"));
        let headers: Vec<&str> = lines.collect();
        for expected in [
            "content-type: application/json",
            &format!("content-length: {}", body.len()),
            "connection: close",
        ] {
            assert!(headers.contains(&expected), "{expected} in {headers:?}");
        }
        assert!(
            headers.iter().any(|h| h.starts_with("date: ")),
            "{headers:?}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "service_not_found");
        assert_eq!(json["namespace"], "shop");
        assert_eq!(json["name"], "gone");
        assert_eq!(json["exists"], false);
        assert!(json["error"].as_str().unwrap().contains("shop/gone"));

        let unavailable = String::from_utf8(ApiError::not_synced().to_http1()).unwrap();
        assert!(unavailable.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(
            unavailable.contains("\r\nretry-after: 1\r\n"),
            "{unavailable}"
        );
    }
}
