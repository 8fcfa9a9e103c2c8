//! The DNS front end through real resolvers: `dig` (UDP, TCP, EDNS sizes),
//! hickory-resolver, Go's `net.Resolver`, raw packets for the error cases,
//! and `dnsmasq` as the upstream for forwarded names.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::agent::free_port;
use crate::support::cluster::repo_root;
use crate::support::upstream::Dnsmasq;
use crate::support::{Agent, InProcessAgent, TestNamespace, eventually, tools};

use crate::support::agent::dig;

fn status(output: &str) -> &str {
    output
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("?")
}

/// The records of type `rtype` in dig's output, as whitespace-split fields
/// (owner, ttl, class, type, data...).
fn records<'a>(output: &'a str, rtype: &str) -> Vec<Vec<&'a str>> {
    output
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.get(3) == Some(&rtype))
        .collect()
}

/// An agent serving `source` whose upstream is a closed loopback port:
/// forwarded names fail fast (SERVFAIL) and nothing asked leaves.
async fn agent_without_upstream(source: &str) -> Agent {
    Agent::start(&[
        "--source",
        source,
        "--upstream",
        "127.0.0.1:9",
        "--upstream-timeout",
        "300ms",
    ])
    .await
}

/// The demo's `_grpc._tcp.orders.shop` SRV answer in dig's output: three
/// records with real weights, the targets' addresses in Additional.
fn assert_demo_grpc_srv(output: &str) {
    let answers = records(output, "SRV");
    assert_eq!(answers.len(), 3, "{output}");
    let heavy = [
        "0",
        "300",
        "9090",
        "orders-2.orders.shop.svc.cluster.local.",
    ];
    assert!(answers.iter().any(|f| f[4..] == heavy), "{output}");
    assert!(
        records(output, "A")
            .iter()
            .any(|f| f[0] == "orders-0.orders.shop.svc.cluster.local." && f[4] == "10.244.1.11"),
        "targets in Additional: {output}"
    );
}

/// A directory with one headless Service of `count` endpoints (10.99.x.y).
fn big_service_dir(count: usize) -> std::path::PathBuf {
    let dir = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("big-{}-{count}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: load}\nspec: {clusterIP: None}\n",
    );
    for (slice, chunk) in (0..count).collect::<Vec<_>>().chunks(100).enumerate() {
        text.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-{slice}\n  namespace: load\n  labels: {{kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
        ));
        for i in chunk {
            text.push_str(&format!(
                "- addresses: [10.99.{}.{}]\n",
                i / 250,
                i % 250 + 1
            ));
        }
    }
    // A served Service with no usable endpoint.
    text.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: drained, namespace: load}\nspec: {clusterIP: None}\n");
    std::fs::write(dir.join("big.yaml"), text).unwrap();
    dir
}

#[tokio::test]
async fn dig_sees_every_record_kind_over_udp_and_tcp() {
    tools::require("dig");
    let agent = Agent::start(&["--source", "demo"]).await;

    let a = dig(&agent, &["orders.shop.svc.cluster.local", "A"]);
    assert_eq!(status(&a), "NOERROR", "{a}");
    assert!(a.contains("flags: qr aa"), "authoritative: {a}");
    let mut ips: Vec<&str> = records(&a, "A").iter().map(|f| f[4]).collect();
    ips.sort();
    assert_eq!(ips, ["10.244.1.11", "10.244.1.12", "10.244.2.21"]);

    let aaaa = dig(
        &agent,
        &["catalog.shop.svc.cluster.local", "AAAA", "+short"],
    );
    assert!(
        aaaa.contains("fd00:10:244:1::41") && aaaa.contains("fd00:10:244:2::42"),
        "{aaaa}"
    );

    let srv = dig(&agent, &["_grpc._tcp.orders.shop.svc.cluster.local", "SRV"]);
    assert_demo_grpc_srv(&srv);

    let ptr = dig(&agent, &["-x", "10.244.1.11", "+short"]);
    assert_eq!(ptr.trim(), "orders-0.orders.shop.svc.cluster.local.");
    let txt = dig(&agent, &["dns-version.cluster.local", "TXT", "+short"]);
    assert_eq!(txt.trim(), "\"1.1.0\"");

    // TCP, and the question's letter case echoed.
    let tcp = dig(&agent, &["+tcp", "Orders.SHOP.svc.cluster.local", "A"]);
    assert!(tcp.contains("(TCP)"), "{tcp}");
    assert!(
        records(&tcp, "A")
            .iter()
            .all(|f| f[0] == "Orders.SHOP.svc.cluster.local."),
        "{tcp}"
    );
    assert_eq!(records(&tcp, "A").len(), 3, "{tcp}");

    // A hostname record.
    let host = dig(
        &agent,
        &["orders-1.orders.shop.svc.cluster.local", "A", "+short"],
    );
    assert_eq!(host.trim(), "10.244.1.12");
}

#[tokio::test]
async fn each_response_code_has_its_case() {
    tools::require("dig");
    let dir = big_service_dir(3);
    let agent = agent_without_upstream(dir.to_str().unwrap()).await;

    // NXDOMAIN: a served Service without usable endpoints, with the SOA.
    let nx = dig(&agent, &["drained.load.svc.cluster.local", "A"]);
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    let soa = records(&nx, "SOA");
    assert_eq!(
        soa[0][4..6],
        ["ns.dns.cluster.local.", "hostmaster.cluster.local."],
        "{nx}"
    );
    // NODATA: the name exists, the type does not; SOA minimum is the TTL.
    let nodata = dig(&agent, &["big.load.svc.cluster.local", "MX"]);
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    assert!(nodata.contains("ANSWER: 0"), "{nodata}");
    assert_eq!(records(&nodata, "SOA")[0].last(), Some(&"5"), "{nodata}");
    // NXDOMAIN for an unknown port name.
    let port = dig(&agent, &["_smtp._tcp.big.load.svc.cluster.local", "SRV"]);
    assert_eq!(status(&port), "NXDOMAIN", "{port}");
    // REFUSED: a class other than IN.
    let chaos = dig(&agent, &["big.load.svc.cluster.local", "CH", "TXT"]);
    assert_eq!(status(&chaos), "REFUSED", "{chaos}");
    // ANY: RFC 8482's single HINFO.
    let any = dig(&agent, &["big.load.svc.cluster.local", "ANY"]);
    assert_eq!(records(&any, "HINFO")[0][4], "\"RFC8482\"", "{any}");
    // SERVFAIL when the upstream does not answer (in time).
    let started = Instant::now();
    let upstream = dig(&agent, &["example.invalid", "A"]);
    assert_eq!(status(&upstream), "SERVFAIL", "{upstream}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let metrics = agent.metrics().await;
    assert!(
        metrics.contains("kubedisco_dns_upstream_errors_total{reason="),
        "{metrics}"
    );
    // BADVERS: EDNS version 1.
    let badvers = dig(
        &agent,
        &[
            "+edns=1",
            "+noednsnegotiation",
            "big.load.svc.cluster.local",
            "A",
        ],
    );
    assert_eq!(status(&badvers), "BADVERS", "{badvers}");

    // FORMERR and NOTIMP from raw packets; garbage gets no answer and no crash.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut query = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x03big\x04load\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01");
    let mut buffer = [0u8; 512];

    let mut two_questions = query.clone();
    two_questions[5] = 2;
    socket.send_to(&two_questions, agent.dns).unwrap();
    let (len, _) = socket.recv_from(&mut buffer).unwrap();
    assert_eq!(
        (buffer[0], buffer[1], buffer[3] & 0x0F),
        (0xAB, 0xCD, 1),
        "FORMERR: {:?}",
        &buffer[..len]
    );

    let mut status_opcode = query.clone();
    status_opcode[2] = 0x02 << 3;
    socket.send_to(&status_opcode, agent.dns).unwrap();
    socket.recv_from(&mut buffer).unwrap();
    assert_eq!(buffer[3] & 0x0F, 4, "NOTIMP");

    for garbage in [&b"\x00"[..], &[0xFF; 40][..], &query[..20]] {
        socket.send_to(garbage, agent.dns).unwrap();
    }
    // Still answering after all that.
    let after = dig(&agent, &["big.load.svc.cluster.local", "A", "+short"]);
    assert_eq!(after.lines().count(), 3, "{after}");
}

#[tokio::test]
async fn three_hundred_endpoints_truncate_over_udp_and_arrive_whole_over_tcp() {
    tools::require("dig");
    let dir = big_service_dir(300);
    let agent = Agent::start(&["--source", dir.to_str().unwrap()]).await;
    let udp = dig(
        &agent,
        &[
            "+ignore",
            "+bufsize=512",
            "_http._tcp.big.load.svc.cluster.local",
            "SRV",
        ],
    );
    assert!(
        udp.contains("flags: qr tc aa") || udp.contains(" tc "),
        "TC set: {udp}"
    );
    assert!(udp.contains("ANSWER: 0"), "no partial answer: {udp}");
    // dig's default: retry over TCP on TC.
    let tcp = dig(&agent, &["_http._tcp.big.load.svc.cluster.local", "SRV"]);
    assert_eq!(
        records(&tcp, "SRV").len(),
        300,
        "{}",
        &tcp[..tcp.len().min(2000)]
    );
    assert!(tcp.contains("ADDITIONAL: 301"), "300 targets + OPT");
    let a = dig(&agent, &["+tcp", "big.load.svc.cluster.local", "A"]);
    assert_eq!(records(&a, "A").len(), 300);
}

#[tokio::test]
async fn hickory_resolver_resolves_through_the_agent() {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::proto::rr::RData;

    let agent = InProcessAgent::demo().await;
    let mut server = NameServerConfig::udp_and_tcp(agent.dns.ip());
    for connection in &mut server.connections {
        connection.port = agent.dns.port();
    }
    let config = ResolverConfig::from_name_servers(vec![server]);
    let resolver =
        hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
            .unwrap();
    let ips = resolver
        .lookup_ip("orders.shop.svc.cluster.local.")
        .await
        .unwrap();
    assert_eq!(ips.iter().count(), 3);
    let srv = resolver
        .srv_lookup("_http._tcp.orders.shop.svc.cluster.local.")
        .await
        .unwrap();
    let mut weights: Vec<u16> = srv
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.weight),
            _ => None,
        })
        .collect();
    weights.sort();
    assert_eq!(weights, [100, 100, 300]);
}

#[tokio::test]
async fn go_net_resolver_looks_up_srv_and_hosts() {
    let agent = Agent::start(&["--source", "demo"]).await;
    let program = repo_root().join("tests/go-resolver");
    let output = Command::new("go")
        .current_dir(&program)
        .args([
            "run",
            ".",
            &agent.dns.to_string(),
            "orders.shop.svc.cluster.local",
            "_grpc._tcp.orders.shop.svc.cluster.local",
        ])
        .output()
        .expect("go is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("host 10.244.1.11"), "{stdout}");
    assert!(stdout.contains("host 10.244.2.21"), "{stdout}");
    assert!(
        stdout.contains("srv orders-2.orders.shop.svc.cluster.local. 9090 0 300"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("srv ").count(), 3, "{stdout}");
}

#[tokio::test]
async fn names_the_agent_does_not_serve_go_upstream() {
    tools::require("dig");
    let upstream = Dnsmasq::start();
    let upstream_arg = upstream.addr.to_string();
    let agent = Agent::start(&["--source", "demo", "--upstream", &upstream_arg]).await;
    eventually("the upstream's answer through the agent", || async {
        let out = dig(&agent, &["www.example.test", "A", "+short"]);
        if out.trim() == "192.0.2.7" {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    // In-zone names never go upstream: a ClusterIP Service without the
    // annotation is its cluster IP, answered by the agent.
    let cluster_ip = dig(&agent, &["billing-ui.platform.svc.cluster.local", "A"]);
    assert!(cluster_ip.contains("flags: qr aa"), "{cluster_ip}");
    assert_eq!(
        records(&cluster_ip, "A")[0][4],
        "10.96.12.8",
        "{cluster_ip}"
    );
    let reached: Vec<_> = upstream
        .queries()
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    assert!(
        reached.iter().all(|name| name.ends_with("example.test")),
        "only outside names reach the upstream: {reached:?}"
    );
    // Over TCP as well.
    let tcp = dig(&agent, &["+tcp", "api.example.test", "A", "+short"]);
    assert_eq!(tcp.trim(), "192.0.2.7");
    let metrics = agent.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kubedisco_dns_forwarded_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_real_cluster_service_resolves_and_follows_changes() {
    tools::require("dig");
    let ns = TestNamespace::new("dns").await;
    let agent = Agent::start(&["--namespaces", &ns.name]).await;
    ns.create_service("web", json!({})).await;
    let pods = ns.create_pods("web", 3).await;
    ns.mark_ready(&pods, "10.110.0.1".parse().unwrap()).await;
    let name = format!("web.{}.svc.cluster.local", ns.name);
    eventually("three A records", || async {
        let out = dig(&agent, &[&name, "A", "+short"]);
        if out.lines().count() == 3 {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    let srv = dig(&agent, &[&format!("_http._tcp.{name}"), "SRV", "+short"]);
    assert!(srv.contains(&format!("8080 web-0.{name}.")), "{srv}");
    ns.delete_pod(&pods[0]).await;
    eventually("two A records", || async {
        let out = dig(&agent, &[&name, "A", "+short"]);
        if out.lines().count() == 2 && !out.contains("10.110.0.1\n") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn before_the_first_sync_service_names_get_servfail() {
    tools::require("dig");
    // An API server that never answers: the agent cannot sync.
    let dead = free_port();
    let kubeconfig = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("dead-{dead}.kubeconfig"));
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: dead, cluster: {{server: 'http://127.0.0.1:{dead}'}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: dead, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let agent = Agent::spawn_with_env(&[], &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    let out = eventually("the DNS port to answer", || async {
        let out = dig(&agent, &["orders.shop.svc.cluster.local", "A"]);
        if out.contains("status:") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert_eq!(agent.get("/readyz").await.unwrap().0, 503);
}

/// The agent's own dig, for images without one: what it prints is read
/// here as dig's output is above.
#[tokio::test]
async fn kubedisco_resolve_prints_the_answer_as_dig_does() {
    let agent = agent_without_upstream("demo").await;

    let (code, a, _) = agent.resolve(&["orders.shop.svc.cluster.local"]);
    assert_eq!(code, Some(0), "{a}");
    assert_eq!(status(&a), "NOERROR", "{a}");
    assert!(a.contains("flags: qr aa rd ra;"), "authoritative: {a}");
    let mut ips: Vec<&str> = records(&a, "A").iter().map(|f| f[4]).collect();
    ips.sort();
    assert_eq!(ips, ["10.244.1.11", "10.244.1.12", "10.244.2.21"], "{a}");
    assert!(
        a.contains(&format!(
            "SERVER: {}#{} (UDP)",
            agent.dns.ip(),
            agent.dns.port()
        )),
        "{a}"
    );

    let (code, srv, _) = agent.resolve(&["_grpc._tcp.orders.shop.svc.cluster.local", "srv"]);
    assert_eq!(code, Some(0), "{srv}");
    assert!(srv.contains(";; ADDITIONAL SECTION:"), "{srv}");
    assert_demo_grpc_srv(&srv);

    // NXDOMAIN (a port the Service does not have) is an answer: exit 0,
    // with the zone's SOA in Authority.
    let (code, nx, _) = agent.resolve(&["_smtp._tcp.orders.shop.svc.cluster.local", "SRV"]);
    assert_eq!(code, Some(0), "{nx}");
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(nx.contains(";; AUTHORITY SECTION:"), "{nx}");
    assert_eq!(records(&nx, "SOA")[0][4], "ns.dns.cluster.local.", "{nx}");

    let (code, tcp, _) = agent.resolve(&["--tcp", "Orders.SHOP.svc.cluster.local", "A"]);
    assert_eq!(code, Some(0), "{tcp}");
    assert!(tcp.contains("(TCP)"), "{tcp}");
    assert_eq!(records(&tcp, "A").len(), 3, "{tcp}");
    let (_, short, _) = agent.resolve(&["--short", "orders-1.orders.shop.svc.cluster.local"]);
    assert_eq!(short, "10.244.1.12\n");
    let (_, ptr, _) = agent.resolve(&["--short", "10.244.1.11"]);
    assert_eq!(ptr, "orders-0.orders.shop.svc.cluster.local.\n");
    // The README's quick start: the demo's ExternalName and a pod name.
    let (_, external, _) = agent.resolve(&["--short", "billing.platform.svc.cluster.local"]);
    assert_eq!(
        external,
        "billing-ui.platform.svc.cluster.local.\n10.96.12.8\n"
    );
    let (_, pod, _) = agent.resolve(&["--short", "10-244-1-11.shop.pod.cluster.local"]);
    assert_eq!(pod, "10.244.1.11\n");

    // Bad input: status 2 and why, and nothing asked.
    for (args, complaint) in [
        (
            &["orders.shop.svc.cluster.local", "AX"][..],
            "unknown record type \"AX\"",
        ),
        (&["orders..shop"][..], "is not a DNS name"),
        (&["orders.shop", "A", "--timeout", "soon"][..], "--timeout"),
    ] {
        let (code, out, err) = agent.resolve(args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(complaint), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // Nobody listening: status 1 and which server.
    let closed = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = agent.resolve(&[
        "--server",
        &closed,
        "--tcp",
        "orders.shop.svc.cluster.local",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("no answer from {closed} over TCP")),
        "{err}"
    );
}

/// A truncated UDP answer is asked again over TCP (or shown with its TC
/// flag), and a server that fails (SERVFAIL) makes resolve fail.
#[tokio::test]
async fn kubedisco_resolve_follows_truncation_and_fails_on_servfail() {
    let dir = big_service_dir(200);
    let agent = agent_without_upstream(dir.to_str().unwrap()).await;
    let (code, whole, _) = agent.resolve(&["big.load.svc.cluster.local", "A"]);
    assert_eq!(code, Some(0), "{whole}");
    assert!(
        whole.starts_with(";; Truncated over UDP, asked again over TCP.\n"),
        "{whole}"
    );
    assert!(whole.contains("(TCP)"), "{whole}");
    assert_eq!(records(&whole, "A").len(), 200, "{whole}");
    let (code, truncated, _) =
        agent.resolve(&["--no-tcp-retry", "big.load.svc.cluster.local", "A"]);
    assert_eq!(code, Some(0), "{truncated}");
    assert!(truncated.contains("flags: qr aa tc rd ra;"), "{truncated}");
    assert!(records(&truncated, "A").len() < 200, "{truncated}");

    let (code, servfail, _) = agent.resolve(&["example.invalid", "A"]);
    assert_eq!(status(&servfail), "SERVFAIL", "{servfail}");
    assert_eq!(code, Some(1), "{servfail}");
}
