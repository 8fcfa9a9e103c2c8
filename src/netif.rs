//! The agent's own node-local address (`--link-local-ip`), managed over
//! rtnetlink: no `ip` binary, no iptables rules.
//!
//! In DaemonSet mode every node's agent listens on the same well-known
//! address (169.254.20.25 by default), so apps on any node reach their local
//! agent at one address. At start-up, before any socket is bound, the agent
//! puts that address on an interface of its own (`kubedisco0`, created as a
//! `dummy` interface, or as a bridge without ports on a kernel without the
//! dummy driver — both hold a local address the same way). While it runs, a
//! guard puts the address back if something removes it. On shutdown it
//! removes the address and the interface again, unless another process still
//! listens on the address (the next agent of a rolling update, which shares
//! the ports through SO_REUSEPORT): the last agent out removes it.
//!
//! After a crash (SIGKILL) the address and interface stay; the next agent
//! finds them and reuses them (EEXIST is success here).
//!
//! The interface is marked with an alias ([`OWNER_ALIAS`]); only a marked
//! interface is ever deleted, so pointing `--link-local-interface` at an
//! existing interface (e.g. `lo`) adds and removes just the address.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec, MulticastGroup};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The alias written on an interface the agent created (`ip link` shows it).
pub const OWNER_ALIAS: &str = "kubedisco node-local address";

/// The default interface name (`--link-local-interface`).
pub const DEFAULT_INTERFACE: &str = "kubedisco0";

/// How often the guard re-checks even without a netlink event (events can be
/// dropped when the socket's buffer overflows).
const GUARD_INTERVAL: Duration = Duration::from_secs(30);

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EOPNOTSUPP: i32 = 95;
const EADDRNOTAVAIL: i32 = 99;
const EPERM: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error(
        "cannot {action} (--link-local-ip {ip} on {interface}): {source}{}",
        hint(source)
    )]
    Netlink {
        action: &'static str,
        ip: IpAddr,
        interface: String,
        #[source]
        source: io::Error,
    },
}

fn hint(error: &io::Error) -> &'static str {
    if error.raw_os_error() == Some(EPERM) {
        "; the agent needs CAP_NET_ADMIN in the node's network namespace for --link-local-ip"
    } else {
        ""
    }
}

/// Validates an interface name the way the kernel does (IFNAMSIZ).
pub fn parse_interface_name(text: &str) -> Result<String, String> {
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
pub fn parse_link_local_ip(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address (e.g. 169.254.20.25)"))?;
    let bad = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            v6.is_unspecified() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
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

fn io_error(error: rtnetlink::Error) -> io::Error {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

fn prefix_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// What [`ensure`] had to do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub created_interface: bool,
    pub set_up: bool,
    pub added_address: bool,
}

impl Changes {
    fn any(self) -> bool {
        self.created_interface || self.set_up || self.added_address
    }
}

/// The node-local address while the agent runs; [`LinkLocal::teardown`]
/// removes it.
pub struct LinkLocal {
    ip: IpAddr,
    interface: String,
    connection: JoinHandle<()>,
    guard: JoinHandle<()>,
}

impl LinkLocal {
    /// Creates the interface (if missing), brings it up and adds `ip` (if
    /// missing), then starts the guard. Call before binding any socket on `ip`.
    pub async fn setup(ip: IpAddr, interface: &str) -> Result<LinkLocal, NetifError> {
        let (connection, handle, mut events) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(NetifError::Socket)?;
        let connection = tokio::spawn(connection);
        let changes = match ensure(&handle, ip, interface).await {
            Ok(changes) => changes,
            Err(e) => {
                connection.abort();
                return Err(e);
            }
        };
        info!(
            %ip,
            interface,
            created_interface = changes.created_interface,
            added_address = changes.added_address,
            "node-local address {}",
            if changes.added_address { "added" } else { "already present: reused" }
        );

        let guard = {
            let interface = interface.to_string();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(GUARD_INTERVAL);
                tick.tick().await;
                loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some((message, _)) if concerns_us(&message.payload) => {}
                            Some(_) => continue,
                            None => {
                                warn!("netlink event stream ended; checking the node-local address every {GUARD_INTERVAL:?}");
                                std::future::pending::<()>().await;
                            }
                        },
                        _ = tick.tick() => {}
                    }
                    match ensure(&handle, ip, &interface).await {
                        Ok(changes) if changes.any() => {
                            warn!(%ip, interface, ?changes, "node-local address was changed by someone else; restored it");
                        }
                        Ok(_) => {}
                        Err(e) => warn!("{e}"),
                    }
                }
            })
        };
        Ok(LinkLocal {
            ip,
            interface: interface.to_string(),
            connection,
            guard,
        })
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Stops the guard, then removes the address — and the interface, when
    /// the agent created it and nothing else is on it — unless another
    /// process still listens on the address. Errors are logged, not returned:
    /// the agent is on its way out, and a leftover is reused by the next one.
    pub async fn teardown(self) {
        let LinkLocal {
            ip,
            interface,
            connection,
            guard,
        } = self;
        guard.abort();
        let _ = guard.await;
        // The event subscription goes first (our own changes would only be
        // queued for nobody); the removal uses a plain connection.
        connection.abort();
        let (connection, handle, _) = match rtnetlink::new_connection() {
            Ok(parts) => parts,
            Err(e) => {
                warn!(%ip, "cannot remove the node-local address: netlink: {e}");
                return;
            }
        };
        let connection = tokio::spawn(connection);
        let others = other_listeners(ip);
        if !others.is_empty() {
            info!(
                %ip,
                sockets = others.len(),
                "another process still listens on the node-local address (the next agent of a rolling update?); leaving it in place"
            );
        } else if let Err(e) = remove(&handle, ip, &interface).await {
            warn!(%ip, interface, "cannot remove the node-local address: {e}");
        } else {
            info!(%ip, interface, "node-local address removed");
        }
        connection.abort();
    }
}

/// Whether a netlink event may mean our address or interface went away.
fn concerns_us(payload: &NetlinkPayload<RouteNetlinkMessage>) -> bool {
    match payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(_))
        | NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(_)) => true,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
            !link.header.flags.contains(LinkFlags::Up)
        }
        NetlinkPayload::Overrun(_) => true,
        _ => false,
    }
}

async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn alias_of(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(alias) => Some(alias.as_str()),
        _ => None,
    })
}

/// The interface's kind (`dummy`, `bridge`, …), for logs and tests.
pub fn kind_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

/// Makes the interface exist, be up and carry `ip`. Idempotent.
pub async fn ensure(handle: &Handle, ip: IpAddr, interface: &str) -> Result<Changes, NetifError> {
    let fail = |action: &'static str| {
        let interface = interface.to_string();
        move |e: rtnetlink::Error| NetifError::Netlink {
            action,
            ip,
            interface,
            source: io_error(e),
        }
    };
    let mut changes = Changes::default();
    let link = match find_link(handle, interface)
        .await
        .map_err(fail("look up the interface"))?
    {
        Some(link) => link,
        None => {
            create_link(handle, interface)
                .await
                .map_err(fail("create the interface"))?;
            changes.created_interface = true;
            let link = find_link(handle, interface)
                .await
                .map_err(fail("look up the interface"))?
                .ok_or_else(|| NetifError::Netlink {
                    action: "find the interface just created",
                    ip,
                    interface: interface.to_string(),
                    source: io::Error::from_raw_os_error(ENODEV),
                })?;
            debug!(interface, kind = ?kind_of(&link), "created the interface");
            link
        }
    };
    let index = link.header.index;
    if changes.created_interface {
        // Marks it as ours (and brings it up): only marked interfaces are
        // ever deleted.
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .alias(OWNER_ALIAS)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(fail("bring the interface up"))?;
        changes.set_up = true;
    } else if !link.header.flags.contains(LinkFlags::Up) {
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(fail("bring the interface up"))?;
        changes.set_up = true;
    }

    if addresses_on(handle, index)
        .await
        .map_err(fail("list the interface's addresses"))?
        .iter()
        .any(|(address, _)| *address == ip)
    {
        return Ok(changes);
    }
    let mut request = handle.address().add(index, ip, prefix_len(ip));
    if ip.is_ipv6() {
        // Usable at once: no duplicate address detection on a node-local address.
        let message = request.message_mut();
        message.header.flags |= AddressHeaderFlags::Nodad;
    }
    match request.execute().await {
        Ok(()) => changes.added_address = true,
        Err(e) if errno(&e) == Some(EEXIST) => {}
        Err(e) => return Err(fail("add the address")(e)),
    }
    Ok(changes)
}

async fn create_link(handle: &Handle, name: &str) -> Result<(), rtnetlink::Error> {
    let result = handle
        .link()
        .add(LinkDummy::new(name).up().build())
        .execute()
        .await;
    let result = match result {
        Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
            info!(
                interface = name,
                "the kernel has no dummy interface driver; using a bridge without ports instead"
            );
            handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
        }
        other => other,
    };
    match result {
        // Another agent created it at the same moment.
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

/// The addresses on interface `index` (IPv6 link-local ones included).
async fn addresses_on(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(IpAddr, AddressMessage)>, rtnetlink::Error> {
    let messages: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await?;
    Ok(messages
        .into_iter()
        .filter_map(|message| {
            let address = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = address.or_else(|| {
                message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            })?;
            Some((address, message))
        })
        .collect())
}

/// Removes `ip` from the interface, then the interface itself when it is
/// ours and carries nothing else (IPv6 link-local addresses aside).
async fn remove(handle: &Handle, ip: IpAddr, interface: &str) -> Result<(), rtnetlink::Error> {
    let Some(link) = find_link(handle, interface).await? else {
        return Ok(());
    };
    let index = link.header.index;
    for (address, message) in addresses_on(handle, index).await? {
        if address == ip {
            match handle.address().del(message).execute().await {
                Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                other => other?,
            }
        }
    }
    if alias_of(&link) != Some(OWNER_ALIAS) {
        return Ok(());
    }
    let others = addresses_on(handle, index)
        .await?
        .into_iter()
        .filter(|(address, _)| !is_ipv6_link_local(*address))
        .count();
    if others == 0 {
        match handle.link().del(index).execute().await {
            Err(e) if errno(&e) == Some(ENODEV) => {}
            other => other?,
        }
    }
    Ok(())
}

fn is_ipv6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The socket inodes of other processes listening on `ip` (TCP in LISTEN,
/// unconnected UDP), from `/proc/net` of this network namespace.
pub fn other_listeners(ip: IpAddr) -> Vec<u64> {
    let ours = own_socket_inodes();
    let mut found = Vec::new();
    for (file, tcp) in [
        ("/proc/net/tcp", true),
        ("/proc/net/tcp6", true),
        ("/proc/net/udp", false),
        ("/proc/net/udp6", false),
    ] {
        let Ok(table) = std::fs::read_to_string(file) else {
            continue;
        };
        found.extend(
            listeners_in(&table, ip, tcp)
                .into_iter()
                .filter(|inode| !ours.contains(inode)),
        );
    }
    found
}

pub(crate) fn own_socket_inodes() -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Inodes of the sockets in one `/proc/net/{tcp,udp}[6]` table bound to
/// `ip` and listening (TCP state 0A) or unconnected (UDP state 07).
pub fn listeners_in(table: &str, ip: IpAddr, tcp: bool) -> Vec<u64> {
    let wanted_state = if tcp { "0A" } else { "07" };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != wanted_state {
                return None;
            }
            let (address, _port) = local.split_once(':')?;
            let address = parse_proc_address(address)?;
            let address = match address {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            };
            (address == ip).then(|| inode.parse().ok()).flatten()
        })
        .collect()
}

/// `/proc/net` prints addresses as 32-bit words in host byte order.
pub(crate) fn parse_proc_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex4(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    fn hex6(ip: Ipv6Addr) -> String {
        ip.octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    }

    #[test]
    fn proc_net_tables_are_parsed_in_host_byte_order() {
        let ip: IpAddr = "169.254.20.25".parse().unwrap();
        let v4 = hex4(Ipv4Addr::new(169, 254, 20, 25));
        let other = hex4(Ipv4Addr::new(127, 0, 0, 1));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {v4}:1F75 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0\n\
             1: {v4}:C350 {other}:1F75 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 100 0 0 10 0\n\
             2: {other}:1F75 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 100 0 0 10 0\n"
        );
        assert_eq!(listeners_in(&table, ip, true), [1001]);
        assert!(listeners_in(&table, ip, false).is_empty());

        let mapped = hex6(Ipv4Addr::new(169, 254, 20, 25).to_ipv6_mapped());
        let table6 = format!(
            "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {mapped}:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2001 2 0\n"
        );
        assert_eq!(listeners_in(&table6, ip, false), [2001]);

        let ula: Ipv6Addr = "fd00::53".parse().unwrap();
        let table6 = format!(
            "header\n 0: {}:0035 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 3001\n",
            hex6(ula)
        );
        assert_eq!(listeners_in(&table6, IpAddr::V6(ula), true), [3001]);
    }

    #[test]
    fn this_process_sockets_are_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = listener.local_addr().unwrap().port();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let needle = format!("{}:{port:04X}", hex4(Ipv4Addr::LOCALHOST));
        assert!(table.contains(&needle), "{needle} not in /proc/net/tcp");
        let mine: Vec<u64> = listeners_in(&table, ip, true)
            .into_iter()
            .filter(|inode| own_socket_inodes().contains(inode))
            .collect();
        assert!(!mine.is_empty(), "the test's own listener was not found");
        assert!(
            other_listeners(ip)
                .iter()
                .all(|inode| !mine.contains(inode)),
            "own sockets must not count as another agent's"
        );
    }

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
