//! `kubedisco xds-bootstrap`: prints the bootstrap JSON a gRPC client needs
//! to use the agent's xDS server (`GRPC_XDS_BOOTSTRAP_CONFIG`), so an app
//! dials `xds:///<svc>.<ns>:<port>` and nothing else.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

use crate::xds::bootstrap::{BootstrapNode, bootstrap};

#[derive(Debug, Args)]
pub struct XdsBootstrapArgs {
    /// The agent's xDS address (its --xds-addr).
    #[arg(long, env = "KUBEDISCO_XDS_ADDR", default_value = "127.0.0.1:18000")]
    pub xds_addr: SocketAddr,
    /// The client's node id (logged by the agent with each NACK); default
    /// $POD_NAME, else $HOSTNAME.
    #[arg(long, env = "KUBEDISCO_NODE_ID")]
    pub node_id: Option<String>,
    /// The client's zone (the node locality gRPC reports); the agent's own
    /// tiers decide priorities either way.
    #[arg(long, env = "KUBEDISCO_ZONE")]
    pub zone: Option<String>,
}

pub fn run(args: &XdsBootstrapArgs) -> ExitCode {
    let id = args
        .node_id
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| "kubedisco-client".into());
    let node = BootstrapNode {
        id,
        zone: args.zone.clone().filter(|zone| !zone.is_empty()),
    };
    println!("{}", bootstrap(&args.xds_addr.to_string(), &node));
    ExitCode::SUCCESS
}
