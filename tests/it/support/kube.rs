//! Kubernetes helpers: one namespace per test, and the work a kubelet would
//! do (there is none): Pods get their IPs and Ready condition through the
//! `pods/status` subresource, so the real EndpointSlice controller writes
//! the slices.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::cluster::admin_client;
use super::eventually;

/// Nodes every test can place Pods on: the EndpointSlice controller skips
/// Pods whose Node does not exist, and takes zones from Node labels.
pub const NODES: [(&str, &str); 3] = [
    ("node-a", "zone-a"),
    ("node-b", "zone-b"),
    ("node-c", "zone-c"),
];

/// A namespace of its own for one test, deleted when dropped: also when the
/// test fails, so a failing run leaves no namespace behind.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
    /// Set by [`TestNamespace::delete`], so the drop has nothing left to do.
    deleted: bool,
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n}", std::process::id() % 0xffff)
}

impl TestNamespace {
    /// Creates `kd-<test>-<unique>` and waits until Pods can be created in it
    /// (the ServiceAccount admission plugin wants the `default` account).
    pub async fn new(test: &str) -> Self {
        let client = admin_client().await;
        ensure_nodes(&client).await;
        let name = format!("kd-{test}-{}", unique_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubedisco.io/test": test}}
        }))
        .unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        eventually("the default ServiceAccount", || {
            let accounts = accounts.clone();
            async move { accounts.get("default").await.map(|_| ()) }
        })
        .await;
        Self {
            client,
            name,
            deleted: false,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates any namespaced object from JSON (the namespace is filled in).
    pub async fn create<K>(&self, mut object: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        object["metadata"]["namespace"] = json!(self.name);
        let typed: K = serde_json::from_value(object).expect("object JSON");
        self.api::<K>()
            .create(&PostParams::default(), &typed)
            .await
            .expect("create object")
    }

    /// A Service selecting `app=<name>`; `spec` is merged over the defaults
    /// (headless, one port `http` 80 → 8080).
    pub async fn create_service(&self, name: &str, spec: Value) -> Service {
        let mut full = json!({
            "clusterIP": "None",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
        });
        merge(&mut full, spec);
        self.create(json!({"metadata": {"name": name}, "spec": full}))
            .await
    }

    /// Creates `count` Pods `<app>-<i>` labelled `app=<app>`, spread over
    /// [`NODES`], each listening on 8080 as port `http`, with hostname `<app>-<i>`
    /// published under subdomain `<app>`.
    pub async fn create_pods(&self, app: &str, count: usize) -> Vec<String> {
        let mut names = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("{app}-{i}");
            let node = NODES[i % NODES.len()].0;
            let _: Pod = self
                .create(json!({
                    "metadata": {"name": name, "labels": {"app": app}},
                    "spec": {
                        "nodeName": node,
                        // With a subdomain equal to the Service name, the
                        // controller publishes the hostname (as for StatefulSets).
                        "hostname": name,
                        "subdomain": app,
                        "containers": [{
                            "name": "app", "image": "example.invalid/app:1",
                            "ports": [{"name": "http", "containerPort": 8080}]
                        }]
                    }
                }))
                .await;
            names.push(name);
        }
        names
    }

    /// What a kubelet would report for a running Pod at `ip`.
    pub async fn set_pod_status(&self, pod: &str, ip: Ipv4Addr, ready: bool) {
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "conditions": [
                {"type": "Ready", "status": status},
                {"type": "ContainersReady", "status": status}
            ]
        }});
        self.api::<Pod>()
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch pod status");
    }

    /// Marks Pods Ready with consecutive IPs from `first`; returns the IPs.
    pub async fn mark_ready(&self, pods: &[String], first: Ipv4Addr) -> Vec<Ipv4Addr> {
        let mut ips = Vec::with_capacity(pods.len());
        for (i, pod) in pods.iter().enumerate() {
            let ip = Ipv4Addr::from(u32::from(first) + i as u32);
            self.set_pod_status(pod, ip, true).await;
            ips.push(ip);
        }
        ips
    }

    pub async fn delete_pod(&self, pod: &str) {
        // No kubelet will confirm, so delete at once.
        self.api::<Pod>()
            .delete(pod, &DeleteParams::default().grace_period(0))
            .await
            .expect("delete pod");
    }

    pub async fn slices_of(&self, service: &str) -> Vec<EndpointSlice> {
        self.api::<EndpointSlice>()
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
            .await
            .expect("list endpointslices")
            .items
    }

    /// Waits until the controller's slices for `service` hold exactly
    /// `expected` ready addresses; returns the slices.
    pub async fn wait_for_ready_addresses(
        &self,
        service: &str,
        expected: &BTreeSet<String>,
    ) -> Vec<EndpointSlice> {
        eventually(
            &format!(
                "slices of {service} to hold {} ready addresses",
                expected.len()
            ),
            || async {
                let slices = self.slices_of(service).await;
                let found = ready_addresses(&slices);
                if &found == expected {
                    Ok(slices)
                } else {
                    Err(format!(
                        "{} slices, {} ready addresses",
                        slices.len(),
                        found.len()
                    ))
                }
            },
        )
        .await
    }

    /// Deletes the namespace now, on the test's runtime; dropping it does
    /// the same, but blocks the dropping thread while it does.
    pub async fn delete(mut self) {
        delete_namespace(&self.client, &self.name).await;
        self.deleted = true;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // The test's runtime may be the one this drop blocks (or one that
        // is unwinding from a panic), and the client's connections belong
        // to it: the delete runs on a thread, runtime and client of its own.
        let name = std::mem::take(&mut self.name);
        let deleting = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to delete the test namespace on");
            runtime.block_on(async { delete_namespace(&admin_client().await, &name).await });
        });
        // A delete that failed is the control plane's problem to report, not
        // a second panic during a first.
        let _ = deleting.join();
    }
}

async fn delete_namespace(client: &Client, name: &str) {
    // No kubelet confirms that a Pod has stopped: without a zero grace
    // period the Pods, and so the namespace, would stay Terminating.
    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::default()).await;
}

/// Every ready address over a set of slices (dedup'd).
pub fn ready_addresses(slices: &[EndpointSlice]) -> BTreeSet<String> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.addresses.first().cloned())
        .collect()
}

/// Creates the shared Nodes once per control plane (AlreadyExists is fine).
pub async fn ensure_nodes(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, zone) in NODES {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "topology.kubernetes.io/zone": zone,
                "kubernetes.io/hostname": name
            }}
        }))
        .unwrap();
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("create node {name}: {e}"),
        }
    }
}

/// A headless Service `name` in `namespace` (created if missing) with one
/// port `http` 80 and no selector, and a hand-written EndpointSlice per
/// `(slice name, IPs)`: for control planes of a test's own, where no
/// [`TestNamespace`] is needed.
pub async fn headless_service(
    client: &Client,
    namespace: &str,
    name: &str,
    slices: &[(&str, Vec<String>)],
) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    for (slice_name, ips) in slices {
        apply_slice(client, namespace, name, slice_name, ips).await;
    }
}

/// Creates or replaces EndpointSlice `name` of headless `service`: one
/// ready endpoint per IP, port `http` 8080, labelled as the EndpointSlice
/// controller labels a headless Service's slices.
pub async fn apply_slice(
    client: &Client,
    namespace: &str,
    service: &str,
    name: &str,
    ips: &[String],
) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let endpoints: Vec<Value> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service,
                                "service.kubernetes.io/headless": ""}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints
    });
    let _: EndpointSlice = server_side_apply(&slices, name, &slice).await;
}

/// Creates or replaces object `name` by server-side apply, as the one field
/// manager of the tests, taking over fields others (controllers) set.
pub async fn server_side_apply<K>(
    api: &Api<K>,
    name: &str,
    object: &(impl serde::Serialize + std::fmt::Debug),
) -> K
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("kubedisco-tests").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// A shallow-recursive JSON merge: objects merge, everything else replaces.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over,
    }
}

/// Consecutive addresses from `first`, as strings.
pub fn ip_range(first: Ipv4Addr, count: usize) -> BTreeSet<String> {
    (0..count)
        .map(|i| Ipv4Addr::from(u32::from(first) + i as u32).to_string())
        .collect()
}

impl TestNamespace {
    /// A ServiceAccount in this namespace bound to a Role with `rules`, and a
    /// kubeconfig file that authenticates as it with a bound token.
    pub async fn service_account_kubeconfig(
        &self,
        account: &str,
        rules: Value,
    ) -> std::path::PathBuf {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::rbac::v1::RoleBinding;

        let _: ServiceAccount = self.create(json!({"metadata": {"name": account}})).await;
        self.set_role_rules(account, rules).await;
        let _: RoleBinding = self
            .create(json!({
                "metadata": {"name": account},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": self.name}]
            }))
            .await;
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap();
        let token = self
            .api::<ServiceAccount>()
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .expect("token request")
            .status
            .expect("token status")
            .token;
        let mut kubeconfig =
            kube::config::Kubeconfig::read_from(super::cluster::kubeconfig()).unwrap();
        for named in &mut kubeconfig.auth_infos {
            named.auth_info = Some(serde_json::from_value(json!({"token": token})).unwrap());
        }
        let path = std::env::temp_dir()
            .join("kubedisco-it")
            .join(format!("{}-{account}.kubeconfig", self.name));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
        path
    }

    /// Creates or replaces the rules of Role `name`.
    pub async fn set_role_rules(&self, name: &str, rules: Value) {
        use k8s_openapi::api::rbac::v1::Role;
        let role: Role = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.name},
            "rules": rules
        }))
        .unwrap();
        let _: Role = server_side_apply(&self.api(), name, &role).await;
    }
}

/// A client authenticating with the given kubeconfig file.
pub async fn client_from(path: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}
