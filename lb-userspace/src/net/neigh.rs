//! Backend MAC addresses from the kernel's neighbour table (ARP for IPv4, NDP for IPv6), watched
//! through rtnetlink: one dump, then every change the kernel announces (`RTNLGRP_NEIGH`). A MAC
//! that changes in the kernel (a NIC swap, a VM move, an address taken over by another host)
//! reaches the data path as soon as the kernel learns it.
//!
//! Nothing here waits for an answer. To resolve an address that has no entry, [`probe`] sends one
//! empty UDP datagram to its discard port (9): the kernel resolves the address to send it, and
//! the answer arrives through the watch like any other change.
//!
//! An entry that disappears or fails (`FAILED`, `INCOMPLETE`, deleted) takes nothing away: the
//! last MAC known stays in use, because whether a server is alive is the health checks' call,
//! and a neighbour entry also goes away when the kernel merely stops using it.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr, UdpSocket},
    pin::Pin,
};

use futures_util::{Stream, StreamExt as _, TryStreamExt as _, future::ready};
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    },
};

/// The discard port: where a resolution probe goes.
const DISCARD_PORT: u16 = 9;

/// One entry of the kernel's neighbour table, as far as MACs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    /// The interface the entry belongs to (entries are per interface).
    pub ifindex: u32,
    /// Its link-layer address; `None` when the entry is gone, failed or not resolved yet.
    pub mac: Option<[u8; 6]>,
}

/// The usable entries of the neighbour table: (address, interface) -> MAC.
#[derive(Debug, Default, Clone)]
pub struct Table(HashMap<(IpAddr, u32), [u8; 6]>);

impl Table {
    pub fn get(&self, addr: IpAddr, ifindex: u32) -> Option<[u8; 6]> {
        self.0.get(&(addr, ifindex)).copied()
    }

    /// Every entry: (address, interface, MAC).
    pub fn entries(&self) -> impl Iterator<Item = (IpAddr, u32, [u8; 6])> + '_ {
        self.0.iter().map(|((a, i), m)| (*a, *i, *m))
    }

    /// Record a change; true when `n` brings a MAC that differs from the one known.
    pub fn update(&mut self, n: &Neighbour) -> bool {
        let key = (n.addr, n.ifindex);
        match n.mac {
            Some(m) => self.0.insert(key, m) != Some(m),
            None => {
                self.0.remove(&key);
                false
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    #[error("cannot open a netlink socket to watch the neighbour table: {source}")]
    Socket { source: std::io::Error },
    #[error("cannot read the neighbour table over netlink: {source}")]
    Dump { source: rtnetlink::Error },
}

/// A subscription to the neighbour table's changes.
pub struct Watch {
    handle: rtnetlink::Handle,
    changes: Pin<Box<dyn Stream<Item = Neighbour> + Send + Sync>>,
}

/// Subscribe to the neighbour table. The returned future is the netlink connection: it must be
/// spawned (and runs until the socket fails, which ends [`Watch::next`]).
pub fn subscribe() -> Result<(impl Future<Output = ()> + Send + 'static, Watch), NeighError> {
    let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh])
        .map_err(|source| NeighError::Socket { source })?;
    let changes = messages.filter_map(|(m, _)| ready(from_message(m)));
    Ok((
        conn,
        Watch {
            handle,
            changes: Box::pin(changes),
        },
    ))
}

impl Watch {
    /// Every entry of the table now (both families, every interface).
    pub async fn dump(&self) -> Result<Vec<Neighbour>, NeighError> {
        self.handle
            .neighbours()
            .get()
            .execute()
            .try_filter_map(|m| ready(Ok(from_entry(&m, true))))
            .try_collect()
            .await
            .map_err(|source| NeighError::Dump { source })
    }

    /// The next change the kernel announces; `None` once the subscription ended (the socket
    /// failed, e.g. it overflowed): subscribe again and dump to catch up.
    pub async fn next(&mut self) -> Option<Neighbour> {
        self.changes.next().await
    }
}

fn from_message(m: NetlinkMessage<RouteNetlinkMessage>) -> Option<Neighbour> {
    match m.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => from_entry(&n, true),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => from_entry(&n, false),
        _ => None,
    }
}

/// An IPv4/IPv6 entry (`present` = announced or dumped, not deleted); other families, proxy
/// entries and entries without an address are not ours.
fn from_entry(m: &NeighbourMessage, present: bool) -> Option<Neighbour> {
    let h = &m.header;
    if !matches!(h.family, AddressFamily::Inet | AddressFamily::Inet6)
        || h.flags.contains(NeighbourFlags::Proxy)
    {
        return None;
    }
    let mut addr = None;
    let mut lladdr = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => addr = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => addr = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLayerAddress(l) => lladdr = <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => {}
        }
    }
    // An entry being resolved or that failed carries no address worth using (or a stale one).
    let usable = present
        && !matches!(
            h.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        );
    Some(Neighbour {
        addr: addr?,
        ifindex: h.ifindex,
        mac: lladdr.filter(|m| usable && *m != [0; 6]),
    })
}

/// Ask the kernel to resolve `addrs` without waiting for it: one empty datagram to each one's
/// discard port. Sending never blocks (the kernel queues the datagram while it resolves); a
/// failure (no route) is logged and the next probe tries again.
pub fn probe(addrs: &[IpAddr]) {
    let open = |any: IpAddr| {
        UdpSocket::bind(SocketAddr::new(any, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .inspect_err(|e| log::warn!("neighbour probe: cannot open a UDP socket: {e}"))
            .ok()
    };
    let (mut v4, mut v6) = (None, None);
    for a in addrs {
        let sock = match a {
            IpAddr::V4(_) => v4.get_or_insert_with(|| open(IpAddr::from([0u8; 4]))),
            IpAddr::V6(_) => v6.get_or_insert_with(|| open(IpAddr::from([0u16; 8]))),
        };
        if let Some(s) = sock
            && let Err(e) = s.send_to(&[], SocketAddr::new(*a, DISCARD_PORT))
        {
            log::debug!("neighbour probe of {a}: {e}");
        }
    }
}

/// "02:00:00:00:00:01" -> bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("02:77:00:0a:ff:01").unwrap();
        assert_eq!(m, [2, 0x77, 0, 10, 255, 1]);
        assert_eq!(format_mac(&m), "02:77:00:0a:ff:01");
        assert!(parse_mac("02:77:00").is_none());
        assert!(parse_mac("02:77:00:0a:ff:01:02").is_none());
        assert!(parse_mac("zz:77:00:0a:ff:01").is_none());
    }

    fn entry(state: NeighbourState, family: AddressFamily, lladdr: &[u8]) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = family;
        m.header.ifindex = 7;
        m.header.state = state;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::new(10, 0, 0, 2),
            )));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
        m
    }

    #[test]
    fn only_resolved_entries_carry_a_mac() {
        let mac = [2, 0, 0, 0, 0, 9];
        let addr = IpAddr::from([10, 0, 0, 2]);
        for state in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
        ] {
            assert_eq!(
                from_entry(&entry(state, AddressFamily::Inet, &mac), true),
                Some(Neighbour {
                    addr,
                    ifindex: 7,
                    mac: Some(mac)
                }),
                "{state:?}"
            );
        }
        for state in [NeighbourState::Incomplete, NeighbourState::Failed] {
            let n = from_entry(&entry(state, AddressFamily::Inet, &mac), true).unwrap();
            assert_eq!(n.mac, None, "{state:?}");
        }
        // A deletion says the entry is gone, whatever its last state.
        let gone = from_entry(
            &entry(NeighbourState::Reachable, AddressFamily::Inet, &mac),
            false,
        );
        assert_eq!(gone.unwrap().mac, None);
        // Not Ethernet, not IP.
        let odd = from_entry(
            &entry(NeighbourState::Reachable, AddressFamily::Inet, &[1, 2]),
            true,
        );
        assert_eq!(odd.unwrap().mac, None);
        assert_eq!(
            from_entry(
                &entry(NeighbourState::Reachable, AddressFamily::Bridge, &mac),
                true
            ),
            None
        );
    }

    #[test]
    fn a_lost_entry_is_forgotten_and_only_a_new_mac_is_a_change() {
        let addr = IpAddr::from([10, 0, 0, 2]);
        let n = |mac| Neighbour {
            addr,
            ifindex: 3,
            mac,
        };
        let mut t = Table::default();
        assert!(t.update(&n(Some([2, 0, 0, 0, 0, 1]))));
        assert!(!t.update(&n(Some([2, 0, 0, 0, 0, 1]))));
        assert!(t.update(&n(Some([2, 0, 0, 0, 0, 2]))));
        assert_eq!(t.get(addr, 3), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(t.get(addr, 4), None, "entries are per interface");
        assert!(!t.update(&n(None)));
        assert_eq!(t.get(addr, 3), None);
    }
}
