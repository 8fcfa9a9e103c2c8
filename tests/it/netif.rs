//! `--link-local-ip`: the agent's own node-local address, in a network
//! namespace each test creates (`ip netns add`), with the real binary run
//! there by `ip netns exec`, real `dig` for DNS and `kubedisco dump` for HTTP.
//!
//! These tests need root (to create network namespaces); they fail, never
//! skip, without it. The only traffic targets are addresses inside those
//! namespaces.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use crate::support::agent::binary;
use crate::support::netns::{NetNs, output};
use crate::support::{eventually, tools};

const IP: &str = "169.254.20.25";
const INTERFACE: &str = "kubedisco0";

/// `kubedisco agent` inside a namespace, serving the built-in demo on the
/// node-local address. Killed on drop.
struct NsAgent {
    child: Child,
    log: PathBuf,
}

impl NsAgent {
    fn start(ns: &NetNs, extra: &[&str]) -> NsAgent {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join("kubedisco-it");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!(
            "{}-agent-{}.log",
            ns.name,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let child = ns
            .exec(binary().to_str().unwrap())
            .args([
                "agent",
                "--source",
                "demo",
                "--link-local-ip",
                IP,
                "--dns-addr",
                &format!("{IP}:53"),
                "--http-addr",
                &format!("{IP}:8053"),
                "--upstream",
                "127.0.0.1:9",
            ])
            .args(extra)
            .env("KUBEDISCO_LOG_LEVEL", "info,kubedisco=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start kubedisco in the namespace");
        NsAgent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        tools::require("kill");
        // `ip netns exec` execs the agent: the child's pid is the agent's.
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {signal}");
    }

    /// Waits for the exit (bounded by the test's polls before it).
    async fn exit(mut self) -> (ExitStatus, String) {
        let status = eventually("the agent to exit", || {
            let status = self.child.try_wait();
            async move {
                match status {
                    Ok(Some(status)) => Ok(status),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        (status, self.log())
    }
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's cache over HTTP on the node-local address (`kubedisco dump`).
fn dump(ns: &NetNs) -> Result<Value, String> {
    let url = format!("http://{IP}:8053");
    let (ok, text) = ns.run(
        binary().to_str().unwrap(),
        &["dump", "--addr", &url, "-o", "json", "--timeout", "2s"],
    );
    if !ok {
        return Err(text);
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// A Service's usable endpoint IPs from the dump.
fn served_ips(dump: &Value, namespace: &str, name: &str) -> BTreeSet<String> {
    dump["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["namespace"] == namespace && s["name"] == name)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["ip"].as_str().map(str::to_owned))
        .collect()
}

/// A records from the agent's DNS on the node-local address, with dig.
fn dig(ns: &NetNs, name: &str, tcp: bool) -> Result<BTreeSet<String>, String> {
    tools::require("dig");
    let server = format!("@{IP}");
    let mut args = vec![server.as_str(), "+short", "+time=2", "+tries=1", name, "A"];
    if tcp {
        args.push("+tcp");
    }
    let (ok, text) = ns.run("dig", &args);
    if !ok {
        return Err(text);
    }
    let ips: BTreeSet<String> = text
        .lines()
        .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect();
    if ips.is_empty() {
        Err(format!("no A records: {text}"))
    } else {
        Ok(ips)
    }
}

/// Ready, answering HTTP and DNS (UDP and TCP) on the node-local address,
/// with the same endpoints.
async fn wait_serving(ns: &NetNs, agent: &NsAgent) {
    let http = eventually("HTTP on the node-local address", || async {
        match dump(ns) {
            Ok(dump) if dump["synced"] == true => Ok(dump),
            Ok(dump) => Err(format!("not synced: {dump}")),
            Err(e) => Err(format!("{e}\nlog:\n{}", agent.log())),
        }
    })
    .await;
    let expected = served_ips(&http, "shop", "orders");
    assert!(!expected.is_empty(), "the demo serves shop/orders: {http}");
    for tcp in [false, true] {
        let answer = eventually("DNS on the node-local address", || async {
            dig(ns, "orders.shop.svc.cluster.local", tcp)
        })
        .await;
        assert_eq!(answer, expected, "DNS (tcp: {tcp}) and HTTP disagree");
    }
}

fn assert_gone(ns: &NetNs, log: &str) {
    assert!(
        !ns.addresses().contains(IP),
        "the address outlived the agent:\n{}\nlog:\n{log}",
        ns.addresses()
    );
    assert!(
        ns.link(INTERFACE).is_none(),
        "the interface outlived the agent\nlog:\n{log}"
    );
}

#[tokio::test]
async fn agent_adds_serves_on_and_removes_its_node_local_address() {
    tools::require("dig");
    let ns = NetNs::new();
    assert!(ns.link(INTERFACE).is_none());
    let agent = NsAgent::start(&ns, &[]);
    wait_serving(&ns, &agent).await;

    assert!(ns.has_address(IP, INTERFACE), "{}", ns.addresses());
    let link = ns.link(INTERFACE).unwrap();
    assert!(link.contains("UP"), "{link}");
    assert!(
        link.contains("alias kubedisco"),
        "marked as the agent's: {link}"
    );
    // A dummy interface; a portless bridge on kernels without the dummy driver.
    assert!(
        link.contains("dummy") || link.contains("bridge"),
        "interface kind: {link}"
    );

    agent.signal("TERM");
    let (status, log) = agent.exit().await;
    assert!(status.success(), "exit after SIGTERM: {status}\n{log}");
    assert_gone(&ns, &log);
    assert!(log.contains("node-local address removed"), "{log}");
}

#[tokio::test]
async fn after_sigkill_a_new_agent_reuses_the_leftover_address() {
    tools::require("dig");
    let ns = NetNs::new();
    let agent = NsAgent::start(&ns, &[]);
    wait_serving(&ns, &agent).await;
    agent.signal("KILL");
    let (status, _) = agent.exit().await;
    assert!(!status.success());
    // Killed: nothing cleaned up.
    assert!(ns.has_address(IP, INTERFACE), "{}", ns.addresses());
    assert!(ns.link(INTERFACE).is_some());

    let agent = NsAgent::start(&ns, &[]);
    wait_serving(&ns, &agent).await;
    let log = agent.log();
    assert!(log.contains("already present: reused"), "{log}");
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || (l.contains("WARN") && l.contains("netif")))
        .collect();
    assert!(complaints.is_empty(), "{complaints:?}\n{log}");
    let addresses = ns.addresses();
    assert_eq!(addresses.matches(IP).count(), 1, "{addresses}");

    agent.signal("TERM");
    let (status, log) = agent.exit().await;
    assert!(status.success(), "{status}\n{log}");
    assert_gone(&ns, &log);
}

#[tokio::test]
async fn the_last_agent_out_removes_the_address() {
    tools::require("dig");
    // A rolling update with maxSurge: the new agent starts next to the old
    // one on the same address and ports (SO_REUSEPORT), then the old one stops.
    let ns = NetNs::new();
    let old = NsAgent::start(&ns, &[]);
    wait_serving(&ns, &old).await;
    let new = NsAgent::start(&ns, &[]);
    eventually("the new agent to share the address", || async {
        let log = new.log();
        if log.contains("synced: ready") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;

    old.signal("TERM");
    let (status, log) = old.exit().await;
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("another process still listens"),
        "the old agent should leave the address to the new one:\n{log}"
    );
    assert!(ns.has_address(IP, INTERFACE), "{}", ns.addresses());
    wait_serving(&ns, &new).await;

    new.signal("TERM");
    let (status, log) = new.exit().await;
    assert!(status.success(), "{status}\n{log}");
    assert_gone(&ns, &log);
}

#[tokio::test]
async fn a_removed_address_is_put_back() {
    tools::require("dig");
    let ns = NetNs::new();
    let agent = NsAgent::start(&ns, &[]);
    wait_serving(&ns, &agent).await;
    let (ok, text) = output(Command::new("ip").args([
        "-n",
        &ns.name,
        "addr",
        "del",
        &format!("{IP}/32"),
        "dev",
        INTERFACE,
    ]));
    assert!(ok, "{text}");
    eventually("the address to be back", || async {
        if ns.has_address(IP, INTERFACE) {
            Ok(())
        } else {
            Err(ns.addresses())
        }
    })
    .await;
    wait_serving(&ns, &agent).await;
    assert!(agent.log().contains("restored it"), "{}", agent.log());
}

#[tokio::test]
async fn an_existing_interface_is_used_and_never_deleted() {
    tools::require("dig");
    // `--link-local-interface lo`: the agent adds its address to lo and
    // removes only the address.
    let ns = NetNs::new();
    let agent = NsAgent::start(&ns, &["--link-local-interface", "lo"]);
    wait_serving(&ns, &agent).await;
    assert!(ns.has_address(IP, "lo"), "{}", ns.addresses());
    assert!(ns.link(INTERFACE).is_none());

    agent.signal("TERM");
    let (status, log) = agent.exit().await;
    assert!(status.success(), "{status}\n{log}");
    assert!(!ns.addresses().contains(IP), "{}", ns.addresses());
    let lo = ns.link("lo").expect("lo is still there");
    assert!(lo.contains("UP"), "{lo}");
}

#[tokio::test]
async fn without_net_admin_the_agent_fails_and_says_why() {
    // The same agent with CAP_NET_ADMIN dropped (setpriv, util-linux).
    let ns = NetNs::new();
    let log = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("{}-no-net-admin.log", ns.name));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let child = ns
        .exec("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-net_admin"])
        .arg(binary())
        .args(["agent", "--source", "demo", "--link-local-ip", IP])
        .args(["--dns-addr", &format!("{IP}:1053")])
        .args(["--http-addr", &format!("{IP}:8053")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("setpriv");
    let agent = NsAgent { child, log };
    let (status, log) = agent.exit().await;
    assert!(!status.success(), "started without NET_ADMIN:\n{log}");
    assert!(log.contains("needs CAP_NET_ADMIN"), "{log}");
    assert!(ns.link(INTERFACE).is_none());
}
