//! The rtnetlink requests behind the node-local address: make the
//! interface exist, be up and carry the address ([`ensure`]), and remove
//! them again ([`remove`]). Every request is idempotent, so the guard can
//! repeat it and a crashed agent's leftovers are reused.
//!
//! Owns the kernel conversation and its errors; may not decide when to ask
//! (that is [`super::link_local`]).

use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec};
use tracing::{debug, info};

use super::address::is_ipv6_link_local;

/// The alias written on an interface the agent created (`ip link` shows it).
pub(crate) const OWNER_ALIAS: &str = "kubedisco node-local address";

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
pub(crate) struct Changes {
    pub(crate) created_interface: bool,
    pub(crate) set_up: bool,
    pub(crate) added_address: bool,
}

impl Changes {
    pub(crate) fn any(self) -> bool {
        self.created_interface || self.set_up || self.added_address
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

/// The interface's kind (`dummy`, `bridge`, …), for the log.
fn kind_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

/// Makes the interface exist, be up and carry `ip`. Idempotent.
pub(crate) async fn ensure(
    handle: &Handle,
    ip: IpAddr,
    interface: &str,
) -> Result<Changes, NetifError> {
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
pub(crate) async fn remove(
    handle: &Handle,
    ip: IpAddr,
    interface: &str,
) -> Result<(), rtnetlink::Error> {
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
