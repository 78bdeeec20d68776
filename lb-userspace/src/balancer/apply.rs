//! Reconciling a new configuration with the one running: only what differs changes. An apply
//! runs in phases, in this order:
//!
//! 1. `resolve_egress`: what can fail for reasons outside the maps (an interface gone since
//!    validation) fails first, before anything changes;
//! 2. `drop_rekeyed_tables`: a service whose stick keys change meaning loses its entries;
//! 3. `remove_services`, `remove_servers`: what the new config no longer has is freed (a
//!    removed server's id is retired until the sweeper has purged its stick entries);
//! 4. `apply_service`: each configured service, unchanged ones as they are, changed and new ones
//!    rebuilt (runtime state carried over where the config kept the field);
//! 5. `remove_orphan_tables`, `install`: the VIP map, every backend and the Maglev tables
//!    written to match.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use lb_common::{
    BACKEND_DOWN, BACKEND_DRAIN, BACKEND_MAINT, Backend, VipKey, name_slot_backend, name_slot_service,
};

use crate::{
    balancer::{
        ApplyError, Balancer, CheckChanges, Server, Svc,
        egress::Egress,
        ids::{Ids, full_name},
        program,
    },
    config::{self, AdminState, Config, Stick, StickOn},
    datapath::stick_maps::TableChange,
    health::Health,
};

impl Balancer {
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
        let egress = self.resolve_egress(&new)?;
        let (svc_ids, be_ids) = self.recorded_ids()?;
        let mut old: HashMap<String, Svc> =
            self.services.drain(..).map(|s| (s.cfg.name.clone(), s)).collect();
        self.drop_rekeyed_tables(&old, &new)?;
        let mut ids = Ids::new(svc_ids, be_ids, &new, &self.retired);
        let mut checks = CheckChanges::default();
        self.remove_services(&mut ids, &new)?;
        let removed_backends = self.remove_servers(&mut ids, &new, &mut checks)?;
        let mut services = Vec::new();
        for scfg in &new.services {
            let prev = old.remove(&scfg.name);
            services.push(self.apply_service(scfg, prev, &mut ids, &egress, adopt, &mut checks)?);
        }
        self.remove_orphan_tables(&services)?;
        // Servers of changed services that were renamed away are in `checks.remove` already.
        self.install(new, services, &removed_backends)?;
        Ok(checks)
    }

    /// Phase 1: the egress of every server of `new`, by "service/server". Each interface is
    /// looked up once (a netlink round trip, and a reload runs under the agent's lock).
    fn resolve_egress(&mut self, new: &Config) -> Result<HashMap<String, Egress>, ApplyError> {
        let mut egress = HashMap::new();
        let mut by_interface: HashMap<Option<&str>, Egress> = HashMap::new();
        for s in &new.services {
            for v in &s.servers {
                let full = full_name(&s.name, &v.name);
                let e = match by_interface.get(&v.interface.as_deref()) {
                    Some(e) => *e,
                    None => {
                        let e = self.egress(&full, v)?;
                        by_interface.insert(v.interface.as_deref(), e);
                        e
                    }
                };
                egress.insert(full, e);
            }
        }
        Ok(egress)
    }

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

    /// Phase 2: a service whose stick keys change meaning (another affinity or prefix) starts
    /// afresh: its table goes, entries and all; `stick_table` gives it a new, empty one.
    fn drop_rekeyed_tables(&mut self, old: &HashMap<String, Svc>, new: &Config) -> Result<(), ApplyError> {
        for (name, prev) in old {
            let Some(scfg) = new.services.iter().find(|s| s.name == *name) else {
                continue;
            };
            if rekeyed(&prev.cfg.stick, &scfg.stick) && self.dp.remove_stick_table(prev.id)? {
                log::info!("service {name}: affinity changed, its stick entries are dropped");
            }
        }
        Ok(())
    }

    /// Phase 3: a removed service's name, settings and stick table (entries and all) go now.
    fn remove_services(&mut self, ids: &mut Ids, new: &Config) -> Result<(), ApplyError> {
        for (name, id) in ids.drop_services(new) {
            self.dp.set_name(name_slot_service(id), None)?;
            self.dp.clear_service(id)?;
            self.dp.remove_stick_table(id)?;
            log::info!("service {name}: removed");
        }
        Ok(())
    }

    /// Phase 3: a removed server's name goes now, its health check with it; its id is retired
    /// until the sweeper has deleted its stick entries. Returns the ids, whose backend slots
    /// are freed once the Maglev tables no longer name them (`install`).
    fn remove_servers(
        &mut self,
        ids: &mut Ids,
        new: &Config,
        checks: &mut CheckChanges,
    ) -> Result<Vec<u32>, ApplyError> {
        let mut removed = Vec::new();
        for (name, id) in ids.drop_backends(new) {
            self.dp.set_name(name_slot_backend(id), None)?;
            removed.push(id);
            self.retired.insert(id);
            if let Some((svc, srv)) = name.split_once('/') {
                checks.remove.push((svc.to_string(), srv.to_string()));
            }
        }
        Ok(removed)
    }

    /// Phase 4: service `scfg` as it runs from now on (`prev`: as it ran). An unchanged
    /// service stays as it is; a changed or new one gets its servers, health checks, stick
    /// table and service value.
    fn apply_service(
        &mut self,
        scfg: &config::Service,
        prev: Option<Svc>,
        ids: &mut Ids,
        egress: &HashMap<String, Egress>,
        adopt: bool,
        checks: &mut CheckChanges,
    ) -> Result<Svc, ApplyError> {
        let (id, added) = ids.service(&scfg.name)?;
        if added {
            self.dp.set_name(name_slot_service(id), Some(&scfg.name))?;
            log::info!(
                "service {}: added as id {id} ({} {:?})",
                scfg.name,
                scfg.vip,
                scfg.protocol
            );
        }
        let prev = match prev {
            Some(unchanged) if unchanged.cfg == *scfg => return Ok(unchanged),
            other => other,
        };
        let mut servers = Vec::new();
        for (i, c) in scfg.servers.iter().enumerate() {
            let full = full_name(&scfg.name, &c.name);
            let (bid, added) = ids.backend(&full)?;
            if added {
                self.dp.set_name(name_slot_backend(bid), Some(&full))?;
            }
            let egress = egress[&full];
            let neighbour_mac = self.neighbours.get(c.address, egress.ifindex);
            let server = match prev.as_ref().and_then(|p| p.server(&c.name)) {
                Some(before) => carried_over(before, bid, i, c, egress, neighbour_mac),
                None => {
                    let pinned = if adopt { Some(self.dp.backend(bid)?) } else { None };
                    fresh(bid, i, c, pinned, egress, neighbour_mac)
                }
            };
            servers.push(server);
        }
        let svc = Svc {
            id,
            cfg: scfg.clone(),
            servers,
            table: Vec::new(),
        };
        add_checks(&svc, checks);
        self.stick_table(id, scfg)?;
        self.dp
            .set_service(id, program::service(&scfg.stick, scfg.redispatch))?;
        Ok(svc)
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

    /// Phase 5: a table in a slot that no configured service owns (left by an agent stopped
    /// half-way through a reload) would keep its entries: remove it.
    fn remove_orphan_tables(&mut self, services: &[Svc]) -> Result<(), ApplyError> {
        let ids: HashSet<u32> = services.iter().map(|s| s.id).collect();
        for id in self.dp.stick_services() {
            if !ids.contains(&id) {
                self.dp.remove_stick_table(id)?;
            }
        }
        Ok(())
    }

    /// Phase 5: `services` become the running ones: the VIP map, every backend and the Maglev
    /// tables are written to match, then the `removed` servers' slots are freed.
    fn install(&mut self, new: Config, services: Vec<Svc>, removed: &[u32]) -> Result<(), ApplyError> {
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
        for id in removed {
            self.dp.set_backend(*id, Backend::default())?;
        }
        self.generation += 1;
        Ok(())
    }

    /// Write the VIP map to match the services exactly.
    fn write_vips(&mut self) -> Result<(), ApplyError> {
        let want: HashMap<VipKey, u32> = self
            .services
            .iter()
            .map(|s| (program::vip_key(s.cfg.vip, s.cfg.protocol), s.id))
            .collect();
        let list: Vec<(VipKey, u32)> = want.into_iter().collect();
        self.dp.install_vips(&list)?;
        Ok(())
    }
}

/// Whether a service's stick keys mean something else under `b` than under `a`.
fn rekeyed(a: &Stick, b: &Stick) -> bool {
    a.on != b.on || a.ipv4_prefix != b.ipv4_prefix || a.ipv6_prefix != b.ipv6_prefix
}

/// A server of a reloaded service that ran before as `before`: its runtime state carries over
/// unless the config changed that field. Its MAC: the config's, else the neighbour table's,
/// else the one known if the server is still at the same address on the same interface.
fn carried_over(
    before: &Server,
    id: u32,
    position: usize,
    c: &config::Server,
    egress: Egress,
    neighbour_mac: Option<[u8; 6]>,
) -> Server {
    let same_place = before.cfg.address == c.address && before.egress.ifindex == egress.ifindex;
    Server {
        id,
        puid: position as u32 + 1,
        cfg: c.clone(),
        admin: if before.cfg.state != c.state {
            c.state
        } else {
            before.admin
        },
        health: before.health,
        weight: if before.cfg.weight != c.weight {
            c.weight
        } else {
            before.weight
        },
        mac: c
            .mac
            .or(neighbour_mac)
            .or(same_place.then_some(before.mac).flatten()),
        egress,
        last_change: before.last_change,
        last_reason: before.last_reason.clone(),
    }
}

/// A server the agent has not run before: from the `pinned` backend when adopting, else from
/// the config (health starts UP, as HAProxy's servers do, until `fall` checks fail). Its MAC:
/// the config's, else the neighbour table's (which wins over a pinned MAC: the backend may
/// have moved while no agent ran), else the pinned one.
fn fresh(
    id: u32,
    position: usize,
    c: &config::Server,
    pinned: Option<Backend>,
    egress: Egress,
    neighbour_mac: Option<[u8; 6]>,
) -> Server {
    let (admin, health) = adopted_state(pinned, c.state);
    let mac = c
        .mac
        .or(neighbour_mac)
        .or_else(|| pinned.filter(|p| p.mac != [0; 6]).map(|p| p.mac));
    Server {
        id,
        puid: position as u32 + 1,
        cfg: c.clone(),
        admin,
        health,
        weight: c.weight,
        mac,
        egress,
        last_change: Instant::now(),
        last_reason: String::new(),
    }
}

/// The admin state and health a pinned backend value says a server had (the inverse of
/// `program::backend_state`, as far as it goes): MAINT and DRAIN are admin states the runtime
/// API set; DOWN with a MAC known means the checks had it down (without one, the MAC was
/// missing, not the server). A free slot or none: the config's state, health UP.
fn adopted_state(pinned: Option<Backend>, configured: AdminState) -> (AdminState, Health) {
    match pinned {
        Some(p) if p.state != 0 => (
            match p.state {
                BACKEND_MAINT => AdminState::Maint,
                BACKEND_DRAIN => AdminState::Drain,
                _ => configured,
            },
            if p.state == BACKEND_DOWN && p.mac != [0; 6] {
                Health::Down
            } else {
                Health::Up
            },
        ),
        _ => (configured, Health::Up),
    }
}

/// The health checks of `svc`'s servers: set where its config has checks, removed where not.
fn add_checks(svc: &Svc, checks: &mut CheckChanges) {
    for s in &svc.servers {
        let key = (svc.cfg.name.clone(), s.cfg.name.clone());
        match svc.check_spec(&s.cfg) {
            Some(spec) => checks.set.push((key, spec, s.health)),
            None => checks.remove.push(key),
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
