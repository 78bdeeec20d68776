//! The VIP routes the agent announces through: one host route per announced VIP (`/32` or
//! `/128`, `dev <interface>`, scope link) in a kernel routing table of the config's choosing,
//! marked with the routing protocol number [`RTPROT_XLB`] so that the agent finds its own routes
//! again after a restart and never touches anyone else's. The operator's BIRD learns that table
//! (`kernel table N; learn;`) and exports it by BGP.
//!
//! Synchronous, like `link`: each call runs on a short-lived thread with a netlink socket of
//! its own (`link::blocking`), in the calling thread's network namespace.

use std::net::IpAddr;

use futures_util::TryStreamExt as _;
use rtnetlink::{
    IpVersion, RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope},
};

use super::link::blocking;

/// The routing protocol number of xlb's routes (`ip route` shows "proto 250"). 250 is free in
/// `/etc/iproute2/rt_protos` and in the kernel's list (`RTPROT_*` stop at 99 in use here; BIRD
/// itself uses 12).
pub const RTPROT_XLB: u8 = 250;

/// A route of [`RTPROT_XLB`] found in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostRoute {
    /// Its destination (a host route: `/32` or `/128`).
    pub dst: IpAddr,
    /// Its output interface (0 when it has none).
    pub ifindex: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open a netlink socket for the routes of table {table}: {source}")]
    Socket { table: u32, source: std::io::Error },
    #[error("cannot {what} over netlink: {source}")]
    Netlink {
        what: String,
        /// Boxed: a netlink error carries the whole message, too big to return by value.
        source: Box<rtnetlink::Error>,
    },
}

/// Add the host route of `dst` through interface `ifindex` in `table`, or replace the one there.
pub fn replace(table: u32, dst: IpAddr, ifindex: u32) -> Result<(), RouteError> {
    let message = host_route(table, dst).output_interface(ifindex).build();
    blocking(socket(table), |handle| async move {
        handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("add the route of {dst} to table {table}")))
    })
}

/// Delete xlb's host route of `dst` from `table`; a route already gone is not an error.
pub fn delete(table: u32, dst: IpAddr) -> Result<(), RouteError> {
    let mut message = host_route(table, dst).build();
    // Scope "nowhere" matches the route whatever its scope; the protocol keeps others' routes.
    message.header.scope = RouteScope::NoWhere;
    blocking(socket(table), |handle| async move {
        match handle.route().del(message).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.to_io().raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(netlink(format!("delete the route of {dst} from table {table}"))),
        }
    })
}

/// Every route of [`RTPROT_XLB`] in `table`, both families.
pub fn list(table: u32) -> Result<Vec<HostRoute>, RouteError> {
    blocking(socket(table), |handle| async move {
        let mut out = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let filter = match version {
                IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
                IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            };
            // Without strict checking the kernel dumps every table: filter here.
            let routes: Vec<RouteMessage> = handle
                .route()
                .get(filter)
                .execute()
                .try_collect()
                .await
                .map_err(netlink(format!("list the routes of table {table}")))?;
            out.extend(routes.iter().filter_map(|m| ours(m, table)));
        }
        out.sort();
        Ok(out)
    })
}

/// `m` as a [`HostRoute`] when it is xlb's and in `table`.
fn ours(m: &RouteMessage, table: u32) -> Option<HostRoute> {
    // The kernel always sends RTA_TABLE; the header holds only tables below 256.
    let in_table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if in_table != table || m.header.protocol != RouteProtocol::Other(RTPROT_XLB) {
        return None;
    }
    let dst = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })?;
    let ifindex = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
        .unwrap_or(0);
    Some(HostRoute { dst, ifindex })
}

/// The host route of `dst` in `table`, of xlb's protocol, scope link.
fn host_route(table: u32, dst: IpAddr) -> RouteMessageBuilder<IpAddr> {
    let prefix = if dst.is_ipv4() { 32 } else { 128 };
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, prefix)
        .expect("a host prefix fits its own family")
        .table_id(table)
        .protocol(RouteProtocol::Other(RTPROT_XLB))
        .scope(RouteScope::Link)
}

fn socket(table: u32) -> impl FnOnce(std::io::Error) -> RouteError + Send {
    move |source| RouteError::Socket { table, source }
}

fn netlink(what: String) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    move |source| RouteError::Netlink {
        what,
        source: Box::new(source),
    }
}
