//! The agent when the control plane goes away: it keeps answering with the
//! last known state and says how old it is, never claims a recovery or a
//! freshness the API server has not given it, and a re-list (410 Gone after
//! a restart and etcd compaction) is swapped in whole, never seen half-done.
//! Each test stops parts of a control plane of its own.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agent::ips_of;
use crate::support::cluster::PrivateCluster;
use crate::support::kube::{apply_slice, headless_service};
use crate::support::{Agent, eventually};

fn ips(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range
        .map(|i| format!("{prefix}.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

/// One DNS A query over UDP; the number of A records, or why none.
fn count_a_records(server: SocketAddr, name: &str) -> Result<u16, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut query = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&query, server).map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 1500];
    let (len, _) = socket.recv_from(&mut buffer).map_err(|e| e.to_string())?;
    if len < 12 || buffer[3] & 0x0F != 0 {
        return Err(format!("rcode {}", buffer[3] & 0x0F));
    }
    Ok(u16::from_be_bytes([buffer[6], buffer[7]]))
}

#[derive(Debug, Default)]
struct Observations {
    http_answers: usize,
    http_failures: Vec<String>,
    dns_answers: usize,
    dns_failures: Vec<String>,
    min_endpoints: Option<usize>,
    saw_stale: bool,
}

/// Queries the agent in a loop until `stop`: HTTP for a Service that must
/// show at least `expected` endpoints, DNS for `dns_name`, which must
/// answer exactly 3 A records.
fn poll_agent(
    agent_http: String,
    dns: SocketAddr,
    dns_name: String,
    expected: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Observations> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut seen = Observations::default();
        while !stop.load(Ordering::Relaxed) {
            match client.get(&agent_http).send().await {
                Ok(response) if response.status() == 200 => {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    let count = ips_of(&body).len();
                    seen.http_answers += 1;
                    seen.min_endpoints = Some(seen.min_endpoints.map_or(count, |m| m.min(count)));
                    seen.saw_stale |= body["stale"] == true;
                    if count < expected {
                        seen.http_failures
                            .push(format!("{count} endpoints: {body}"));
                    }
                }
                Ok(response) => seen
                    .http_failures
                    .push(format!("HTTP {}", response.status())),
                Err(error) => seen.http_failures.push(error.to_string()),
            }
            let name = dns_name.clone();
            match tokio::task::spawn_blocking(move || count_a_records(dns, &name))
                .await
                .unwrap()
            {
                Ok(3) => seen.dns_answers += 1,
                Ok(n) => seen.dns_failures.push(format!("{n} A records")),
                Err(error) => seen.dns_failures.push(error),
            }
            // Pacing, not waiting for a condition.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

// Multi-threaded: the poller must keep running while the test thread
// blocks on scripts/testcluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_restart_and_compaction_never_shows_a_partial_service() {
    let cluster = PrivateCluster::start("relist");
    let client = cluster.client().await;
    let all = ips("10.120", 0..150);
    headless_service(
        &client,
        "relist",
        "big",
        &[
            ("big-a", all[..100].to_vec()),
            ("big-b", all[100..].to_vec()),
        ],
    )
    .await;
    // 150 A records do not fit a UDP answer; DNS is checked on a small one.
    headless_service(
        &client,
        "relist",
        "small",
        &[("small-a", ips("10.122", 0..3))],
    )
    .await;
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let agent = Agent::spawn_with_env(&["--namespaces", "relist"], &[("KUBECONFIG", &kubeconfig)]);
    agent.wait_ready().await;
    eventually("150 endpoints", || async {
        let n = agent.endpoint_ips("relist", "big").await?.len();
        if n == 150 {
            Ok(())
        } else {
            Err(format!("{n} endpoints"))
        }
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_agent(
        agent.url("/v1/services/relist/big"),
        agent.dns,
        "small.relist.svc.cluster.local".into(),
        150,
        stop.clone(),
    );

    cluster.run(&["stop", "kube-apiserver"]);
    cluster.run(&["compact"]);
    cluster.run(&["start", "kube-apiserver"]);

    // The watch resumes from a compacted revision: 410, re-list.
    eventually("a re-list of endpointslices", || async {
        let metrics = reqwest::get(agent.url("/metrics"))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if metrics.contains("kubedisco_watch_restarts_total{resource=\"endpointslices\"}") {
            Ok(())
        } else {
            Err(agent.log_tail())
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let seen = poller.await.unwrap();
    assert!(seen.http_answers > 10, "{seen:?}");
    assert!(
        seen.http_failures.is_empty(),
        "a reader saw a partial or failed answer: {:?}",
        seen.http_failures
    );
    assert_eq!(seen.min_endpoints, Some(150));
    eprintln!(
        "relist: {} HTTP answers (fewest endpoints seen: 150 of 150), {} DNS answers, none failed",
        seen.http_answers, seen.dns_answers
    );

    // After the re-list, changes flow again.
    apply_slice(&client, "relist", "big", "big-b", &all[100..149]).await;
    eventually("the change after the re-list", || async {
        let n = agent.endpoint_ips("relist", "big").await?.len();
        if n == 149 {
            Ok(())
        } else {
            Err(format!("{n} endpoints"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_without_an_api_server_lose_no_answer() {
    let cluster = PrivateCluster::start("outage");
    let client = cluster.client().await;
    let endpoints = ips("10.121", 0..3);
    headless_service(&client, "outage", "web", &[("web-a", endpoints.clone())]).await;
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let agent = Agent::spawn_with_env(&["--namespaces", "outage"], &[("KUBECONFIG", &kubeconfig)]);
    agent.wait_ready().await;
    assert_eq!(agent.endpoint_ips("outage", "web").await.unwrap().len(), 3);

    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_agent(
        agent.url("/v1/services/outage/web"),
        agent.dns,
        "web.outage.svc.cluster.local".into(),
        3,
        stop.clone(),
    );

    cluster.run(&["stop", "kube-apiserver"]);
    let stale = eventually("the agent to report stale", || async {
        let body = agent.service("outage", "web").await?;
        if body["stale"] == true {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert!(stale["staleSeconds"].as_f64().is_some(), "{stale}");
    // Still ready: stale answers beat none.
    assert_eq!(agent.get("/readyz").await.unwrap().0, 200);
    // Hold the outage while the poller keeps asking, until the agent itself
    // has been without the API server for 30 s (staleSeconds counts from the
    // oldest failure it has seen).
    eventually("30 s of outage in staleSeconds", || async {
        let body = agent.service("outage", "web").await?;
        match body["staleSeconds"].as_f64() {
            Some(seconds) if seconds >= 30.0 => Ok(()),
            _ => Err(body.to_string()),
        }
    })
    .await;
    cluster.run(&["start", "kube-apiserver"]);

    eventually("staleness to clear", || async {
        let body = agent.service("outage", "web").await?;
        if body["stale"] == false {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let seen = poller.await.unwrap();
    assert!(seen.http_failures.is_empty(), "{:?}", seen.http_failures);
    assert!(seen.dns_failures.is_empty(), "{:?}", seen.dns_failures);
    assert!(seen.saw_stale);
    assert!(
        seen.http_answers > 100 && seen.dns_answers > 100,
        "{seen:?}"
    );
    eprintln!(
        "outage: {} HTTP and {} DNS answers, none failed",
        seen.http_answers, seen.dns_answers
    );

    // A change made after the outage appears.
    let more = ips("10.121", 0..4);
    apply_slice(&client, "outage", "web", "web-a", &more).await;
    eventually("the change after the outage", || async {
        let n = agent.endpoint_ips("outage", "web").await?.len();
        if n == 4 {
            Ok(())
        } else {
            Err(format!("{n} endpoints"))
        }
    })
    .await;
}

/// The agent's count of API errors of one resource and reason.
async fn api_errors(agent: &Agent, resource: &str, reason: &str) -> f64 {
    let series =
        format!("kubedisco_api_errors_total{{resource=\"{resource}\",reason=\"{reason}\"}} ");
    agent
        .metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

/// Each retry of a watcher against a dead API server starts with its
/// `Init` event, before any request: that is no answer, so nothing may log
/// a recovery or report the data fresh until the API server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_down_from_the_start_is_never_reported_recovered_or_fresh() {
    let cluster = PrivateCluster::start("down-from-start");
    let client = cluster.client().await;
    headless_service(
        &client,
        "downstart",
        "web",
        &[("web-a", ips("10.123", 0..3))],
    )
    .await;
    cluster.run(&["stop", "kube-apiserver"]);
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let agent = Agent::spawn_with_env(
        &["--namespaces", "downstart"],
        &[("KUBECONFIG", &kubeconfig)],
    );
    eventually("the agent to fail to reach the API server", || async {
        if agent.log().contains("API server unreachable") {
            Ok(())
        } else {
            Err(agent.log_tail())
        }
    })
    .await;
    let retries_before = api_errors(&agent, "endpointslices", "unreachable").await;

    // Hold the outage for 10 s, reading what a client would see.
    let down_since = Instant::now();
    let mut reads = 0;
    while down_since.elapsed() < Duration::from_secs(10) {
        let (status, list) = agent.get("/v1/services").await.unwrap();
        assert_eq!(status, 200, "{list}");
        assert_eq!(
            list["stale"], true,
            "fresh with the API server down: {list}"
        );
        let (status, ready) = agent.get("/readyz").await.unwrap();
        assert_eq!(status, 503, "ready without ever having listed: {ready}");
        assert_eq!(
            ready["stale"], true,
            "fresh with the API server down: {ready}"
        );
        reads += 1;
        // Pacing, not waiting for a condition.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retries = api_errors(&agent, "endpointslices", "unreachable").await - retries_before;
    // The window held retries, each led by an `Init`: the case at issue.
    assert!(
        retries >= 2.0,
        "{retries} retries in 10 s:\n{}",
        agent.log_tail()
    );
    let log = agent.log();
    assert!(
        !log.contains("watch recovered"),
        "a recovery logged while the API server was down:\n{log}"
    );
    eprintln!(
        "down from the start: {reads} reads in 10 s, all stale; {retries} retries, no recovery logged"
    );

    cluster.run(&["start", "kube-apiserver"]);
    agent.wait_ready().await;
    eventually("fresh data once the API server is back", || async {
        let body = agent.service("downstart", "web").await?;
        if ips_of(&body).len() == 3 && body["stale"] == false {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert!(
        agent.log().contains("watch recovered"),
        "{}",
        agent.log_tail()
    );
}
