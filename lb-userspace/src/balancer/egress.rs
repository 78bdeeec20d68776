//! Where a backend's frames leave the balancer. By default out of the interface they came in
//! on (`XDP_TX`, source MAC left as the frame's destination, i.e. ours). A server with its own
//! `interface` is reached by `XDP_REDIRECT` through a port of `MAP_TX_PORTS` that points at
//! that interface, with that interface's MAC as the source.
//!
//! Port numbers stay stable while the agent runs and across restarts (they are read back from
//! the pinned map), so a backend is never written with a port that points elsewhere.

use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use lb_common::MAX_TX_PORTS;

use crate::datapath::{Datapath, DatapathError};

/// How a backend's frames leave: `tx_port` 0 = `XDP_TX`; else the devmap port, and the source
/// MAC to write. `ifindex` is the interface they leave by, whose neighbour table has the
/// backend's MAC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Egress {
    pub tx_port: u32,
    pub src_mac: [u8; 6],
    pub ifindex: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("interface \"{0}\" does not exist (in this network namespace); list them with \"ip link\"")]
    NoInterface(String),
    #[error("interface \"{name}\": cannot read its MAC address: {source}")]
    Mac { name: String, source: io::Error },
    #[error("more than {} output interfaces besides the XDP one", MAX_TX_PORTS - 1)]
    NoFreePort,
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

/// The devmap ports in use: interface index -> port.
#[derive(Debug, Default)]
pub struct TxPorts {
    by_ifindex: HashMap<u32, u32>,
}

impl TxPorts {
    /// The ports a pinned map already holds (after an agent restart), else none.
    pub fn adopt(dp: &Datapath) -> TxPorts {
        let by_ifindex = (1..MAX_TX_PORTS)
            .filter_map(|port| dp.tx_port(port).map(|ifindex| (ifindex, port)))
            .collect();
        TxPorts { by_ifindex }
    }

    /// The egress through interface `name`: its port (allocated and written to the map when
    /// new) and its MAC.
    pub fn egress(&mut self, dp: &mut Datapath, name: &str) -> Result<Egress, EgressError> {
        let ifindex = ifindex(name).ok_or_else(|| EgressError::NoInterface(name.to_string()))?;
        let src_mac = mac(name).map_err(|source| EgressError::Mac {
            name: name.to_string(),
            source,
        })?;
        let tx_port = match self.by_ifindex.get(&ifindex) {
            Some(p) => *p,
            None => {
                let taken: HashSet<u32> = self.by_ifindex.values().copied().collect();
                let p = (1..MAX_TX_PORTS)
                    .find(|p| !taken.contains(p))
                    .ok_or(EgressError::NoFreePort)?;
                dp.set_tx_port(p, ifindex)?;
                self.by_ifindex.insert(ifindex, p);
                log::info!("output interface {name} (ifindex {ifindex}) is tx port {p}");
                p
            }
        };
        Ok(Egress {
            tx_port,
            src_mac,
            ifindex,
        })
    }

    /// Forget the ports no backend uses any more (they may be handed out again; the map entry
    /// is overwritten before any backend names the port).
    pub fn retain(&mut self, used: &HashSet<u32>) {
        self.by_ifindex.retain(|_, p| used.contains(p));
    }
}

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The MAC address of interface `name` (SIOCGIFHWADDR, in this network namespace).
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain syscall; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFHWADDR reads the name and writes the address into `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hardware-address member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_has_the_zero_mac() {
        assert_eq!(ifindex("lo"), Some(1));
        assert_eq!(mac("lo").unwrap(), [0; 6]);
        assert_eq!(ifindex("xlb-no-such0"), None);
        assert!(mac("xlb-no-such0").is_err());
    }
}
