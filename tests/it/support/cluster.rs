//! Finding the control plane: `$KUBECONFIG` when set, else the state
//! directory of `scripts/testcluster` (starting it when nothing runs there).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn state_dir() -> PathBuf {
    std::env::var_os("KUBEDISCO_TESTCLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".testcluster"))
}

/// The admin kubeconfig of the shared control plane, started once per test
/// run when it is not already up.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        if let Some(path) = std::env::var_os("KUBECONFIG") {
            return PathBuf::from(path);
        }
        let path = state_dir().join("admin.kubeconfig");
        // `up` is harmless when the control plane already runs.
        let output = Command::new(repo_root().join("scripts/testcluster"))
            .arg("up")
            .output()
            .expect("cannot run scripts/testcluster");
        assert!(
            output.status.success(),
            "scripts/testcluster up failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(path.exists(), "no kubeconfig at {}", path.display());
        path
    })
}

/// A kube client for the admin user. Each test makes its own: a client's
/// connection pool belongs to the runtime that made it.
pub async fn admin_client() -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// A control plane of a test's own, for tests that stop or restart its
/// parts (they would disturb every other test on the shared one). Stopped
/// and removed on drop.
pub struct PrivateCluster {
    pub state_dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl PrivateCluster {
    pub fn start(name: &str) -> PrivateCluster {
        let state_dir = std::env::temp_dir()
            .join("kubedisco-it")
            .join(format!("cluster-{name}-{}", std::process::id()));
        let cluster = PrivateCluster {
            kubeconfig: state_dir.join("admin.kubeconfig"),
            state_dir,
        };
        cluster.run(&["up"]);
        cluster
    }

    /// Runs `scripts/testcluster ARGS` against this cluster; panics on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let output = Command::new(repo_root().join("scripts/testcluster"))
            .args(args)
            .env("KUBEDISCO_TESTCLUSTER_DIR", &self.state_dir)
            .output()
            .expect("cannot run scripts/testcluster");
        assert!(
            output.status.success(),
            "scripts/testcluster {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub async fn client(&self) -> kube::Client {
        super::kube::client_from(&self.kubeconfig).await
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/testcluster"))
            .arg("down")
            .env("KUBEDISCO_TESTCLUSTER_DIR", &self.state_dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
