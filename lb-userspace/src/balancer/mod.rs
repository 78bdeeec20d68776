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

pub mod egress;
pub mod stick;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use lb_common::{
    BACKEND_DOWN, BACKEND_DRAIN, BACKEND_MAINT, BACKEND_UP, Backend, FAMILY_V4, FAMILY_V6, MAX_BACKENDS,
    MAX_SERVICES, PROTO_TCP, PROTO_UDP, STICK_NONE, STICK_SRC, STICK_SRC_PORT, SVC_F_REDISPATCH, VipKey,
    maglev::{self, MaglevServer},
    name_slot_backend, name_slot_service,
};

use crate::{
    balancer::egress::{Egress, EgressError, TxPorts},
    config::{self, AdminState, Config, Protocol, StickOn},
    datapath::stick_maps::TableChange,
    datapath::{Datapath, DatapathError},
    health::{self, CheckSpec},
    net::neigh,
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
    /// The state the data path sees.
    pub fn dp_state(&self) -> u8 {
        match (self.admin, self.health) {
            (AdminState::Maint, _) => BACKEND_MAINT,
            (_, health::Health::Down) => BACKEND_DOWN,
            _ if self.mac.is_none() => BACKEND_DOWN,
            (AdminState::Drain, _) => BACKEND_DRAIN,
            (AdminState::Ready, _) => BACKEND_UP,
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
        if self.cfg.vip.is_ipv4() {
            FAMILY_V4
        } else {
            FAMILY_V6
        }
    }

    /// The health-check target of a server, or None when checks are off.
    pub fn check_spec(&self, s: &config::Server) -> Option<CheckSpec> {
        let h = &self.cfg.health;
        let port = s.check_port.or(h.port).unwrap_or(self.cfg.vip.port());
        CheckSpec::new(h, SocketAddr::new(s.address, port))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
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

/// Name -> id, as recorded in MAP_NAMES.
type IdsByName = HashMap<String, u32>;

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

fn dp_service(cfg: &config::Service) -> lb_common::Service {
    let prefixes = cfg.stick.prefixes();
    lb_common::Service {
        expire_ns: cfg.stick.expire.as_nanos() as u64,
        stick_mode: match cfg.stick.on {
            StickOn::Src => STICK_SRC,
            StickOn::SrcPort => STICK_SRC_PORT,
            StickOn::None => STICK_NONE,
        },
        flags: if cfg.redispatch { SVC_F_REDISPATCH } else { 0 },
        enabled: 1,
        v4_mask: prefixes.v4_mask(),
        v6_mask: prefixes.v6_mask(),
        ..Default::default()
    }
}

fn proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
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
        let xdp_ifindex = crate::balancer::egress::ifindex(&cfg.global.interface).unwrap_or(0);
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

    fn service_mut(&mut self, name: &str) -> Option<&mut Svc> {
        self.services.iter_mut().find(|s| s.cfg.name == name)
    }

    /// Ids recorded in MAP_NAMES: name -> id, for services and for "service/server".
    fn recorded_ids(&self) -> Result<(IdsByName, IdsByName), ApplyError> {
        let mut svcs = HashMap::new();
        let mut bes = HashMap::new();
        for i in 0..MAX_SERVICES {
            if let Some(n) = self.dp.name(name_slot_service(i))? {
                svcs.insert(n, i);
            }
        }
        for i in 0..MAX_BACKENDS {
            if let Some(n) = self.dp.name(name_slot_backend(i))? {
                bes.insert(n, i);
            }
        }
        Ok((svcs, bes))
    }

    /// Apply a (validated) config: only what differs changes. `adopt` = take ids, admin
    /// states and health from the pinned maps (agent restart).
    pub fn apply(&mut self, new: Config, adopt: bool) -> Result<CheckChanges, ApplyError> {
        // A failure part-way (a map write the kernel refuses) leaves the services in memory
        // as they were, so the API, the health checks and the next reload still see them.
        let before = (self.services.clone(), self.cfg.clone());
        self.apply_changes(new, adopt).inspect_err(|_| {
            (self.services, self.cfg) = before;
        })
    }

    fn apply_changes(&mut self, new: Config, adopt: bool) -> Result<CheckChanges, ApplyError> {
        // What can fail for reasons outside the maps (an interface gone since validation)
        // fails here, before anything changes.
        let mut egress = HashMap::new();
        for s in &new.services {
            for v in &s.servers {
                let full = format!("{}/{}", s.name, v.name);
                let e = self.egress(&full, v)?;
                egress.insert(full, e);
            }
        }
        let mut checks = CheckChanges::default();
        let (mut svc_ids, mut be_ids) = self.recorded_ids()?;
        let mut old: HashMap<String, Svc> =
            self.services.drain(..).map(|s| (s.cfg.name.clone(), s)).collect();
        // A service whose stick keys change meaning (another affinity or prefix) starts afresh:
        // its table goes, entries and all; `stick_table` below gives it a new, empty one.
        for (name, prev) in &old {
            let Some(scfg) = new.services.iter().find(|s| s.name == *name) else {
                continue;
            };
            let (a, b) = (&prev.cfg.stick, &scfg.stick);
            let rekeyed = a.on != b.on || a.ipv4_prefix != b.ipv4_prefix || a.ipv6_prefix != b.ipv6_prefix;
            if rekeyed && self.dp.remove_stick_table(prev.id)? {
                log::info!("service {name}: affinity changed, its stick entries are dropped");
            }
        }
        // Ids in use: the recorded ones of names the new config keeps, and the retired backend
        // ids, whose stick entries may still exist (never handed out until they are purged).
        let mut used_svc: Vec<bool> = vec![false; MAX_SERVICES as usize];
        let mut used_be: Vec<bool> = vec![false; MAX_BACKENDS as usize];
        for id in &self.retired {
            used_be[*id as usize] = true;
        }
        for s in new.services.iter() {
            if let Some(id) = svc_ids.get(&s.name) {
                used_svc[*id as usize] = true;
            }
            for srv in &s.servers {
                if let Some(id) = be_ids.get(&format!("{}/{}", s.name, srv.name)) {
                    used_be[*id as usize] = true;
                }
            }
        }
        // Free what the new config no longer has: a removed service's name, settings and stick
        // table (entries and all) now; removed servers' backend slots once the Maglev tables no
        // longer name them (below), their ids retired until the sweeper has deleted their
        // stick entries.
        let keep_names: HashSet<String> = new.services.iter().map(|s| s.name.clone()).collect();
        for (name, id) in svc_ids.clone() {
            if !keep_names.contains(&name) {
                self.dp.set_name(name_slot_service(id), None)?;
                self.dp.clear_service(id)?;
                self.dp.remove_stick_table(id)?;
                svc_ids.remove(&name);
                log::info!("service {name}: removed");
            }
        }
        let keep_backends: HashSet<String> = new
            .services
            .iter()
            .flat_map(|s| s.servers.iter().map(move |v| format!("{}/{}", s.name, v.name)))
            .collect();
        let mut removed_backends = Vec::new();
        for (name, id) in be_ids.clone() {
            if !keep_backends.contains(&name) {
                self.dp.set_name(name_slot_backend(id), None)?;
                be_ids.remove(&name);
                removed_backends.push(id);
                self.retired.insert(id);
                if let Some((svc, srv)) = name.split_once('/') {
                    checks.remove.push((svc.to_string(), srv.to_string()));
                }
            }
        }

        let alloc = |used: &mut Vec<bool>, what: &'static str| -> Result<u32, ApplyError> {
            let max = used.len() as u32;
            let i = used
                .iter()
                .position(|u| !u)
                .ok_or(ApplyError::NoFreeId { what, max })?;
            used[i] = true;
            Ok(i as u32)
        };

        let mut services = Vec::new();
        for scfg in new.services.iter() {
            let id = match svc_ids.get(&scfg.name) {
                Some(id) => *id,
                None => {
                    let id = alloc(&mut used_svc, "service")?;
                    self.dp.set_name(name_slot_service(id), Some(&scfg.name))?;
                    log::info!(
                        "service {}: added as id {id} ({} {:?})",
                        scfg.name,
                        scfg.vip,
                        scfg.protocol
                    );
                    id
                }
            };
            let prev = old.remove(&scfg.name);
            if prev.as_ref().is_some_and(|p| p.cfg == *scfg) {
                services.push(prev.expect("checked above"));
                continue;
            }
            let mut servers = Vec::new();
            for (i, c) in scfg.servers.iter().enumerate() {
                let full = format!("{}/{}", scfg.name, c.name);
                let bid = match be_ids.get(&full) {
                    Some(b) => *b,
                    None => {
                        let b = alloc(&mut used_be, "server")?;
                        self.dp.set_name(name_slot_backend(b), Some(&full))?;
                        b
                    }
                };
                let before = prev.as_ref().and_then(|p| p.server(&c.name));
                let egress = egress[&full];
                let server = match before {
                    // Reload: runtime state carries over unless the config changed that field.
                    Some(b) => Server {
                        id: bid,
                        puid: i as u32 + 1,
                        cfg: c.clone(),
                        admin: if b.cfg.state != c.state { c.state } else { b.admin },
                        health: b.health,
                        weight: if b.cfg.weight != c.weight {
                            c.weight
                        } else {
                            b.weight
                        },
                        mac: c
                            .mac
                            .or_else(|| self.neighbours.get(c.address, egress.ifindex))
                            .or((b.cfg.address == c.address && b.egress.ifindex == egress.ifindex)
                                .then_some(b.mac)
                                .flatten()),
                        egress,
                        last_change: b.last_change,
                        last_reason: b.last_reason.clone(),
                    },
                    None => self.fresh_server(bid, i, c, adopt, egress)?,
                };
                servers.push(server);
            }
            let svc = Svc {
                id,
                cfg: scfg.clone(),
                servers,
                table: Vec::new(),
            };
            for s in &svc.servers {
                let key = (scfg.name.clone(), s.cfg.name.clone());
                match svc.check_spec(&s.cfg) {
                    Some(spec) => checks.set.push((key, spec, s.health)),
                    None => checks.remove.push(key),
                }
            }
            self.stick_table(id, scfg)?;
            self.dp.set_service(id, dp_service(scfg))?;
            services.push(svc);
        }
        // A table in a slot that no configured service owns (left by an agent stopped half-way
        // through a reload) would keep its entries: remove it.
        let ids: HashSet<u32> = services.iter().map(|s: &Svc| s.id).collect();
        for id in self.dp.stick_services() {
            if !ids.contains(&id) {
                self.dp.remove_stick_table(id)?;
            }
        }
        // Servers of changed services that were renamed away are in `checks.remove` already.
        self.services = services;
        let ports: HashSet<u32> = self
            .services
            .iter()
            .flat_map(|s| s.servers.iter().map(|v| v.egress.tx_port))
            .collect();
        self.tx_ports.retain(&ports);
        self.cfg = new;
        self.write_vips()?;
        for i in 0..self.services.len() {
            self.sync(i)?;
        }
        // No table names the removed servers now: free their slots. A stick entry still
        // pointing at one is a miss for the data path (`Backend::serves`) until it is purged.
        for id in removed_backends {
            self.dp.set_backend(id, Backend::default())?;
        }
        self.generation += 1;
        Ok(checks)
    }

    /// Give a service its own stick table of its `stick.size` (none for `stick.on = "none"`),
    /// keeping its entries when only the size changed.
    fn stick_table(&mut self, id: u32, scfg: &config::Service) -> Result<(), ApplyError> {
        if scfg.stick.on == StickOn::None {
            if self.dp.remove_stick_table(id)? {
                log::info!("service {}: no affinity, stick table removed", scfg.name);
            }
            return Ok(());
        }
        match self.dp.set_stick_table(id, scfg.stick.size)? {
            TableChange::Kept | TableChange::Created => {}
            TableChange::Resized { from, copied } => log::info!(
                "service {}: stick table resized from {from} to {} entries ({copied} entries copied)",
                scfg.name,
                scfg.stick.size
            ),
        }
        Ok(())
    }

    /// Write the VIP map to match the services exactly.
    fn write_vips(&mut self) -> Result<(), ApplyError> {
        let mut want: HashMap<VipKey, u32> = HashMap::new();
        for s in &self.services {
            let addr = lb_common::addr_bytes(s.cfg.vip.ip());
            let key = VipKey {
                addr,
                port: s.cfg.vip.port().to_be(),
                proto: proto(s.cfg.protocol),
                family: s.family(),
            };
            want.insert(key, s.id);
        }
        let list: Vec<(VipKey, u32)> = want.into_iter().collect();
        self.dp.install_vips(&list)?;
        Ok(())
    }

    /// Write server `s`'s backend value.
    fn write_backend(dp: &mut Datapath, s: &Server, service: u32) -> Result<(), ApplyError> {
        dp.set_backend(
            s.id,
            Backend {
                mac: s.mac.unwrap_or([0; 6]),
                state: s.dp_state(),
                tx_port: s.egress.tx_port,
                src_mac: s.egress.src_mac,
                service: service as u16,
                ..Default::default()
            },
        )?;
        Ok(())
    }

    /// Write service `idx`'s backends and, when it changed, its Maglev table.
    fn sync(&mut self, idx: usize) -> Result<(), ApplyError> {
        let svc = &self.services[idx];
        for s in &svc.servers {
            Self::write_backend(&mut self.dp, s, svc.id)?;
        }
        let servers: Vec<MaglevServer> = svc
            .servers
            .iter()
            .map(|s| MaglevServer {
                name: &s.cfg.name,
                id: s.id,
                weight: if s.dp_state() == BACKEND_UP { s.weight } else { 0 },
            })
            .collect();
        let table = maglev::build(&servers, svc.cfg.table_size);
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

    /// A server the agent has not run before: from the pinned maps when adopting, else from
    /// the config (health starts UP, as HAProxy's servers do, until `fall` checks fail).
    /// The egress of config server `c` (`full` = "service/server", for errors).
    fn egress(&mut self, full: &str, c: &config::Server) -> Result<Egress, ApplyError> {
        match &c.interface {
            Some(i) if *i != self.cfg.global.interface => {
                self.tx_ports
                    .egress(&mut self.dp, i)
                    .map_err(|source| ApplyError::Egress {
                        server: full.to_string(),
                        source,
                    })
            }
            _ => Ok(Egress {
                ifindex: self.xdp_ifindex,
                ..Egress::default()
            }),
        }
    }

    fn fresh_server(
        &self,
        bid: u32,
        i: usize,
        c: &config::Server,
        adopt: bool,
        egress: Egress,
    ) -> Result<Server, ApplyError> {
        let pinned = if adopt { Some(self.dp.backend(bid)?) } else { None };
        let (admin, health) = match pinned {
            Some(p) if p.state != 0 => (
                match p.state {
                    BACKEND_MAINT => AdminState::Maint,
                    BACKEND_DRAIN => AdminState::Drain,
                    _ => c.state,
                },
                if p.state == BACKEND_DOWN && p.mac != [0; 6] {
                    health::Health::Down
                } else {
                    health::Health::Up
                },
            ),
            _ => (c.state, health::Health::Up),
        };
        // The kernel's entry wins over a pinned MAC: the backend may have moved while no
        // agent ran.
        let mac = c
            .mac
            .or_else(|| self.neighbours.get(c.address, egress.ifindex))
            .or_else(|| pinned.filter(|p| p.mac != [0; 6]).map(|p| p.mac));
        Ok(Server {
            id: bid,
            puid: i as u32 + 1,
            cfg: c.clone(),
            admin,
            health,
            weight: c.weight,
            mac,
            egress,
            last_change: Instant::now(),
            last_reason: String::new(),
        })
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
                        Self::write_backend(&mut self.dp, s, svc.id)?;
                    }
                }
            }
            if first_mac {
                self.sync(si)?;
            }
        }
        Ok(())
    }

    /// Servers that have no MAC yet: ("service/server", address), for probes and warnings.
    pub fn unresolved(&self) -> Vec<(String, IpAddr)> {
        self.services
            .iter()
            .flat_map(|svc| {
                svc.servers
                    .iter()
                    .filter(|s| s.mac.is_none())
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

    /// At a restart over pinned maps: every backend id that a stick entry names but no
    /// recorded name owns is retired, so it is not handed out before the sweeper has deleted
    /// those entries (runs before the runtime starts: no lock is held).
    fn retire_referenced_ids(&mut self) -> Result<(), ApplyError> {
        let (_, be_ids) = self.recorded_ids()?;
        let live: HashSet<u32> = be_ids.values().copied().collect();
        let pinned = self.dp.stick_entries()?;
        for (_, e) in pinned.iter().chain(self.dp.migrating_entries()) {
            if e.backend < MAX_BACKENDS && !live.contains(&e.backend) {
                self.retired.insert(e.backend);
            }
        }
        Ok(())
    }

    /// Mutable access by name (API handlers).
    pub fn svc_mut(&mut self, name: &str) -> Option<&mut Svc> {
        self.service_mut(name)
    }
}
