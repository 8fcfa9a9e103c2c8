//! The xDS front end: the Aggregated Discovery Service (state of the world)
//! that gRPC's built-in xDS client speaks, so `xds:///<svc>.<ns>:<port>`
//! works in every gRPC language with no kubedisco library.
//!
//! - `names`: what a resource name means (Service and port).
//! - `resources`: the Envoy v3 Listener, Cluster and ClusterLoadAssignment
//!   of one Service port.
//! - `policy`: a Service's balancing policy and outlier detection.
//! - `stream`: one client's ADS stream (watches, versions, ACK/NACK).
//! - [`bootstrap`]: the bootstrap JSON gRPC clients read.
//! - [`metrics`]: the front end's series.
//!
//! Like `dns` and `http`, it reads published index snapshots and per-Service
//! wake-ups only: it never writes the index and never talks to the API
//! server. Binding the socket and wiring it in is `agent`'s job.

pub mod bootstrap;
pub mod metrics;
mod names;
mod policy;
pub mod resources;
mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub use self::metrics::XdsMetrics;
use crate::index::Index;

/// What every stream shares.
pub(crate) struct XdsContext {
    pub(crate) index: Arc<Index>,
    pub(crate) metrics: Arc<XdsMetrics>,
    /// The zone the long resource-name form ends in (`cluster.local`).
    pub(crate) cluster_domain: String,
    /// Ends every stream (clients reconnect, to the next agent).
    pub(crate) shutdown: CancellationToken,
}

/// Why the xDS server stopped.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("xDS server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

struct Ads(Arc<XdsContext>);

type ResponseStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        // A few responses of slack; a client that reads none of them holds
        // its own stream's task only.
        let (tx, rx) = mpsc::channel(4);
        let stream = stream::Stream::new(self.0.clone(), tx);
        tokio::spawn(stream.run(request.into_inner()));
        let responses = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|response| (response, rx))
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "kubedisco serves state-of-the-world ADS only (what gRPC clients speak)",
        ))
    }
}

/// Serves ADS on `listener` until `shutdown`; every stream ends then.
pub async fn serve(
    listener: TcpListener,
    index: Arc<Index>,
    metrics: Arc<XdsMetrics>,
    cluster_domain: String,
    shutdown: CancellationToken,
) -> Result<(), XdsError> {
    let context = Arc::new(XdsContext {
        index,
        metrics,
        cluster_domain,
        shutdown: shutdown.clone(),
    });
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            // Pushes are small and latency is the point.
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    });
    tonic::transport::Server::builder()
        // Finds clients that vanished without a FIN (node rebooted), so
        // their streams do not stay counted forever.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(AggregatedDiscoveryServiceServer::new(Ads(context)))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(XdsError::Serve)
}
