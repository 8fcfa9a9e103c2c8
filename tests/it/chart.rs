//! The Helm chart (charts/kubedisco), deploy/, the sidecar example and the
//! Dockerfile, proven with real Helm (scripts/helm, built from its Go module)
//! against the real API server: lint, render, server-side validation, real
//! apply, `helm install/upgrade/uninstall`, and RBAC both ways — the chart's
//! ServiceAccount runs the agent, and may do nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::agent::{agent_addresses, ips_of};
use crate::support::cluster::{kubeconfig, repo_root};
use crate::support::kube::merge;
use crate::support::{Agent, TestNamespace, eventually};

// ---------------------------------------------------------------------------
// Running helm and kubectl

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let output = child.wait_with_output().await.unwrap();
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn must(output: Output, what: &str) -> String {
    assert!(
        output.ok,
        "{what} failed:\n{}\n{}",
        output.stdout, output.stderr
    );
    output.stdout
}

fn helm_path() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| repo_root().join("scripts/helm"))
}

async fn helm(args: &[&str]) -> Output {
    run(helm_path(), args, None).await
}

/// kubectl of the test control plane's build (same version as the API server).
fn kubectl_path() -> &'static Path {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL.get_or_init(|| {
        let output = std::process::Command::new(repo_root().join("scripts/testcluster"))
            .arg("bin-dir")
            .output()
            .expect("scripts/testcluster bin-dir");
        assert!(
            output.status.success(),
            "scripts/testcluster bin-dir failed"
        );
        let dir = String::from_utf8(output.stdout).unwrap();
        PathBuf::from(dir.trim()).join("kubectl")
    })
}

async fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    run(kubectl_path(), args, stdin).await
}

fn chart() -> String {
    repo_root().join("charts/kubedisco").display().to_string()
}

fn values_file(name: &str) -> String {
    repo_root()
        .join("charts/kubedisco/ci")
        .join(name)
        .display()
        .to_string()
}

/// `helm template <release> charts/kubedisco -n <namespace> <extra...>`.
async fn render(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec!["template", release, &chart, "--namespace", namespace];
    args.extend_from_slice(extra);
    must(helm(&args).await, &format!("helm template {extra:?}"))
}

fn documents(text: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text).expect("rendered YAML");
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name_suffix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(name_suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} *{name_suffix} in the rendering"))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    kinds.sort();
    kinds
}

/// Server-side dry run first (the API server's validation and admission),
/// then the real thing; returns what `apply` printed.
async fn dry_run_then_apply(manifest: &str) -> String {
    must(
        kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(manifest)).await,
        "kubectl apply --dry-run=server",
    );
    must(
        kubectl(&["apply", "-f", "-"], Some(manifest)).await,
        "kubectl apply",
    )
}

/// Deletes what a rendering created (cluster-scoped objects outlive the
/// test's namespace).
async fn delete_rendered(manifest: &str) {
    let _ = kubectl(
        &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
        Some(manifest),
    )
    .await;
}

// ---------------------------------------------------------------------------
// Lint and render

#[tokio::test]
async fn chart_lints_clean_with_every_values_file() {
    let chart = chart();
    let example = repo_root()
        .join("examples/sidecar/values.yaml")
        .display()
        .to_string();
    let files = [
        None,
        Some(values_file("sidecar-values.yaml")),
        Some(values_file("namespaced-values.yaml")),
        Some(values_file("all-optional-values.yaml")),
        Some(example),
    ];
    for file in files {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        if let Some(file) = &file {
            args.extend(["--values", file.as_str()]);
        }
        let out = must(helm(&args).await, &format!("helm lint {file:?}"));
        assert!(
            out.contains("0 chart(s) failed")
                && !out.contains("[INFO]")
                && !out.contains("[WARNING]")
                && !out.contains("[ERROR]"),
            "helm lint {file:?} is not clean:\n{out}"
        );
    }
}

#[tokio::test]
async fn schema_rejects_typos_and_bad_values() {
    for (set, complaint) in [
        ("lisen.ip=169.254.20.25", "additional properties 'lisen'"),
        ("listen.ip=not-an-ip", "/listen/ip"),
        ("mode=both", "/mode"),
        ("listen.dnsPort=70000", "/listen/dnsPort"),
        ("ttl=soon", "/ttl"),
        ("namespaces={Shop}", "/namespaces/0"),
        ("snapshot.interval=soon", "/snapshot/interval"),
        ("snapshot.hostPath=var/lib/kubedisco", "/snapshot/hostPath"),
    ] {
        let out = helm(&["template", "x", &chart(), "--set", set]).await;
        assert!(!out.ok, "--set {set} rendered");
        assert!(
            out.stderr.contains(complaint),
            "--set {set}: expected {complaint:?} in:\n{}",
            out.stderr
        );
    }
    // Combinations that cannot work fail with a message that says why.
    let out = helm(&[
        "template",
        "x",
        &chart(),
        "--set",
        "serviceMonitor.enabled=true",
    ])
    .await;
    assert!(
        !out.ok && out.stderr.contains("listen.httpHost"),
        "{}",
        out.stderr
    );
    let out = helm(&[
        "template",
        "x",
        &chart(),
        "--set",
        "mode=sidecar,networkPolicy.enabled=true",
    ])
    .await;
    assert!(
        !out.ok && out.stderr.contains("mode: daemonset"),
        "{}",
        out.stderr
    );
}

fn rules_of(doc: &Value) -> Value {
    doc["rules"].clone()
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> Value {
    json!({"apiGroups": [group], "resources": [resource], "verbs": verbs})
}

#[tokio::test]
async fn rbac_rules_are_exactly_what_the_agent_reads() {
    let services = rule("", "services", &["get", "list", "watch"]);
    let slices = rule(
        "discovery.k8s.io",
        "endpointslices",
        &["get", "list", "watch"],
    );
    let pods = rule("", "pods", &["list", "watch"]);
    let nodes = rule("", "nodes", &["get"]);

    let docs = documents(&render("kd", "kube-system", &[]).await);
    assert_eq!(
        rules_of(find(&docs, "ClusterRole", "kd-kubedisco")),
        json!([services, slices, nodes])
    );
    assert!(!kinds(&docs).contains(&"Role".to_string()));

    let docs = documents(
        &render(
            "kd",
            "kube-system",
            &["--set", "weights.fromPodLabels=true"],
        )
        .await,
    );
    assert_eq!(
        rules_of(find(&docs, "ClusterRole", "kd-kubedisco")),
        json!([services, slices, pods, nodes])
    );

    for set in ["topology.zone=zone-a", "topology.zoneFromNode=false"] {
        let docs = documents(&render("kd", "kube-system", &["--set", set]).await);
        assert_eq!(
            rules_of(find(&docs, "ClusterRole", "kd-kubedisco")),
            json!([services, slices]),
            "{set}"
        );
    }

    // Namespaced: a Role per namespace; Nodes (cluster-scoped) in a ClusterRole of their own.
    let docs = documents(&render("kd", "kube-system", &["--set", "namespaces={a,b}"]).await);
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Role").collect();
    assert_eq!(roles.len(), 2);
    for (role, namespace) in roles.iter().zip(["a", "b"]) {
        assert_eq!(role["metadata"]["namespace"], namespace);
        assert_eq!(rules_of(role), json!([services, slices]));
    }
    assert_eq!(
        rules_of(find(&docs, "ClusterRole", "kd-kubedisco-node")),
        json!([nodes])
    );
    let cluster_roles = docs.iter().filter(|d| d["kind"] == "ClusterRole").count();
    assert_eq!(cluster_roles, 1, "only the Node rule is cluster-wide");
}

#[tokio::test]
async fn daemonset_follows_the_node_local_design() {
    let docs = documents(&render("kubedisco", "kube-system", &[]).await);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
    for doc in &docs {
        let labels = &doc["metadata"]["labels"];
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[key].is_string(), "{} lacks {key}", doc["kind"]);
        }
    }
    let ds = find(&docs, "DaemonSet", "kubedisco");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    let container = &pod["containers"][0];
    // Host ports would keep the surge pod off the node.
    assert!(container.get("ports").is_none());
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for expected in [
        "agent",
        "--link-local-ip=169.254.20.25",
        "--link-local-interface=kubedisco0",
        "--dns-addr=169.254.20.25:53",
        "--http-addr=169.254.20.25:8053",
        "--node-name=$(NODE_NAME)",
    ] {
        assert!(args.contains(&expected), "{expected} not in {args:?}");
    }
    assert_eq!(args[0], "agent");
    let env = &container["env"];
    assert_eq!(env[0]["name"], "NODE_NAME");
    assert_eq!(
        env[0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env[1],
        json!({"name": "KUBEDISCO_ADDR", "value": "http://169.254.20.25:8053"})
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["host"],
        "169.254.20.25"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        security["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_BIND_SERVICE"])
    );
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
}

// ---------------------------------------------------------------------------
// Every rendering against the API server

/// The pattern prometheus-operator's CRDs give a scrape interval.
const DURATION_PATTERN: &str =
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$";

/// A minimal prometheus-operator CRD for `kind`: typed where the chart sets
/// fields (so the API server checks them), open elsewhere. `endpoints` names
/// its list of scrape endpoints, `endpoint_fields` adds typed fields to
/// those both kinds share.
fn monitoring_crd(kind: &str, endpoints: &str, endpoint_fields: Value) -> Value {
    let singular = kind.to_ascii_lowercase();
    let plural = format!("{singular}s");
    let mut endpoint = json!({
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": DURATION_PATTERN},
        "relabelings": {"type": "array", "items": {"type": "object", "properties": {
            "sourceLabels": {"type": "array", "items": {"type": "string"}},
            "targetLabel": {"type": "string"}
        }}}
    });
    merge(&mut endpoint, endpoint_fields);
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": singular},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["selector"],
                        "x-kubernetes-preserve-unknown-fields": true,
                        "properties": {
                            "selector": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            "namespaceSelector": {"type": "object", "properties": {
                                "any": {"type": "boolean"},
                                "matchNames": {"type": "array", "items": {"type": "string"}}
                            }},
                            endpoints: {"type": "array", "items": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": true,
                                "properties": endpoint
                            }}
                        }
                    }}
                }}
            }]
        }
    })
}

/// The ServiceMonitor and PodMonitor CRDs, applied and established.
async fn install_monitoring_crds() {
    let crds = [
        monitoring_crd("ServiceMonitor", "endpoints", json!({})),
        monitoring_crd(
            "PodMonitor",
            "podMetricsEndpoints",
            json!({"portNumber": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535}}),
        ),
    ];
    let list = json!({"apiVersion": "v1", "kind": "List", "items": crds}).to_string();
    must(
        kubectl(&["apply", "-f", "-"], Some(&list)).await,
        "apply monitoring CRDs",
    );
    let names: Vec<String> = crds
        .iter()
        .map(|crd| format!("crd/{}", crd["metadata"]["name"].as_str().unwrap()))
        .collect();
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    wait.extend(names.iter().map(String::as_str));
    must(kubectl(&wait, None).await, "wait for the monitoring CRDs");
}

/// Renders, validates server-side, applies, and checks every object exists.
async fn render_and_apply(ns: &TestNamespace, extra: &[&str]) -> (String, Vec<Value>) {
    let manifest = render(&ns.name, &ns.name, extra).await;
    let docs = documents(&manifest);
    let applied = dry_run_then_apply(&manifest).await;
    assert_eq!(
        applied.lines().count(),
        docs.len(),
        "one line per object:\n{applied}"
    );
    must(
        kubectl(&["get", "-f", "-", "-o", "name"], Some(&manifest)).await,
        "get the applied objects",
    );
    (manifest, docs)
}

#[tokio::test]
async fn default_rendering_is_accepted_and_applied() {
    let ns = TestNamespace::new("chart-default").await;
    let (manifest, docs) = render_and_apply(&ns, &[]).await;
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
    delete_rendered(&manifest).await;
    ns.delete().await;
}

#[tokio::test]
async fn sidecar_rendering_is_accepted_and_applied() {
    let ns = TestNamespace::new("chart-sidecar").await;
    let values = values_file("sidecar-values.yaml");
    let (manifest, docs) = render_and_apply(&ns, &["--values", &values]).await;
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "ServiceAccount"
        ]
    );
    delete_rendered(&manifest).await;
    ns.delete().await;
}

#[tokio::test]
async fn namespaced_rendering_is_accepted_and_applied() {
    let ns = TestNamespace::new("chart-nsd").await;
    let team_a = TestNamespace::new("chart-nsd-a").await;
    let team_b = TestNamespace::new("chart-nsd-b").await;
    let values = values_file("namespaced-values.yaml");
    let set = format!("namespaces={{{},{}}}", team_a.name, team_b.name);
    let (manifest, docs) = render_and_apply(&ns, &["--values", &values, "--set", &set]).await;
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    delete_rendered(&manifest).await;
    for ns in [ns, team_a, team_b] {
        ns.delete().await;
    }
}

#[tokio::test]
async fn rendering_with_every_optional_object_is_accepted_and_applied() {
    install_monitoring_crds().await;
    let ns = TestNamespace::new("chart-all").await;
    let values = values_file("all-optional-values.yaml");
    let (manifest, docs) = render_and_apply(&ns, &["--values", &values]).await;
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "NetworkPolicy",
            "PodMonitor",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    // The typed CRD fields are really checked: a bad interval is refused.
    let broken = manifest.replace("interval: 30s", "interval: soon");
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&broken)).await;
    assert!(
        !out.ok && out.stderr.contains("interval"),
        "a bad interval passed: {}",
        out.stderr
    );
    delete_rendered(&manifest).await;
    ns.delete().await;
}

#[tokio::test]
async fn deploy_dir_is_the_default_rendering_and_validates() {
    let out = run(
        &repo_root().join("scripts/render-deploy"),
        &["--check"],
        None,
    )
    .await;
    assert!(
        out.ok,
        "deploy/ drifted from the chart (run scripts/render-deploy):\n{}",
        out.stderr
    );
    let deploy = repo_root().join("deploy").display().to_string();
    let out = must(
        kubectl(&["apply", "--dry-run=server", "-k", &deploy], None).await,
        "kubectl apply -k deploy --dry-run=server",
    );
    assert!(out.contains("daemonset.apps/kubedisco"), "{out}");
}

// ---------------------------------------------------------------------------
// Helm as the user runs it

async fn cluster_role_rules(name: &str) -> Result<Value, String> {
    let out = kubectl(&["get", "clusterrole", name, "-o", "json"], None).await;
    if !out.ok {
        return Err(out.stderr);
    }
    let role: Value = serde_json::from_str(&out.stdout).unwrap();
    Ok(role["rules"].clone())
}

#[tokio::test]
async fn helm_install_upgrade_and_uninstall() {
    let ns = TestNamespace::new("chart-helm").await;
    let release = ns.name.clone();
    let fullname = format!("{release}-kubedisco");
    let chart = chart();
    let out = must(
        helm(&["install", &release, &chart, "--namespace", &ns.name]).await,
        "helm install",
    );
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains(&format!("exec ds/{fullname} -- kubedisco dump")),
        "NOTES: {out}"
    );
    must(
        kubectl(&["-n", &ns.name, "get", "daemonset", &fullname], None).await,
        "the DaemonSet",
    );
    let rules = cluster_role_rules(&fullname).await.unwrap();
    assert!(!rules.to_string().contains("pods"), "{rules}");

    must(
        helm(&[
            "upgrade",
            &release,
            &chart,
            "--namespace",
            &ns.name,
            "--reuse-values",
            "--set",
            "weights.fromPodLabels=true",
        ])
        .await,
        "helm upgrade",
    );
    let rules = cluster_role_rules(&fullname).await.unwrap();
    assert!(
        rules
            .as_array()
            .unwrap()
            .contains(&rule("", "pods", &["list", "watch"])),
        "{rules}"
    );
    let out = must(
        kubectl(
            &["-n", &ns.name, "get", "daemonset", &fullname, "-o", "json"],
            None,
        )
        .await,
        "the DaemonSet",
    );
    assert!(
        out.contains("--pod-weights"),
        "upgrade did not reach the DaemonSet"
    );

    must(
        helm(&["uninstall", &release, "--namespace", &ns.name]).await,
        "helm uninstall",
    );
    eventually("the ClusterRole to be gone", || async {
        match cluster_role_rules(&fullname).await {
            Err(e) if e.contains("NotFound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let out = kubectl(&["-n", &ns.name, "get", "daemonset", &fullname], None).await;
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// RBAC both ways

/// A kubeconfig for the API server of the tests that authenticates with a
/// token of `account` from `kubectl create token`.
async fn token_kubeconfig(namespace: &str, account: &str) -> PathBuf {
    let token = must(
        kubectl(
            &["-n", namespace, "create", "token", account, "--duration=1h"],
            None,
        )
        .await,
        "kubectl create token",
    );
    let mut config = kube::config::Kubeconfig::read_from(kubeconfig()).unwrap();
    for named in &mut config.auth_infos {
        named.auth_info = Some(serde_json::from_value(json!({"token": token.trim()})).unwrap());
    }
    let path = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("{namespace}-{account}.kubeconfig"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

/// `kubectl auth can-i` as the token's account: one check per line of
/// `checks` ("verb resource [namespace|-A]"), all at once; returns the
/// answers that differ from `expected`.
async fn can_i_mismatches(token: &Path, checks: &[(&str, bool)]) -> Vec<String> {
    let token = token.display().to_string();
    let answers = futures::future::join_all(checks.iter().map(|(check, _)| {
        let token = token.clone();
        async move {
            let mut args = vec!["--kubeconfig", token.as_str(), "auth", "can-i"];
            let words: Vec<&str> = check.split_whitespace().collect();
            args.extend_from_slice(&words[..2]);
            match words.get(2) {
                Some(&"-A") => args.push("--all-namespaces"),
                Some(namespace) => args.extend(["--namespace", namespace]),
                None => {}
            }
            let out = run(kubectl_path(), &args, None).await;
            match out.stdout.trim() {
                "yes" => Ok(true),
                "no" => Ok(false),
                _ => Err(format!("{check}: {}", out.stderr)),
            }
        }
    }))
    .await;
    checks
        .iter()
        .zip(answers)
        .filter_map(|((check, expected), answer)| match answer {
            Ok(answer) if answer == *expected => None,
            Ok(answer) => Some(format!("{check}: {answer}, expected {expected}")),
            Err(e) => Some(e),
        })
        .collect()
}

/// Waits (RBAC reaches the authorizer through an informer) until every
/// answer is the expected one; fails with the ones that are not.
async fn expect_can_i(token: &Path, checks: &[(&str, bool)]) {
    eventually("kubectl auth can-i answers", || async {
        let wrong = can_i_mismatches(token, checks).await;
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("\n"))
        }
    })
    .await;
}

/// Every write, and every read the agent does not need.
fn forbidden_checks(namespace: &str) -> Vec<String> {
    let mut checks = Vec::new();
    for resource in [
        "services",
        "endpointslices.discovery.k8s.io",
        "pods",
        "configmaps",
        "secrets",
        "events",
        "leases.coordination.k8s.io",
        "serviceaccounts",
    ] {
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            checks.push(format!("{verb} {resource} {namespace}"));
            checks.push(format!("{verb} {resource} -A"));
        }
    }
    for verb in ["create", "update", "patch", "delete"] {
        checks.push(format!("{verb} nodes"));
        checks.push(format!("{verb} namespaces"));
        checks.push(format!("{verb} clusterroles.rbac.authorization.k8s.io"));
    }
    for verb in ["get", "list", "watch"] {
        checks.push(format!("{verb} secrets {namespace}"));
        checks.push(format!("{verb} secrets -A"));
        checks.push(format!("{verb} configmaps -A"));
    }
    checks.push("list nodes".into());
    checks.push("watch nodes".into());
    checks.push("get pods -A".into());
    checks.push("* * -A".into());
    checks
}

async fn serve_one_service(ns: &TestNamespace, name: &str, ip: &str) {
    ns.create_service(name, json!({"selector": null})).await;
    let _: EndpointSlice = ns
        .create(json!({
            "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name, "service.kubernetes.io/headless": ""}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}]
        }))
        .await;
}

#[tokio::test]
async fn chart_account_runs_the_agent_and_may_do_nothing_else() {
    let ns = TestNamespace::new("chart-rbac").await;
    let apps = TestNamespace::new("chart-rbac-apps").await;
    let manifest = render(&ns.name, &ns.name, &[]).await;
    dry_run_then_apply(&manifest).await;
    let account = format!("{}-kubedisco", ns.name);
    let token = token_kubeconfig(&ns.name, &account).await;

    // Serves, with nothing but the chart's RBAC.
    let token_text = token.display().to_string();
    let agent = Agent::spawn_with_env(&[], &[("KUBECONFIG", token_text.as_str())]);
    agent.wait_ready().await;
    serve_one_service(&apps, "orders", "10.30.0.7").await;
    eventually("orders served with the chart's account", || async {
        match agent.endpoint_ips(&apps.name, "orders").await {
            Ok(ips) if ips == ["10.30.0.7"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        !agent.log().contains("forbidden"),
        "the agent was refused something:\n{}",
        agent.log_tail()
    );

    let mut checks: Vec<(String, bool)> = vec![
        ("list services -A".into(), true),
        ("watch services -A".into(), true),
        ("get services -A".into(), true),
        ("list endpointslices.discovery.k8s.io -A".into(), true),
        ("watch endpointslices.discovery.k8s.io -A".into(), true),
        ("get nodes".into(), true),
        ("list pods -A".into(), false),
        ("watch pods -A".into(), false),
    ];
    checks.extend(forbidden_checks(&apps.name).into_iter().map(|c| (c, false)));
    let checks_ref: Vec<(&str, bool)> = checks.iter().map(|(c, e)| (c.as_str(), *e)).collect();
    expect_can_i(&token, &checks_ref).await;

    // Weights from Pod labels add list/watch on Pods, and only that.
    let with_pods = render(&ns.name, &ns.name, &["--set", "weights.fromPodLabels=true"]).await;
    dry_run_then_apply(&with_pods).await;
    let checks = [
        ("list pods -A", true),
        ("watch pods -A", true),
        ("get pods -A", false),
        ("update pods -A", false),
        ("delete pods -A", false),
    ];
    expect_can_i(&token, &checks).await;

    drop(agent);
    delete_rendered(&with_pods).await;
    ns.delete().await;
    apps.delete().await;
}

#[tokio::test]
async fn namespaced_account_sees_only_its_namespaces() {
    let ns = TestNamespace::new("chart-nsrbac").await;
    let team_a = TestNamespace::new("chart-nsrbac-a").await;
    let team_b = TestNamespace::new("chart-nsrbac-b").await;
    let other = TestNamespace::new("chart-nsrbac-c").await;
    let set = format!("namespaces={{{},{}}}", team_a.name, team_b.name);
    let manifest = render(&ns.name, &ns.name, &["--set", &set]).await;
    dry_run_then_apply(&manifest).await;
    let account = format!("{}-kubedisco", ns.name);
    let token = token_kubeconfig(&ns.name, &account).await;

    let token_text = token.display().to_string();
    let watched = format!("{},{}", team_a.name, team_b.name);
    let agent = Agent::spawn_with_env(
        &["--namespaces", &watched],
        &[("KUBECONFIG", token_text.as_str())],
    );
    agent.wait_ready().await;
    serve_one_service(&team_b, "billing", "10.30.1.9").await;
    eventually("billing served with the namespaced account", || async {
        match agent.endpoint_ips(&team_b.name, "billing").await {
            Ok(ips) if ips == ["10.30.1.9"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let mut checks: Vec<(String, bool)> = Vec::new();
    for watched in [&team_a.name, &team_b.name] {
        for verb in ["get", "list", "watch"] {
            checks.push((format!("{verb} services {watched}"), true));
            checks.push((
                format!("{verb} endpointslices.discovery.k8s.io {watched}"),
                true,
            ));
        }
        checks.push((format!("list pods {watched}"), false));
    }
    for verb in ["list", "watch"] {
        checks.push((format!("{verb} services {}", other.name), false));
        checks.push((format!("{verb} services -A"), false));
        checks.push((format!("{verb} endpointslices.discovery.k8s.io -A"), false));
        checks.push((
            format!("{verb} endpointslices.discovery.k8s.io {}", ns.name),
            false,
        ));
    }
    checks.push(("get nodes".into(), true));
    checks.extend(
        forbidden_checks(&team_a.name)
            .into_iter()
            .map(|c| (c, false)),
    );
    let checks_ref: Vec<(&str, bool)> = checks.iter().map(|(c, e)| (c.as_str(), *e)).collect();
    expect_can_i(&token, &checks_ref).await;

    drop(agent);
    delete_rendered(&manifest).await;
    for ns in [ns, team_a, team_b, other] {
        ns.delete().await;
    }
}

// ---------------------------------------------------------------------------
// Warm start from the chart's snapshot volume

/// The node the rendered pod runs on (its `spec.nodeName`): one of the test
/// control plane's Nodes.
const NODE: &str = "node-a";

/// The agent container of a rendering and its pod's volumes: the
/// DaemonSet's, or the sidecar patch's.
fn agent_pod(docs: &[Value]) -> (Value, Value) {
    if let Some(ds) = docs.iter().find(|d| d["kind"] == "DaemonSet") {
        let pod = &ds["spec"]["template"]["spec"];
        return (pod["containers"][0].clone(), pod["volumes"].clone());
    }
    let patch: Value = serde_saphyr::from_str(&sidecar_patch(docs)).unwrap();
    let pod = &patch["spec"]["template"]["spec"];
    (pod["initContainers"][0].clone(), pod["volumes"].clone())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The agent container's `--snapshot-path`, the volume mounted where it
/// lies, and that volume's mount path.
fn snapshot_volume(container: &Value, volumes: &Value) -> (String, Value, String) {
    let args = strings(&container["args"]);
    let path = args
        .iter()
        .find_map(|a| a.strip_prefix("--snapshot-path="))
        .unwrap_or_else(|| panic!("no --snapshot-path in {args:?}"))
        .to_string();
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|dir| path.starts_with(&format!("{dir}/")))
        })
        .unwrap_or_else(|| panic!("{path} is on no volume mount: {container}"));
    let volume = volumes
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {} in {volumes}", mount["name"]))
        .clone();
    (
        path,
        volume,
        mount["mountPath"].as_str().unwrap().to_string(),
    )
}

/// The rendered agent container as a process on this machine, as the
/// kubelet would start it on [`NODE`]: its arguments and environment with
/// `$(VAR)` expanded, the snapshot mount at `volume_dir`, and only the
/// addresses replaced that must be loopback test addresses: the listen
/// addresses (spawn_process passes the test's own), the upstream and
/// KUBEDISCO_ADDR. `--link-local-*` set up the node's network, which a test
/// on this machine must not touch (tests/it/netif.rs covers them in network
/// namespaces).
fn as_test_process(
    container: &Value,
    mount: &str,
    volume_dir: &Path,
    http: std::net::SocketAddr,
) -> (Vec<String>, Vec<(String, String)>) {
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            let name = var["name"].as_str().unwrap().to_string();
            let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
                _ if name == "KUBEDISCO_ADDR" => format!("http://{http}"),
                (Value::String(value), _) => value.clone(),
                (_, field) if field == "spec.nodeName" => NODE.to_string(),
                _ => panic!("no test value for {var}"),
            };
            (name, value)
        })
        .collect();
    let mut args = strings(&container["args"]);
    assert_eq!(args[0], "agent", "{args:?}");
    // DaemonSet mode forwards to the node's resolver (no --upstream): here,
    // as everywhere in the tests, only to a loopback port.
    if !args.iter().any(|a| a.starts_with("--upstream=")) {
        args.push("--upstream=127.0.0.1:9".into());
    }
    let args = args[1..]
        .iter()
        .filter(|a| {
            ![
                "--link-local-",
                "--dns-addr=",
                "--http-addr=",
                "--xds-addr=",
            ]
            .iter()
            .any(|flag| a.starts_with(flag))
        })
        .map(|a| {
            let mut a = a.replace(
                &format!("={mount}/"),
                &format!("={}/", volume_dir.display()),
            );
            for (name, value) in &env {
                a = a.replace(&format!("$({name})"), value);
            }
            if a.starts_with("--upstream=") {
                a = "--upstream=127.0.0.1:9".to_string();
            }
            a
        })
        .collect();
    (args, env)
}

fn str_pairs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A copy of `kubeconfig` whose API server is a loopback port where nothing
/// listens.
fn unreachable_kubeconfig(kubeconfig: &Path) -> PathBuf {
    let mut config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let closed = format!("https://127.0.0.1:{}", crate::support::agent::free_port());
    for named in &mut config.clusters {
        named.cluster.as_mut().unwrap().server = Some(closed.clone());
    }
    let path = kubeconfig.with_extension("unreachable.kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

/// Renders the chart (`extra` picks the mode), runs its agent container
/// with the chart's own account against the test API server until it
/// serves a Service, stops it, and starts it again, with the same
/// arguments, while the API server is out of reach: it must serve the
/// Service from the snapshot on the chart's volume. Returns that volume.
async fn agent_restarts_warm_from_the_charts_volume(test: &str, extra: &[&str]) -> Value {
    let ns = TestNamespace::new(test).await;
    serve_one_service(&ns, "orders", "10.30.2.5").await;
    let watched = format!("namespaces={{{}}}", ns.name);
    let mut values = vec!["--set", watched.as_str()];
    values.extend_from_slice(extra);
    let manifest = render(&ns.name, &ns.name, &values).await;
    dry_run_then_apply(&manifest).await;
    let (container, volumes) = agent_pod(&documents(&manifest));
    let (snapshot_path, volume, mount) = snapshot_volume(&container, &volumes);

    let volume_dir = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("{}-snapshot-volume", ns.name));
    std::fs::create_dir_all(&volume_dir).unwrap();
    let snapshot_file = volume_dir.join(Path::new(&snapshot_path).strip_prefix(&mount).unwrap());
    let (http, dns) = agent_addresses();
    let (args, env) = as_test_process(&container, &mount, &volume_dir, http);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let token = token_kubeconfig(&ns.name, &format!("{}-kubedisco", ns.name)).await;
    let unreachable = unreachable_kubeconfig(&token);
    let env_with = |kubeconfig: &Path| {
        let mut env = env.clone();
        env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        env
    };
    let (live_env, cut_off_env) = (env_with(&token), env_with(&unreachable));

    let first = Agent::spawn_on(http, dns, &args, &str_pairs(&live_env));
    first.wait_ready().await;
    eventually("orders served by the chart's agent", || async {
        match first.endpoint_ips(&ns.name, "orders").await {
            Ok(ips) if ips == ["10.30.2.5"] => Ok(()),
            other => Err(format!("{other:?}; log:\n{}", first.log_tail())),
        }
    })
    .await;
    let status = first.terminate();
    assert!(status.success(), "the first agent exited with {status}");
    assert!(
        snapshot_file.exists(),
        "no snapshot at {} (--snapshot-path={snapshot_path})",
        snapshot_file.display()
    );

    let second = Agent::spawn_on(http, dns, &args, &str_pairs(&cut_off_env));
    let body = eventually("orders from the snapshot", || async {
        match second.service(&ns.name, "orders").await {
            Ok(body) if ips_of(&body) == ["10.30.2.5"] => Ok(body),
            other => Err(format!("{other:?}; log:\n{}", second.log_tail())),
        }
    })
    .await;
    assert_eq!(body["stale"], true, "{body}");
    let reason = body["staleReason"].as_str().unwrap_or_default();
    assert!(reason.contains("serving the snapshot of"), "{body}");
    let (status, ready) = second.get("/readyz").await.unwrap();
    assert_eq!(status, 200, "ready from the snapshot: {ready}");
    // Nothing came from the API server: the source is still failing.
    assert!(
        !second
            .log()
            .contains("the snapshot is replaced by live data"),
        "{}",
        second.log_tail()
    );

    drop(second);
    delete_rendered(&manifest).await;
    ns.delete().await;
    let _ = std::fs::remove_dir_all(&volume_dir);
    for path in [token, unreachable] {
        let _ = std::fs::remove_file(path);
    }
    volume
}

#[tokio::test]
async fn daemonset_agent_restarts_warm_from_its_host_path_snapshot() {
    let volume = agent_restarts_warm_from_the_charts_volume("chart-warm-ds", &[]).await;
    // On the node, so that it outlives the pod.
    let host_path = &volume["hostPath"];
    assert_eq!(host_path["type"], "DirectoryOrCreate", "{volume}");
    let path = host_path["path"].as_str().unwrap_or_default();
    assert!(
        path == "/var/lib/kubedisco" || path.starts_with("/var/lib/kubedisco/"),
        "{volume}"
    );
}

#[tokio::test]
async fn sidecar_agent_restarts_warm_from_its_empty_dir_snapshot() {
    let volume =
        agent_restarts_warm_from_the_charts_volume("chart-warm-sc", &["--set", "mode=sidecar"])
            .await;
    assert!(volume["emptyDir"].is_object(), "{volume}");
}

// ---------------------------------------------------------------------------
// The sidecar example, the Dockerfile, the values documentation

/// The pod-template patch from a sidecar-mode rendering's ConfigMap.
fn sidecar_patch(docs: &[Value]) -> String {
    find(docs, "ConfigMap", "-sidecar")["data"]["pod-template-patch.yaml"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn sidecar_example_is_the_charts_patch_and_meets_restricted() {
    let example = repo_root().join("examples/sidecar");
    let values = example.join("values.yaml").display().to_string();
    let app = example.join("app.yaml").display().to_string();

    // The example holds the chart's patch as the README says to install it:
    // applying the patch to it changes nothing.
    let docs = documents(&render("kubedisco", "shop", &["--values", &values]).await);
    let patch = sidecar_patch(&docs);
    let patch_file = std::env::temp_dir()
        .join("kubedisco-it")
        .join(format!("sidecar-patch-{}.yaml", std::process::id()));
    std::fs::create_dir_all(patch_file.parent().unwrap()).unwrap();
    std::fs::write(&patch_file, &patch).unwrap();
    let patch_path = patch_file.display().to_string();
    let patched = must(
        kubectl(
            &[
                "patch",
                "--local",
                "-f",
                &app,
                "--type",
                "strategic",
                "--patch-file",
                &patch_path,
                "-o",
                "json",
            ],
            None,
        )
        .await,
        "kubectl patch --local",
    );
    let original = must(
        kubectl(
            &["create", "--dry-run=client", "-f", &app, "-o", "json"],
            None,
        )
        .await,
        "kubectl create --dry-run=client",
    );
    let patched: Value = serde_json::from_str(&patched).unwrap();
    let original: Value = serde_json::from_str(&original).unwrap();
    assert_eq!(
        patched["spec"], original["spec"],
        "examples/sidecar/app.yaml differs from the chart's sidecar patch:\n{patch}"
    );
    let pod = &original["spec"]["template"]["spec"];
    assert_eq!(pod["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "None");
    assert_eq!(pod["dnsConfig"]["nameservers"], json!(["127.0.0.1"]));

    // Applied for real next to the chart, in a namespace that enforces the
    // "restricted" Pod Security Standard (and warns about anything less).
    let ns = TestNamespace::new("chart-example").await;
    must(
        kubectl(
            &[
                "label",
                "namespace",
                &ns.name,
                "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/warn=restricted",
            ],
            None,
        )
        .await,
        "label the namespace",
    );
    let chart_objects = render(
        &ns.name,
        &ns.name,
        &[
            "--values",
            &values,
            "--set",
            "serviceAccount.name=kubedisco",
        ],
    )
    .await;
    dry_run_then_apply(&chart_objects).await;
    for dry_run in ["--dry-run=server", "--dry-run=none"] {
        let out = kubectl(&["-n", &ns.name, "apply", dry_run, "-f", &app], None).await;
        assert!(out.ok, "apply {dry_run}: {}", out.stderr);
        assert!(
            !out.stderr.contains("Warning"),
            "Pod Security warnings: {}",
            out.stderr
        );
    }
    // Pod Security is enforced on Pods (no controller makes them here): the
    // example's pod template, as a Pod, is admitted under "restricted".
    let pod_object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-client-probe"},
        "spec": pod,
    });
    must(
        kubectl(
            &["-n", &ns.name, "create", "--dry-run=server", "-f", "-"],
            Some(&pod_object.to_string()),
        )
        .await,
        "the example's Pod under restricted Pod Security",
    );
    delete_rendered(&chart_objects).await;
    ns.delete().await;
}

fn dockerfile_instruction(dockerfile: &str, keyword: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{keyword} ")))
        .map(|rest| rest.trim().to_string())
        .collect()
}

#[tokio::test]
async fn dockerfile_matches_what_the_chart_expects() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let froms = dockerfile_instruction(&dockerfile, "FROM");
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms
            .last()
            .unwrap()
            .starts_with("gcr.io/distroless/static"),
        "{froms:?}"
    );
    assert!(dockerfile.contains("unknown-linux-musl"), "a static binary");
    assert_eq!(
        dockerfile_instruction(&dockerfile, "ENTRYPOINT"),
        [r#"["/usr/local/bin/kubedisco"]"#]
    );
    assert!(dockerfile.contains("/usr/local/bin/kubedisco\n"));
    let user = dockerfile_instruction(&dockerfile, "USER");
    assert_eq!(user, ["65532:65532"]);

    // The sidecar runs as the image's user, and both modes pass arguments to
    // the entrypoint (no command), `kubedisco` being on the image's PATH.
    let docs = documents(&render("kd", "shop", &["--set", "mode=sidecar"]).await);
    let patch: Value = serde_saphyr::from_str(&sidecar_patch(&docs)).unwrap();
    let sidecar = &patch["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(sidecar["securityContext"]["runAsUser"], 65532);
    assert_eq!(sidecar["securityContext"]["runAsGroup"], 65532);
    assert!(sidecar.get("command").is_none());
    assert_eq!(sidecar["startupProbe"]["exec"]["command"][0], "kubedisco");
    let docs = documents(&render("kd", "kube-system", &[]).await);
    let ds = find(&docs, "DaemonSet", "kd-kubedisco");
    assert!(
        ds["spec"]["template"]["spec"]["containers"][0]
            .get("command")
            .is_none()
    );
}

/// Every leaf of values.yaml, as dotted paths (lists and maps that default
/// to empty are leaves too).
fn value_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() && !prefix.ends_with("resources") => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                value_paths(child, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[tokio::test]
async fn every_value_is_documented_and_in_the_schema() {
    let chart = repo_root().join("charts/kubedisco");
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(chart.join("README.md")).unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json")).unwrap())
            .unwrap();
    let mut paths = Vec::new();
    value_paths(&values, "", &mut paths);
    let mut missing = BTreeMap::new();
    for path in &paths {
        // Keys under maps the schema leaves open (tolerations, updateStrategy, …)
        // are documented by their parent.
        let mut node = &schema;
        let mut documented_parent = None;
        for (i, key) in path.split('.').enumerate() {
            match node["properties"].get(key) {
                Some(child) => node = child,
                None if node["type"] == "object" || node["type"] == "array" => {
                    documented_parent = Some(path.split('.').take(i).collect::<Vec<_>>().join("."));
                    break;
                }
                None => {
                    missing.insert(path.clone(), "not in values.schema.json");
                    break;
                }
            }
        }
        let documented = documented_parent.unwrap_or_else(|| path.clone());
        if !readme.contains(&format!("`{documented}`")) {
            missing.insert(path.clone(), "not in README.md");
        }
    }
    assert!(paths.len() > 40, "{paths:?}");
    assert!(missing.is_empty(), "undocumented values: {missing:#?}");
}
