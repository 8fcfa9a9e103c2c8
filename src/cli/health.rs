//! `kubedisco health [--ready]`: exit 0 when a running agent is alive (or
//! ready), 1 otherwise, with one line saying why. For exec probes (the
//! sidecar's startup probe) and scripts; it prints nothing on success.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::dump::{DEFAULT_ADDR, base_url};

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The agent's HTTP address (URL or host:port).
    #[arg(long, env = "KUBEDISCO_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Ask whether the agent is ready (synced) instead of merely alive.
    #[arg(long)]
    pub ready: bool,
    /// Give up when the agent has not answered within this time.
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: &HealthArgs) -> ExitCode {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let url = format!("{}{path}", base_url(&args.addr));
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(args.timeout)
                    .build()
                    .map_err(|e| e.to_string())?;
                let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}: {body}"))
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kubedisco health: {url}: {error}");
            ExitCode::FAILURE
        }
    }
}
