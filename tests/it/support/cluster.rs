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
