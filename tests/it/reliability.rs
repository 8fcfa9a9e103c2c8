//! Reliability (issue 9): warm start from a snapshot while the API server is
//! down, zero-downtime restarts of two agents sharing the ports, bounded
//! resources under abusive clients, a broken kubeconfig that recovers, and
//! property tests of the HTTP API's parameters. Figures (first answer after
//! a warm start, lost queries and gaps in a handover, memory under idle
//! connections) are printed: `cargo test --test it reliability -- --nocapture`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::agent::{agent_addresses, binary, ips_of, spawn_process};
use crate::support::cluster::{PrivateCluster, kubeconfig};
use crate::support::eventually::eventually_within;
use crate::support::kube::ip_range;
use crate::support::{Agent, TestNamespace, eventually, tools};

// ---------------------------------------------------------------------------
// Helpers: raw DNS over UDP and TCP, agent processes on given ports.

fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// (rcode, answer count) of a DNS response.
fn dns_outcome(response: &[u8]) -> Result<(u8, u16), String> {
    if response.len() < 12 {
        return Err(format!("{}-byte response", response.len()));
    }
    Ok((
        response[3] & 0x0F,
        u16::from_be_bytes([response[6], response[7]]),
    ))
}

/// One A query over UDP: (rcode, answers).
fn udp_a(server: SocketAddr, name: &str, timeout: Duration) -> Result<(u8, u16), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
        .send_to(&dns_query(0x4242, name), server)
        .map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 1500];
    let (len, _) = socket.recv_from(&mut buffer).map_err(|e| e.to_string())?;
    dns_outcome(&buffer[..len])
}

/// One A query over a new TCP connection: (rcode, answers).
fn tcp_a(server: SocketAddr, name: &str, timeout: Duration) -> Result<(u8, u16), String> {
    let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    let query = dns_query(0x4343, name);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut response = vec![0u8; u16::from_be_bytes(len) as usize];
    stream
        .read_exact(&mut response)
        .map_err(|e| e.to_string())?;
    dns_outcome(&response)
}

/// A `kubedisco agent` on ports the test chooses (two may share them).
struct Proc {
    child: Child,
    log_path: PathBuf,
}

impl Proc {
    fn spawn(
        name: &str,
        http: SocketAddr,
        dns: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let dir = std::env::temp_dir().join("kubedisco-it");
        std::fs::create_dir_all(&dir).unwrap();
        let log_path = dir.join(format!(
            "reliability-{name}-{}-{}.log",
            http.port(),
            std::process::id()
        ));
        let mut with_upstream = vec!["--upstream", "127.0.0.1:9"];
        with_upstream.extend_from_slice(args);
        let child = spawn_process(http, dns, &with_upstream, env, &log_path);
        Proc { child, log_path }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_log(&self, what: &str) {
        eventually(&format!("{what:?} in the agent's log"), || async {
            if self.log().contains(what) {
                Ok(())
            } else {
                Err(tail(&self.log()))
            }
        })
        .await;
    }

    fn sigterm(&self) {
        tools::require("kill");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
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

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn metric(client: &reqwest::Client, http: SocketAddr, series: &str) -> Option<f64> {
    let text = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `kubedisco_{front}_connections_closed_total{reason}` as (front, reason,
/// count), for both TCP front ends.
async fn closed_by_reason(
    client: &reqwest::Client,
    http: SocketAddr,
) -> Vec<(String, String, u64)> {
    let Ok(response) = client.get(format!("http://{http}/metrics")).send().await else {
        return Vec::new();
    };
    let text = response.text().await.unwrap_or_default();
    let mut found = Vec::new();
    for line in text.lines() {
        for front in ["http", "dns_tcp"] {
            let prefix = format!("kubedisco_{front}_connections_closed_total{{reason=\"");
            if let Some(rest) = line.strip_prefix(&prefix)
                && let Some((reason, count)) = rest.split_once("\"} ")
                && let Ok(count) = count.parse::<f64>()
            {
                found.push((front.to_owned(), reason.to_owned(), count as u64));
            }
        }
    }
    found
}

/// A namespace with a headless Service `web` of three ready Pods.
async fn three_endpoints(test: &str) -> TestNamespace {
    let ns = TestNamespace::new(test).await;
    ns.create_service("web", json!({})).await;
    let pods = ns.create_pods("web", 3).await;
    let first = "10.130.0.1".parse().unwrap();
    ns.mark_ready(&pods, first).await;
    ns.wait_for_ready_addresses("web", &ip_range(first, 3))
        .await;
    ns
}

// ---------------------------------------------------------------------------
// Warm start.

async fn headless_service(client: &kube::Client, namespace: &str, ips: &[&str]) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    let _ = services.create(&PostParams::default(), &service).await;
    apply_slice(client, namespace, ips).await;
}

async fn apply_slice(client: &kube::Client, namespace: &str, ips: &[&str]) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let endpoints: Vec<Value> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-a", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints
    });
    slices
        .patch(
            "web-a",
            &PatchParams::apply("kubedisco-tests").force(),
            &Patch::Apply(&slice),
        )
        .await
        .expect("apply slice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_restarts_warm_from_its_snapshot_while_the_api_server_is_down() {
    let cluster = PrivateCluster::start("warm");
    let client = cluster.client().await;
    headless_service(&client, "warm", &["10.131.0.1", "10.131.0.2", "10.131.0.3"]).await;
    let dir = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("warm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("index.snapshot");
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let args = [
        "--namespaces",
        "warm",
        "--snapshot-path",
        snapshot.to_str().unwrap(),
        "--snapshot-interval",
        "1s",
    ];

    let first = Agent::spawn_with_env(&args, &[("KUBECONFIG", &kubeconfig)]);
    first.wait_ready().await;
    eventually("the snapshot file", || async {
        let written = metric(
            &first.client,
            first.http,
            "kubedisco_snapshot_writes_total{result=\"ok\"}",
        )
        .await;
        match written {
            Some(n) if n >= 1.0 && snapshot.exists() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Killed, not stopped: the snapshot on disk is the periodic one.
    drop(first);
    cluster.run(&["stop", "kube-apiserver"]);

    let started = Instant::now();
    let second = Agent::spawn_with_env(&args, &[("KUBECONFIG", &kubeconfig)]);
    let dns = second.dns;
    let (http_ms, body) = eventually_within(
        "an answer from the snapshot",
        Duration::from_secs(10),
        || async {
            match second.service("warm", "web").await {
                Ok(body) if ips_of(&body).len() == 3 => Ok((started.elapsed(), body)),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let dns_ms = eventually_within(
        "a DNS answer from the snapshot",
        Duration::from_secs(10),
        || async {
            match udp_a(
                dns,
                "web.warm.svc.cluster.local",
                Duration::from_millis(500),
            ) {
                Ok((0, 3)) => Ok(started.elapsed()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(body["stale"], true, "{body}");
    let reason = body["staleReason"].as_str().unwrap_or_default();
    assert!(reason.contains("serving the snapshot of"), "{body}");
    assert!(body["staleSeconds"].as_f64().is_some(), "{body}");
    let (status, ready) = second.get("/readyz").await.unwrap();
    assert_eq!(
        status, 200,
        "a valid snapshot makes the agent ready (stale): {ready}"
    );
    eprintln!(
        "warm start: first correct HTTP answer {:.0} ms after the process started, first DNS answer {:.0} ms (API server down)",
        http_ms.as_secs_f64() * 1000.0,
        dns_ms.as_secs_f64() * 1000.0
    );

    // The API server returns: live data replaces the snapshot, staleness goes.
    cluster.run(&["start", "kube-apiserver"]);
    apply_slice(
        &client,
        "warm",
        &["10.131.0.1", "10.131.0.2", "10.131.0.3", "10.131.0.4"],
    )
    .await;
    eventually("live data after the API server returns", || async {
        let body = second.service("warm", "web").await?;
        if ips_of(&body).len() == 4 && body["stale"] == false && body.get("staleReason").is_none() {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
    // And the next snapshot holds the new state.
    eventually("a snapshot of the new state", || async {
        let scope = kubedisco::warmstart::Coverage {
            source: "kubernetes".into(),
            namespaces: vec!["warm".into()],
            pod_weights: false,
        };
        let config = kubedisco::warmstart::WarmStartConfig {
            path: snapshot.clone(),
            interval: Duration::from_secs(1),
            max_age: Duration::from_secs(3600),
        };
        let loaded = kubedisco::warmstart::load(&config, &scope).map_err(|e| e.to_string())?;
        let endpoints: usize = loaded
            .contents
            .slices
            .iter()
            .map(|s| s.endpoints.len())
            .sum();
        if endpoints == 4 {
            Ok(())
        } else {
            Err(format!("{endpoints} endpoints in the snapshot"))
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_damaged_foreign_or_old_snapshot_is_ignored_with_a_warning() {
    let dir = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("bad-snapshots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A valid file of this agent's scope, to damage in several ways.
    let scope = kubedisco::warmstart::Coverage {
        source: "manifests".into(),
        namespaces: vec![],
        pod_weights: false,
    };
    let index = kubedisco::index::Index::default();
    index.apply([kubedisco::index::Change::ApplyService(
        kubedisco::index::ServiceObject {
            key: kubedisco::index::ServiceKey::new("stale", "ghost"),
            headless: true,
            exposed: false,
            publish_not_ready: false,
            ports: vec![],
            default_weight: None,
            traffic_distribution: None,
        },
    )]);
    let now = std::time::SystemTime::now();
    let good = kubedisco::warmstart::encode(&index.export(), &scope, now, now);
    let mut flipped = good.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 1;
    let mut foreign = good.clone();
    foreign[8] = 99;
    let old = kubedisco::warmstart::encode(
        &index.export(),
        &scope,
        now,
        now - Duration::from_secs(7200),
    );
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        ("corrupt", flipped, "checksum mismatch"),
        ("foreign-version", foreign, "format version 99"),
        (
            "not-a-snapshot",
            b"{\"services\": []}".to_vec(),
            "bad magic",
        ),
        ("too-old", old, "more than --snapshot-max-age"),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let agent = Agent::start(&[
            "--source",
            "demo",
            "--snapshot-path",
            path.to_str().unwrap(),
        ])
        .await;
        let log = agent.log();
        assert!(
            log.contains("ignoring the snapshot") && log.contains(reason),
            "{name}: no warning naming {reason:?}:\n{}",
            agent.log_tail()
        );
        // Served from the source alone: the snapshot's Service never shows.
        assert_eq!(
            agent.get("/v1/services/stale/ghost").await.unwrap().0,
            404,
            "{name}"
        );
        // The damaged file is replaced by a good one.
        eventually("a valid snapshot in its place", || async {
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            kubedisco::warmstart::decode(&bytes, &scope)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Zero-downtime restarts.

#[derive(Debug, Default)]
struct ProbeReport {
    sent: usize,
    answered: usize,
    /// Lost, late (> 2 s), or not NOERROR with 3 records.
    failed: Vec<String>,
    /// The longest time one client flow went without an answer.
    longest_gap: Duration,
    slowest: Duration,
}

/// `flows` UDP clients (each its own source port, so the kernel spreads
/// them over the port group) asking for `name` every `every`, until `stop`
/// (and at most `limit`). Every answer must be NOERROR with 3 records.
fn probe_dns(
    server: SocketAddr,
    name: String,
    flows: usize,
    every: Duration,
    limit: Duration,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<ProbeReport> {
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..flows)
            .map(|flow| {
                let (name, answered, stop) = (name.clone(), answered.clone(), stop.clone());
                std::thread::spawn(move || {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let mut report = ProbeReport::default();
                    let begun = Instant::now();
                    let mut last_answer = Instant::now();
                    let mut buffer = [0u8; 1500];
                    let mut id = (flow as u16) << 12;
                    while !stop.load(Ordering::Relaxed) && begun.elapsed() < limit {
                        let sent = Instant::now();
                        id = id.wrapping_add(1);
                        report.sent += 1;
                        let _ = socket.send_to(&dns_query(id, &name), server);
                        // Skip stale answers to earlier (timed-out) queries.
                        let outcome = loop {
                            match socket.recv_from(&mut buffer) {
                                Ok((len, _)) if len >= 2 && buffer[..2] != id.to_be_bytes() => {
                                    continue;
                                }
                                Ok((len, _)) => break dns_outcome(&buffer[..len]),
                                Err(e) => break Err(format!("no answer: {e}")),
                            }
                        };
                        match outcome {
                            Ok((0, 3)) => {
                                let now = Instant::now();
                                report.answered += 1;
                                answered.fetch_add(1, Ordering::Relaxed);
                                report.slowest = report.slowest.max(now - sent);
                                report.longest_gap = report.longest_gap.max(now - last_answer);
                                last_answer = now;
                            }
                            other => report.failed.push(format!("flow {flow}: {other:?}")),
                        }
                        if let Some(rest) = every.checked_sub(sent.elapsed()) {
                            std::thread::sleep(rest); // pacing, not waiting
                        }
                    }
                    report
                })
            })
            .collect();
        let mut total = ProbeReport::default();
        for thread in threads {
            let report = thread.join().unwrap();
            total.sent += report.sent;
            total.answered += report.answered;
            total.failed.extend(report.failed);
            total.longest_gap = total.longest_gap.max(report.longest_gap);
            total.slowest = total.slowest.max(report.slowest);
        }
        total
    })
}

/// dnsperf's "Queries sent/completed/lost" lines.
fn dnsperf_counts(output: &str) -> (u64, u64, u64) {
    let number = |label: &str| -> u64 {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in dnsperf output:\n{output}"))
    };
    (
        number("Queries sent:"),
        number("Queries completed:"),
        number("Queries lost:"),
    )
}

/// HTTP GETs over fresh connections until `stop`: (ok, failures).
fn probe_http(
    url: String,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let path = format!(
        "/{}",
        url.trim_start_matches("http://").split_once('/').unwrap().1
    );
    probe_until(limit, stop, move || {
        let result = (|| -> Result<u16, String> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
            )
            .map_err(|e| e.to_string())?;
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .map_err(|e| e.to_string())?;
            response
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| format!("no status line in {response:?}"))
        })();
        match result {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
}

/// DNS over fresh TCP connections until `stop`: (ok, failures).
fn probe_dns_tcp(
    server: SocketAddr,
    name: String,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    probe_until(limit, stop, move || {
        match tcp_a(server, &name, Duration::from_secs(2)) {
            Ok((0, 3)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
}

/// Runs `attempt` every 5 ms on a thread of its own until `stop` (and at
/// most `limit`): (successes, failures).
fn probe_until(
    limit: Duration,
    stop: Arc<AtomicBool>,
    mut attempt: impl FnMut() -> Result<(), String> + Send + 'static,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let begun = Instant::now();
        let (mut ok, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) && begun.elapsed() < limit {
            match attempt() {
                Ok(()) => ok += 1,
                Err(failure) => failed.push(failure),
            }
            std::thread::sleep(Duration::from_millis(5)); // pacing
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_ports_to_the_agent_sharing_them_without_losing_a_query() {
    tools::require("dnsperf");
    let ns = three_endpoints("handover").await;
    let (http, dns) = agent_addresses();
    let args = ["--namespaces", &ns.name];
    let old = Proc::spawn("old", http, dns, &args, &[]);
    old.wait_log("synced: ready").await;
    let new = Proc::spawn("new", http, dns, &args, &[]);
    // The new agent joins the ports only once synced.
    new.wait_log("synced: joining the ports").await;
    new.wait_log("kubedisco agent started").await;

    let name = format!("web.{}.svc.cluster.local", ns.name);
    let queries = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("handover-{}.queries", std::process::id()));
    std::fs::write(&queries, format!("{name} A\n").repeat(100)).unwrap();
    let dnsperf = {
        let queries = queries.clone();
        std::thread::spawn(move || {
            Command::new("dnsperf")
                .args(["-s", &dns.ip().to_string(), "-p", &dns.port().to_string()])
                .arg("-d")
                .arg(&queries)
                .args(["-l", "8", "-Q", "2000", "-c", "8", "-t", "2"])
                .output()
                .expect("run dnsperf")
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let udp = probe_dns(
        dns,
        name.clone(),
        8,
        Duration::from_millis(5),
        Duration::from_secs(20),
        answered.clone(),
        stop.clone(),
    );
    let tcp = probe_dns_tcp(dns, name.clone(), Duration::from_secs(20), stop.clone());
    let web = probe_http(
        format!("http://{http}/v1/services/{}/web", ns.name),
        Duration::from_secs(20),
        stop.clone(),
    );

    // Mid-run (both agents answering), the old one is told to stop.
    eventually("the probes to be under way", || async {
        let n = answered.load(Ordering::Relaxed);
        if n >= 1000 { Ok(()) } else { Err(n) }
    })
    .await;
    let mut old = old;
    old.sigterm();
    let status = old.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", tail(&old.log()));
    // The rest of the run is the new agent alone.
    let output = tokio::task::spawn_blocking(move || dnsperf.join().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let udp = tokio::task::spawn_blocking(move || udp.join().unwrap())
        .await
        .unwrap();
    let tcp = tokio::task::spawn_blocking(move || tcp.join().unwrap())
        .await
        .unwrap();
    let web = tokio::task::spawn_blocking(move || web.join().unwrap())
        .await
        .unwrap();

    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (sent, completed, lost) = dnsperf_counts(&text);
    let drained = old
        .log()
        .lines()
        .find(|l| l.contains("dns: drained and closed"))
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "handover: dnsperf {sent} sent, {completed} completed, {lost} lost; \
         probe {}/{} UDP answered, longest gap in one flow {:.1} ms, slowest answer {:.1} ms; \
         TCP {} ok / {} failed; HTTP {} ok / {} failed\n  old agent: {drained}",
        udp.answered,
        udp.sent,
        udp.longest_gap.as_secs_f64() * 1000.0,
        udp.slowest.as_secs_f64() * 1000.0,
        tcp.0,
        tcp.1.len(),
        web.0,
        web.1.len(),
    );
    assert_eq!(lost, 0, "dnsperf lost queries:\n{text}");
    assert!(udp.failed.is_empty(), "{:?}", udp.failed);
    assert!(tcp.1.is_empty(), "DNS over TCP failed: {:?}", tcp.1);
    assert!(web.1.is_empty(), "HTTP failed: {:?}", web.1);
    assert!(udp.answered > 1000 && tcp.0 > 10 && web.0 > 10);
    let _ = std::fs::remove_file(&queries);
    drop(new);
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_rolling_update_the_old_agent_turns_unready_and_answers_until_the_new_one_has_synced()
{
    let ns = three_endpoints("rolling").await;
    let (http, dns) = agent_addresses();
    let mut old = Proc::spawn("old", http, dns, &["--namespaces", &ns.name], &[]);
    old.wait_log("synced: ready").await;

    // The new agent starts, but cannot sync yet (RBAC lets it list Services,
    // not EndpointSlices): it waits beside the ports without taking any.
    let services_only =
        json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}]);
    let kubeconfig = ns.service_account_kubeconfig("next", services_only).await;
    let new = Proc::spawn(
        "new",
        http,
        dns,
        &["--namespaces", &ns.name],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    new.wait_log("joining them once synced").await;

    let client = reqwest::Client::new();
    let url = format!("http://{http}/readyz");
    let name = format!("web.{}.svc.cluster.local", ns.name);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let udp = probe_dns(
        dns,
        name,
        4,
        Duration::from_millis(5),
        Duration::from_secs(60),
        answered.clone(),
        stop.clone(),
    );

    // SIGTERM, as the DaemonSet controller sends once the new Pod counts as
    // Ready (its probe may well have reached the old agent on the shared
    // port): the old agent turns unready but keeps answering...
    old.sigterm();
    let body = eventually("the old agent to turn unready", || async {
        let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status == 503 && body["draining"] == true {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert_eq!(body["synced"], true, "{body}");
    old.wait_log("the next agent has not joined the ports yet")
        .await;
    let before = answered.load(Ordering::Relaxed);
    eventually("DNS answers while draining", || async {
        let n = answered.load(Ordering::Relaxed);
        if n > before + 200 { Ok(()) } else { Err(n) }
    })
    .await;
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "it waits for its successor"
    );

    // ...until the new agent has synced and joined the ports (an unsynced
    // agent in the port group would answer SERVFAIL to some queries).
    ns.set_role_rules(
        "next",
        json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]),
    )
    .await;
    new.wait_log("synced: joining the ports").await;
    let status = old.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        old.log()
            .contains("the next agent serves the ports: handing over"),
        "{}",
        tail(&old.log())
    );
    let before = answered.load(Ordering::Relaxed);
    eventually("answers from the new agent alone", || async {
        let n = answered.load(Ordering::Relaxed);
        if n > before + 200 { Ok(()) } else { Err(n) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let udp = tokio::task::spawn_blocking(move || udp.join().unwrap())
        .await
        .unwrap();
    eprintln!(
        "rolling update: {}/{} DNS answers correct through drain and handover, longest gap in one flow {:.1} ms",
        udp.answered,
        udp.sent,
        udp.longest_gap.as_secs_f64() * 1000.0
    );
    assert!(
        udp.failed.is_empty(),
        "wrong or missing answers: {:?}",
        udp.failed
    );
    let status = client.get(&url).send().await.unwrap().status();
    assert_eq!(status, 200, "the new agent is ready");
    drop(new);
    ns.delete().await;
}

#[tokio::test]
async fn sigterm_without_a_successor_does_not_wait_for_one() {
    let (http, dns) = agent_addresses();
    let mut agent = Proc::spawn("alone", http, dns, &["--source", "demo"], &[]);
    agent.wait_log("synced: ready").await;
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    let log = agent.log();
    assert!(
        log.contains("no other agent on the ports: stopping"),
        "{}",
        tail(&log)
    );
    assert!(!log.contains("has not joined"), "{}", tail(&log));
}

// ---------------------------------------------------------------------------
// Bounded resources.

/// Raises this process's soft open-files limit to the hard limit.
fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    hard
}

fn open_idle(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
        .collect()
}

async fn idle_connections_case(ns: &TestNamespace, caps: &[&str], label: &str) {
    let (http, dns) = agent_addresses();
    let mut args = vec!["--namespaces", ns.name.as_str()];
    args.extend_from_slice(caps);
    let agent = Proc::spawn("idle", http, dns, &args, &[]);
    agent.wait_log("synced: ready").await;
    let client = reqwest::Client::new();
    let service = format!("http://{http}/v1/services/{}/web", ns.name);
    let name = format!("web.{}.svc.cluster.local", ns.name);
    // Warm up every path first, so the growth below is the connections'.
    for _ in 0..20 {
        assert_eq!(udp_a(dns, &name, Duration::from_secs(2)), Ok((0, 3)));
        assert_eq!(tcp_a(dns, &name, Duration::from_secs(2)), Ok((0, 3)));
        assert_eq!(client.get(&service).send().await.unwrap().status(), 200);
    }
    let before = rss_kib(agent.pid());
    let started = Instant::now();
    let dns_conns = tokio::task::spawn_blocking(move || open_idle(dns, 5000));
    let http_conns = tokio::task::spawn_blocking(move || open_idle(http, 5000));
    let (dns_conns, http_conns) = (dns_conns.await.unwrap(), http_conns.await.unwrap());
    let opened = (dns_conns.len(), http_conns.len());
    // The agent has taken them all (held, or closed to stay under the cap).
    // (The metrics client's own connection is one of the HTTP ones.)
    let counts = |client: reqwest::Client| async move {
        let mut values = Vec::new();
        for series in [
            "kubedisco_dns_tcp_accepted_total",
            "kubedisco_dns_tcp_connections",
            "kubedisco_dns_tcp_evicted_total",
            "kubedisco_dns_tcp_rejected_total",
            "kubedisco_dns_tcp_waiting",
            "kubedisco_http_connections_accepted_total",
            "kubedisco_http_connections",
            "kubedisco_http_connections_evicted_total",
            "kubedisco_http_connections_rejected_total",
            "kubedisco_http_connections_waiting",
        ] {
            values.push(metric(&client, http, series).await.unwrap_or(0.0) as u64);
        }
        values
    };
    // Settled: every connection accepted (plus the warm-up's 20 DNS TCP
    // ones), none waiting for a slot any more.
    // Every connection not held has closed with a reason: the books
    // balance (accepted = open + closed) for both front ends.
    let taken = eventually("the agent to take every connection", || async {
        let c = counts(client.clone()).await;
        let closed = closed_by_reason(&client, http).await;
        let sum = |front: &str| -> u64 {
            closed
                .iter()
                .filter(|(f, _, _)| f == front)
                .map(|(_, _, n)| n)
                .sum()
        };
        let balanced = c[0] == c[1] + sum("dns_tcp") && c[5] == c[6] + sum("http");
        if c[0] >= opened.0 as u64 + 20
            && c[5] >= opened.1 as u64
            && c[4] == 0
            && c[9] == 0
            && balanced
        {
            Ok(c)
        } else {
            Err(format!("{c:?} closed {closed:?}"))
        }
    })
    .await;
    let taken_after = started.elapsed();
    // Later clients are still answered: UDP, TCP (a new connection), HTTP.
    assert_eq!(udp_a(dns, &name, Duration::from_secs(2)), Ok((0, 3)));
    assert_eq!(tcp_a(dns, &name, Duration::from_secs(2)), Ok((0, 3)));
    // A new HTTP client is answered at its first attempt: it queues while
    // the longest-idle connection makes room (or, inside the eviction
    // grace, until one may), and is never reset.
    let fresh = reqwest::Client::new();
    let first = fresh.get(&service).send().await;
    let first = match first {
        Ok(response) => response.status().as_u16(),
        Err(error) => panic!("a new HTTP client's first request failed: {error:?}"),
    };
    assert_eq!(first, 200, "a new HTTP client's first request");
    let closed: Vec<String> = closed_by_reason(&client, http)
        .await
        .into_iter()
        .map(|(front, reason, n)| format!("{front} {reason} {n}"))
        .collect();
    let closed = closed.join(", ");
    let after = rss_kib(agent.pid());
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "idle connections ({label}): opened {} DNS + {} HTTP, all taken {:.1} s after the first; \
         DNS held {} (evicted {}, refused {}), HTTP held {} (evicted {}, refused {}); \
         RSS {:.1} MiB -> {:.1} MiB (+{growth_mib:.1} MiB); later UDP, TCP and HTTP clients answered \
         at the first attempt; closed by reason: {closed}",
        opened.0,
        opened.1,
        taken_after.as_secs_f64(),
        taken[1],
        taken[2],
        taken[3],
        taken[6],
        taken[7],
        taken[8],
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    assert_eq!(opened, (5000, 5000));
    assert!(
        growth_mib < 64.0,
        "resident memory grew {growth_mib:.1} MiB"
    );
    drop((dns_conns, http_conns));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_leave_later_clients_answered_and_memory_bounded() {
    let hard = raise_open_files();
    assert!(
        hard >= 12_000,
        "the test needs 10 000 sockets; the hard open-files limit is {hard}"
    );
    let ns = three_endpoints("idle").await;
    // Default caps (DNS 1024, HTTP 2048): the longest-idle make room.
    idle_connections_case(&ns, &[], "default caps").await;
    // Caps above the flood: every connection is held.
    idle_connections_case(
        &ns,
        &[
            "--dns-max-tcp-connections",
            "6000",
            "--http-max-connections",
            "6000",
        ],
        "caps 6000",
    )
    .await;
    ns.delete().await;
}

/// The response head and body of a raw HTTP/1.1 GET on `stream`.
fn raw_get(stream: &mut TcpStream, path: &str) -> std::io::Result<String> {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test]
async fn connections_beyond_the_cap_are_answered_never_reset() {
    let agent = Agent::start(&[
        "--source",
        "demo",
        "--http-max-connections",
        "1",
        "--dns-max-tcp-connections",
        "1",
    ])
    .await;
    // HTTP: the one slot is held busy by a watch stream, so nothing can be
    // evicted. The next connection queues and, with no slot in 2 s, gets a
    // 503; one more finds the queue full and gets its 503 at once.
    let mut watch = agent
        .client
        .get(agent.url("/v1/watch/shop/orders"))
        .send()
        .await
        .unwrap();
    watch.chunk().await.unwrap();
    // (The listener's queue is first in, first out: the connection made
    // first is taken first, and queues; the second finds the queue full.)
    let http = agent.http;
    let mut queued = TcpStream::connect(http).unwrap();
    queued
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let queued = std::thread::spawn(move || raw_get(&mut queued, "/v1/services"));
    let mut full = TcpStream::connect(http).unwrap();
    full.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for (case, answer) in [
        ("queue full", raw_get(&mut full, "/v1/services")),
        ("no slot in time", queued.join().unwrap()),
    ] {
        let answer = answer.unwrap_or_else(|e| panic!("{case}: not an answer but {e:?}"));
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503"), "{case}: {answer}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{case}: {head}"
        );
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "too_many_connections", "{case}: {body}");
    }
    drop(watch);

    // DNS over TCP: a query half sent keeps the one slot busy. Queries on
    // a connection that gets no slot are answered REFUSED, in order.
    let mut busy = TcpStream::connect(agent.dns).unwrap();
    busy.write_all(&[0, 40, 0x12]).unwrap();
    let dns = agent.dns;
    let refused = |id: u16| {
        let stream = TcpStream::connect(dns);
        move || -> Result<Vec<(u16, u8)>, String> {
            let mut stream = stream.map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut framed = Vec::new();
            for id in [id, id + 1] {
                let query = dns_query(id, "orders.shop.svc.cluster.local");
                framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
                framed.extend_from_slice(&query);
            }
            stream.write_all(&framed).map_err(|e| e.to_string())?;
            let mut answers = Vec::new();
            for _ in 0..2 {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).map_err(|e| e.to_string())?;
                let mut response = vec![0u8; u16::from_be_bytes(len) as usize];
                stream
                    .read_exact(&mut response)
                    .map_err(|e| e.to_string())?;
                answers.push((
                    u16::from_be_bytes([response[0], response[1]]),
                    response[3] & 0x0F,
                ));
            }
            // Then the end of the stream, not a reset.
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).map_err(|e| e.to_string())?;
            Ok(answers)
        }
    };
    // (Its 5 s query timeout outlasts the 2 s a queued connection waits.)
    let queued = std::thread::spawn(refused(0x100));
    let full = std::thread::spawn(refused(0x200)).join().unwrap();
    assert_eq!(
        full,
        Ok(vec![(0x200, 5), (0x201, 5)]),
        "queue full: REFUSED twice"
    );
    let queued = queued.join().unwrap();
    assert_eq!(
        queued,
        Ok(vec![(0x100, 5), (0x101, 5)]),
        "no slot in time: REFUSED twice"
    );
    drop(busy);

    let metrics = agent.metrics().await;
    for series in [
        "kubedisco_http_connections_closed_total{reason=\"refused_queue_full\"} 1",
        "kubedisco_http_connections_closed_total{reason=\"refused_wait_timeout\"} 1",
        "kubedisco_dns_tcp_connections_closed_total{reason=\"refused_queue_full\"} 1",
        "kubedisco_dns_tcp_connections_closed_total{reason=\"refused_wait_timeout\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn slow_oversized_and_bodied_requests_are_cut_off() {
    let agent = Agent::start(&[
        "--source",
        "demo",
        "--http-header-timeout",
        "1s",
        "--max-watch-streams",
        "2",
    ])
    .await;
    // Slowloris: half a request head, then nothing.
    let mut slow = TcpStream::connect(agent.http).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let cut = started.elapsed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    eprintln!(
        "slowloris: connection closed {:.1} s after the partial head (--http-header-timeout 1s)",
        cut.as_secs_f64()
    );

    // A head larger than --http-max-header-bytes: 431, the same JSON error
    // as every route's, and the connection closes.
    let big = "x".repeat(20_000);
    let response = agent
        .client
        .get(agent.url("/healthz"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(response.headers()["connection"], "close");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "header_too_large", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("16384 bytes"),
        "{body}"
    );
    // A body on a GET-only API: 413 before it is read.
    let response = agent
        .client
        .get(agent.url("/v1/services"))
        .body("x".repeat(1 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body_not_allowed", "{body}");

    // Watch streams beyond --max-watch-streams: 503 with a code.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut stream = agent
            .client
            .get(agent.url("/v1/watch/shop/orders"))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        stream.chunk().await.unwrap();
        streams.push(stream);
    }
    let refused = agent
        .client
        .get(agent.url("/v1/watch/shop/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "too_many_watch_streams", "{body}");
    // A closed stream frees its place.
    streams.pop();
    eventually("a watch stream after one closed", || async {
        let response = agent
            .client
            .get(agent.url("/v1/watch/shop/orders"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() == 200 {
            Ok(())
        } else {
            Err(response.status().to_string())
        }
    })
    .await;
    let metrics = agent.metrics().await;
    for series in [
        "kubedisco_http_requests_rejected_total{reason=\"body\"} 1",
        "kubedisco_http_requests_rejected_total{reason=\"watch_streams\"}",
        "kubedisco_http_requests_rejected_total{reason=\"header_too_large\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
}

/// Sends `request` on a connection of its own, closes the sending side and
/// returns everything that came back.
fn raw_exchange(agent: &Agent, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(agent.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Written whole even past what the agent reads of it: the agent keeps
    // reading (and dropping) after its answer instead of resetting.
    stream
        .write_all(request)
        .expect("the whole request is taken, never reset");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("still connected, never reset");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the answer arrives whole, then the close");
    String::from_utf8(answer).unwrap()
}

/// The first answer in `text`: its head (lowercase) and JSON body, and
/// what follows it.
fn next_answer(text: &str) -> (String, Value, &str) {
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let head = head.to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .unwrap_or_else(|| panic!("no content-length in {head}"))
        .parse()
        .unwrap();
    let (body, rest) = rest.split_at(length);
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (head, json, rest)
}

#[tokio::test]
async fn heads_hyper_refuses_get_the_json_error_and_the_client_reads_it() {
    let agent = Agent::start(&["--source", "demo"]).await;
    // Not HTTP: hyper's own 400, as the agent's JSON.
    let answer = raw_exchange(&agent, b"GET /healthz HTTP/1.1\r\nHost agent\r\n\r\n");
    let (head, body, rest) = next_answer(&answer);
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/json"),
        "{head}"
    );
    assert_eq!(body["code"], "bad_request", "{body}");
    assert_eq!(rest, "", "nothing after the answer");

    // A head 32 times the limit, still being sent when the agent answers:
    // the client can send it all and read the 431.
    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: agent\r\nx-big: ".to_vec();
    huge.resize(512 << 10, b'x');
    let answer = raw_exchange(&agent, &huge);
    let (head, body, rest) = next_answer(&answer);
    assert!(
        head.starts_with("http/1.1 431 request header fields too large\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(body["code"], "header_too_large", "{body}");
    assert_eq!(rest, "", "nothing after the answer");

    // Pipelined behind a route's answer: that one is left as it is, the
    // refused head after it gets the JSON error.
    let answer = raw_exchange(
        &agent,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost a\r\n\r\n",
    );
    let (head, body, rest) = next_answer(&answer);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert_eq!(body["status"], "ok", "{body}");
    let (head, body, rest) = next_answer(rest);
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert_eq!(body["code"], "bad_request", "{body}");
    assert_eq!(rest, "", "nothing after the answer");

    let metrics = agent.metrics().await;
    for series in [
        "kubedisco_http_requests_rejected_total{reason=\"malformed_head\"} 2",
        "kubedisco_http_requests_rejected_total{reason=\"header_too_large\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
}

// ---------------------------------------------------------------------------
// Bad configuration.

#[tokio::test]
async fn a_broken_kubeconfig_is_reported_retried_and_recovered_from() {
    let ns = three_endpoints("kubeconfig").await;
    let path = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("broken-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, "this is: [not a kubeconfig").unwrap();
    let agent = Agent::spawn_with_env(
        &["--namespaces", &ns.name],
        &[("KUBECONFIG", path.to_str().unwrap())],
    );
    let body = eventually("readiness to say why", || async {
        match agent.get("/readyz").await {
            Ok((503, body)) if body["failures"]["kubeconfig"].is_object() => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let message = body["failures"]["kubeconfig"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("kubeconfig"), "{message}");
    assert_eq!(
        agent.get("/healthz").await.unwrap().0,
        200,
        "alive while misconfigured"
    );
    // The cause is logged once, not once per retry.
    eventually("a few retries", || async {
        match metric(
            &agent.client,
            agent.http,
            "kubedisco_api_errors_total{resource=\"kubeconfig\",reason=\"config\"}",
        )
        .await
        {
            Some(n) if n >= 3.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let logged = agent
        .log()
        .matches("cannot load Kubernetes client configuration")
        .count();
    assert_eq!(logged, 1, "{}", agent.log_tail());

    // Fixed in place: the agent goes on by itself.
    std::fs::copy(kubeconfig(), &path).unwrap();
    agent.wait_ready().await;
    assert_eq!(agent.endpoint_ips(&ns.name, "web").await.unwrap().len(), 3);
    assert!(
        agent
            .log()
            .contains("Kubernetes client configuration loaded: going on")
    );
    let _ = std::fs::remove_file(&path);
    ns.delete().await;
}

#[test]
fn invalid_flags_exit_2_naming_the_flag() {
    for (flag, value) in [
        ("--snapshot-max-age", "forever"),
        ("--http-max-connections", "0"),
        ("--http-max-header-bytes", "10"),
        ("--handover-wait", "later"),
    ] {
        let output = Command::new(binary())
            .args(["agent", flag, value])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// Property tests of the HTTP API's parameters, in process: whatever the
// path and query, the API answers a JSON error or a 200, never panics,
// never a 500, and the parsing functions agree with their specification.

mod properties {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use kubedisco::duration::{format_duration, parse_duration};
    use kubedisco::http::query;
    use proptest::prelude::*;
    use tower::ServiceExt;

    fn router() -> axum::Router {
        kubedisco::http::router(state())
    }

    fn state() -> kubedisco::http::AppState {
        use kubedisco::http::{AppState, HttpConfig, HttpContext};
        use kubedisco::index::{Index, Scope};
        use kubedisco::source::manifest::{DEMO, parse_manifests};
        use std::sync::Arc;
        let index = Arc::new(Index::default());
        index.expect_parts(["demo"]);
        let (mut services, mut slices) = (Vec::new(), Vec::new());
        for (_, text) in DEMO {
            let parsed = parse_manifests(text, &Default::default()).unwrap();
            services.extend(parsed.services);
            slices.extend(parsed.slices);
        }
        index.replace(&Scope::All, Some(services), Some(slices), "demo");
        AppState::new(HttpContext {
            index,
            metrics: Arc::default(),
            registry: Arc::default(),
            status: Arc::default(),
            pickers: Arc::default(),
            // Blocking queries return within milliseconds here.
            config: Arc::new(HttpConfig {
                max_wait: Duration::from_millis(20),
                default_wait: Duration::from_millis(20),
                heartbeat: Duration::from_secs(15),
            }),
            shutdown: Default::default(),
            lifecycle: Arc::default(),
            watch_slots: Arc::new(tokio::sync::Semaphore::new(1 << 20)),
        })
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("shop".to_string()),
            Just("orders".to_string()),
            Just("platform".to_string()),
            Just("auth".to_string()),
            "[a-z0-9-]{0,70}",
            "\\PC{0,12}",
            Just("%2F".to_string()),
            Just("..".to_string()),
        ]
    }

    fn param() -> impl Strategy<Value = (String, String)> {
        let key = prop_oneof![
            Just("index"),
            Just("wait"),
            Just("port"),
            Just("key"),
            Just("strategy"),
            Just("format"),
            Just("x"),
            Just(""),
        ];
        let value = prop_oneof![
            Just("0".to_string()),
            Just("999999".to_string()),
            Just("18446744073709551616".to_string()),
            Just("5ms".to_string()),
            Just("1h".to_string()),
            Just("-1s".to_string()),
            Just("grpc".to_string()),
            Just("random".to_string()),
            Just("sse".to_string()),
            "\\PC{0,10}",
        ];
        (key.prop_map(String::from), value)
    }

    fn encode(text: &str) -> String {
        form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn every_request_gets_a_json_answer_never_a_panic_or_500(
            route in prop_oneof![Just("services"), Just("watch"), Just("pick"), Just("debug")],
            ns in segment(),
            name in segment(),
            params in proptest::collection::vec(param(), 0..4),
        ) {
            let path = match route {
                "debug" => "/debug/endpoints".to_string(),
                route => format!("/v1/{route}/{}/{}", encode(&ns), encode(&name)),
            };
            let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            let uri = if query.is_empty() { path } else { format!("{path}?{}", query.join("&")) };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (status, content_type, body) = runtime.block_on(async {
                let request = Request::get(&uri).body(Body::empty()).unwrap();
                let response = router().oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                // A watch stream that started never ends: read its head only.
                let body = if status == 200 && route == "watch" {
                    Vec::new()
                } else {
                    axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap().to_vec()
                };
                (status, content_type, body)
            });
            prop_assert!([200, 400, 404, 503].contains(&status), "{uri}: {status}");
            if status != 200 || route != "watch" {
                prop_assert!(content_type.starts_with("application/json"), "{uri}: {content_type}");
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                if status >= 400 {
                    prop_assert!(json["code"].is_string() && json["error"].is_string(), "{uri}: {json}");
                }
            }
        }

        #[test]
        fn the_direct_single_service_answer_is_the_routers(namespace in segment(), name in segment()) {
            let path = format!("/v1/services/{}/{}", encode(&namespace), encode(&name));
            let Ok(uri) = path.parse::<axum::http::Uri>() else { return Ok(()) };
            let state = state();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let direct = kubedisco::http::services::get_one_direct(&state, &axum::http::Method::GET, &uri);
                let Some(direct) = direct else { return Ok(()) };
                let request = Request::get(uri.clone()).body(Body::empty()).unwrap();
                let routed = kubedisco::http::router(state.clone()).oneshot(request).await.unwrap();
                prop_assert_eq!(direct.status(), routed.status(), "{}", path);
                for header in ["content-type", "x-kubedisco-index"] {
                    prop_assert_eq!(direct.headers().get(header), routed.headers().get(header), "{} {}", path, header);
                }
                let direct = axum::body::to_bytes(direct.into_body(), 1 << 20).await.unwrap();
                let routed = axum::body::to_bytes(routed.into_body(), 1 << 20).await.unwrap();
                prop_assert_eq!(direct, routed, "{}", path);
                Ok(())
            })?;
        }

        #[test]
        fn query_parsing_accepts_exactly_known_unique_parameters(raw in "\\PC{0,40}") {
            let allowed = ["index", "wait"];
            if let Ok(params) = query::parse(Some(&raw), &allowed) {
                let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes()).into_owned().collect();
                prop_assert_eq!(params.len(), pairs.len(), "every pair kept, none repeated");
                for (key, value) in pairs {
                    prop_assert!(allowed.contains(&key.as_str()));
                    prop_assert_eq!(params.get(&key), Some(&value));
                }
            }
        }

        #[test]
        fn encoded_known_parameters_round_trip(index in any::<u64>(), wait in "\\PC{0,12}") {
            let raw = format!("index={index}&wait={}", encode(&wait));
            let params = query::parse(Some(&raw), &["index", "wait"]).unwrap();
            prop_assert_eq!(params.get("index"), Some(&index.to_string()));
            prop_assert_eq!(params.get("wait"), Some(&wait));
            let repeated = format!("{raw}&index=1");
            prop_assert!(query::parse(Some(&repeated), &["index", "wait"]).is_err());
        }

        #[test]
        fn names_are_exactly_dns_labels(name in "[a-z0-9-]{0,70}|\\PC{0,8}") {
            let expected = !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            prop_assert_eq!(query::validate_name("namespace", &name).is_ok(), expected);
        }

        #[test]
        fn durations_parse_without_panics_and_round_trip(text in "\\PC{0,16}", millis in 0u64..10_000_000_000) {
            let _ = parse_duration(&text);
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
            prop_assert_eq!(parse_duration(&format!("{millis}ms")), Ok(d));
            let negative = format!("-{millis}s");
            prop_assert!(parse_duration(&negative).is_err());
        }
    }
}
