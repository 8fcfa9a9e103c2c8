//! The manifest source and the operator tools around it: the demo is served,
//! edits are picked up, a broken file keeps the last good state, and
//! `kubedisco dump` prints what the agent holds.

use std::path::PathBuf;
use std::process::Command;

use crate::support::agent::{binary, free_port, ips_of};
use crate::support::cluster::repo_root;
use crate::support::{Agent, eventually};

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_demo(to: &std::path::Path) {
    for entry in std::fs::read_dir(repo_root().join("examples/demo")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[tokio::test]
async fn the_demo_is_served_and_dump_prints_it() {
    let dir = scratch("demo");
    copy_demo(&dir);
    let agent = Agent::start(&["--source", dir.to_str().unwrap()]).await;

    let orders = agent.service("shop", "orders").await.unwrap();
    assert_eq!(
        ips_of(&orders),
        ["10.244.1.11", "10.244.1.12", "10.244.2.21"]
    );
    // Dual stack: both families' slices merge into one Service.
    let catalog = agent.endpoint_ips("shop", "catalog").await.unwrap();
    assert_eq!(catalog.len(), 4);
    assert!(catalog.iter().any(|ip| ip.contains(':')));
    // The ClusterIP Service without the annotation: its endpoints are not
    // served, its cluster IP is (in DNS, the list and dump).
    let (status, _) = agent.get("/v1/services/platform/billing-ui").await.unwrap();
    assert_eq!(status, 404);

    let addr = format!("http://{}", agent.http);
    let output = Command::new(binary())
        .args(["dump", "--addr", &addr])
        .output()
        .unwrap();
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "NAMESPACE",
        "orders",
        "10.244.1.11:9090",
        "zone-a",
        "node-b",
        "300",
        "(unused)",
    ] {
        assert!(
            table.contains(expected),
            "{expected} missing from:\n{table}"
        );
    }
    let row = |service: &str| -> Vec<&str> {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(service));
        line.unwrap_or_default().split_whitespace().collect()
    };
    assert_eq!(
        row("billing-ui")[2..5],
        ["http/TCP", "10.96.12.8:80", "ClusterIP"],
        "{table}"
    );
    assert_eq!(
        row("billing")[2..6],
        [
            "-",
            "CNAME",
            "billing-ui.platform.svc.cluster.local",
            "ExternalName"
        ],
        "{table}"
    );
    let output = Command::new(binary())
        .args(["dump", "-o", "json"])
        .env("KUBEDISCO_ADDR", &addr)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("dump -o json");
    // Every Service: four served, a ClusterIP one and an ExternalName one.
    let services = json["services"].as_array().unwrap();
    assert_eq!(services.len(), 6);
    let billing = services.iter().find(|s| s["name"] == "billing").unwrap();
    assert_eq!(billing["type"], "ExternalName");
    assert_eq!(billing["served"], false);
}

#[test]
fn dump_without_an_agent_fails_clearly() {
    let addr = format!("127.0.0.1:{}", free_port());
    let output = Command::new(binary())
        .args(["dump", "--addr", &addr, "--timeout", "2s"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no agent answered"), "{stderr}");
}

#[tokio::test]
async fn the_built_in_demo_needs_no_files() {
    let agent = Agent::start(&["--source", "demo"]).await;
    assert_eq!(agent.endpoint_ips("shop", "orders").await.unwrap().len(), 3);
}

const ONE_ENDPOINT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: live, namespace: dev}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: live-1
  namespace: dev
  labels: {kubernetes.io/service-name: live}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [192.0.2.1]
"#;

/// Replaces `file`'s content in one step, as editors and ConfigMap volumes
/// do: a plain `fs::write` truncates first, and a poll between the
/// truncation and the write reads an empty file — zero objects, a valid
/// manifest — which once removed the Service this test then asked for.
fn replace_file(file: &std::path::Path, text: &str) {
    let temporary = file.with_extension("tmp-edit");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, file).unwrap();
}

#[tokio::test]
async fn edits_are_picked_up_and_a_broken_file_keeps_its_last_good_state() {
    let dir = scratch("edits");
    let file = dir.join("live.yaml");
    std::fs::write(&file, ONE_ENDPOINT).unwrap();
    let agent = Agent::start(&[
        "--source",
        dir.to_str().unwrap(),
        "--manifest-poll-interval",
        "100ms",
    ])
    .await;
    assert_eq!(
        agent.endpoint_ips("dev", "live").await.unwrap(),
        ["192.0.2.1"]
    );

    let two = format!("{ONE_ENDPOINT}- addresses: [192.0.2.2]\n");
    replace_file(&file, &two);
    eventually("the edit", || async {
        let ips = agent.endpoint_ips("dev", "live").await?;
        if ips.len() == 2 {
            Ok(())
        } else {
            Err(format!("{ips:?}"))
        }
    })
    .await;

    // Broken YAML: reported with the file's name, the last good state stays.
    replace_file(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n",
    );
    eventually("the error to be reported", || async {
        let (_, ready) = agent.get("/readyz").await?;
        if ready["failures"].to_string().contains("live.yaml") {
            Ok(())
        } else {
            Err(ready.to_string())
        }
    })
    .await;
    assert!(agent.log().contains("live.yaml"), "{}", agent.log_tail());
    let metrics = agent.metrics().await;
    assert!(
        metrics.contains("kubedisco_source_errors_total{source=\"manifest\"}"),
        "{metrics}"
    );
    assert_eq!(
        agent.endpoint_ips("dev", "live").await.unwrap(),
        ["192.0.2.1", "192.0.2.2"]
    );
    // Still ready: it had synced, and a stale answer beats none.
    assert_eq!(agent.get("/readyz").await.unwrap().0, 200);

    // Fixed: the new content is served and the failure clears.
    replace_file(&file, ONE_ENDPOINT);
    eventually("the fix", || async {
        let ips = agent.endpoint_ips("dev", "live").await?;
        let (_, ready) = agent.get("/readyz").await?;
        if ips.len() == 1 && ready["stale"] == false {
            Ok(())
        } else {
            Err(format!("{ips:?} {ready}"))
        }
    })
    .await;

    // A removed file takes its Services with it.
    std::fs::remove_file(&file).unwrap();
    eventually("the removal", || async {
        match agent.get("/v1/services/dev/live").await? {
            (404, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[test]
fn a_missing_source_path_stops_the_agent_with_a_clear_error() {
    let output = Command::new(binary())
        .args([
            "agent",
            "--source",
            "/nonexistent/kubedisco-manifests",
            "--http-addr",
        ])
        .arg(format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/kubedisco-manifests") && stderr.contains("no such file"),
        "{stderr}"
    );
}

#[test]
fn http_and_dns_on_one_port_is_refused_before_serving() {
    let addr = format!("127.0.0.1:{}", free_port());
    let output = Command::new(binary())
        .args([
            "agent",
            "--source",
            "demo",
            "--http-addr",
            &addr,
            "--dns-addr",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--http-addr") && stderr.contains("--dns-addr") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[test]
fn invalid_flags_exit_2_naming_the_flag() {
    let output = Command::new(binary())
        .args(["agent", "--ttl", "soon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ttl"));
}

#[tokio::test]
async fn health_answers_for_probes() {
    let agent = Agent::start(&["--source", "demo"]).await;
    let addr = agent.http.to_string();
    for args in [&["health"][..], &["health", "--ready"][..]] {
        let output = Command::new(binary())
            .args(args)
            .args(["--addr", &addr])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout.is_empty());
    }
    let dead = format!("127.0.0.1:{}", free_port());
    let output = Command::new(binary())
        .args(["health", "--ready", "--addr", &dead])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/readyz"));
}
