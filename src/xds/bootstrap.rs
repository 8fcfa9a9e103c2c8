//! The bootstrap JSON a gRPC xDS client reads (`GRPC_XDS_BOOTSTRAP` names
//! a file, `GRPC_XDS_BOOTSTRAP_CONFIG` holds it): the agent as the one xDS
//! server, plaintext (it is node-local), and the node's id and locality.

use serde_json::{Value, json};

/// Who the client is and where it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapNode {
    pub id: String,
    pub zone: Option<String>,
}

/// The bootstrap for clients of the agent at `server` (`host:port`).
pub fn bootstrap(server: &str, node: &BootstrapNode) -> Value {
    let mut node_json = json!({ "id": node.id });
    if let Some(zone) = &node.zone {
        node_json["locality"] = json!({ "zone": zone });
    }
    json!({
        "xds_servers": [{
            "server_uri": server,
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"],
        }],
        "node": node_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_agent_and_the_node() {
        let node = BootstrapNode {
            id: "pod-a".into(),
            zone: Some("z1".into()),
        };
        let json = bootstrap("169.254.20.10:18000", &node);
        assert_eq!(json["xds_servers"][0]["server_uri"], "169.254.20.10:18000");
        assert_eq!(
            json["xds_servers"][0]["channel_creds"][0]["type"],
            "insecure"
        );
        assert_eq!(json["node"]["id"], "pod-a");
        assert_eq!(json["node"]["locality"]["zone"], "z1");
        let plain = bootstrap("127.0.0.1:18000", &BootstrapNode::default());
        assert!(plain["node"].get("locality").is_none());
    }
}
