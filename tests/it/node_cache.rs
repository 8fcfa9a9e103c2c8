//! The node's resolver for names outside the cluster zone: the cache of
//! forwarded answers, coalescing, prefetch, serve-stale, per-domain
//! forwarding, TCP and UDP clients sharing the cache, `dump --cache`.
//! Against a scripted upstream (support/scripted.rs) that counts every
//! query reaching it; the agent serves the built-in demo, so no control
//! plane is needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::support::scripted::Scripted;
use crate::support::{Agent, eventually};

async fn agent_for(upstream: &Scripted, extra: &[&str]) -> Agent {
    agent_waiting(upstream, "300ms", extra).await
}

async fn agent_waiting(upstream: &Scripted, timeout: &str, extra: &[&str]) -> Agent {
    let addr = upstream.addr.to_string();
    let mut args = vec![
        "--source",
        "demo",
        "--upstream",
        &addr,
        "--upstream-timeout",
        timeout,
    ];
    args.extend_from_slice(extra);
    Agent::start(&args).await
}

/// One query as a stub resolver sends it (RD, EDNS 1232), over UDP or TCP.
fn ask(server: SocketAddr, name: &str, rtype: RecordType, tcp: bool) -> Result<Message, String> {
    let mut query = Message::query();
    query.metadata.id = rand::random();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    query.set_edns(edns);
    let packet = query.to_vec().unwrap();
    let bytes = if tcp {
        let mut stream = TcpStream::connect(server).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&packet);
        stream.write_all(&framed).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
        answer
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.send_to(&packet, server).map_err(|e| e.to_string())?;
        let mut buffer = vec![0u8; 65535];
        let (len, _) = socket.recv_from(&mut buffer).map_err(|e| e.to_string())?;
        buffer.truncate(len);
        buffer
    };
    let message = Message::from_vec(&bytes).map_err(|e| e.to_string())?;
    if message.metadata.id != query.metadata.id {
        return Err("answer with another ID".into());
    }
    Ok(message)
}

fn a(server: SocketAddr, name: &str) -> Message {
    ask(server, name, RecordType::A, false).unwrap()
}

#[tokio::test]
async fn answers_are_cached_counted_down_and_echo_the_askers_case() {
    let upstream = Scripted::start(30);
    let agent = agent_for(&upstream, &[]).await;

    let first = a(agent.dns, "WwW.Cached.Example.");
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert_eq!(first.answers.len(), 1);
    assert!(first.answers[0].ttl <= 30);
    assert_eq!(upstream.count("www.cached.example"), 1);

    // Another client, other letter case: from the cache, its own question.
    let second = a(agent.dns, "www.CACHED.example.");
    assert_eq!(second.queries[0].name().to_ascii(), "www.CACHED.example.");
    assert_eq!(second.answers[0].data.to_string(), "192.0.2.53");
    assert_eq!(upstream.count("www.cached.example"), 1);
    // AAAA is another key.
    let v6 = ask(agent.dns, "www.cached.example.", RecordType::AAAA, false).unwrap();
    assert_eq!(v6.answers.len(), 1);
    assert_eq!(upstream.count("www.cached.example"), 2);

    // The TTL counts down, and the upstream is still not asked again.
    eventually("the cached TTL to count down", || async {
        let ttl = a(agent.dns, "www.cached.example.").answers[0].ttl;
        if ttl < first.answers[0].ttl {
            Ok(())
        } else {
            Err(format!("ttl {ttl}"))
        }
    })
    .await;
    assert_eq!(upstream.count("www.cached.example"), 2);
    assert!(agent.metric("kubedisco_dns_cache_hits_total").await >= Some(3.0));
}

#[tokio::test]
async fn negative_answers_are_cached_for_the_soa_minimum() {
    let upstream = Scripted::start(30);
    // RFC 2308: min(SOA TTL 900, MINIMUM 20) = 20.
    upstream.set_soa(900, 20);
    let agent = agent_for(&upstream, &[]).await;
    for _ in 0..3 {
        let nx = a(agent.dns, "nx.missing.example.");
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        let soa = &nx.authorities[0];
        assert!(soa.ttl <= 20, "SOA TTL {} > 20", soa.ttl);
        let nodata = ask(
            agent.dns,
            "nodata.missing.example.",
            RecordType::AAAA,
            false,
        )
        .unwrap();
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
    }
    assert_eq!(upstream.count("nx.missing.example"), 1);
    assert_eq!(upstream.count("nodata.missing.example"), 1);
}

#[tokio::test]
async fn many_concurrent_identical_misses_make_one_upstream_query() {
    let upstream = Scripted::start(60);
    upstream.set_delay(Duration::from_millis(400));
    let agent = agent_waiting(&upstream, "3s", &[]).await;
    let dns = agent.dns;
    let clients: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                // UDP and TCP clients alike.
                ask(dns, "together.example.", RecordType::A, i % 4 == 0)
            })
        })
        .collect();
    for client in clients {
        let answer = client.join().unwrap().unwrap();
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 1);
    }
    assert_eq!(upstream.count("together.example"), 1);
    assert!(agent.metric("kubedisco_dns_cache_coalesced_total").await >= Some(1.0));
}

#[tokio::test]
async fn a_popular_name_is_prefetched_and_never_misses() {
    let upstream = Scripted::start(4);
    let agent = agent_for(&upstream, &[]).await;
    a(agent.dns, "popular.example.");
    // Asked every 150 ms through three of its lifetimes.
    for _ in 0..80 {
        let answer = a(agent.dns, "popular.example.");
        assert_eq!(answer.answers.len(), 1);
        assert!(answer.answers[0].ttl > 0);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Refreshed upstream in the background, yet only the first query
    // ever missed.
    assert!(
        upstream.count("popular.example") >= 3,
        "{}",
        upstream.count("popular.example")
    );
    assert_eq!(
        agent.metric("kubedisco_dns_cache_misses_total").await,
        Some(1.0)
    );
    assert!(agent.metric("kubedisco_dns_cache_prefetches_total").await >= Some(2.0));
}

#[tokio::test]
async fn names_seen_before_survive_an_upstream_outage_and_new_ones_fail_promptly() {
    let upstream = Scripted::start(1);
    let agent = agent_for(&upstream, &[]).await;
    let seen: Vec<String> = (0..5).map(|i| format!("seen{i}.example.")).collect();
    for name in &seen {
        assert_eq!(a(agent.dns, name).answers.len(), 1);
    }
    upstream.drop_all(true);
    let before = upstream.total();
    // Past every TTL: each seen name is served stale (TTL 30), never a
    // failure, until the upstream has been asked (and failed) for them.
    let mut stale = 0;
    for round in 0..40 {
        for name in &seen {
            let answer = a(agent.dns, name);
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NoError,
                "round {round}: {name}"
            );
            assert_eq!(answer.answers.len(), 1, "round {round}: {name}");
            if answer.answers[0].ttl == 30 {
                stale += 1;
            }
        }
        if stale >= 2 * seen.len() && upstream.total() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stale >= 2 * seen.len(), "{stale} stale answers");
    assert!(agent.metric("kubedisco_dns_cache_stale_served_total").await >= Some(10.0));
    // A name never seen: SERVFAIL (not silence: the client is not left
    // to time out).
    let new = a(agent.dns, "never-seen.example.");
    assert_eq!(new.metadata.response_code, ResponseCode::ServFail);
    // Upstream back: fresh answers again.
    upstream.drop_all(false);
    eventually("fresh answers once the upstream is back", || async {
        let answer = a(agent.dns, "fresh-again.example.");
        match answer.metadata.response_code {
            ResponseCode::NoError => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn optimistic_caching_answers_an_expired_name_at_once_and_refreshes_it() {
    // An upstream slower than the default client timer's refresh wait
    // would need to be noticed (1.5 s < 1.8 s): with the default, the
    // first answer after expiry would be the refreshed one (TTL 1).
    let upstream = Scripted::start(1);
    // The upstream timeout above that delay: the refresh succeeds.
    let agent = agent_waiting(&upstream, "3s", &["--stale-client-timeout", "0"]).await;
    let name = "rarely-asked.example.";
    assert_eq!(a(agent.dns, name).answers[0].ttl, 1);
    upstream.set_delay(Duration::from_millis(1500));
    eventually(
        "the expired entry to be answered stale (TTL 30)",
        || async {
            let answer = a(agent.dns, name);
            match answer.answers.first().map(|record| record.ttl) {
                Some(30) => Ok(()),
                other => Err(format!("TTL {other:?}")),
            }
        },
    )
    .await;
    // The refresh went out behind the stale answer (or was the prefetch
    // already under way) and lands in the cache.
    eventually("the refreshed answer", || async {
        let answer = a(agent.dns, name);
        match (
            upstream.count("rarely-asked.example"),
            answer.answers.first().map(|r| r.ttl),
        ) {
            (asked, Some(ttl)) if asked >= 2 && ttl <= 1 => Ok(()),
            other => Err(format!("(upstream queries, TTL) = {other:?}")),
        }
    })
    .await;
    assert!(agent.metric("kubedisco_dns_cache_stale_served_total").await >= Some(1.0));
}

#[tokio::test]
async fn per_domain_forwarding_sends_a_domain_to_its_own_upstream() {
    let default = Scripted::start(30);
    let corp = Scripted::start(30);
    let route = format!("corp.test={}", corp.addr);
    let agent = agent_for(&default, &["--forward", &route]).await;
    a(agent.dns, "intranet.corp.test.");
    a(agent.dns, "corp.test.");
    a(agent.dns, "www.example.com.");
    a(agent.dns, "notcorp.test.");
    assert_eq!(
        (corp.count("intranet.corp.test"), corp.count("corp.test")),
        (1, 1)
    );
    assert_eq!(corp.total(), 2);
    assert_eq!(
        default.count("www.example.com") + default.count("notcorp.test"),
        2
    );
    assert_eq!(default.total(), 2);
}

#[tokio::test]
async fn tcp_and_udp_clients_share_the_cache_and_large_answers_are_whole() {
    let upstream = Scripted::start(60);
    let agent = agent_for(&upstream, &[]).await;
    ask(agent.dns, "shared.example.", RecordType::A, false).unwrap();
    let over_tcp = ask(agent.dns, "shared.example.", RecordType::A, true).unwrap();
    assert_eq!(over_tcp.answers.len(), 1);
    assert_eq!(upstream.count("shared.example"), 1);

    // 100 records: too big for UDP. The agent asks upstream over UDP, gets
    // TC, asks again over TCP and caches the whole answer.
    let cut = ask(agent.dns, "big.example.", RecordType::A, false).unwrap();
    assert!(cut.metadata.truncation);
    let whole = ask(agent.dns, "big.example.", RecordType::A, true).unwrap();
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 100);
    let asked = upstream.count("big.example");
    // Both transports again: from the cache (TC for UDP, whole for TCP).
    assert!(
        ask(agent.dns, "big.example.", RecordType::A, false)
            .unwrap()
            .metadata
            .truncation
    );
    assert_eq!(
        ask(agent.dns, "big.example.", RecordType::A, true)
            .unwrap()
            .answers
            .len(),
        100
    );
    assert_eq!(upstream.count("big.example"), asked);
}

#[tokio::test]
async fn dump_lists_cached_names_with_their_remaining_ttl() {
    let upstream = Scripted::start(300);
    let agent = agent_for(&upstream, &[]).await;
    a(agent.dns, "Listed.Example.");
    let output = std::process::Command::new(crate::support::agent::binary())
        .args(["dump", "--cache", "--addr", &agent.http.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    let row = table
        .lines()
        .find(|line| line.starts_with("listed.example."))
        .unwrap_or_else(|| panic!("no row for the name:\n{table}"));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(words[1..3], ["A", "positive"], "{row}");
    let ttl: u64 = words[3].trim_end_matches('s').parse().unwrap();
    assert!((1..=300).contains(&ttl), "{row}");
    // The route keeps the API's error contract: no parameters.
    let (status, body) = agent.get("/debug/cache?name=x").await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["code"].is_string() || body["code"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn the_next_agent_of_a_rolling_update_takes_the_cache_over() {
    let upstream = Scripted::start(300);
    let addr = upstream.addr.to_string();
    let args = [
        "--source",
        "demo",
        "--upstream",
        &addr,
        "--upstream-timeout",
        "300ms",
    ];
    let (http, dns) = crate::support::agent::agent_addresses();
    let mut old = Agent::spawn_as("cache-old", http, dns, &args, &[]);
    old.wait_ready().await;
    let names: Vec<String> = (0..5).map(|i| format!("kept{i}.example.")).collect();
    for name in &names {
        assert_eq!(a(dns, name).answers.len(), 1);
    }
    assert_eq!(upstream.total(), names.len());

    // The next agent starts on the same ports, takes the cache over before
    // it joins them, then the old one stops.
    let new = Agent::spawn_as("cache-new", http, dns, &args, &[]);
    new.wait_log("DNS cache taken over").await;
    new.wait_log("kubedisco agent started").await;
    old.sigterm();
    let status = old.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", old.log_tail());

    // Only the new agent answers now: from the cache it took over.
    for name in &names {
        let answer = a(dns, name);
        assert_eq!(answer.answers.len(), 1, "{name}");
        assert!(answer.answers[0].ttl <= 300);
    }
    assert_eq!(upstream.total(), names.len(), "no name went upstream again");
    let (status, body) = new.get("/debug/cache").await.unwrap();
    assert_eq!(
        (status, body["entries"].as_u64()),
        (200, Some(names.len() as u64)),
        "{body}"
    );
}

/// glibc's and Go's resolvers, as a pod runs them (its resolv.conf: the
/// agent as nameserver, the search list, ndots:5), share the node's cache:
/// an outside name asked again and again by different programs reaches
/// the upstream once per type at most.
#[tokio::test]
async fn a_pods_resolvers_share_the_nodes_cache() {
    use crate::support::netns::NetNs;
    use crate::support::upstream::{Dnsmasq, EXAMPLE_ORG};
    crate::support::tools::require("ip");
    let netns = NetNs::new();
    // An AAAA record too: dnsmasq's NODATA has no SOA, which RFC 2308
    // says not to cache.
    let upstream = Dnsmasq::start_in_with(
        &netns,
        "127.0.0.2:53".parse().unwrap(),
        &["--local-ttl=300", "--address=/example.org/2001:db8::8"],
    );
    let mut agent = netns.spawn_agent("demo", "127.0.0.2:53");
    netns.set_resolv_conf(
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 127.0.0.1\n\
         options ndots:5\n",
    );
    let getent = || {
        let (ok, text) = netns.run("getent", &["ahosts", "www.example.org"]);
        ok && text.lines().any(|l| l.starts_with(EXAMPLE_ORG))
    };
    eventually("glibc to resolve through the agent", || async {
        if getent() { Ok(()) } else { Err("not yet") }
    })
    .await;
    for _ in 0..3 {
        assert!(getent());
    }
    let go_resolver = crate::zone::build_go_resolver();
    for netdns in ["go", "cgo", "go"] {
        let output = netns
            .exec(go_resolver.to_str().unwrap())
            .args(["-system", "www.example.org"])
            .env("GODEBUG", format!("netdns={netdns}"))
            .output()
            .expect("run go-resolver");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("host {EXAMPLE_ORG}")),
            "netdns={netdns}: {stdout}"
        );
    }
    let reached = upstream.queries();
    let times = |rtype: &str| {
        reached
            .iter()
            .filter(|(t, n)| t == rtype && n == "www.example.org")
            .count()
    };
    // Six programs' lookups, each A and AAAA: one upstream query per type.
    assert_eq!((times("A"), times("AAAA")), (1, 1), "{reached:?}");
    assert!(
        reached.iter().all(|(_, name)| name == "www.example.org"),
        "search-list expansions stay on the node: {reached:?}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
