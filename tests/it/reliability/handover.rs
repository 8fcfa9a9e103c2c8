//! Zero-downtime restarts: two agents share the ports (SO_REUSEPORT), the
//! new one joins only once synced, and the old one, told to stop, hands
//! over without losing a query over UDP, TCP or HTTP; in a rolling update
//! it turns unready but answers until its successor has synced; alone, it
//! stops at once. Real processes on a shared address, real signals.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{three_endpoints, without_upstream};
use crate::support::agent::agent_addresses;
use crate::support::dns::{outcome, query_a, tcp_a};
use crate::support::{Agent, eventually, tools};

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
                        let _ = socket.send_to(&query_a(id, &name), server);
                        // Skip stale answers to earlier (timed-out) queries.
                        let outcome = loop {
                            match socket.recv_from(&mut buffer) {
                                Ok((len, _)) if len >= 2 && buffer[..2] != id.to_be_bytes() => {
                                    continue;
                                }
                                Ok((len, _)) => break outcome(&buffer[..len]),
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
    let old = Agent::spawn_as("old", http, dns, &without_upstream(&args), &[]);
    old.wait_log("synced: ready").await;
    let new = Agent::spawn_as("new", http, dns, &without_upstream(&args), &[]);
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
    assert!(status.success(), "{status:?}\n{}", old.log_tail());
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_rolling_update_the_old_agent_turns_unready_and_answers_until_the_new_one_has_synced()
{
    let ns = three_endpoints("rolling").await;
    let (http, dns) = agent_addresses();
    let mut old = Agent::spawn_as(
        "old",
        http,
        dns,
        &without_upstream(&["--namespaces", &ns.name]),
        &[],
    );
    old.wait_log("synced: ready").await;

    // The new agent starts, but cannot sync yet (RBAC lets it list Services,
    // not EndpointSlices): it waits beside the ports without taking any.
    let services_only =
        json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}]);
    let kubeconfig = ns.service_account_kubeconfig("next", services_only).await;
    let new = Agent::spawn_as(
        "new",
        http,
        dns,
        &without_upstream(&["--namespaces", &ns.name]),
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
    assert!(old.exited().is_none(), "it waits for its successor");

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
        old.log_tail()
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
}

#[tokio::test]
async fn sigterm_without_a_successor_does_not_wait_for_one() {
    let (http, dns) = agent_addresses();
    let mut agent = Agent::spawn_as(
        "alone",
        http,
        dns,
        &without_upstream(&["--source", "demo"]),
        &[],
    );
    agent.wait_log("synced: ready").await;
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    let log = agent.log();
    assert!(
        log.contains("no other agent on the ports: stopping"),
        "{}",
        agent.log_tail()
    );
    assert!(!log.contains("has not joined"), "{}", agent.log_tail());
}
