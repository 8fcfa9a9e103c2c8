//! This node's zone, read once at start from its Node object. Independent
//! of the watchers: the agent asks before the source starts.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

/// Reads this node's zone from its Node's `topology.kubernetes.io/zone`
/// label. None (with a warning) when the Node cannot be read: the agent then
/// runs without a zone rather than not at all.
pub async fn zone_of_node(client: &Client, node: &str) -> Option<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let lookup = tokio::time::timeout(Duration::from_secs(10), nodes.get_metadata(node)).await;
    match lookup {
        Ok(Ok(meta)) => {
            let zone = meta.labels().get("topology.kubernetes.io/zone").cloned();
            match &zone {
                Some(zone) => info!(node, zone, "zone read from the Node"),
                None => warn!(
                    node,
                    "the Node has no topology.kubernetes.io/zone label; running without a zone"
                ),
            }
            zone
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
            warn!(
                node,
                "RBAC forbids get on nodes: running without a zone (grant it, pass --zone, or --zone-from-node=false)"
            );
            None
        }
        Ok(Err(error)) => {
            warn!(
                node,
                "cannot read the Node for its zone: {error}; running without a zone"
            );
            None
        }
        Err(_) => {
            warn!(
                node,
                "reading the Node for its zone timed out; running without a zone"
            );
            None
        }
    }
}
