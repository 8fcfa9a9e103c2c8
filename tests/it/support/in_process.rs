//! An agent inside the test's own runtime, started from a
//! `kubedisco::agent::Config`: no binary, no process, nothing to kill. For
//! tests that need no process boundary; signals, exit codes, logs and
//! restarts need the real process ([`super::Agent`]).
//!
//! It gets a loopback address of its own ([`own_loopback_ip`]) and lets
//! the kernel pick both ports, so agents of parallel tests never share a
//! port. Dropping the handle shuts the agent down.

use std::net::SocketAddr;
use std::time::Duration;

use kubedisco::agent::{Agent, Config, Source};
use kubedisco::source::manifest::ManifestOrigin;
use serde_json::Value;

use super::agent::own_loopback_ip;
use super::eventually;

pub struct InProcessAgent {
    /// Held for its lifetime: dropping it shuts the agent down.
    _agent: Agent,
    pub http: SocketAddr,
    pub dns: SocketAddr,
    pub client: reqwest::Client,
}

impl InProcessAgent {
    /// The built-in demo manifests, as `kubedisco agent --source demo`
    /// serves them; returns once the agent is ready.
    pub async fn demo() -> InProcessAgent {
        InProcessAgent::start(Config {
            source: Source::Manifests {
                origin: ManifestOrigin::Demo,
                poll_interval: Duration::from_secs(1),
            },
            ..Config::default()
        })
        .await
    }

    /// Starts an agent from `config`, on addresses of its own (whatever
    /// `config` says about them), and waits until `/readyz` says it is
    /// ready.
    pub async fn start(config: Config) -> InProcessAgent {
        let ip = own_loopback_ip();
        let agent = Agent::start(Config {
            http_addr: SocketAddr::new(ip, 0),
            dns_addr: SocketAddr::new(ip, 0),
            ..config
        })
        .await
        .expect("the agent starts");
        let started = InProcessAgent {
            http: agent.http_addr(),
            dns: agent.dns_addr(),
            _agent: agent,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .unwrap(),
        };
        eventually("the in-process agent to be ready", || async {
            match started.get("/readyz").await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        started
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// GET a path; the status and the body as JSON (Null when not JSON).
    pub async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        get_json(&self.client, &self.url(path)).await
    }
}

/// GET `url`; the status and the body as JSON (Null when not JSON). The
/// same as [`super::Agent::get`], whose body can become a call of this.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Result<(u16, Value), String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}
