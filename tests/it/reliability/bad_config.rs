//! Bad configuration: a kubeconfig that cannot be read leaves the agent
//! alive, unready and saying why, retried without a log line per retry, and
//! recovered from once fixed in place; invalid flags stop it at once with
//! exit code 2, naming the flag.

use std::process::Command;

use super::three_endpoints;
use crate::support::Agent;
use crate::support::agent::binary;
use crate::support::cluster::kubeconfig;
use crate::support::eventually;

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
        match agent
            .metric("kubedisco_api_errors_total{resource=\"kubeconfig\",reason=\"config\"}")
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
