//! A real `kubedisco agent` process for a test, and a small client for its
//! HTTP API. The process is killed when the handle drops.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::cluster::kubeconfig;
use super::eventually;
use super::eventually::eventually_within;

pub struct Agent {
    child: Child,
    pub http: SocketAddr,
    pub dns: SocketAddr,
    pub client: reqwest::Client,
    log_path: std::path::PathBuf,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A loopback address of its own for one agent (127.64.0.1–127.127.255.254).
///
/// The agent's sockets use SO_REUSEPORT (for hand-over), so two agents
/// that happened to get the same port from [`free_port`] between its check
/// and their bind would silently share it, each answering half the
/// connections. With an address per agent that needs the same address and
/// the same port.
pub fn own_loopback_ip() -> IpAddr {
    let [a, b, c]: [u8; 3] = rand::random();
    IpAddr::V4(Ipv4Addr::new(127, 64 + (a & 63), b, 1 + c % 254))
}

/// An HTTP and a DNS address for one agent: its own loopback address, and
/// two ports free on it (held together while chosen, so never the same).
pub fn agent_addresses() -> (SocketAddr, SocketAddr) {
    let ip = own_loopback_ip();
    let first = TcpListener::bind((ip, 0)).expect("free port");
    let second = TcpListener::bind((ip, 0)).expect("free port");
    let port = |l: &TcpListener| l.local_addr().expect("bound").port();
    (
        SocketAddr::new(ip, port(&first)),
        SocketAddr::new(ip, port(&second)),
    )
}

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kubedisco"))
}

/// Starts `kubedisco agent` on the given ports against the test control
/// plane (the environment may override `KUBECONFIG`), logging to
/// `log_path`. The one place tests launch the agent binary.
pub fn spawn_process(
    http: SocketAddr,
    dns: SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
    log_path: &Path,
) -> Child {
    let log = std::fs::File::create(log_path).unwrap();
    Command::new(binary())
        .arg("agent")
        .arg("--http-addr")
        .arg(http.to_string())
        .arg("--dns-addr")
        .arg(dns.to_string())
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .env("KUBEDISCO_LOG_LEVEL", "info,kubedisco=debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kubedisco")
}

impl Agent {
    /// Starts `kubedisco agent <args>` against the test control plane
    /// (unless `args` names another `--source`), without waiting for sync.
    pub fn spawn(args: &[&str]) -> Agent {
        Agent::spawn_with_env(args, &[])
    }

    /// As [`Agent::spawn`], with extra environment (it wins over the
    /// defaults, e.g. another `KUBECONFIG`).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let (http, dns) = agent_addresses();
        Agent::spawn_on(http, dns, args, env)
    }

    /// As [`Agent::spawn_with_env`], on addresses the test chose (from
    /// [`agent_addresses`]), e.g. to start an agent again as it was.
    pub fn spawn_on(
        http: SocketAddr,
        dns: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        Agent::spawn_as("agent", http, dns, args, env)
    }

    /// As [`Agent::spawn_on`], with `role` in the log's name: two agents
    /// sharing their addresses (a hand-over) keep a log each.
    pub fn spawn_as(
        role: &str,
        http: SocketAddr,
        dns: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let log_dir = std::env::temp_dir().join("kubedisco-it");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log_path = log_dir.join(format!("{role}-{}-{}.log", http.ip(), http.port()));
        let child = spawn_process(http, dns, args, env, &log_path);
        Agent {
            child,
            http,
            dns,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .unwrap(),
            log_path,
        }
    }

    /// Starts the agent and waits until `/readyz` says it has synced.
    pub async fn start(args: &[&str]) -> Agent {
        let agent = Agent::spawn(args);
        agent.wait_ready().await;
        agent
    }

    pub async fn wait_ready(&self) {
        eventually("the agent to be ready", || async {
            let status = self.get("/readyz").await.map(|(status, _)| status);
            match status {
                Ok(200) => Ok(()),
                other => Err(format!("{other:?}; log:\n{}", self.log_tail())),
            }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// GET a path; the status and the body as JSON (Null when not JSON).
    pub async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A watch stream on `path` once its first message (the full state) has
    /// arrived; it stays open while the response is held.
    pub async fn open_watch(&self, path: &str) -> reqwest::Response {
        let mut stream = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("GET the watch stream");
        stream
            .chunk()
            .await
            .expect("the watch stream's first message");
        stream
    }

    /// The Service's JSON, or an error with what came back instead.
    pub async fn service(&self, namespace: &str, name: &str) -> Result<Value, String> {
        match self
            .get(&format!("/v1/services/{namespace}/{name}"))
            .await?
        {
            (200, body) => Ok(body),
            (status, body) => Err(format!("HTTP {status}: {body}")),
        }
    }

    /// The Service's usable endpoint IPs, sorted; Err when not served.
    pub async fn endpoint_ips(&self, namespace: &str, name: &str) -> Result<Vec<String>, String> {
        let body = self.service(namespace, name).await?;
        Ok(ips_of(&body))
    }

    /// The Prometheus exposition of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// One series of `/metrics` (see [`metric`]).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.client, self.http, series).await
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (bounded) until the log holds `what`.
    pub async fn wait_log(&self, what: &str) {
        eventually(&format!("{what:?} in the agent's log"), || async {
            if self.log().contains(what) {
                Ok(())
            } else {
                Err(self.log_tail())
            }
        })
        .await;
    }

    /// `kubedisco resolve <args>` against this agent's DNS: the exit code,
    /// stdout and stderr.
    pub fn resolve(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let output = Command::new(binary())
            .arg("resolve")
            .args(args)
            .env("KUBEDISCO_DNS_ADDR", self.dns.to_string())
            .output()
            .expect("run kubedisco resolve");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as the kubelet does to stop a Pod.
    pub fn sigterm(&self) {
        super::tools::require("kill");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.sigterm();
        self.child.wait().expect("wait for agent")
    }

    /// The exit status, if the process has exited by now.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("the agent's status")
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually_within("the agent to exit", within, || {
            let result = child.try_wait();
            async move {
                match result {
                    Ok(Some(status)) => Ok(status),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` (a name and its labels, exactly as exposed) in the
/// `/metrics` of the agent at `http`; None when it is absent or the agent
/// cannot be reached.
pub async fn metric(client: &reqwest::Client, http: SocketAddr, series: &str) -> Option<f64> {
    let text = metrics_text(client, http).await?;
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The `/metrics` of the agent at `http`; None when it cannot be reached.
pub async fn metrics_text(client: &reqwest::Client, http: SocketAddr) -> Option<String> {
    let response = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

/// The sorted endpoint IPs of a Service JSON body.
pub fn ips_of(body: &Value) -> Vec<String> {
    let mut ips: Vec<String> = body["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["ip"].as_str().map(str::to_owned))
        .collect();
    ips.sort();
    ips
}

/// `dig` against the agent's DNS port (+time=5 +tries=1); returns stdout.
pub fn dig(agent: &Agent, args: &[&str]) -> String {
    super::tools::require("dig");
    let output = Command::new("dig")
        .arg(format!("@{}", agent.dns.ip()))
        .arg("-p")
        .arg(agent.dns.port().to_string())
        .args(["+time=5", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (bind9-dnsutils)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
