//! `kubedisco dump`: print a running agent's cache, for operators in
//! `kubectl exec` / `kubectl debug` sessions.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Where the agent listens by default: the agent's `--http-addr` default.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8053";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The agent's HTTP address (URL or host:port).
    #[arg(long, env = "KUBEDISCO_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
    /// Give up when the agent has not answered within this time.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
    /// List the DNS cache of forwarded names (remaining TTL of each)
    /// instead of the Services.
    #[arg(long)]
    pub cache: bool,
}

#[derive(Debug, Deserialize)]
pub struct CacheDump {
    pub names: Vec<crate::dns::CachedName>,
}

/// One row per cached name and type; expired ones show how long they have
/// been stale (servable while upstream fails).
pub fn render_cache(dump: &CacheDump) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "TYPE".into(),
        "KIND".into(),
        "TTL".into(),
        "BYTES".into(),
    ]];
    for name in &dump.names {
        let ttl = if name.ttl_remaining > 0 {
            format!("{}s", name.ttl_remaining)
        } else {
            format!("stale {}s", name.stale_for)
        };
        let kind = if name.dnssec_ok {
            format!("{} +do", name.kind)
        } else {
            name.kind.clone()
        };
        rows.push([
            name.name.clone(),
            name.r#type.clone(),
            kind,
            ttl,
            name.bytes.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[derive(Debug, Deserialize)]
pub struct Dump {
    pub synced: bool,
    #[serde(default)]
    pub stale: bool,
    #[serde(default)]
    pub failures: serde_json::Map<String, serde_json::Value>,
    pub services: Vec<DumpService>,
}

#[derive(Debug, Deserialize)]
pub struct DumpService {
    pub namespace: String,
    pub name: String,
    pub revision: u64,
    /// `spec.type`; absent from agents older than the whole-zone DNS.
    #[serde(rename = "type", default)]
    pub service_type: Option<String>,
    /// Whether its endpoints are served (older agents listed only those).
    #[serde(default = "served_by_default")]
    pub served: bool,
    #[serde(rename = "clusterIPs", default)]
    pub cluster_ips: Vec<String>,
    #[serde(rename = "externalName", default)]
    pub external_name: Option<String>,
    #[serde(default)]
    pub ports: Vec<DumpPort>,
    pub endpoints: Vec<DumpEndpoint>,
    #[serde(default)]
    pub unusable: Vec<DumpEndpoint>,
}

fn served_by_default() -> bool {
    true
}

/// `ip:port`, brackets around an IPv6 address.
fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `name/PROTOCOL`, `-` for the unnamed port.
fn port_label(port: &DumpPort) -> String {
    let name = if port.name.is_empty() {
        "-"
    } else {
        &port.name
    };
    format!("{name}/{}", port.protocol)
}

#[derive(Debug, Deserialize)]
pub struct DumpEndpoint {
    pub ip: String,
    pub ports: Vec<DumpPort>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub zone: Option<String>,
    pub node: Option<String>,
    pub weight: u32,
}

#[derive(Debug, Deserialize)]
pub struct DumpPort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

pub fn base_url(addr: &str) -> String {
    let addr = addr.trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

pub fn run(args: &DumpArgs) -> ExitCode {
    let route = if args.cache { "cache" } else { "endpoints" };
    let url = format!("{}/debug/{route}", base_url(&args.addr));
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(fetch(&url, args.timeout)));
    let body = match fetched {
        Ok(body) => body,
        Err(e) => {
            eprintln!("kubedisco dump: no agent answered at {url}: {e}");
            eprintln!("  (is the agent running? set --addr or KUBEDISCO_ADDR)");
            return ExitCode::FAILURE;
        }
    };
    match args.output {
        Output::Json => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Output::Table if args.cache => match serde_json::from_str::<CacheDump>(&body) {
            Ok(dump) => {
                print!("{}", render_cache(&dump));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kubedisco dump: {url} did not answer like a kubedisco agent: {e}");
                ExitCode::FAILURE
            }
        },
        Output::Table => match serde_json::from_str::<Dump>(&body) {
            Ok(dump) => {
                print!("{}", render_table(&dump));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kubedisco dump: {url} did not answer like a kubedisco agent: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn fetch(url: &str, timeout: Duration) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| {
        if e.is_timeout() {
            format!(
                "timed out after {}",
                crate::duration::format_duration(timeout)
            )
        } else if e.is_connect() {
            "connection refused or unreachable".to_string()
        } else {
            e.to_string()
        }
    })?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(body)
}

fn state_of(endpoint: &DumpEndpoint) -> String {
    let mut words = Vec::new();
    if endpoint.ready {
        words.push("ready");
    }
    if endpoint.serving && !endpoint.ready {
        words.push("serving");
    }
    if endpoint.terminating {
        words.push("terminating");
    }
    if words.is_empty() {
        words.push("not-ready");
    }
    words.join(",")
}

/// The rows of a Service whose endpoints are not served: one per cluster
/// IP and port (the state column says the type), or its external name.
fn addressed_rows(service: &DumpService) -> Vec<[String; 8]> {
    let kind = service.service_type.as_deref().unwrap_or("ClusterIP");
    let row = |port: String, address: String| {
        [
            service.namespace.clone(),
            service.name.clone(),
            port,
            address,
            kind.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]
    };
    if let Some(target) = &service.external_name {
        return vec![row("-".into(), format!("CNAME {target}"))];
    }
    if service.cluster_ips.is_empty() {
        return vec![row("-".into(), "(no cluster IP)".into())];
    }
    let mut rows = Vec::new();
    for ip in &service.cluster_ips {
        if service.ports.is_empty() {
            rows.push(row("-".into(), ip.clone()));
        }
        for port in &service.ports {
            rows.push(row(port_label(port), host_port(ip, port.port)));
        }
    }
    rows
}

/// One row per endpoint and port; unusable endpoints are marked `(unused)`;
/// Services whose endpoints are not served show their cluster IPs or
/// external name, their type as the state.
pub fn render_table(dump: &Dump) -> String {
    let header = [
        "NAMESPACE",
        "SERVICE",
        "PORT",
        "ENDPOINT",
        "STATE",
        "ZONE",
        "NODE",
        "WEIGHT",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for service in &dump.services {
        if !service.served {
            rows.extend(addressed_rows(service));
            continue;
        }
        let all = service
            .endpoints
            .iter()
            .map(|e| (e, true))
            .chain(service.unusable.iter().map(|e| (e, false)));
        let mut any = false;
        for (endpoint, used) in all {
            any = true;
            let mut state = state_of(endpoint);
            if !used {
                state.push_str(" (unused)");
            }
            let ports: Vec<(String, String)> = if endpoint.ports.is_empty() {
                vec![("-".into(), endpoint.ip.clone())]
            } else {
                endpoint
                    .ports
                    .iter()
                    .map(|p| (port_label(p), host_port(&endpoint.ip, p.port)))
                    .collect()
            };
            for (port, address) in ports {
                rows.push([
                    service.namespace.clone(),
                    service.name.clone(),
                    port,
                    address,
                    state.clone(),
                    endpoint.zone.clone().unwrap_or_else(|| "-".into()),
                    endpoint.node.clone().unwrap_or_else(|| "-".into()),
                    endpoint.weight.to_string(),
                ]);
            }
        }
        if !any {
            rows.push([
                service.namespace.clone(),
                service.name.clone(),
                "-".into(),
                "(no endpoints)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if !dump.synced {
        out.push_str("# the agent has not completed its first sync: this list may be incomplete\n");
    }
    if dump.stale {
        out.push_str("# the agent cannot reach its source; this is the last known state:\n");
        for (part, failure) in &dump.failures {
            let error = failure.get("error").and_then(|e| e.as_str()).unwrap_or("?");
            out.push_str(&format!("#   {part}: {error}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_table_shows_remaining_and_stale_ttls() {
        let dump: CacheDump = serde_json::from_value(serde_json::json!({
            "entries": 2,
            "names": [
                {"name": "api.github.com.", "type": "A", "kind": "positive", "rcode": 0,
                 "ttl_remaining": 42, "stale_for": 0, "bytes": 180, "dnssec_ok": false},
                {"name": "gone.example.", "type": "AAAA", "kind": "negative", "rcode": 3,
                 "ttl_remaining": 0, "stale_for": 7, "bytes": 150, "dnssec_ok": true},
            ]
        }))
        .unwrap();
        assert_eq!(
            render_cache(&dump),
            "NAME             TYPE  KIND          TTL       BYTES\n\
             api.github.com.  A     positive      42s       180\n\
             gone.example.    AAAA  negative +do  stale 7s  150\n"
        );
    }

    #[test]
    fn urls_accept_host_port() {
        assert_eq!(base_url("127.0.0.1:8053"), "http://127.0.0.1:8053");
        assert_eq!(base_url("http://[::1]:8053/"), "http://[::1]:8053");
    }

    #[test]
    fn table_lists_every_port_of_every_endpoint() {
        let dump: Dump = serde_json::from_value(serde_json::json!({
            "synced": true,
            "services": [{
                "namespace": "shop", "name": "orders", "revision": 3,
                "endpoints": [{"ip": "10.0.0.1", "ready": true, "serving": true,
                    "terminating": false, "zone": "a", "node": "n1", "weight": 100,
                    "ports": [{"name": "grpc", "port": 9090, "protocol": "TCP"},
                              {"name": "http", "port": 8080, "protocol": "TCP"}]}],
                "unusable": [{"ip": "fd00::1", "ready": false, "serving": false,
                    "terminating": true, "zone": null, "node": null, "weight": 100,
                    "ports": [{"name": "grpc", "port": 9090, "protocol": "TCP"}]}]
            }]
        }))
        .unwrap();
        let table = render_table(&dump);
        assert!(table.contains("10.0.0.1:9090"), "{table}");
        assert!(table.contains("10.0.0.1:8080"), "{table}");
        assert!(table.contains("[fd00::1]:9090"), "{table}");
        assert!(table.contains("terminating (unused)"), "{table}");
        assert_eq!(table.lines().count(), 4);
    }

    #[test]
    fn table_shows_cluster_ips_and_external_names() {
        let dump: Dump = serde_json::from_value(serde_json::json!({
            "synced": true,
            "services": [
                {"namespace": "shop", "name": "web", "revision": 0, "type": "ClusterIP",
                 "served": false, "clusterIPs": ["10.96.0.10", "fd00::10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                 "endpoints": [], "unusable": []},
                {"namespace": "shop", "name": "ext", "revision": 0, "type": "ExternalName",
                 "served": false, "externalName": "example.org",
                 "ports": [], "endpoints": [], "unusable": []}
            ]
        }))
        .unwrap();
        let table = render_table(&dump);
        assert!(table.contains("http/TCP  10.96.0.10:80"), "{table}");
        assert!(table.contains("[fd00::10]:80"), "{table}");
        assert!(table.contains("CNAME example.org  ExternalName"), "{table}");
        assert_eq!(table.lines().count(), 4);
    }
}
