//! The agent's handle on the XDP data path: load the object, adopting the maps an earlier run
//! pinned (or migrating an older pin format), and hold typed handles on every map. The handle's
//! other jobs live beside it, one per file:
//!
//! - `attach`: the XDP links (attach and pin, replace the program of a pinned link; detached by
//!   `pins::remove_pins`) and the pass program test topologies need;
//! - `tables`: what the data path looks up per packet — the VIP table and the Maglev tables
//!   (each double buffered: write the inactive slot, then flip), services, backends, names,
//!   transmit ports and limits;
//! - `stick`: the stick tables through this handle (a service's table, one entry at a time);
//! - `stats`: the counters, summed over CPUs (the passive health signals too);
//! - `inserts`: the ring in which the data path reports the stick entries it writes;
//! - `testing`: BPF_PROG_TEST_RUN and the benchmarks' hooks;
//! - `clock`: the kernel clock the data path stamps entries with;
//! - `pins`: the pins under `bpffs_dir` (formats, migration, removal) and bpffs itself;
//! - `stick_maps`: the per-service stick tables in the kernel (create, resize, remove, adopt);
//! - `decap`: the backend hosts' decapsulator (`xlb decap`), an object and maps of its own;
//! - `batch`: batched reads and deletions of a hash map; `sys`: the raw `bpf(2)` calls aya
//!   0.14 does not make; `error`: what can go wrong.

mod attach;
pub mod batch;
mod clock;
pub mod decap;
pub mod error;
mod inserts;
pub mod pins;
mod stats;
mod stick;
pub mod stick_maps;
pub mod sys;
mod tables;
mod testing;

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, MapData, PerCpuArray, ProgramArray},
    programs::Xdp,
};
use lb_common::{
    ALL_MAPS, Backend, BackendStats, ENCAP_STAGE_SLOT, Encap, MAP_ACTIVE_SLOT, MAP_BACKEND_STATS,
    MAP_BACKENDS, MAP_ENCAP, MAP_ENCAP_STAGE, MAP_GLOBAL_STATS, MAP_LIMITS, MAP_MAGLEV, MAP_META, MAP_NAMES,
    MAP_OWN_MAC, MAP_PASSIVE_STATS, MAP_SERVICE_STATS, MAP_SERVICES, MAP_STICK_TABLES, MAP_TX_PORTS,
    MAP_VIP_ACTIVE, MAP_VIPS, NameSlot, PROG_ENCAP, PassiveStats, Service, ServiceStats, StickEntry,
    StickKey, VipSlot, meta,
};

use crate::datapath::stick_maps::StickTables;
pub use crate::datapath::{
    attach::{Attached, attach_pass_program},
    clock::coarse_now_ns,
    error::DatapathError,
    inserts::{AsyncInserts, Inserts},
    pins::{ensure_bpffs, remove_pins},
    stats::GlobalStats,
    testing::RunResult,
};

/// The compiled XDP object (built by build.rs from `lb-ebpf`).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb.bpf.o"));

/// The same program without passive health's packet code (`lb-ebpf` feature `passive` off), for
/// the benchmarks only: they time the stick hit with and without it in the same run.
pub static OBJECT_WITHOUT_PASSIVE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-without-passive.bpf.o"));

type Result<T, E = DatapathError> = std::result::Result<T, E>;

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// The object defines no map `name`.
fn no_map(name: &'static str) -> DatapathError {
    DatapathError::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_string(),
        },
    }
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
    /// The object to load; `None` = [`OBJECT`]. Benchmarks only (pins are inspected against
    /// [`OBJECT`]).
    pub object: Option<&'static [u8]>,
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
    /// How encapsulating backends are reached (`MAP_ENCAP`, index: backend id).
    encap: Array<MapData, Encap>,
    /// The encapsulation stage the main program tail-calls (`MAP_ENCAP_STAGE`), filled at load.
    encap_stage: ProgramArray<MapData>,
    /// One stick table per service (`MAP_STICK_TABLES` and its inner tables).
    sticks: StickTables,
    tx_ports: DevMap<MapData>,
    gstats: PerCpuArray<MapData, u64>,
    sstats: PerCpuArray<MapData, ServiceStats>,
    bstats: PerCpuArray<MapData, BackendStats>,
    /// Per-backend handshake signals (not pinned: each loaded program has its own).
    passive: PerCpuArray<MapData, PassiveStats>,
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
        let object = opts.object.unwrap_or(OBJECT);
        if object.is_empty() {
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
                crate::datapath::pins::Found::OlderCounters(format) => {
                    log::warn!(
                        "pins under {} are format {format} (an older xlb): adopting them as format \
                         {}; the global counters start again from 0",
                        dir.display(),
                        lb_common::PIN_FORMAT
                    );
                    crate::datapath::pins::migrate_global_stats(&maps_dir, format)?;
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
                        crate::datapath::pins::remove_pinned_maps(&maps_dir)?;
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
            .load(object)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;

        macro_rules! take {
            ($name:expr) => {{
                let map = ebpf.take_map($name).ok_or(no_map($name))?;
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
            encap: take!(MAP_ENCAP),
            encap_stage: take!(MAP_ENCAP_STAGE),
            sticks: StickTables::adopt(ebpf.take_map(MAP_STICK_TABLES).ok_or(no_map(MAP_STICK_TABLES))?)?,
            tx_ports: take!(MAP_TX_PORTS),
            gstats: take!(MAP_GLOBAL_STATS),
            sstats: take!(MAP_SERVICE_STATS),
            bstats: take!(MAP_BACKEND_STATS),
            passive: take!(MAP_PASSIVE_STATS),
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
        dp.fill_encap_stage()?;
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

    /// Load the encapsulation stage (`PROG_ENCAP`) and put it where the main program's tail
    /// call finds it (`MAP_ENCAP_STAGE`), replacing the stage of an earlier load in adopted
    /// pins. Done at every load, before any program is attached or run: without it every
    /// packet to an encapsulating backend is passed (`encap_stage_missing`).
    fn fill_encap_stage(&mut self) -> Result<()> {
        let stage = loaded_program(&mut self.ebpf, PROG_ENCAP)?;
        let fd = stage.fd().map_err(prog_err(PROG_ENCAP))?;
        self.encap_stage
            .set(ENCAP_STAGE_SLOT, fd, 0)
            .map_err(map_err(MAP_ENCAP_STAGE))
    }

    /// The program `name`, loaded into the kernel on first use.
    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        loaded_program(&mut self.ebpf, name)
    }
}

/// The program `name` of `ebpf`, loaded into the kernel on first use.
fn loaded_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| prog_err(name)(aya::programs::ProgramError::NotLoaded))?
        .try_into()
        .map_err(prog_err(name))?;
    if prog.fd().is_err() {
        prog.load().map_err(prog_err(name))?;
    }
    Ok(prog)
}
