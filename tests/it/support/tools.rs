//! Outside programs the tests run (dig, dnsmasq, dnsperf, ip, kill): a test
//! checks for each before it starts anything that waits, so a missing tool
//! fails at once, in one line that names its package, and never as a poll
//! that times out. The packages come from scripts/prepare's table, the one
//! list that installs them.

use std::os::unix::fs::PermissionsExt;

const PREPARE: &str = include_str!("../../../scripts/prepare");

/// The Debian package scripts/prepare installs `program` from.
fn package_of(program: &str) -> Option<&'static str> {
    PREPARE.lines().find_map(|line| {
        let (command, rest) = line.trim_start().strip_prefix('[')?.split_once("]=")?;
        (command == program).then(|| rest.split_whitespace().next())?
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Panics unless `program` is on PATH, naming the package to install.
pub fn require(program: &str) {
    let package = package_of(program).unwrap_or_else(|| {
        panic!(
            "{program} is not in scripts/prepare's table of tools: add it there with its package"
        )
    });
    assert!(
        on_path(program),
        "{program} not found on PATH: install {package} (scripts/prepare installs it)"
    );
}

#[test]
fn the_tools_tests_run_are_in_the_prepare_table() {
    for (program, package) in [
        ("dig", "bind9-dnsutils"),
        ("dnsmasq", "dnsmasq-base"),
        ("dnsperf", "dnsperf"),
        ("ip", "iproute2"),
        ("kill", "procps"),
    ] {
        assert_eq!(package_of(program), Some(package), "{program}");
    }
    assert_eq!(package_of("no-such-tool"), None);
}

#[test]
#[should_panic(expected = "kubedisco-no-such-tool is not in scripts/prepare's table")]
fn a_tool_outside_the_table_is_named() {
    require("kubedisco-no-such-tool");
}
