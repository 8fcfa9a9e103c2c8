//! The router as hyper's service: keeps the connection's slot busy from a
//! request's head to its response's end, counts and times requests, and
//! refuses bodies. Knows nothing of sockets or timers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tower::ServiceExt;

use super::super::RequestClass;
use super::super::metrics::HttpMetrics;
use super::Direct;
use super::socket::HeadClock;
use crate::connlimit::Slot;

/// The router as a hyper service that marks its connection busy from the
/// request's head until the response body's end (a watch stream keeps its
/// connection busy; a finished request leaves it idle, so evictable).
///
/// It also counts and times every request, and refuses bodies, here rather
/// than in axum middleware: two middleware layers cost as much per request
/// as the rest of the route.
pub(super) struct Tracked {
    pub(super) router: Router,
    pub(super) direct: Direct,
    pub(super) slot: Arc<Slot>,
    pub(super) head: Arc<HeadClock>,
    pub(super) metrics: Arc<HttpMetrics>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = hyper::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.slot.busy();
        self.head.head_complete();
        let busy = Busy(self.slot.clone(), self.head.clone());
        let started = Instant::now();
        let class = RequestClass::of(request.uri());
        let immediate = super::super::refuse_body(request.headers(), &self.metrics)
            .or_else(|| (self.direct)(request.method(), request.uri()));
        let router = self.router.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = match immediate {
                Some(response) => response,
                None => router.oneshot(request.map(Body::new)).await?,
            };
            class.record(&metrics, response.status(), started);
            Ok(response.map(|body| {
                Body::new(Guarded {
                    inner: body,
                    _busy: busy,
                })
            }))
        })
    }
}

/// Marks the connection idle again when dropped.
pub(super) struct Busy(Arc<Slot>, Arc<HeadClock>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.1.response_done();
        self.0.idle();
    }
}

/// A response body that holds its connection busy until it is done.
pub(super) struct Guarded {
    pub(super) inner: Body,
    _busy: Busy,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
