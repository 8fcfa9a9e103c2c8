//! The whole cluster zone, answered on the node: every kind of Service from
//! the real control plane, the name forms of the Kubernetes e2e DNS tests,
//! answers that follow each change, and an upstream (dnsmasq, counting
//! what reaches it) that never sees an in-zone name. Then the resolvers a
//! pod runs — glibc's (`getent ahosts`), Go's pure and cgo — in a network
//! namespace with a pod's resolv.conf (`ndots:5`, three search domains).

use std::net::IpAddr;
use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::agent::dig;
use crate::support::cluster::repo_root;
use crate::support::netns::NetNs;
use crate::support::upstream::{Dnsmasq, EXAMPLE_ORG};
use crate::support::{Agent, TestNamespace, eventually, tools};

/// (status, flags, answer records as "TYPE DATA") of a dig answer.
struct Dug {
    status: String,
    authoritative: bool,
    answers: Vec<String>,
    authority: Vec<String>,
    text: String,
}

fn ask(agent: &Agent, name: &str, rtype: &str) -> Dug {
    parse(dig(agent, &[name, rtype]))
}

fn parse(text: String) -> Dug {
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("?")
        .to_string();
    let authoritative = text.lines().any(|l| {
        l.starts_with(";; flags:") && l.split(';').nth(2).is_some_and(|f| f.contains(" aa"))
    });
    let section = |title: &str| -> Vec<String> {
        text.split(&format!(";; {title} SECTION:\n"))
            .nth(1)
            .map(|rest| {
                rest.lines()
                    .take_while(|l| !l.is_empty())
                    .map(|l| {
                        let fields: Vec<&str> = l.split_whitespace().collect();
                        fields[3..].join(" ")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Dug {
        status,
        authoritative,
        answers: section("ANSWER"),
        authority: section("AUTHORITY"),
        text,
    }
}

fn cluster_ips(service: &Service) -> Vec<String> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ips.clone())
        .unwrap_or_default()
}

/// `10.96.0.10` → `10.0.96.10.in-addr.arpa`; IPv6 by nibbles.
fn reverse_name(ip: &str) -> String {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut labels: Vec<String> = v6
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xF])
                .map(|n| format!("{n:x}"))
                .collect();
            labels.reverse();
            format!("{}.ip6.arpa", labels.join("."))
        }
    }
}

/// Polls until `check` holds for dig's answer to (`name`, `rtype`).
async fn until(agent: &Agent, what: &str, name: &str, rtype: &str, check: impl Fn(&Dug) -> bool) {
    eventually(what, || async {
        let dug = ask(agent, name, rtype);
        if check(&dug) { Ok(()) } else { Err(dug.text) }
    })
    .await;
}

#[tokio::test]
async fn every_kind_of_service_is_answered_on_the_node_and_follows_changes() {
    tools::require("dig");
    let ns = TestNamespace::new("zone").await;
    let upstream = Dnsmasq::start();
    let upstream_arg = upstream.addr.to_string();
    // Every namespace: an agent limited by --namespaces cannot deny names
    // under the others (`www.example.org.svc.cluster.local` is endpoint
    // `www` of Service `example` in namespace `org`), and forwards them.
    let agent = Agent::start(&["--upstream", &upstream_arg]).await;
    let n = &ns.name;
    let fqdn = |name: &str| format!("{name}.{n}.svc.cluster.local");

    // ClusterIP (dual-stack: the test API server has both service CIDRs),
    // NodePort, LoadBalancer, two ExternalName, one headless with Pods.
    let web: Service = ns
        .create(json!({"metadata": {"name": "web"}, "spec": {
            "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
            "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}))
        .await;
    let node_port: Service = ns
        .create(
            json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort",
            "ports": [{"name": "http", "port": 8080}]}}),
        )
        .await;
    let load_balancer: Service = ns
        .create(
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer",
            "ports": [{"name": "https", "port": 443}]}}),
        )
        .await;
    let _: Service = ns
        .create(
            json!({"metadata": {"name": "alias"}, "spec": {"type": "ExternalName",
            "externalName": fqdn("web")}}),
        )
        .await;
    let _: Service = ns
        .create(
            json!({"metadata": {"name": "outside"}, "spec": {"type": "ExternalName",
            "externalName": "www.example.org"}}),
        )
        .await;
    ns.create_service("db", json!({})).await;
    let pods = ns.create_pods("db", 2).await;
    ns.mark_ready(&pods, "10.120.0.1".parse().unwrap()).await;

    let web_ips = cluster_ips(&web);
    assert_eq!(web_ips.len(), 2, "dual-stack cluster IPs: {web_ips:?}");
    let (web_v4, web_v6) = (web_ips[0].clone(), web_ips[1].clone());
    assert!(web_v6.contains(':'), "{web_ips:?}");

    until(&agent, "web's cluster IP", &fqdn("web"), "A", |d| {
        d.answers == [format!("A {web_v4}")]
    })
    .await;
    let aaaa = ask(&agent, &fqdn("web"), "AAAA");
    assert!(aaaa.authoritative, "{}", aaaa.text);
    assert_eq!(aaaa.answers, [format!("AAAA {web_v6}")], "{}", aaaa.text);

    // Single-stack: NODATA with the SOA for the other family.
    let np_v4 = cluster_ips(&node_port)[0].clone();
    until(&agent, "np's cluster IP", &fqdn("np"), "A", |d| {
        d.answers == [format!("A {np_v4}")]
    })
    .await;
    let np_aaaa = ask(&agent, &fqdn("np"), "AAAA");
    assert_eq!(
        (
            np_aaaa.status.as_str(),
            np_aaaa.answers.len(),
            np_aaaa.authority.len()
        ),
        ("NOERROR", 0, 1),
        "{}",
        np_aaaa.text
    );
    assert!(np_aaaa.authority[0].starts_with("SOA "), "{}", np_aaaa.text);
    let lb = ask(&agent, &fqdn("lb"), "A");
    assert_eq!(
        lb.answers,
        [format!("A {}", cluster_ips(&load_balancer)[0])],
        "{}",
        lb.text
    );

    // SRV per named port, the Service itself as target, its addresses in
    // Additional.
    let srv = ask(&agent, &format!("_http._tcp.{}", fqdn("web")), "SRV");
    assert_eq!(
        srv.answers,
        [format!("SRV 0 100 80 {}.", fqdn("web"))],
        "{}",
        srv.text
    );
    assert!(
        srv.text.contains(&format!("A\t{web_v4}")) && srv.text.contains(&format!("AAAA\t{web_v6}")),
        "the Service's addresses in Additional: {}",
        srv.text
    );
    let udp = ask(&agent, &format!("_dns._udp.{}", fqdn("web")), "SRV");
    assert_eq!(
        udp.answers,
        [format!("SRV 0 100 53 {}.", fqdn("web"))],
        "{}",
        udp.text
    );
    let wrong_protocol = ask(&agent, &format!("_dns._tcp.{}", fqdn("web")), "SRV");
    assert_eq!(wrong_protocol.status, "NXDOMAIN", "{}", wrong_protocol.text);

    // PTR for both cluster IPs.
    for ip in [&web_v4, &web_v6] {
        let ptr = ask(&agent, &reverse_name(ip), "PTR");
        assert!(ptr.authoritative, "{}", ptr.text);
        assert_eq!(
            ptr.answers,
            [format!("PTR {}.", fqdn("web"))],
            "{}",
            ptr.text
        );
    }

    // ExternalName in the zone: CNAME, then the target's record, locally.
    let alias = ask(&agent, &fqdn("alias"), "A");
    assert_eq!(
        alias.answers,
        [format!("CNAME {}.", fqdn("web")), format!("A {web_v4}")],
        "{}",
        alias.text
    );
    // Outside the zone: the target through the upstream.
    let outside = ask(&agent, &fqdn("outside"), "A");
    assert_eq!(
        outside.answers,
        [
            "CNAME www.example.org.".to_string(),
            format!("A {EXAMPLE_ORG}")
        ],
        "{}",
        outside.text
    );
    let outside_tcp = parse(dig(&agent, &["+tcp", &fqdn("outside"), "A"]));
    assert_eq!(outside_tcp.answers, outside.answers, "{}", outside_tcp.text);

    // The name forms of the Kubernetes e2e DNS tests (dns.go, dns_common.go),
    // once the EndpointSlice controller has published db's two Pods.
    let db_ips = ["10.120.0.1", "10.120.0.2"];
    until(&agent, "db's two Pods", &fqdn("db"), "A", |d| {
        d.answers.len() == 2
    })
    .await;
    type Check = Box<dyn Fn(&Dug) -> bool>;
    let forms: Vec<(String, &str, Check)> = vec![
        // Service, headless: its Pods' addresses.
        (fqdn("db"), "A", Box::new(move |d| d.answers.len() == 2)),
        // hostname.subdomain of a Pod behind a headless Service.
        (
            format!("db-0.{}", fqdn("db")),
            "A",
            Box::new(|d| d.answers.len() == 1),
        ),
        // SRV of a headless Service's named port: one per Pod.
        (
            format!("_http._tcp.{}", fqdn("db")),
            "SRV",
            Box::new(|d| d.answers.len() == 2),
        ),
        // Pod A record, dashed address.
        (
            format!("10-120-0-9.{n}.pod.cluster.local"),
            "A",
            Box::new(|d| d.answers == ["A 10.120.0.9"]),
        ),
        // PTR of a Pod behind a headless Service.
        (
            reverse_name(db_ips[0]),
            "PTR",
            Box::new(|d| d.answers.len() == 1),
        ),
        // ExternalName.
        (
            fqdn("outside"),
            "CNAME",
            Box::new(|d| d.answers == ["CNAME www.example.org."]),
        ),
        // The schema version.
        (
            "dns-version.cluster.local".into(),
            "TXT",
            Box::new(|d| d.answers == ["TXT \"1.1.0\""]),
        ),
    ];
    for (name, rtype, check) in &forms {
        let dug = ask(&agent, name, rtype);
        assert!(
            dug.authoritative && check(&dug),
            "{name} {rtype}: {}",
            dug.text
        );
    }

    // Names that exist only as parents: NODATA. Everything else: NXDOMAIN,
    // answered here with the SOA — the search-path expansions above all.
    for (name, status) in [
        (format!("{n}.svc.cluster.local"), "NOERROR"),
        ("svc.cluster.local".into(), "NOERROR"),
        ("pod.cluster.local".into(), "NOERROR"),
        (format!("www.example.org.{n}.svc.cluster.local"), "NXDOMAIN"),
        ("www.example.org.svc.cluster.local".into(), "NXDOMAIN"),
        ("www.example.org.cluster.local".into(), "NXDOMAIN"),
        (fqdn("nope"), "NXDOMAIN"),
        (format!("x.{}", fqdn("web")), "NXDOMAIN"),
    ] {
        let dug = ask(&agent, &name, "A");
        assert_eq!(dug.status, status, "{name}: {}", dug.text);
        assert!(
            dug.authoritative && dug.answers.is_empty(),
            "{name}: {}",
            dug.text
        );
        assert!(dug.authority[0].starts_with("SOA "), "{name}: {}", dug.text);
    }

    // Changes: the ExternalName retargeted, a ClusterIP Service deleted and
    // re-created headless, then as ClusterIP again, a Service deleted.
    let services = ns.api::<Service>();
    services
        .patch(
            "outside",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"externalName": "api.example.test"}})),
        )
        .await
        .expect("retarget outside");
    until(
        &agent,
        "the new external name",
        &fqdn("outside"),
        "CNAME",
        |d| d.answers == ["CNAME api.example.test."],
    )
    .await;
    services
        .delete("np", &DeleteParams::default())
        .await
        .expect("delete np");
    until(&agent, "np gone", &fqdn("np"), "A", |d| {
        d.status == "NXDOMAIN"
    })
    .await;
    let ptr = ask(&agent, &reverse_name(&np_v4), "PTR");
    assert!(
        !ptr.authoritative,
        "the cluster IP's PTR went too: {}",
        ptr.text
    );
    ns.create_service("np", json!({"selector": {"app": "db"}}))
        .await;
    until(
        &agent,
        "np headless, with db's Pods",
        &fqdn("np"),
        "A",
        |d| {
            let mut answers = d.answers.clone();
            answers.sort();
            answers == ["A 10.120.0.1", "A 10.120.0.2"]
        },
    )
    .await;
    services
        .delete("np", &DeleteParams::default())
        .await
        .expect("delete headless np");
    let again: Service = ns
        .create(
            json!({"metadata": {"name": "np"}, "spec": {"ports": [{"name": "http", "port": 80}]}}),
        )
        .await;
    let again_ip = cluster_ips(&again)[0].clone();
    until(
        &agent,
        "np a ClusterIP Service again",
        &fqdn("np"),
        "A",
        |d| d.answers == [format!("A {again_ip}")],
    )
    .await;
    // The namespace's last Services go: the namespace name goes too.
    for name in ["web", "np", "lb", "alias", "outside", "db"] {
        services
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    until(
        &agent,
        "the namespace empty",
        &format!("{n}.svc.cluster.local"),
        "A",
        |d| d.status == "NXDOMAIN",
    )
    .await;

    // What reached the upstream: the outside targets, and the reverse name
    // of the deleted cluster IP (an address the agent no longer knows);
    // nothing in the zone.
    let reached = upstream.queries();
    assert!(
        reached.contains(&("A".into(), "www.example.org".into())),
        "the outside target was chased upstream: {reached:?}"
    );
    assert!(
        reached
            .iter()
            .all(|(_, name)| !name.ends_with("cluster.local")),
        "in-zone names reached the upstream: {reached:?}"
    );
    let listed: Value = agent.get("/v1/services").await.unwrap().1;
    let ours: Vec<&Value> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["namespace"] == json!(n))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    ns.delete().await;
}

/// The manifests a pod's resolvers find in the netns test: a ClusterIP
/// Service and an ExternalName, as `--source` files.
const POD_VIEW: &str = "\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 10.96.50.1
  clusterIPs: [10.96.50.1]
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: shop}
spec: {type: ExternalName, externalName: www.example.org}
";

/// What a pod's resolver asks when the agent is its only nameserver, with
/// kubelet's resolv.conf: each lookup resolves, and only final names outside
/// the zone reach the upstream — never a search-path expansion.
#[tokio::test]
async fn a_pods_resolvers_send_only_final_names_upstream() {
    tools::require("ip");
    let netns = NetNs::new();
    let dir = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("pod-view-{}", netns.name));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("shop.yaml"), POD_VIEW).unwrap();
    let upstream = Dnsmasq::start_in(&netns, "127.0.0.2:53".parse().unwrap());
    let mut agent = netns.spawn_agent(dir.to_str().unwrap(), "127.0.0.2:53");
    netns.set_resolv_conf(
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 127.0.0.1\n\
         options ndots:5\n",
    );
    let getent = |name: &str| {
        let (ok, text) = netns.run("getent", &["ahosts", name]);
        let mut addresses: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        addresses.sort();
        addresses.dedup();
        (ok, addresses)
    };
    eventually("the agent to answer in the namespace", || async {
        match getent("api") {
            (true, addresses) if addresses == ["10.96.50.1"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Short and qualified names of the zone, by glibc.
    assert_eq!(getent("api.shop").1, ["10.96.50.1"]);
    assert_eq!(getent("api.shop.svc.cluster.local").1, ["10.96.50.1"]);
    // An outside name: six expansions (three domains, A and AAAA) answered
    // here, then the name itself upstream.
    let (ok, outside) = getent("www.example.org");
    assert!(ok && outside == [EXAMPLE_ORG], "{outside:?}");
    // An ExternalName's target, through the CNAME.
    let (ok, search) = getent("search");
    assert!(ok && search == [EXAMPLE_ORG], "{search:?}");

    // Go's resolver, pure and cgo, reading the same resolv.conf.
    let go_resolver = build_go_resolver();
    for netdns in ["go", "cgo"] {
        for (name, expected) in [
            ("api", "10.96.50.1"),
            ("api.shop", "10.96.50.1"),
            ("www.example.org", EXAMPLE_ORG),
            ("search", EXAMPLE_ORG),
        ] {
            let output = netns
                .exec(go_resolver.to_str().unwrap())
                .args(["-system", name])
                .env("GODEBUG", format!("netdns={netdns}+2"))
                .output()
                .expect("run go-resolver");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains(&format!("host {expected}")),
                "netdns={netdns} {name}: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    let reached = upstream.queries();
    assert!(!reached.is_empty());
    assert!(
        reached.iter().all(|(_, name)| name == "www.example.org"),
        "only the final outside name may leave the node: {reached:?}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Builds tests/go-resolver once and returns the binary.
pub(crate) fn build_go_resolver() -> std::path::PathBuf {
    let program = repo_root().join("tests/go-resolver");
    let out = std::env::temp_dir()
        .join("kubedisco-it")
        .join("go-resolver");
    let output = Command::new("go")
        .current_dir(&program)
        .args(["build", "-o", out.to_str().unwrap(), "."])
        .output()
        .expect("go is installed");
    assert!(
        output.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}
