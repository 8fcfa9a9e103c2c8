//! A network namespace of the test's own (`ip netns add`), with only `lo`,
//! for tests that run programs where a pod would: the agent on a
//! node-local address, resolvers reading a pod's resolv.conf. Needs root
//! and iproute2; the only traffic targets are addresses inside it.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::tools;

pub fn output(command: &mut Command) -> (bool, String) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A network namespace with only `lo` (up), deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        tools::require("ip");
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kd-it-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let (ok, text) = output(Command::new("ip").args(["netns", "add", &name]));
        assert!(
            ok,
            "cannot create network namespace {name} (these tests need root and iproute2): {text}"
        );
        let ns = NetNs { name };
        let (ok, text) =
            output(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        assert!(ok, "lo up: {text}");
        ns
    }

    pub fn exec(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `ip -o addr show` in the namespace.
    pub fn addresses(&self) -> String {
        let (ok, text) = output(Command::new("ip").args(["-n", &self.name, "-o", "addr", "show"]));
        assert!(ok, "{text}");
        text
    }

    pub fn has_address(&self, ip: &str, interface: &str) -> bool {
        self.addresses()
            .lines()
            .any(|line| line.contains(&format!("inet {ip}/32")) && line.contains(interface))
    }

    /// `ip -d link show dev NAME`, or None when there is no such interface.
    pub fn link(&self, name: &str) -> Option<String> {
        let (ok, text) =
            output(Command::new("ip").args(["-n", &self.name, "-d", "link", "show", "dev", name]));
        ok.then_some(text)
    }

    pub fn run(&self, program: &str, args: &[&str]) -> (bool, String) {
        output(self.exec(program).args(args))
    }
}

impl NetNs {
    /// The resolv.conf that `ip netns exec` mounts over /etc/resolv.conf
    /// for programs run in this namespace (glibc's and Go's resolvers read
    /// it), as a pod's kubelet-written one would be.
    pub fn set_resolv_conf(&self, text: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
    }

    /// `kubedisco agent` in this namespace, as a pod's node would run it:
    /// DNS on 127.0.0.1:53, HTTP on 127.0.0.1:8053, `source` and the
    /// upstream as given.
    pub fn spawn_agent(&self, source: &str, upstream: &str) -> std::process::Child {
        self.exec(crate::support::agent::binary().to_str().unwrap())
            .args([
                "agent",
                "--source",
                source,
                "--dns-addr",
                "127.0.0.1:53",
                "--http-addr",
                "127.0.0.1:8053",
                "--upstream",
                upstream,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start kubedisco in the namespace")
    }

    fn etc_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.etc_dir());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
