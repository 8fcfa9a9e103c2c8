//! The node-local address for the agent's lifetime: [`LinkLocal::setup`]
//! before any socket is bound, a guard task that puts the address back when
//! someone removes it, [`LinkLocal::teardown`] after every socket is closed.
//!
//! Owns when to ask the kernel; how to ask is [`super::netlink`].

use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkFlags;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::listeners::other_listeners;
use super::netlink::{NetifError, ensure, remove};

/// How often the guard re-checks even without a netlink event (events can be
/// dropped when the socket's buffer overflows).
const GUARD_INTERVAL: Duration = Duration::from_secs(30);

/// The node-local address while the agent runs; [`LinkLocal::teardown`]
/// removes it.
pub(crate) struct LinkLocal {
    ip: IpAddr,
    interface: String,
    connection: JoinHandle<()>,
    guard: JoinHandle<()>,
}

impl LinkLocal {
    /// Creates the interface (if missing), brings it up and adds `ip` (if
    /// missing), then starts the guard. Call before binding any socket on `ip`.
    pub(crate) async fn setup(ip: IpAddr, interface: &str) -> Result<LinkLocal, NetifError> {
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

    /// Stops the guard, then removes the address — and the interface, when
    /// the agent created it and nothing else is on it — unless another
    /// process still listens on the address. Errors are logged, not returned:
    /// the agent is on its way out, and a leftover is reused by the next one.
    pub(crate) async fn teardown(self) {
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
