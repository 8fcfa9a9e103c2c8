//! The JSON error every route answers with: `{"error": "...", "code": "..."}`
//! and a status. `code` is stable and machine-readable (clients branch on
//! it; the message is for people): `bad_request`, `not_found`,
//! `service_not_found`, `no_such_port`, `no_endpoints`, `not_synced`,
//! `method_not_allowed`, `body_not_allowed`, `too_many_watch_streams`,
//! `too_many_connections`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "error",
        };
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The same error with a more specific machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// The connection cap is reached and no slot came free in time.
    pub fn too_many_connections() -> Self {
        Self::unavailable("too many connections to the agent; retry shortly")
            .with_code("too_many_connections")
    }
    /// The JSON body, for the few answers written without the router.
    pub fn json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body()).unwrap_or_default()
    }
    fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.message, "code": self.code })
    }
    pub fn not_synced() -> Self {
        Self::unavailable("the agent has not completed its first sync yet; retry shortly")
            .with_code("not_synced")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
