//! The values `--link-local-ip` and `--link-local-interface` accept.
//!
//! Pure checks, with messages that say what would be accepted; touches no
//! interface.

use std::net::IpAddr;

/// The default interface name (`--link-local-interface`).
pub(crate) const DEFAULT_INTERFACE: &str = "kubedisco0";

/// Validates an interface name the way the kernel does (IFNAMSIZ).
pub(crate) fn parse_interface_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() < 16
        && text != "."
        && text != ".."
        && !text
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control());
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
        ))
    }
}

/// An address the agent can own: unicast, not unspecified, and not an IPv6
/// link-local address (those need a zone, which sockets cannot bind without).
pub(crate) fn parse_link_local_ip(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address (e.g. 169.254.20.25)"))?;
    let bad = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast() || is_ipv6_link_local(ip),
    };
    if bad {
        Err(format!(
            "{text:?} cannot be the agent's address: use a unicast address such as \
             169.254.20.25 (IPv6: a unique local address such as fd00::53, not fe80::/10)"
        ))
    } else {
        Ok(ip)
    }
}

/// An IPv6 link-local address (fe80::/10): it needs a zone to be bound.
pub(crate) fn is_ipv6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_interface_names_are_validated() {
        assert!(parse_link_local_ip("169.254.20.25").is_ok());
        assert!(parse_link_local_ip("fd00::53").is_ok());
        for bad in [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "fe80::1",
            "255.255.255.255",
            "kubedisco",
        ] {
            assert!(parse_link_local_ip(bad).is_err(), "{bad}");
        }
        assert!(parse_interface_name("kubedisco0").is_ok());
        for bad in ["", "a/b", "eth0:1", "with space", "sixteen-chars-xx", ".."] {
            assert!(parse_interface_name(bad).is_err(), "{bad:?}");
        }
    }
}
