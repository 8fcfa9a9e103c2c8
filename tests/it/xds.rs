//! The xDS front end end to end: grpc-go's own xDS client (a `xds:///`
//! target, bootstrapped by `kubedisco xds-bootstrap` through
//! `GRPC_XDS_BOOTSTRAP_CONFIG`) discovers Pods through a real agent
//! watching the real control plane. The Pods are marked Ready on loopback
//! addresses, the EndpointSlice controller publishes them, and grpc-go
//! health servers listen there. The client and the servers are
//! tests/xds/go/cmd/xdsprobe, driven over its stdin/stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::agent::{binary, own_loopback_ip};
use crate::support::cluster::repo_root;
use crate::support::kube::ip_range;
use crate::support::{Agent, TestNamespace, eventually};

/// The port the test Pods declare (`http` → 8080): the servers listen on it.
const PORT: u16 = 8080;

/// tests/xds/go/cmd/xdsprobe, built once per test binary.
fn probe_binary() -> &'static std::path::Path {
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = std::env::temp_dir().join("kubedisco-it");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("xdsprobe-{}", std::process::id()));
        let status = Command::new("go")
            .current_dir(repo_root().join("tests/xds/go"))
            .args(["build", "-o"])
            .arg(&out)
            .arg("./cmd/xdsprobe")
            .status()
            .expect("go build");
        assert!(status.success(), "go build ./cmd/xdsprobe: {status}");
        out
    })
}

/// An agent with `--xds-addr` on a loopback address of its own, watching
/// the test's namespace.
async fn xds_agent(ns: &TestNamespace, extra: &[&str]) -> (Agent, SocketAddr) {
    let ip = own_loopback_ip();
    let port = TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let xds = SocketAddr::new(ip, port).to_string();
    let mut args = vec!["--namespaces", &ns.name, "--xds-addr", &xds];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args).await;
    (agent, SocketAddr::new(ip, port))
}

/// Addresses of the test's own for `count` Pods: the first Pod IP
/// (10.133.<r>.1), the Pod IPs, and the loopback addresses their servers
/// listen on (127.33.<r>.<i>). The API server refuses loopback addresses
/// in EndpointSlices, so the probe rewrites one prefix into the other when
/// it dials ([`MAP`]) and dials nothing that is not loopback.
fn backend_ips(count: usize) -> (Ipv4Addr, Vec<String>, Vec<String>) {
    let r = rand::random::<u8>();
    let first = Ipv4Addr::new(10, 133, r, 1);
    let pods: Vec<String> = ip_range(first, count).into_iter().collect();
    let loopback = pods
        .iter()
        .map(|ip| ip.replacen("10.133.", "127.33.", 1))
        .collect();
    (first, pods, loopback)
}

/// `count` Pods `web-<i>` marked Ready at addresses of the test's own
/// ([`backend_ips`]), once the controller's slices hold them all: the Pod
/// names, their IPs, and their servers' loopback addresses.
async fn ready_pods(ns: &TestNamespace, count: usize) -> (Vec<String>, Vec<String>, Vec<String>) {
    let pods = ns.create_pods("web", count).await;
    let (first, pod_ips, ips) = backend_ips(count);
    ns.mark_ready(&pods, first).await;
    ns.wait_for_ready_addresses("web", &pod_ips.iter().cloned().collect())
        .await;
    (pods, pod_ips, ips)
}

/// The probe's `-map`: Pod IP prefix → loopback prefix.
const MAP: &str = "10.133.=127.33.";

/// grpc-go: health servers on `servers`, and a client of `xds:///<target>`.
struct Probe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Probe {
    fn start(xds: SocketAddr, servers: &[String], target: &str) -> Probe {
        let bootstrap = Command::new(binary())
            .args(["xds-bootstrap", "--xds-addr", &xds.to_string()])
            .args(["--node-id", "it-xds"])
            .output()
            .expect("kubedisco xds-bootstrap");
        assert!(bootstrap.status.success(), "{bootstrap:?}");
        let serve: Vec<String> = servers.iter().map(|ip| format!("{ip}:{PORT}")).collect();
        let mut child = Command::new(probe_binary())
            .args(["-serve", &serve.join(","), "-target", target, "-map", MAP])
            .env(
                "GRPC_XDS_BOOTSTRAP_CONFIG",
                String::from_utf8(bootstrap.stdout).expect("UTF-8 bootstrap"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start xdsprobe");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut probe = Probe {
            child,
            stdin,
            stdout,
        };
        assert_eq!(probe.line(), "ready");
        probe
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("xdsprobe output");
        assert!(!line.is_empty(), "xdsprobe exited");
        line.trim_end().to_string()
    }

    fn command(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("xdsprobe input");
        self.line()
    }

    /// `n` RPCs: how many each server answered, and how many failed.
    fn spread(&mut self, n: usize) -> (BTreeMap<String, usize>, usize) {
        let line = self.command(&format!("spread {n}"));
        let mut counts = BTreeMap::new();
        let mut failed = usize::MAX;
        for field in line
            .strip_prefix("counts")
            .expect("counts")
            .split_whitespace()
        {
            let (key, value) = field.split_once('=').expect("key=value");
            let value = value.parse().expect("a count");
            if key == "failed" {
                failed = value;
            } else {
                counts.insert(key.to_string(), value);
            }
        }
        (counts, failed)
    }

    /// Waits (bounded, 30s) until a window of 200 RPCs is answered by
    /// exactly the servers at `ips` and none fails.
    fn until(&mut self, ips: &[&str], what: &str) {
        let want: Vec<String> = ips.iter().map(|ip| format!("{ip}:{PORT}")).collect();
        let line = self.command(&format!("until {} 30", want.join(",")));
        assert!(line.starts_with("reached "), "{what}: {line}");
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn set_weight_label(ns: &TestNamespace, pod: &str, weight: &str) {
    let patch = json!({"metadata": {"labels": {"kubedisco.io/weight": weight}}});
    ns.api::<Pod>()
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label pod");
}

/// RPCs reach the ready Pods; a Pod marked unready, then one deleted,
/// stops receiving them, and one marked ready again is back (each timed
/// from the API write to the first window served by exactly the rest).
#[tokio::test]
async fn grpc_go_follows_ready_pods_through_the_agent() {
    let ns = TestNamespace::new("xds-follow").await;
    let (_agent, xds) = xds_agent(&ns, &[]).await;
    ns.create_service("web", json!({})).await;
    let (pods, pod_ips, ips) = ready_pods(&ns, 3).await;
    let ip = |i: usize| ips[i].as_str();
    let pod_ip = |i: usize| -> Ipv4Addr { pod_ips[i].parse().unwrap() };

    let mut probe = Probe::start(xds, &ips, &format!("web.{}:http", ns.name));
    probe.until(&[ip(0), ip(1), ip(2)], "all three ready Pods");
    let (counts, failed) = probe.spread(600);
    assert_eq!((counts.len(), failed), (3, 0), "{counts:?}");

    let started = Instant::now();
    ns.set_pod_status(&pods[1], pod_ip(1), false).await;
    probe.until(&[ip(0), ip(2)], "web-1 unready");
    let unready = started.elapsed();

    let started = Instant::now();
    ns.delete_pod(&pods[2]).await;
    probe.until(&[ip(0)], "web-2 deleted");
    let deleted = started.elapsed();
    let (counts, failed) = probe.spread(500);
    assert_eq!(
        counts.get(&format!("{}:{PORT}", ip(0))),
        Some(&500),
        "{counts:?}"
    );
    assert_eq!(failed, 0);

    let started = Instant::now();
    ns.set_pod_status(&pods[1], pod_ip(1), true).await;
    probe.until(&[ip(0), ip(1)], "web-1 ready again");
    let ready = started.elapsed();
    println!(
        "xds follow (API write → grpc-go served by exactly the rest, windows of 200 RPCs): \
         unready {unready:?}, deleted {deleted:?}, ready again {ready:?}"
    );
    ns.delete().await;
}

/// `kubedisco.io/weight` Pod labels 1 and 3 (`--pod-weights`): grpc-go
/// splits 20 000 RPCs 1:3 within ±2 percentage points.
#[tokio::test]
async fn grpc_go_honours_pod_label_weights_through_the_agent() {
    let ns = TestNamespace::new("xds-weights").await;
    let (agent, xds) = xds_agent(&ns, &["--pod-weights"]).await;
    ns.create_service("web", json!({})).await;
    let (pods, pod_ips, ips) = ready_pods(&ns, 2).await;
    set_weight_label(&ns, &pods[0], "1").await;
    set_weight_label(&ns, &pods[1], "3").await;
    eventually("weights 1 and 3 in the agent", || async {
        let body = agent.service(&ns.name, "web").await?;
        let weight = |ip: &str| -> Option<u64> {
            body["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["ip"] == ip)
                .map(|e| e["weight"].as_u64())?
        };
        match (weight(&pod_ips[0]), weight(&pod_ips[1])) {
            (Some(1), Some(3)) => Ok(()),
            other => Err(format!("{other:?} {}", Value::to_string(&body))),
        }
    })
    .await;

    let mut probe = Probe::start(xds, &ips, &format!("web.{}:http", ns.name));
    probe.until(&[&ips[0], &ips[1]], "both Pods");
    const N: usize = 20_000;
    let (counts, failed) = probe.spread(N);
    assert_eq!(failed, 0, "{counts:?}");
    let share =
        |ip: &str| counts.get(&format!("{ip}:{PORT}")).copied().unwrap_or(0) as f64 / N as f64;
    let (light, heavy) = (share(&ips[0]), share(&ips[1]));
    println!("xds weights 1:3 over {N} RPCs: {light:.4} / {heavy:.4}");
    assert!(
        (0.23..=0.27).contains(&light) && (0.73..=0.77).contains(&heavy),
        "shares {light:.4} / {heavy:.4}, want 0.25 / 0.75 within 0.02"
    );
    ns.delete().await;
}

/// `trafficDistribution: PreferSameZone` on the Service, the agent in
/// zone-a: grpc-go's priority policy serves only zone-a's Pods (priority 0
/// from the agent's tiers), and the other zones once zone-a's Pods are all
/// unready.
#[tokio::test]
async fn grpc_go_prefers_this_zone_and_spills_over_through_the_agent() {
    let ns = TestNamespace::new("xds-zone").await;
    let (_agent, xds) = xds_agent(&ns, &["--zone", "zone-a", "--node-name", "node-a"]).await;
    ns.create_service("web", json!({"trafficDistribution": "PreferSameZone"}))
        .await;
    // Spread over node-a/zone-a, node-b/zone-b, node-c/zone-c: web-0 and
    // web-3 are in zone-a.
    let (pods, pod_ips, ips) = ready_pods(&ns, 6).await;
    let ip = |i: usize| ips[i].as_str();

    let mut probe = Probe::start(xds, &ips, &format!("web.{}:http", ns.name));
    probe.until(&[ip(0), ip(3)], "zone-a only");
    let (counts, failed) = probe.spread(1000);
    assert_eq!((counts.len(), failed), (2, 0), "{counts:?}");

    let started = Instant::now();
    for i in [0, 3] {
        ns.set_pod_status(&pods[i], pod_ips[i].parse().unwrap(), false)
            .await;
    }
    probe.until(
        &[ip(1), ip(2), ip(4), ip(5)],
        "spilled over to zones b and c",
    );
    println!(
        "xds zone: zone-a's Pods unready → other zones serving after {:?}",
        started.elapsed()
    );
    ns.delete().await;
}
