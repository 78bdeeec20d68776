//! The services and servers the agent runs, and how they map onto the data path's maps.
//!
//! Ids: every service and every server of a service gets an id (its index in the data path's
//! arrays). The names behind the ids are written into `MAP_NAMES`, which is pinned with the
//! other maps, so an agent that restarts (or a newer one) adopts the same ids and every stick
//! entry keeps pointing at the same server.
//!
//! A server's state in the data path folds admin state and health together:
//! maint -> MAINT, health down (or MAC unknown) -> DOWN, drain -> DRAIN, else UP. Only UP
//! servers with weight > 0 get Maglev slots; a change rebuilds only its own service's table.
//!
//! A server's MAC: the one in its config, else the kernel's neighbour entry for its address on
//! the interface its frames leave by (followed as it changes, see `neigh`), else the last one
//! known (from before a reload, or from the pinned maps after a restart).
//!
//! This file holds the model (`Balancer`, `Svc`, `Server`) and the runtime changes (health,
//! admin state, weight, neighbours); `apply` reconciles a new config, `ids` keeps the ids,
//! `program` computes the map values (pure), `egress` the output ports, `stick` the stick
//! tables' runtime commands, `announce` whether each VIP is announced (pure).

pub mod announce;
mod apply;
pub mod egress;
mod ids;
pub mod program;
pub mod stick;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use lb_common::{BACKEND_DRAIN, BACKEND_MAINT, BACKEND_UP, Backend};

use crate::{
    balancer::{
        egress::{Egress, EgressError, TxPorts},
        program::TableServer,
    },
    config::{self, AdminState, Config},
    datapath::{Datapath, DatapathError},
    health::{self, CheckSpec},
    net::{
        link::{self, LinkError},
        neigh,
    },
};

/// A server of a service, as the agent tracks it.
#[derive(Debug, Clone)]
pub struct Server {
    /// Backend id in the data path.
    pub id: u32,
    /// 1-based position in its service (HAProxy's `srv_id`, the `server_id` of stick entries).
    pub puid: u32,
    pub cfg: config::Server,
    pub admin: AdminState,
    pub health: health::Health,
    pub weight: u32,
    pub mac: Option<[u8; 6]>,
    /// How its frames leave (XDP_TX, or a redirect to its own interface).
    pub egress: Egress,
    pub last_change: Instant,
    /// The last health transition's reason (for logs and `show servers state`).
    pub last_reason: String,
}

impl Server {
    /// The state the data path sees (see `program::backend_state`).
    pub fn dp_state(&self) -> u8 {
        let mac_known = self.mac.is_some() || self.cfg.forward != config::Forward::L2;
        program::backend_state(self.admin, self.health, mac_known)
    }

    /// Its value in `MAP_BACKENDS`, as a server of service `service`.
    pub fn backend(&self, service: u32) -> Backend {
        Backend {
            forward: program::forward_mode(&self.cfg.forward),
            ..program::backend(service, self.dp_state(), self.mac, &self.egress)
        }
    }

    pub fn state_word(&self) -> &'static str {
        match self.dp_state() {
            BACKEND_UP => "UP",
            BACKEND_DRAIN => "DRAIN",
            BACKEND_MAINT => "MAINT",
            _ => "DOWN",
        }
    }
}

/// A service (one VIP:port/protocol), as the agent tracks it.
#[derive(Debug, Clone)]
pub struct Svc {
    pub id: u32,
    pub cfg: config::Service,
    pub servers: Vec<Server>,
    /// The table the data path uses now.
    pub table: Vec<u32>,
}

impl Svc {
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.cfg.name == name)
    }

    pub fn server_by_id(&self, backend: u32) -> Option<&Server> {
        self.servers.iter().find(|s| s.id == backend)
    }

    pub fn family(&self) -> u8 {
        program::family(self.cfg.vip.ip())
    }

    /// The Maglev table its servers' states and weights call for.
    pub fn maglev_table(&self) -> Vec<u32> {
        let servers: Vec<TableServer<'_>> = self
            .servers
            .iter()
            .map(|s| TableServer {
                name: &s.cfg.name,
                id: s.id,
                state: s.dp_state(),
                weight: s.weight,
            })
            .collect();
        program::maglev_table(&servers, self.cfg.table_size)
    }

    /// The health-check target of a server, or None when checks are off.
    pub fn check_spec(&self, s: &config::Server) -> Option<CheckSpec> {
        let h = &self.cfg.health;
        let port = s.check_port.or(h.port).unwrap_or(self.cfg.vip.port());
        CheckSpec::new(h, SocketAddr::new(s.address, port))
            .map(|c| c.with_intervals(s.observe.fastinter, s.observe.downinter))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("no free {what} id (at most {max})")]
    NoFreeId { what: &'static str, max: u32 },
    #[error("server {server}: {source}")]
    Egress {
        server: String,
        #[source]
        source: EgressError,
    },
}

/// What the agent must do with health checks after a change.
#[derive(Debug, Default)]
pub struct CheckChanges {
    /// (service, server) -> new spec and initial state.
    pub set: Vec<((String, String), CheckSpec, health::Health)>,
    pub remove: Vec<(String, String)>,
}

/// Backend ids freed by `apply` whose stick entries may still exist. They are not handed out
/// again until a sweep has deleted those entries (`Balancer::release_retired`), so a stick
/// entry can never come to mean another server. (A removed service needs nothing of the kind:
/// its table goes with it, entries and all.)
pub type Retired = HashSet<u32>;

/// What the expiry sweeper needs, taken under the lock in one go (the walk runs without it).
#[derive(Debug, Clone, Default)]
pub struct SweepPolicy {
    /// Service id -> expire (ns; 0 = never). Entries of other service ids are deleted.
    pub expire: HashMap<u16, u64>,
    /// Backend id -> the service it serves. An entry whose backend does not serve the entry's
    /// service (a removed server, an id reused) is deleted.
    pub owner: HashMap<u32, u16>,
    /// `Balancer::generation` when this was taken: a sweep deletes entries for the two rules
    /// above only if no apply ran meanwhile (a service or server added during the walk would
    /// look unknown to this policy).
    pub generation: u64,
    /// The retired backend ids at the time: released once a sweep under this policy has
    /// purged them.
    pub retired: Retired,
}

pub struct Balancer {
    pub cfg: Config,
    pub services: Vec<Svc>,
    pub dp: Datapath,
    /// Output interfaces of servers that are not on the XDP interface.
    tx_ports: TxPorts,
    /// Backend ids freed by a reload whose stick entries may still exist.
    pub retired: Retired,
    /// Counts successful applies (see `SweepPolicy::generation`).
    pub generation: u64,
    /// The kernel's neighbour table as the agent's watch last reported it.
    neighbours: neigh::Table,
    /// The XDP interface's index (where the neighbours of servers without `interface` are).
    xdp_ifindex: u32,
}

impl Balancer {
    /// Take over a loaded data path and apply `cfg` to it. When the data path adopted pinned
    /// maps, ids, runtime admin states and health come from them, so nothing moves. MACs come
    /// from `neighbours` (the kernel's table now) where it has them.
    pub fn new(
        cfg: Config,
        dp: Datapath,
        neighbours: neigh::Table,
    ) -> Result<(Self, CheckChanges), ApplyError> {
        let xdp_ifindex = link::lookup(&cfg.global.interface)?.index;
        let mut b = Balancer {
            cfg: Config {
                services: Vec::new(),
                ..cfg.clone()
            },
            services: Vec::new(),
            dp,
            tx_ports: TxPorts::default(),
            retired: Retired::new(),
            generation: 0,
            neighbours,
            xdp_ifindex,
        };
        let adopted = b.dp.adopted();
        if adopted {
            b.tx_ports = TxPorts::adopt(&b.dp);
            b.retire_referenced_ids()?;
        }
        let checks = b.apply(cfg, adopted)?;
        // A migration's stick entries go into the tables the config just gave each service.
        let (restored, dropped) = b.dp.restore_migrated_entries()?;
        if restored + dropped > 0 {
            log::info!(
                "migration: {restored} stick entries restored, {dropped} of services that no longer \
                 keep a table dropped"
            );
        }
        Ok((b, checks))
    }

    pub fn service(&self, name: &str) -> Option<&Svc> {
        self.services.iter().find(|s| s.cfg.name == name)
    }

    /// Mutable access by name (API handlers).
    pub fn svc_mut(&mut self, name: &str) -> Option<&mut Svc> {
        self.services.iter_mut().find(|s| s.cfg.name == name)
    }

    /// Write service `idx`'s backends and, when it changed, its Maglev table.
    fn sync(&mut self, idx: usize) -> Result<(), ApplyError> {
        let svc = &self.services[idx];
        for s in &svc.servers {
            // The outer header first: the data path reads it once the backend names a mode.
            if let Some(e) = program::encap(s.cfg.address, &s.cfg.forward) {
                self.dp.set_encap(s.id, e)?;
            }
            self.dp.set_backend(s.id, s.backend(svc.id))?;
        }
        let table = svc.maglev_table();
        let current = self.dp.service(svc.id)?;
        let slot = self.dp.active_slot(svc.id)?;
        if table != svc.table || current.table_size[slot as usize] != table.len() as u32 {
            let t0 = Instant::now();
            let id = svc.id;
            // Adopted maps: skip the write when the active table already is this one.
            let same = svc.table.is_empty()
                && current.table_size[slot as usize] == table.len() as u32
                && self.dp.table(id)? == table;
            if !same {
                self.dp.install_table(id, &table)?;
                log::debug!(
                    "{}: Maglev table installed in {:?}",
                    self.services[idx].cfg.name,
                    t0.elapsed()
                );
            }
            self.services[idx].table = table;
        }
        Ok(())
    }

    fn find(&mut self, service: &str, server: &str) -> Option<(usize, usize)> {
        let si = self.services.iter().position(|s| s.cfg.name == service)?;
        let vi = self.services[si]
            .servers
            .iter()
            .position(|v| v.cfg.name == server)?;
        Some((si, vi))
    }

    /// A health transition from the checker. Returns false when the server is unknown.
    pub fn on_health(
        &mut self,
        service: &str,
        server: &str,
        to: health::Health,
        reason: &str,
    ) -> Result<bool, ApplyError> {
        let Some((si, vi)) = self.find(service, server) else {
            return Ok(false);
        };
        let s = &mut self.services[si].servers[vi];
        if s.health == to {
            return Ok(true);
        }
        s.health = to;
        s.last_change = Instant::now();
        s.last_reason = reason.to_string();
        let word = if to == health::Health::Up { "UP" } else { "DOWN" };
        log::warn!("{service}/{server} {word}: {reason}");
        self.sync(si)?;
        Ok(true)
    }

    /// `set server S/V state ready|drain|maint`.
    pub fn set_admin(&mut self, service: &str, server: &str, state: AdminState) -> Result<bool, ApplyError> {
        let Some((si, vi)) = self.find(service, server) else {
            return Ok(false);
        };
        let s = &mut self.services[si].servers[vi];
        if s.admin != state {
            s.admin = state;
            s.last_change = Instant::now();
            log::info!("{service}/{server}: admin state {}", state.as_str());
        }
        self.sync(si)?;
        Ok(true)
    }

    /// `set server S/V weight N`.
    pub fn set_weight(&mut self, service: &str, server: &str, weight: u32) -> Result<bool, ApplyError> {
        let Some((si, vi)) = self.find(service, server) else {
            return Ok(false);
        };
        self.services[si].servers[vi].weight = weight;
        log::info!("{service}/{server}: weight {weight}");
        self.sync(si)?;
        Ok(true)
    }

    /// A change of the kernel's neighbour table: every server at that address, on that
    /// interface, without a MAC of its own in the config, takes the new MAC. A server that had
    /// a MAC gets only its backend value rewritten; one that had none can come UP, so its
    /// service's table is rebuilt. An entry gone or failed changes nothing (see `neigh`).
    pub fn on_neighbour(&mut self, n: &neigh::Neighbour) -> Result<(), ApplyError> {
        if !self.neighbours.update(n) {
            return Ok(());
        }
        let Some(mac) = n.mac else { return Ok(()) };
        for si in 0..self.services.len() {
            let mut first_mac = false;
            let svc = &mut self.services[si];
            for s in svc.servers.iter_mut().filter(|s| {
                s.cfg.mac.is_none()
                    && s.cfg.address == n.addr
                    && s.egress.ifindex == n.ifindex
                    && s.mac != Some(mac)
            }) {
                match s.mac.replace(mac) {
                    None => {
                        log::info!(
                            "{}/{}: MAC {} resolved",
                            svc.cfg.name,
                            s.cfg.name,
                            neigh::format_mac(&mac)
                        );
                        first_mac = true;
                    }
                    Some(old) => {
                        log::warn!(
                            "{}/{}: MAC of {} changed from {} to {} (neighbour table)",
                            svc.cfg.name,
                            s.cfg.name,
                            s.cfg.address,
                            neigh::format_mac(&old),
                            neigh::format_mac(&mac)
                        );
                        self.dp.set_backend(s.id, s.backend(svc.id))?;
                    }
                }
            }
            if first_mac {
                self.sync(si)?;
            }
        }
        Ok(())
    }

    /// The addresses of servers reached by encapsulation (`forward = "ipip" | "gue"`), each
    /// once: the data path forwards to them only through a next hop the kernel has a neighbour
    /// entry for, and the agent makes the kernel resolve it (`agent::neighbours`).
    pub fn routed_addresses(&self) -> Vec<IpAddr> {
        let mut addrs: Vec<IpAddr> = self
            .services
            .iter()
            .flat_map(|svc| svc.servers.iter())
            .filter(|s| s.cfg.forward != config::Forward::L2)
            .map(|s| s.cfg.address)
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// The packets the data path could not encapsulate for want of a FIB answer so far
    /// (`encap_fib_miss`: no route, or no neighbour entry for the next hop yet).
    pub fn encap_fib_misses(&self) -> Result<u64, crate::datapath::DatapathError> {
        Ok(self
            .dp
            .global_stats()?
            .get(lb_common::gstat::Counter::EncapFibMiss))
    }

    /// L2 servers that have no MAC yet: ("service/server", address), for probes and warnings.
    pub fn unresolved(&self) -> Vec<(String, IpAddr)> {
        self.services
            .iter()
            .flat_map(|svc| {
                svc.servers
                    .iter()
                    // An encapsulating server needs no MAC: the FIB gives the next hop's.
                    .filter(|s| s.mac.is_none() && s.cfg.forward == config::Forward::L2)
                    .map(|s| (format!("{}/{}", svc.cfg.name, s.cfg.name), s.cfg.address))
            })
            .collect()
    }

    /// What the sweeper needs (see `SweepPolicy`).
    pub fn sweep_policy(&self) -> SweepPolicy {
        SweepPolicy {
            expire: self
                .services
                .iter()
                .map(|s| (s.id as u16, s.cfg.stick.expire.as_nanos() as u64))
                .collect(),
            owner: self
                .services
                .iter()
                .flat_map(|s| s.servers.iter().map(|v| (v.id, s.id as u16)))
                .collect(),
            generation: self.generation,
            retired: self.retired.clone(),
        }
    }

    /// After a sweep under `policy` that deleted every entry its rules doom: the ids it saw
    /// retired may be handed out again. Nothing is released when an apply ran since the
    /// policy was taken (the sweep then skipped those deletions).
    pub fn release_retired(&mut self, policy: &SweepPolicy) {
        if policy.generation != self.generation {
            return;
        }
        self.retired.retain(|id| !policy.retired.contains(id));
    }
}
