//! Bounded resources under floods of connections: ten thousand idle
//! connections leave later clients answered (the longest-idle make room, or
//! the caps hold them all) in bounded memory, and connections beyond a cap
//! are answered (HTTP 503, DNS REFUSED), never reset. Counted through the
//! agent's own connection metrics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{three_endpoints, without_upstream};
use crate::support::agent::{agent_addresses, metric, metrics_text};
use crate::support::dns::{frame, query_a, read_frame, tcp_a, udp_a};
use crate::support::{Agent, TestNamespace, eventually};

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// `kubedisco_{front}_connections_closed_total{reason}` as (front, reason,
/// count), for both TCP front ends.
async fn closed_by_reason(
    client: &reqwest::Client,
    http: SocketAddr,
) -> Vec<(String, String, u64)> {
    let text = metrics_text(client, http).await.unwrap_or_default();
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
    let args = [&["--namespaces", ns.name.as_str()], caps].concat();
    let agent = Agent::spawn_as("idle", http, dns, &without_upstream(&args), &[]);
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
    let watch = agent.open_watch("/v1/watch/shop/orders").await;
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
                framed.extend(frame(&query_a(id, "orders.shop.svc.cluster.local")));
            }
            stream.write_all(&framed).map_err(|e| e.to_string())?;
            let mut answers = Vec::new();
            for _ in 0..2 {
                let response = read_frame(&mut stream)?;
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
