//! Interfaces, looked up by name through rtnetlink: their index, their MAC address and their IP
//! addresses, in the calling thread's network namespace. The one place the agent asks about
//! links (no ioctls, no `ip`).
//!
//! The lookups are synchronous, so that code outside tokio (the config check, `xlb check`,
//! startup) and code under a lock on a runtime thread (a reload) use the same calls. rtnetlink
//! itself is asynchronous: each lookup runs its requests on a short-lived thread with a
//! current-thread runtime of its own, which works the same whether or not the caller is inside
//! a runtime (a runtime cannot be blocked on from within another). A new thread shares the
//! caller's network namespace, so it sees the same interfaces. It costs a thread and a netlink
//! socket per lookup; lookups happen at startup and on reloads, never per packet or per check.

use std::net::IpAddr;

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::{address::AddressAttribute, link::LinkAttribute};

/// Longest interface name the kernel accepts (IFNAMSIZ less the NUL).
const MAX_NAME_LEN: usize = 15;

/// An interface, as far as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// Its Ethernet address; `None` when its link-layer address is not one (a tunnel has none,
    /// loopback's is all zeroes, which is one).
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("interface \"{name}\" does not exist (in this network namespace); list them with \"ip link\"")]
    NoInterface { name: String },
    #[error(
        "interface \"{name}\" has no Ethernet address; use an Ethernet interface (\"ip link\" shows link/ether)"
    )]
    NotEthernet { name: String },
    #[error("cannot open a netlink socket to look up interface \"{name}\": {source}")]
    Socket { name: String, source: std::io::Error },
    #[error("cannot look up interface \"{name}\" over netlink: {source}")]
    Netlink {
        name: String,
        /// Boxed: a netlink error carries the whole message, too big to return by value.
        source: Box<rtnetlink::Error>,
    },
}

impl Link {
    /// Its Ethernet address, or an error naming it when it has none.
    pub fn ethernet_mac(&self) -> Result<[u8; 6], LinkError> {
        self.mac.ok_or_else(|| LinkError::NotEthernet {
            name: self.name.clone(),
        })
    }
}

/// Interface `name`: its index and MAC.
pub fn lookup(name: &str) -> Result<Link, LinkError> {
    blocking(
        socket_error(name),
        |handle| async move { link(&handle, name).await },
    )
}

/// The IP addresses of interface `name` (both families; the local address of a point-to-point
/// one, as `getifaddrs` reports it).
pub fn addresses(name: &str) -> Result<Vec<IpAddr>, LinkError> {
    Ok(networks(name)?.into_iter().map(|(ip, _)| ip).collect())
}

/// The IP addresses of interface `name` with their prefix lengths: the networks on its segment
/// (`10.0.0.2/24` is on 10.0.0.0/24).
pub fn networks(name: &str) -> Result<Vec<(IpAddr, u8)>, LinkError> {
    blocking(socket_error(name), |handle| async move {
        let index = link(&handle, name).await?.index;
        handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .map_ok(|m| {
                let (mut local, mut address) = (None, None);
                for a in m.attributes {
                    match a {
                        AddressAttribute::Local(ip) => local = Some(ip),
                        AddressAttribute::Address(ip) => address = Some(ip),
                        _ => {}
                    }
                }
                local.or(address).map(|ip| (ip, m.header.prefix_len))
            })
            .try_filter_map(|a| std::future::ready(Ok(a)))
            .try_collect()
            .await
            .map_err(|source| netlink_error(name, source))
    })
}

/// The link message of interface `name`, read into a [`Link`].
async fn link(handle: &rtnetlink::Handle, name: &str) -> Result<Link, LinkError> {
    if !could_be_a_name(name) {
        return Err(LinkError::NoInterface { name: name.into() });
    }
    let m = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(|source| netlink_error(name, source))?
        .ok_or_else(|| LinkError::NoInterface { name: name.into() })?;
    let mac = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
        _ => None,
    });
    Ok(Link {
        name: name.to_string(),
        index: m.header.index,
        mac,
    })
}

/// A name the kernel could hold: 1 to 15 bytes, no `/`, no whitespace, no NUL. Others are
/// refused before asking (the kernel would answer "invalid argument", not "no such device").
fn could_be_a_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && !name.chars().any(|c| c == '/' || c == '\0' || c.is_whitespace())
}

/// The kernel answers ENODEV for a name it does not know.
fn netlink_error(name: &str, source: rtnetlink::Error) -> LinkError {
    match &source {
        rtnetlink::Error::NetlinkError(e) if e.to_io().raw_os_error() == Some(libc::ENODEV) => {
            LinkError::NoInterface { name: name.into() }
        }
        _ => LinkError::Netlink {
            name: name.into(),
            source: Box::new(source),
        },
    }
}

fn socket_error(name: &str) -> impl FnOnce(std::io::Error) -> LinkError + Send {
    let name = name.to_string();
    move |source| LinkError::Socket { name, source }
}

/// Run `request` against a fresh rtnetlink connection on a thread of its own (see the module
/// doc) and wait for its answer; `socket` makes the error of a socket that cannot be opened.
pub(super) fn blocking<T, E, S, F, Fut>(socket: S, request: F) -> Result<T, E>
where
    T: Send,
    E: Send,
    S: FnOnce(std::io::Error) -> E + Send,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, E>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
                    Ok(rt) => rt,
                    Err(e) => return Err(socket(e)),
                };
                rt.block_on(async {
                    let (conn, handle, _) = match rtnetlink::new_connection() {
                        Ok(c) => c,
                        Err(e) => return Err(socket(e)),
                    };
                    let conn = tokio::spawn(conn);
                    let answer = request(handle).await;
                    conn.abort();
                    answer
                })
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_with_its_zero_mac_and_addresses() {
        let lo = lookup("lo").unwrap();
        assert_eq!(lo.index, 1);
        assert_eq!(lo.mac, Some([0; 6]));
        assert_eq!(lo.ethernet_mac().unwrap(), [0; 6]);
        assert!(addresses("lo").unwrap().contains(&IpAddr::from([127, 0, 0, 1])));
    }

    #[test]
    fn a_missing_interface_is_no_interface_whatever_its_name() {
        for name in ["xlb-no-such0", "", "a/b", "has space", "sixteen-bytes-xx"] {
            let e = lookup(name).unwrap_err();
            assert!(
                matches!(&e, LinkError::NoInterface { name: n } if n == name),
                "{name:?}: {e}"
            );
            assert!(
                matches!(addresses(name), Err(LinkError::NoInterface { .. })),
                "{name:?}"
            );
        }
        assert_eq!(
            lookup("xlbnope0").unwrap_err().to_string(),
            "interface \"xlbnope0\" does not exist (in this network namespace); list them with \"ip link\""
        );
    }

    #[test]
    fn lookups_work_inside_a_runtime_too() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let index = rt.block_on(async { lookup("lo").map(|l| l.index) });
        assert_eq!(index.unwrap(), 1);
    }
}
