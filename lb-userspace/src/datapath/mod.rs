//! The agent's handle on the XDP data path: load the object (adopting pinned maps), attach with
//! a pinned link, write services, backends and Maglev tables (inactive slot, then flip), read
//! and delete stick entries, sum counters, and run the program through BPF_PROG_TEST_RUN.

pub mod batch;
pub mod error;
pub mod pins;
pub mod stick_maps;
pub mod sys;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, MapData, PerCpuArray},
    programs::{
        TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{
    ALL_MAPS, Backend, BackendStats, MAGLEV_MAX_SIZE, MAP_ACTIVE_SLOT, MAP_BACKEND_STATS, MAP_BACKENDS,
    MAP_GLOBAL_STATS, MAP_LIMITS, MAP_MAGLEV, MAP_META, MAP_NAMES, MAP_OWN_MAC, MAP_SERVICE_STATS,
    MAP_SERVICES, MAP_STICK_TABLES, MAP_TX_PORTS, MAP_VIP_ACTIVE, MAP_VIPS, NameSlot, Service, ServiceStats,
    StickEntry, StickKey, VIP_PROBES, VIP_TABLE_SIZE, VipKey, VipSlot,
    gstat::{self, Counter, Derived, Global},
    maglev_base, meta,
};

pub use crate::datapath::error::DatapathError;
use crate::datapath::stick_maps::{StickMap, StickMapError, StickTables, TableChange};

/// The compiled XDP object (built by build.rs from `lb-ebpf`).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb.bpf.o"));

type Result<T, E = DatapathError> = std::result::Result<T, E>;

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

fn prog_err(name: &str) -> impl FnOnce(aya::programs::ProgramError) -> DatapathError + '_ {
    move |source| DatapathError::Program {
        name: name.to_string(),
        source: Box::new(source),
    }
}

/// A migration from format-1 pins: where the old pins wait (removed once the new program runs)
/// and the stick entries to put into the new tables.
struct Migration {
    old_dir: PathBuf,
    stick: Vec<(StickKey, StickEntry)>,
}

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin every map under `<dir>/maps/` (adopting pins already there); `None` = no pins
    /// (tests, benchmarks). Stick tables are made per service afterwards (`set_stick_table`).
    pub pin_dir: Option<PathBuf>,
}

/// What attaching did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, in this mode.
    New(&'static str),
    /// The pinned link of an earlier run now runs this program (atomic replacement).
    Replaced,
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Debug)]
pub struct RunResult {
    pub verdict: u32,
    pub data: Vec<u8>,
    /// Average time per repetition, as the kernel measured it.
    pub duration: Duration,
}

/// The loaded data path and typed handles on its maps.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    vips: Array<MapData, VipSlot>,
    vip_active: Array<MapData, u32>,
    services: Array<MapData, Service>,
    active: Array<MapData, u32>,
    maglev: Array<MapData, u32>,
    backends: Array<MapData, Backend>,
    /// One stick table per service (`MAP_STICK_TABLES` and its inner tables).
    sticks: StickTables,
    tx_ports: DevMap<MapData>,
    gstats: PerCpuArray<MapData, u64>,
    sstats: PerCpuArray<MapData, ServiceStats>,
    bstats: PerCpuArray<MapData, BackendStats>,
    names: Array<MapData, NameSlot>,
    limits: Array<MapData, u64>,
    meta: Array<MapData, u64>,
    own_mac: Array<MapData, lb_common::OwnMac>,
    /// Set when the pinned maps of an earlier run were adopted (or migrated).
    adopted: bool,
    /// A migration from format-1 pins in progress (see `pins`).
    migration: Option<Migration>,
    /// What this process wrote into each (service, slot) of the Maglev map.
    shadow: std::collections::HashMap<(u32, u32), Vec<u32>>,
}

impl Datapath {
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        if OBJECT.is_empty() {
            return Err(DatapathError::EmptyObject);
        }
        let mut adopted = false;
        let mut carried = None;
        let mut loader = EbpfLoader::new();
        let mut pin_paths = Vec::new();
        if let Some(dir) = &opts.pin_dir {
            let maps_dir = dir.join("maps");
            match crate::datapath::pins::inspect(dir, OBJECT)? {
                crate::datapath::pins::Found::Nothing => {}
                crate::datapath::pins::Found::Current => adopted = true,
                crate::datapath::pins::Found::Format2 => {
                    log::warn!(
                        "pins under {} are format 2 (an older xlb): adopting them as format {}; the \
                         global counters start again from 0",
                        dir.display(),
                        lb_common::PIN_FORMAT
                    );
                    crate::datapath::pins::migrate_format2(&maps_dir)?;
                    adopted = true;
                }
                crate::datapath::pins::Found::Format1(found) => {
                    // The old maps move aside (the running program keeps them); fresh ones are
                    // pinned in their place and given what the old ones knew.
                    let old = dir.join(crate::datapath::pins::FORMAT1_DIR);
                    if found != old {
                        crate::datapath::pins::move_pins(&found, &old)?;
                    } else if maps_dir.exists() {
                        // A migration was interrupted: its new maps are incomplete; redo it.
                        remove_pinned_maps(&maps_dir)?;
                    }
                    let c = crate::datapath::pins::read_format1(&old)?;
                    log::warn!(
                        "pins under {} are format 1 (an older xlb): migrating {} stick entries, {} names \
                         and {} server states to format {}",
                        dir.display(),
                        c.stick.len(),
                        c.names.len(),
                        c.backends.len(),
                        lb_common::PIN_FORMAT
                    );
                    carried = Some((old, c));
                    adopted = true;
                }
            }
            std::fs::create_dir_all(&maps_dir).map_err(|source| DatapathError::Io {
                what: "cannot create pin directory",
                path: maps_dir.clone(),
                source,
            })?;
            for name in ALL_MAPS {
                pin_paths.push((name, maps_dir.join(name)));
            }
        }
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;

        macro_rules! take {
            ($name:expr) => {{
                let map = ebpf.take_map($name).ok_or(DatapathError::Map {
                    name: $name,
                    source: aya::maps::MapError::InvalidName {
                        name: $name.to_string(),
                    },
                })?;
                map.try_into().map_err(map_err($name))?
            }};
        }
        let mut dp = Self {
            vips: take!(MAP_VIPS),
            vip_active: take!(MAP_VIP_ACTIVE),
            services: take!(MAP_SERVICES),
            active: take!(MAP_ACTIVE_SLOT),
            maglev: take!(MAP_MAGLEV),
            backends: take!(MAP_BACKENDS),
            sticks: StickTables::adopt(ebpf.take_map(MAP_STICK_TABLES).ok_or(DatapathError::Map {
                name: MAP_STICK_TABLES,
                source: aya::maps::MapError::InvalidName {
                    name: MAP_STICK_TABLES.to_string(),
                },
            })?)?,
            tx_ports: take!(MAP_TX_PORTS),
            gstats: take!(MAP_GLOBAL_STATS),
            sstats: take!(MAP_SERVICE_STATS),
            bstats: take!(MAP_BACKEND_STATS),
            names: take!(MAP_NAMES),
            limits: take!(MAP_LIMITS),
            meta: take!(MAP_META),
            own_mac: take!(MAP_OWN_MAC),
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            adopted,
            migration: None,
            shadow: Default::default(),
        };
        dp.meta
            .set(meta::FORMAT, lb_common::PIN_FORMAT, 0)
            .map_err(map_err(MAP_META))?;
        if let Some((old, c)) = carried {
            for (i, n) in &c.names {
                dp.names.set(*i, n, 0).map_err(map_err(MAP_NAMES))?;
            }
            for (i, b) in &c.backends {
                dp.backends.set(*i, b, 0).map_err(map_err(MAP_BACKENDS))?;
            }
            dp.migration = Some(Migration {
                old_dir: old,
                stick: c.stick,
            });
        }
        Ok(dp)
    }

    /// The stick entries a migration carries, not yet restored.
    pub fn migrating_entries(&self) -> &[(StickKey, StickEntry)] {
        self.migration.as_ref().map_or(&[], |m| &m.stick)
    }

    /// During a migration, once the config is applied (every service has its table): put the
    /// old stick entries into their services' tables. The ids come from the carried names, so
    /// every entry keeps its server. Returns (restored, dropped: of services without a table).
    pub fn restore_migrated_entries(&mut self) -> Result<(usize, usize)> {
        let entries = match self.migration.as_mut() {
            Some(m) => std::mem::take(&mut m.stick),
            None => return Ok((0, 0)),
        };
        let mut restored = 0;
        for (k, e) in &entries {
            match self.stick_insert(*k, *e) {
                Ok(()) => restored += 1,
                Err(DatapathError::NoStickTable { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok((restored, entries.len() - restored))
    }

    /// After the new program runs: remove the old pins of a migration.
    pub fn finish_migration(&mut self) -> Result<()> {
        if let Some(m) = self.migration.take() {
            crate::datapath::pins::remove_old(&m.old_dir).map_err(|source| DatapathError::Io {
                what: "cannot remove the migrated pins",
                path: m.old_dir,
                source,
            })?;
        }
        Ok(())
    }

    /// True when this load adopted the pinned maps (and so the stick table) of an earlier run.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The program `name`, loaded into the kernel on first use.
    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| prog_err(name)(aya::programs::ProgramError::NotLoaded))?
            .try_into()
            .map_err(prog_err(name))?;
        if prog.fd().is_err() {
            prog.load().map_err(prog_err(name))?;
        }
        Ok(prog)
    }

    /// Attach the data path to `ifindex`. With a pin directory, an XDP link pinned there by an
    /// earlier run is updated in place to run this program (atomic: no packet is missed);
    /// otherwise a new link is made (native mode first unless `generic`) and pinned, so the data
    /// path keeps forwarding when the agent exits.
    pub fn attach(&mut self, ifname: &str, generic: bool) -> Result<Attached> {
        let link_pin = self.pin_dir.as_ref().map(|d| d.join("link"));
        let mode = if generic {
            meta::MODE_GENERIC
        } else {
            meta::MODE_NATIVE
        };
        let ifindex = ifindex_of(ifname)?;
        let reuse = match link_pin.as_ref().filter(|p| p.exists()) {
            Some(pin) => self.pinned_link_fits(pin, ifname, ifindex, mode)?,
            None => false,
        };
        let attached = if reuse {
            let pin = link_pin.as_ref().expect("checked above");
            match self.replace_program_of_link(pin) {
                Err(DatapathError::Program { source, .. }) if is_severed(&source) => {
                    log::warn!(
                        "the pinned XDP link at {} is severed ({source}); attaching afresh to {ifname}",
                        pin.display()
                    );
                    remove_link_pin(pin)?;
                    self.attach_new(ifname, generic, link_pin.as_ref())?
                }
                other => other?,
            }
        } else {
            self.attach_new(ifname, generic, link_pin.as_ref())?
        };
        self.meta
            .set(meta::IFINDEX, ifindex as u64, 0)
            .map_err(map_err(MAP_META))?;
        self.meta.set(meta::MODE, mode, 0).map_err(map_err(MAP_META))?;
        Ok(attached)
    }

    /// Whether the link pinned at `pin` can run the new program: it must run on `ifindex`
    /// in the XDP mode the config asks. If not (its interface went away, the config names
    /// another interface or mode), its pin is removed — which detaches it — with one warning.
    fn pinned_link_fits(&self, pin: &Path, ifname: &str, ifindex: u32, mode: u64) -> Result<bool> {
        let on = crate::datapath::pins::link_ifindex(pin).map_err(|e| DatapathError::Link {
            path: pin.to_path_buf(),
            what: e.to_string(),
        })?;
        let recorded_mode = self.meta.get(&meta::MODE, 0).map_err(map_err(MAP_META))?;
        let word = |m| {
            if m == meta::MODE_GENERIC {
                "generic"
            } else {
                "native"
            }
        };
        let why = match on {
            None => Some("it is not an XDP link".to_string()),
            Some(0) => Some("it is severed: its interface went away".to_string()),
            Some(i) if i != ifindex => Some(format!(
                "it runs on interface index {i}, the config names {ifname} (index {ifindex})"
            )),
            Some(_) if recorded_mode != 0 && recorded_mode != mode => Some(format!(
                "it was made in {} XDP mode, the config asks {}",
                word(recorded_mode),
                word(mode)
            )),
            Some(_) => None,
        };
        let Some(why) = why else {
            return Ok(true);
        };
        log::warn!(
            "pinned XDP link {}: {why}; removing it and attaching afresh to {ifname} (maps kept)",
            pin.display()
        );
        remove_link_pin(pin)?;
        Ok(false)
    }

    /// Make the link pinned at `pin` run this program (atomic: no packet is missed).
    fn replace_program_of_link(&mut self, pin: &Path) -> Result<Attached> {
        let link_err = |what: String| DatapathError::Link {
            path: pin.to_path_buf(),
            what,
        };
        let prog = self.program(lb_common::PROG_XLB)?;
        let pinned = PinnedLink::from_pin(pin).map_err(|e| link_err(e.to_string()))?;
        let fd_link: FdLink = pinned.into();
        let xdp_link = XdpLink::try_from(fd_link).map_err(|e| link_err(e.to_string()))?;
        let id = prog.attach_to_link(xdp_link).map_err(prog_err("xlb"))?;
        // Own the link as a plain fd: dropping it closes the fd, the pin keeps it alive.
        let link = prog.take_link(id).map_err(prog_err("xlb"))?;
        let _fd: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| link_err(e.to_string()))?;
        Ok(Attached::Replaced)
    }

    /// A new link on `ifname` (native mode first unless `generic`), pinned at `link_pin`.
    fn attach_new(&mut self, ifname: &str, generic: bool, link_pin: Option<&PathBuf>) -> Result<Attached> {
        let prog = self.program(lb_common::PROG_XLB)?;
        let busy = |e: &aya::programs::ProgramError| matches!(e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EBUSY));
        let refuse = |e| DatapathError::Busy {
            ifname: ifname.to_string(),
            source: Box::new(e),
        };
        let (id, mode) = if generic {
            let id = prog
                .attach(ifname, XdpMode::Skb)
                .map_err(|e| if busy(&e) { refuse(e) } else { prog_err("xlb")(e) })?;
            (id, "generic")
        } else {
            match prog.attach(ifname, XdpMode::Driver) {
                Ok(id) => (id, "native"),
                Err(e) if busy(&e) => return Err(refuse(e)),
                Err(e) => {
                    log::warn!(
                        "native XDP refused on {ifname} ({e}); falling back to generic XDP (slower). \
                         Set xdp_mode = \"generic\" to make this explicit"
                    );
                    let id = prog
                        .attach(ifname, XdpMode::Skb)
                        .map_err(|e| if busy(&e) { refuse(e) } else { prog_err("xlb")(e) })?;
                    (id, "generic")
                }
            }
        };
        let link = prog.take_link(id).map_err(prog_err("xlb"))?;
        if let Some(pin) = link_pin {
            let pin = pin.clone();
            let fd: FdLink =
                link.try_into()
                    .map_err(|e: aya::programs::links::LinkError| DatapathError::Link {
                        path: pin.clone(),
                        what: e.to_string(),
                    })?;
            fd.pin(&pin).map_err(|e| DatapathError::Link {
                path: pin.clone(),
                what: e.to_string(),
            })?;
        } else {
            // No pins: keep the link for the life of this process (tests).
            std::mem::forget(link);
        }
        Ok(Attached::New(mode))
    }

    // --- services, VIPs, backends, tables -------------------------------------------------

    /// Install the complete VIP set: built into the inactive table, then flipped with one write.
    pub fn install_vips(&mut self, vips: &[(VipKey, u32)]) -> Result<()> {
        let mut table = vec![VipSlot::default(); VIP_TABLE_SIZE as usize];
        for (k, service) in vips {
            let words = k.words();
            let home = lb_common::vip_home(&words);
            let slot = (0..VIP_PROBES)
                .map(|i| ((home + i) & (VIP_TABLE_SIZE - 1)) as usize)
                .find(|i| table[*i].used == 0 || table[*i].key == words)
                .ok_or(DatapathError::VipTableFull(vips.len()))?;
            table[slot] = VipSlot {
                key: words,
                service: *service,
                used: 1,
            };
        }
        let next = 1 - (self.vip_active.get(&0, 0).map_err(map_err(MAP_VIP_ACTIVE))? & 1);
        for (i, s) in table.iter().enumerate() {
            self.vips
                .set(next * VIP_TABLE_SIZE + i as u32, s, 0)
                .map_err(map_err(MAP_VIPS))?;
        }
        self.vip_active.set(0, next, 0).map_err(map_err(MAP_VIP_ACTIVE))
    }

    /// The VIPs of the active table, as (key, service).
    pub fn vips(&self) -> Result<Vec<(VipKey, u32)>> {
        let base = (self.vip_active.get(&0, 0).map_err(map_err(MAP_VIP_ACTIVE))? & 1) * VIP_TABLE_SIZE;
        let mut out = Vec::new();
        for i in 0..VIP_TABLE_SIZE {
            let s = self.vips.get(&(base + i), 0).map_err(map_err(MAP_VIPS))?;
            if s.used == 0 {
                continue;
            }
            let mut addr = [0u8; 16];
            for (j, w) in s.key[..4].iter().enumerate() {
                addr[j * 4..j * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            out.push((
                VipKey {
                    addr,
                    port: s.key[4] as u16,
                    proto: (s.key[4] >> 16) as u8,
                    family: (s.key[4] >> 24) as u8,
                },
                s.service,
            ));
        }
        Ok(out)
    }

    pub fn service(&self, id: u32) -> Result<Service> {
        self.services.get(&id, 0).map_err(map_err(MAP_SERVICES))
    }

    /// Write a service's settings, keeping its current tables and active slot.
    pub fn set_service(&mut self, id: u32, mut settings: Service) -> Result<()> {
        let cur = self.service(id)?;
        settings.table_size = cur.table_size;
        self.services.set(id, settings, 0).map_err(map_err(MAP_SERVICES))
    }

    /// Disable a service: packets to its VIPs are passed; its tables stay until reused.
    pub fn clear_service(&mut self, id: u32) -> Result<()> {
        self.services
            .set(id, Service::default(), 0)
            .map_err(map_err(MAP_SERVICES))
    }

    pub fn active_slot(&self, service: u32) -> Result<u32> {
        Ok(self.active.get(&service, 0).map_err(map_err(MAP_ACTIVE_SLOT))? & 1)
    }

    /// The active Maglev table of a service, as the data path reads it.
    pub fn table(&self, service: u32) -> Result<Vec<u32>> {
        let slot = self.active_slot(service)?;
        let m = self.service(service)?.table_size[slot as usize];
        let base = maglev_base(service, slot);
        (0..m)
            .map(|i| self.maglev.get(&(base + i), 0).map_err(map_err(MAP_MAGLEV)))
            .collect()
    }

    /// Install a new Maglev table: written into the inactive slot, its size recorded, then the
    /// active slot flipped with one write. Returns the slot now active.
    pub fn install_table(&mut self, service: u32, table: &[u32]) -> Result<u32> {
        if service >= lb_common::MAX_SERVICES {
            return Err(DatapathError::ServiceId(service));
        }
        if table.is_empty() || table.len() > MAGLEV_MAX_SIZE as usize {
            return Err(DatapathError::TableSize(table.len()));
        }
        let next = 1 - self.active_slot(service)?;
        let base = maglev_base(service, next);
        // Write only the slots that differ from what this process last wrote there (a health
        // change moves about 1/N of them); everything when the slot's content is unknown.
        let old = self.shadow.remove(&(service, next));
        for (i, b) in table.iter().enumerate() {
            if old.as_ref().is_some_and(|o| o.len() == table.len() && o[i] == *b) {
                continue;
            }
            self.maglev
                .set(base + i as u32, *b, 0)
                .map_err(map_err(MAP_MAGLEV))?;
        }
        self.shadow.insert((service, next), table.to_vec());
        let mut svc = self.service(service)?;
        svc.table_size[next as usize] = table.len() as u32;
        self.services
            .set(service, svc, 0)
            .map_err(map_err(MAP_SERVICES))?;
        self.active
            .set(service, next, 0)
            .map_err(map_err(MAP_ACTIVE_SLOT))?;
        Ok(next)
    }

    pub fn backend(&self, id: u32) -> Result<Backend> {
        self.backends.get(&id, 0).map_err(map_err(MAP_BACKENDS))
    }

    pub fn set_backend(&mut self, id: u32, b: Backend) -> Result<()> {
        self.backends.set(id, b, 0).map_err(map_err(MAP_BACKENDS))
    }

    /// Point `MAP_TX_PORTS[port]` at an interface (for backends with `tx_port = port`).
    pub fn set_tx_port(&mut self, port: u32, ifindex: u32) -> Result<()> {
        self.tx_ports.set(port, ifindex, None, 0).map_err(|e| match e {
            aya::maps::xdp::XdpMapError::MapError(e) => map_err(MAP_TX_PORTS)(e),
            other => DatapathError::Map {
                name: MAP_TX_PORTS,
                source: aya::maps::MapError::IoError(std::io::Error::other(other.to_string())),
            },
        })
    }

    /// The interface `MAP_TX_PORTS[port]` points at, if any (to adopt pinned ports).
    pub fn tx_port(&self, port: u32) -> Option<u32> {
        self.tx_ports
            .get(port, 0)
            .ok()
            .map(|v| v.if_index)
            .filter(|i| *i != 0)
    }

    /// Cap the new stick entries each CPU may create per second (0 = no cap).
    pub fn set_new_entry_cap(&mut self, per_cpu_per_sec: u64) -> Result<()> {
        self.limits
            .set(lb_common::LIMIT_NEW_ENTRIES_PER_CPU, per_cpu_per_sec, 0)
            .map_err(map_err(MAP_LIMITS))
    }

    /// The MAC of the interface the program runs on: only frames sent to it are forwarded.
    /// Write it before attaching (until then every VIP frame is passed).
    pub fn set_own_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        let v = lb_common::OwnMac { mac, set: 1, _pad: 0 };
        self.own_mac.set(0, v, 0).map_err(map_err(MAP_OWN_MAC))
    }

    /// The name recorded for slot `index` of `MAP_NAMES` (None when free).
    pub fn name(&self, index: u32) -> Result<Option<String>> {
        let slot = self.names.get(&index, 0).map_err(map_err(MAP_NAMES))?;
        let end = slot.name.iter().position(|b| *b == 0).unwrap_or(slot.name.len());
        Ok((end > 0).then(|| String::from_utf8_lossy(&slot.name[..end]).into_owned()))
    }

    /// Record (or with `None`, free) the name of slot `index` of `MAP_NAMES`.
    pub fn set_name(&mut self, index: u32, name: Option<&str>) -> Result<()> {
        let mut slot = NameSlot::default();
        if let Some(n) = name {
            let b = n.as_bytes();
            let len = b.len().min(slot.name.len());
            slot.name[..len].copy_from_slice(&b[..len]);
        }
        self.names.set(index, slot, 0).map_err(map_err(MAP_NAMES))
    }

    // --- stick table ------------------------------------------------------------------------

    /// Give a service a stick table of `capacity` entries (create it, keep it, or resize it
    /// keeping its entries; see `StickTables::set`).
    pub fn set_stick_table(&mut self, service: u32, capacity: u32) -> Result<TableChange> {
        Ok(self.sticks.set(service, capacity)?)
    }

    /// Remove a service's stick table and its entries; false when it had none.
    pub fn remove_stick_table(&mut self, service: u32) -> Result<bool> {
        Ok(self.sticks.remove(service)?)
    }

    /// Service ids that have a stick table.
    pub fn stick_services(&self) -> Vec<u32> {
        self.sticks.iter().map(|(s, _)| s).collect()
    }

    /// Every entry of every service's table.
    pub fn stick_entries(&self) -> Result<Vec<(StickKey, StickEntry)>> {
        Ok(self.sticks.entries()?)
    }

    /// Every entry of one service's table.
    pub fn stick_entries_of(&self, service: u32) -> Result<Vec<(StickKey, StickEntry)>> {
        Ok(self.sticks.entries_of(service)?)
    }

    fn stick_table_err(
        service: u32,
        what: &'static str,
    ) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
        move |source| {
            StickMapError::Map {
                service,
                what,
                source,
            }
            .into()
        }
    }

    /// The entry of `key` in the table of its service (`key.service`).
    pub fn stick_get(&self, key: &StickKey) -> Result<Option<StickEntry>> {
        let service = key.service as u32;
        let Some(t) = self.sticks.get(service) else {
            return Ok(None);
        };
        match t.map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Self::stick_table_err(service, "cannot read an entry")(e)),
        }
    }

    pub fn stick_insert(&mut self, key: StickKey, entry: StickEntry) -> Result<()> {
        let service = key.service as u32;
        let t = self
            .sticks
            .get_mut(service)
            .ok_or(DatapathError::NoStickTable { service })?;
        t.map
            .insert(key, entry, 0)
            .map_err(Self::stick_table_err(service, "cannot write an entry"))
    }

    /// Delete an entry; a key already gone (or a service without a table) is not an error.
    pub fn stick_delete(&mut self, key: &StickKey) -> Result<bool> {
        let service = key.service as u32;
        let Some(t) = self.sticks.get_mut(service) else {
            return Ok(false);
        };
        match t.map.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(Self::stick_table_err(service, "cannot delete an entry")(e)),
        }
    }

    /// Entries one service's table can hold (None: it has no table).
    pub fn stick_capacity_of(&self, service: u32) -> Option<u32> {
        self.sticks.capacity(service)
    }

    /// Entries all tables together can hold.
    pub fn stick_capacity(&self) -> u64 {
        self.sticks.total_capacity()
    }

    // --- counters ---------------------------------------------------------------------------

    /// Global counters summed over CPUs. The data path counts only the events that belong to
    /// no service (passes, parse errors, ...) globally (`gstat::Counter`); per-service events
    /// live in the per-service counters and are summed in here (`gstat::Derived`), so the
    /// forwarding path touches two counter slots per packet instead of five.
    pub fn global_stats(&self) -> Result<GlobalStats> {
        let mut counted = [0u64; Counter::COUNT as usize];
        for (slot, c) in counted.iter_mut().zip(Counter::ALL) {
            let v = self
                .gstats
                .get(&c.index(), 0)
                .map_err(map_err(MAP_GLOBAL_STATS))?;
            *slot = v.iter().sum();
        }
        let mut t = ServiceStats::default();
        for id in 0..lb_common::MAX_SERVICES {
            t.add(&self.service_stats(id)?);
        }
        Ok(GlobalStats::derive(counted, &t))
    }

    pub fn service_stats(&self, id: u32) -> Result<ServiceStats> {
        let v = self.sstats.get(&id, 0).map_err(map_err(MAP_SERVICE_STATS))?;
        let mut s = ServiceStats::default();
        for c in v.iter() {
            s.add(c);
        }
        Ok(s)
    }

    pub fn backend_stats(&self, id: u32) -> Result<BackendStats> {
        let v = self.bstats.get(&id, 0).map_err(map_err(MAP_BACKEND_STATS))?;
        Ok(v.iter().fold(BackendStats::default(), |a, c| BackendStats {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
        }))
    }

    /// A service's stick table itself (benchmarks and tests fill and sweep it directly).
    pub fn stick_map_mut(&mut self, service: u32) -> Option<&mut StickMap> {
        self.sticks.get_mut(service).map(|t| &mut t.map)
    }

    /// Every service's stick table (benchmarks sweep them directly).
    pub fn stick_tables_mut(&mut self) -> &mut StickTables {
        &mut self.sticks
    }

    /// Benchmark only: reset the fresh-source counter and set its wrap (0 = never wraps).
    pub fn set_bench_wrap(&mut self, wrap: u32) -> Result<()> {
        let map = self.ebpf.map_mut("XLB_BENCH").ok_or(DatapathError::Map {
            name: "XLB_BENCH",
            source: aya::maps::MapError::InvalidName {
                name: "XLB_BENCH".into(),
            },
        })?;
        let mut a: PerCpuArray<&mut MapData, u32> =
            PerCpuArray::try_from(map).map_err(map_err("XLB_BENCH"))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io {
            what: "cannot count CPUs",
            path: "/sys/devices/system/cpu/possible".into(),
            source: e,
        })?;
        a.set(
            0,
            aya::maps::PerCpuValues::try_from(vec![0u32; cpus]).expect("nr_cpus values"),
            0,
        )
        .map_err(map_err("XLB_BENCH"))?;
        a.set(
            1,
            aya::maps::PerCpuValues::try_from(vec![wrap; cpus]).expect("nr_cpus values"),
            0,
        )
        .map_err(map_err("XLB_BENCH"))
    }

    /// Benchmark only: the e2e floor program's VIP and backend (`lb_common::FloorTarget`).
    pub fn set_floor_target(&mut self, target: lb_common::FloorTarget) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(lb_common::MAP_FLOOR_TARGET)
            .ok_or(DatapathError::Map {
                name: lb_common::MAP_FLOOR_TARGET,
                source: aya::maps::MapError::InvalidName {
                    name: lb_common::MAP_FLOOR_TARGET.to_string(),
                },
            })?;
        let mut a: Array<&mut MapData, lb_common::FloorTarget> =
            Array::try_from(map).map_err(map_err(lb_common::MAP_FLOOR_TARGET))?;
        a.set(0, target, 0).map_err(map_err(lb_common::MAP_FLOOR_TARGET))
    }

    // --- BPF_PROG_TEST_RUN ------------------------------------------------------------------

    /// Run program `prog` on `data` `repeat` times (the kernel feeds each repetition the
    /// previous one's output).
    pub fn test_run(&mut self, prog: &str, data: &[u8], repeat: u32) -> Result<RunResult> {
        let p = self.program(prog)?;
        let mut out = vec![0u8; data.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(data);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat.max(1);
        let r = p.test_run(opts).map_err(prog_err(prog))?;
        out.truncate(r.data_size_out as usize);
        Ok(RunResult {
            verdict: r.return_value,
            data: out,
            duration: r.duration,
        })
    }
}

/// The global counters, summed over CPUs: those the data path counts (`MAP_GLOBAL_STATS`,
/// indexed by `gstat::Counter`) and those the agent derives from them and the per-service
/// counters (`gstat::Derived`). `show info` and metrics list both, by name (`shown`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats {
    counted: [u64; Counter::COUNT as usize],
    derived: [u64; Derived::COUNT as usize],
}

impl GlobalStats {
    /// The derived counters from the data path's `counted` ones and the per-service sums `t`.
    /// The per-CPU counters are read one after another while packets keep arriving, so
    /// `packets` may be read before a `no_backend` or `redirect` that counts a later packet:
    /// the difference saturates at 0 instead of wrapping to 2^64.
    fn derive(counted: [u64; Counter::COUNT as usize], t: &ServiceStats) -> Self {
        let c = |i: Counter| counted[i.index() as usize];
        let mut derived = [0u64; Derived::COUNT as usize];
        let mut set = |d: Derived, v: u64| derived[d.index() as usize] = v;
        set(
            Derived::Rx,
            c(Counter::PassNotVip)
                + c(Counter::ParseError)
                + c(Counter::PassNotOurMac)
                + c(Counter::FragmentNoRecord)
                + t.packets,
        );
        set(
            Derived::Tx,
            t.packets
                .saturating_sub(t.no_backend)
                .saturating_sub(c(Counter::Redirect)),
        );
        set(Derived::NoBackend, t.no_backend);
        set(Derived::StickHit, t.stick_hits);
        set(Derived::StickMiss, t.stick_misses);
        set(Derived::StickInsert, t.stick_inserts);
        set(Derived::StickExpired, t.stick_expired);
        set(Derived::Redispatch, t.redispatches);
        set(Derived::PinnedDown, t.pinned_down);
        GlobalStats { counted, derived }
    }

    /// One counter of either kind.
    pub fn get(&self, counter: impl Into<Global>) -> u64 {
        match counter.into() {
            Global::Counted(c) => self.counted[c.index() as usize],
            Global::Derived(d) => self.derived[d.index() as usize],
        }
    }

    /// Every global counter with its name, in the order the user sees them (`gstat::SHOWN`).
    pub fn shown(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        gstat::SHOWN.iter().map(|g| (g.name(), self.get(*g)))
    }
}

/// Attach the `xlb_pass` program (XDP_PASS) to `ifname` in native mode, for the life of the
/// interface. For test topologies: veth delivers XDP_TX frames to its peer only when the peer
/// runs an XDP program too. Call it from a thread inside the interface's namespace.
pub fn attach_pass_program(ifname: &str) -> Result<()> {
    let mut dp = Datapath::load(&LoadOptions { pin_dir: None })?;
    let prog = dp.program(lb_common::PROG_PASS)?;
    let id = prog
        .attach(ifname, XdpMode::Driver)
        .map_err(prog_err(lb_common::PROG_PASS))?;
    let link = prog.take_link(id).map_err(prog_err(lb_common::PROG_PASS))?;
    // The link lives until the interface goes away.
    std::mem::forget(link);
    Ok(())
}

/// Remove the pinned link (which detaches the program) and every pinned map under `dir`.
pub fn remove_pins(dir: &Path) -> Result<()> {
    let io = |what: &'static str, path: PathBuf| move |source| DatapathError::Io { what, path, source };
    let link = dir.join("link");
    if link.exists() {
        std::fs::remove_file(&link).map_err(io("cannot remove pinned link", link.clone()))?;
    }
    for sub in ["maps", crate::datapath::pins::FORMAT1_DIR] {
        let maps = dir.join(sub);
        if maps.exists() {
            remove_pinned_maps(&maps)?;
        }
    }
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(io("cannot remove", dir.to_path_buf()))?;
    }
    Ok(())
}

/// The index of interface `ifname` in this network namespace.
fn ifindex_of(ifname: &str) -> Result<u32> {
    let name = std::ffi::CString::new(ifname).map_err(|_| DatapathError::Format {
        what: format!("interface name {ifname:?} holds a NUL byte"),
    })?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(DatapathError::Io {
            what: "no such interface",
            path: ifname.into(),
            source: std::io::Error::last_os_error(),
        }),
        i => Ok(i),
    }
}

/// `bpf_link_update` on a link whose interface is gone: ENOLINK.
fn is_severed(e: &aya::programs::ProgramError) -> bool {
    matches!(e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOLINK))
}

fn remove_link_pin(pin: &Path) -> Result<()> {
    std::fs::remove_file(pin).map_err(|source| DatapathError::Io {
        what: "cannot remove the pinned XDP link",
        path: pin.to_path_buf(),
        source,
    })
}

/// Remove every pin under `maps` (xlb's maps directory) and the directory.
fn remove_pinned_maps(maps: &Path) -> Result<()> {
    crate::datapath::pins::remove_old(maps).map_err(|source| DatapathError::Io {
        what: "cannot remove pinned maps under",
        path: maps.to_path_buf(),
        source,
    })
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock the data path stamps entries with
/// (`bpf_ktime_get_coarse_ns`).
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Mount bpffs at /sys/fs/bpf when it is not mounted (fresh machines).
pub fn ensure_bpffs() -> std::io::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains("bpf"))
    {
        return Ok(());
    }
    std::fs::create_dir_all("/sys/fs/bpf")?;
    let src = c"bpffs";
    let target = c"/sys/fs/bpf";
    let fstype = c"bpf";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `packets` read before a `no_backend` and a `redirect` that count later packets (the
    /// per-CPU reads are not one snapshot): TX must stay 0, not wrap to about 2^64.
    #[test]
    fn tx_counter_saturates_when_later_counts_were_read_first() {
        let mut counted = [0u64; Counter::COUNT as usize];
        counted[Counter::Redirect.index() as usize] = 3;
        let t = ServiceStats {
            packets: 5,
            no_backend: 4,
            ..Default::default()
        };
        assert_eq!(GlobalStats::derive(counted, &t).get(Derived::Tx), 0);
        counted[Counter::Redirect.index() as usize] = 1;
        let g = GlobalStats::derive(
            counted,
            &ServiceStats {
                packets: 10,
                no_backend: 2,
                ..Default::default()
            },
        );
        assert_eq!(g.get(Derived::Tx), 7);
    }
}
