use std::net::Ipv4Addr;

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};

fn agent_args(args: &[&str]) -> Result<AgentArgs, clap::Error> {
    let mut argv = vec!["kubedisco", "agent"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv)?.command {
        Command::Agent(args) => Ok(*args),
        other => panic!("parsed as {other:?}"),
    }
}

fn agent(args: &[&str]) -> Result<Config, clap::Error> {
    agent_args(args)?.into_parts().map(|(_, config)| config)
}

#[test]
fn defaults_are_local_and_documented() {
    let config = agent(&[]).unwrap();
    assert!(matches!(config.source, Source::Kubernetes { .. }));
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:8053");
    assert_eq!(config.cluster_domain, "cluster.local");
    assert_eq!(config.ttl, Duration::from_secs(5));
    assert!(config.namespaces.is_empty());
    // What an in-process agent starts from is what the binary does.
    assert_eq!(config, Config::default());
    let (logging, _) = agent_args(&[]).unwrap().into_parts().unwrap();
    assert_eq!(logging.format, LogFormat::Text);
    assert_eq!(logging.level, "info");
}

#[test]
fn flags_parse_and_bad_values_name_the_flag() {
    let config = agent(&["--namespaces", "a,b", "--ttl", "0", "--source", "demo"]).unwrap();
    assert_eq!(config.namespaces, ["a", "b"]);
    assert_eq!(config.ttl, Duration::ZERO);
    assert_eq!(
        config.source,
        Source::Manifests {
            origin: ManifestOrigin::Demo,
            poll_interval: Duration::from_secs(1)
        }
    );
    for (flag, value) in BAD_VALUES {
        let error = agent(&[flag, value]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains(flag), "{flag}: {error}");
    }
}

/// Each flag with a value its parser refuses.
const BAD_VALUES: [(&str, &str); 26] = [
    ("--http-addr", "localhost"),
    ("--ttl", "5 parsecs"),
    ("--cluster-domain", "bad..domain"),
    ("--namespaces", "Shop"),
    ("--log-format", "xml"),
    ("--panic-threshold", "1.5"),
    ("--default-topology", "region"),
    ("--pod-records", "verified"),
    ("--zone-from-node", "maybe"),
    ("--http-max-connections", "0"),
    ("--dns-max-tcp-connections", "0"),
    ("--max-watch-streams", "many"),
    ("--http-max-header-bytes", "100"),
    ("--http-idle-timeout", "0s"),
    ("--dns-tcp-idle-timeout", "0s"),
    ("--dns-tcp-query-timeout", "soon"),
    ("--snapshot-max-age", "old"),
    ("--snapshot-interval", "0"),
    ("--handover-wait", "soon"),
    ("--watch-slices", "some"),
    ("--forward", "consul"),
    ("--cache-size", "many"),
    ("--cache-max-bytes", "12Mb"),
    ("--cache-max-ttl", "0s"),
    ("--cache-max-negative-ttl", "soon"),
    ("--serve-stale", "forever"),
];

#[test]
fn one_bad_value_reads_as_clap_says_it() {
    let error = agent(&["--ttl", "5parsecs"]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "error: invalid value '5parsecs' for '--ttl <TTL>': duration \"5parsecs\" has \
         unknown unit \"parsecs\" (use ms, s, m or h)\n\nFor more information, try '--help'.\n"
    );
    let error = agent(&["--list-strategy", "eager"]).unwrap_err();
    assert!(
        error.to_string().contains(
            "'--list-strategy <LIST_STRATEGY>'\n  [possible values: auto, streaming, list]"
        ),
        "{error}"
    );
}

#[test]
fn every_bad_value_is_named_at_once() {
    let mut argv = Vec::new();
    for (flag, value) in BAD_VALUES {
        argv.extend([flag, value]);
    }
    argv.extend(["--namespaces", "ok,Also-Bad", "--upstream", "nowhere"]);
    let error = agent(&argv).unwrap_err();
    assert_eq!(error.exit_code(), 2);
    let text = error.to_string();
    for (flag, _) in BAD_VALUES {
        assert!(
            text.contains(&format!("'{flag} <")),
            "{flag} missing:\n{text}"
        );
    }
    assert!(text.contains("\"Also-Bad\""), "{text}");
    assert!(text.contains("'--upstream <UPSTREAM>'"), "{text}");
    let lines = text
        .lines()
        .filter(|line| line.starts_with("error: "))
        .count();
    assert_eq!(lines, BAD_VALUES.len() + 2, "{text}");
    assert_eq!(text.matches("For more information").count(), 1, "{text}");
}

#[test]
fn optional_groups_appear_only_when_asked_for() {
    let config = agent(&[]).unwrap();
    assert_eq!((config.snapshot, config.link_local), (None, None));
    let config = agent(&[
        "--snapshot-path",
        "agent.snapshot",
        "--snapshot-interval",
        "2s",
        "--link-local-ip",
        "169.254.20.25",
        "--source",
        "examples/demo",
        "--manifest-poll-interval",
        "250ms",
    ])
    .unwrap();
    assert_eq!(
        config.snapshot,
        Some(WarmStartConfig {
            path: "agent.snapshot".into(),
            interval: Duration::from_secs(2),
            max_age: Duration::from_secs(3600),
        })
    );
    assert_eq!(
        config.link_local,
        Some(LinkLocalConfig {
            ip: IpAddr::V4(Ipv4Addr::new(169, 254, 20, 25)),
            interface: crate::netif::DEFAULT_INTERFACE.to_string(),
        })
    );
    assert_eq!(
        config.source,
        Source::Manifests {
            origin: ManifestOrigin::Path("examples/demo".into()),
            poll_interval: Duration::from_millis(250),
        }
    );
    let (logging, config) = agent_args(&[
        "--log-format",
        "json",
        "--api-encoding",
        "json",
        "--watch-slices",
        "all",
    ])
    .unwrap()
    .into_parts()
    .unwrap();
    assert_eq!(logging.format, LogFormat::Json);
    assert!(matches!(
        config.source,
        Source::Kubernetes {
            api_encoding: crate::source::kubernetes::ApiEncoding::Json,
            watch_slices: crate::source::kubernetes::WatchSlices::All,
            ..
        }
    ));
}
