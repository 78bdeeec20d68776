//! The figures of one scrape, read under the agent's lock and encoded after it.

use std::sync::atomic::Ordering::Relaxed;

use lb_common::{BackendStats, PassiveStats, ServiceStats};

use super::PEER_UPDATES;
use crate::{balancer::Balancer, control::state::AgentState};

/// The figures of one scrape, read under the agent's lock and encoded after it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Data-path counters by event name, as `show info` lists them (`None`: a map could not
    /// be read).
    pub datapath: Option<Vec<(&'static str, u64)>>,
    pub services: Vec<ServiceFigures>,
    pub peers: Option<PeersFigures>,
}

#[derive(Debug, Clone, Default)]
pub struct ServiceFigures {
    pub name: String,
    /// `None`: the map could not be read.
    pub stats: Option<ServiceStats>,
    /// Live entries of its stick table as of the sweeper's last pass.
    pub table_used: u64,
    /// Capacity of its stick table (0: it keeps none).
    pub table_size: u64,
    pub servers: Vec<ServerFigures>,
    /// Whether its VIP is announced (`None`: no `[announce]`).
    pub announced: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct ServerFigures {
    pub name: String,
    /// `None`: the map could not be read.
    pub stats: Option<BackendStats>,
    /// Latency of the latest check, in seconds (`None` before one completed or without checks).
    pub check_latency: Option<f64>,
    /// Checks run (`None` without checks).
    pub checks: Option<u64>,
    /// `UP`, `DOWN`, `DRAIN` or `MAINT`.
    pub state: &'static str,
    /// Passive health's signals (`None`: the map could not be read).
    pub passive: Option<PassiveStats>,
    /// Why the server last went DOWN (`None`: not since its checks started).
    pub last_down: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct PeersFigures {
    pub peers: Vec<PeerFigures>,
    /// Connections refused because they came from an address that is not a peer's.
    pub connections_refused: u64,
    /// Connections refused because the peer's address had too many unauthenticated ones.
    pub connections_refused_busy: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PeerFigures {
    pub name: String,
    pub connected: bool,
    /// Update-line counters, in the order of [`PEER_UPDATES`].
    pub updates: [u64; PEER_UPDATES.len()],
    pub auth_failures: u64,
    pub write_timeouts: u64,
}

impl Snapshot {
    /// Reads the figures of `b` (per-CPU counters) and `state` (the sweeper's last count, the
    /// checker's view, the peers' atomics). Nothing here walks a table: this runs under the
    /// agent's lock.
    pub fn read(b: &Balancer, state: &AgentState) -> Snapshot {
        let services = b
            .services
            .iter()
            .map(|s| ServiceFigures {
                name: s.cfg.name.clone(),
                stats: b.dp.service_stats(s.id).ok(),
                table_used: state.table_used(s.id as u16) as u64,
                table_size: b.dp.stick_capacity_of(s.id).unwrap_or(0).into(),
                announced: state.frontends.as_ref().map(|f| f.is_routed(s.cfg.vip.ip())),
                servers: s
                    .servers
                    .iter()
                    .map(|v| {
                        let check = state.checks.get(&(s.cfg.name.clone(), v.cfg.name.clone()));
                        ServerFigures {
                            name: v.cfg.name.clone(),
                            stats: b.dp.backend_stats(v.id).ok(),
                            check_latency: check
                                .as_ref()
                                .and_then(|c| c.last_latency)
                                .map(|l| l.as_secs_f64()),
                            passive: b.dp.passive_stats(v.id).ok(),
                            last_down: check.as_ref().and_then(|c| c.last_down.clone()),
                            checks: check.map(|c| c.checks),
                            state: v.state_word(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let peers = state.peers.as_ref().map(|p| PeersFigures {
            peers: p
                .list
                .iter()
                .map(|(peer, c)| PeerFigures {
                    name: peer.name.clone(),
                    connected: c.connected.load(Relaxed),
                    updates: c.line_counts(),
                    auth_failures: c.bad_auth.load(Relaxed),
                    write_timeouts: c.timeouts.load(Relaxed),
                })
                .collect(),
            connections_refused: p.refused.load(Relaxed),
            connections_refused_busy: p.refused_busy.load(Relaxed),
        });
        Snapshot {
            datapath: b.dp.global_stats().ok().map(|g| g.shown().collect()),
            services,
            peers,
        }
    }
}
