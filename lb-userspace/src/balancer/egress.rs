//! Where a backend's frames leave the balancer. By default out of the interface they came in
//! on (`XDP_TX`, source MAC left as the frame's destination, i.e. ours). A server with its own
//! `interface` is reached by `XDP_REDIRECT` through a port of `MAP_TX_PORTS` that points at
//! that interface, with that interface's MAC as the source.
//!
//! Port numbers stay stable while the agent runs and across restarts (they are read back from
//! the pinned map), so a backend is never written with a port that points elsewhere.

use std::collections::{HashMap, HashSet};

use lb_common::MAX_TX_PORTS;

use crate::{
    datapath::{Datapath, DatapathError},
    net::link::{self, LinkError},
};

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
    #[error(transparent)]
    Link(#[from] LinkError),
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
        let link = link::lookup(name)?;
        let (ifindex, src_mac) = (link.index, link.ethernet_mac()?);
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
