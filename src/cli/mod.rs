//! The command line: `kubedisco agent`, `dump`, `health`, `resolve`,
//! `xds-bootstrap`, `version`.
//!
//! Every flag can also come from the environment as `KUBEDISCO_<FLAG>`
//! (e.g. `--http-addr` ↔ `KUBEDISCO_HTTP_ADDR`); a flag on the command line
//! wins. Invalid values exit with status 2 and a message naming the flag.

mod args;
mod checked;
mod choices;
pub mod dump;
pub mod health;
pub mod resolve;
pub mod xds_bootstrap;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::AgentArgs;
pub use dump::DumpArgs;
pub use health::HealthArgs;
pub use resolve::ResolveArgs;
pub use xds_bootstrap::XdsBootstrapArgs;

#[derive(Debug, Parser)]
#[command(
    name = "kubedisco",
    version,
    about = "Node-local service discovery for Kubernetes: headless Service endpoints over local DNS and HTTP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch the source, serve DNS and HTTP.
    Agent(Box<AgentArgs>),
    /// Print the cache of a running agent.
    Dump(DumpArgs),
    /// Exit 0 when a running agent is alive (--ready: synced), else 1.
    Health(HealthArgs),
    /// Ask the agent's DNS like dig: print the whole answer (0: NOERROR or
    /// NXDOMAIN; 1: an error status or no answer; 2: bad arguments).
    Resolve(ResolveArgs),
    /// Print the bootstrap JSON of a gRPC xDS client of the agent
    /// (for GRPC_XDS_BOOTSTRAP_CONFIG).
    XdsBootstrap(XdsBootstrapArgs),
    /// Print the version.
    Version,
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("kubedisco {}", crate::VERSION);
            ExitCode::SUCCESS
        }
        Command::Dump(args) => dump::run(&args),
        Command::Health(args) => health::run(&args),
        Command::Resolve(args) => resolve::run(&args),
        Command::XdsBootstrap(args) => xds_bootstrap::run(&args),
        Command::Agent(args) => {
            let (logging, config) = match args.into_parts() {
                Ok(parts) => parts,
                Err(refused) => {
                    let _ = refused.print();
                    return ExitCode::from(2);
                }
            };
            if let Err(message) = crate::logging::init(logging.format, &logging.level) {
                eprintln!("kubedisco: {message}");
                return ExitCode::from(2);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("kubedisco: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::agent::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("kubedisco: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
