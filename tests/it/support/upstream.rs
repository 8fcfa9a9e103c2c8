//! dnsmasq as the agent's upstream resolver: a real DNS server that
//! answers a few outside domains itself, knows nothing else, and logs every
//! query that reaches it, so a test can count what left the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::agent::free_port;
use crate::support::netns::NetNs;
use crate::support::tools;

/// `*.example.test` answers this.
pub const EXAMPLE_TEST: &str = "192.0.2.7";
/// `*.example.org` answers this.
pub const EXAMPLE_ORG: &str = "192.0.2.8";

pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Dnsmasq {
    /// On a free port of 127.0.0.1, in the test's network namespace.
    pub fn start() -> Dnsmasq {
        let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::spawn(Command::new("dnsmasq"), addr)
    }

    /// On `addr` inside `ns`.
    pub fn start_in(ns: &NetNs, addr: SocketAddr) -> Dnsmasq {
        Self::spawn(ns.exec("dnsmasq"), addr)
    }

    /// As [`Dnsmasq::start_in`], with more dnsmasq options (e.g.
    /// `--local-ttl=300`: its own answers have TTL 0 otherwise, which no
    /// cache keeps).
    pub fn start_in_with(ns: &NetNs, addr: SocketAddr, options: &[&str]) -> Dnsmasq {
        let mut command = ns.exec("dnsmasq");
        command.args(options);
        Self::spawn(command, addr)
    }

    fn spawn(mut command: Command, addr: SocketAddr) -> Dnsmasq {
        tools::require("dnsmasq");
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join("kubedisco-it");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!(
            "dnsmasq-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let child = command
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-daemon",
                "--bind-interfaces",
                &format!("--listen-address={}", addr.ip()),
                "--user=root",
                &format!("--port={}", addr.port()),
                &format!("--address=/example.test/{EXAMPLE_TEST}"),
                &format!("--address=/example.org/{EXAMPLE_ORG}"),
                "--pid-file=",
                "--log-queries",
                &format!("--log-facility={}", log.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed (dnsmasq-base)");
        Dnsmasq { child, addr, log }
    }

    /// Every query that reached it so far, as `(type, name)` in order
    /// (dnsmasq logs `query[A] www.example.org from 127.0.0.1`).
    pub fn queries(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let rest = line.split("query[").nth(1)?;
                let (rtype, rest) = rest.split_once("] ")?;
                let name = rest.split_whitespace().next()?;
                Some((rtype.to_string(), name.to_ascii_lowercase()))
            })
            .collect()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
