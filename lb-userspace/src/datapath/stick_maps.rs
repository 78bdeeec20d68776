//! The stick tables in the kernel: `MAP_STICK_TABLES`, an array of maps indexed by service id,
//! and in each used slot that service's own LRU hash of its `stick.size` entries. A flood aimed
//! at one service can then evict only that service's clients.
//!
//! Here: creating a service's table, resizing it (copy the entries into a table of the new size,
//! swap the slot, copy what the data path changed meanwhile), removing it, and opening every
//! table of a pinned outer map on handles of its own (the sweeper and the peers walk the tables
//! without the agent's lock). The outer map is pinned with the other maps; it holds the inner
//! tables, so they outlive the agent and a restarted agent finds them in its slots.
//!
//! aya 0.14 can neither create an LRU hash by itself nor delete an array-of-maps slot: the
//! first goes through aya-obj's map definition, the second is one raw `bpf(2)` call.

use std::{collections::BTreeMap, io, path::Path};

use aya::maps::{ArrayOfMaps, HashMap, IterableMap as _, Map, MapData, MapError, MapType};
use lb_common::{MAX_SERVICES, StickEntry, StickKey};

/// One service's stick table, on a handle of this process.
pub type StickMap = HashMap<MapData, StickKey, StickEntry>;

#[derive(Debug, thiserror::Error)]
pub enum StickMapError {
    #[error("stick table of service id {service}: {what}: {source}")]
    Map {
        service: u32,
        what: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "stick table of service id {service} in the pinned maps is not one this program can use: \
         {what}. Run `xlb detach -c FILE` to remove the old pins (this empties the stick table), \
         then start again"
    )]
    Mismatch { service: u32, what: String },
    #[error("the stick tables' array of maps: {what}: {source}")]
    Outer {
        what: &'static str,
        #[source]
        source: MapError,
    },
    #[error("service id {0} is out of range (at most {MAX_SERVICES} services)")]
    ServiceId(u32),
    #[error("cannot open the pinned stick tables at {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: MapError,
    },
}

type Result<T, E = StickMapError> = std::result::Result<T, E>;

/// What `StickTables::set` did to a service's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// The table already had this capacity.
    Kept,
    /// A new, empty table.
    Created,
    /// A table of the new capacity replaced the old one; `copied` entries were written into it
    /// (a smaller table keeps the most recently seen of them).
    Resized { from: u32, copied: usize },
}

/// One service's table and the capacity it was created with.
pub struct StickTable {
    pub capacity: u32,
    pub map: StickMap,
}

/// The outer map and every service's table in it.
pub struct StickTables {
    /// `Map::ArrayOfMaps` (kept as the enum: aya 0.14 hands out typed views of it, but no fd).
    outer: Map,
    tables: BTreeMap<u32, StickTable>,
}

type Outer<'a> = ArrayOfMaps<&'a MapData, StickMap>;
type OuterMut<'a> = ArrayOfMaps<&'a mut MapData, StickMap>;

impl StickTables {
    /// Take the outer map of a loaded program, adopting the tables already in its slots (the
    /// pins of an earlier run); each one is checked to be an LRU hash of our key and value.
    pub fn adopt(outer: Map) -> Result<Self> {
        let view: Outer<'_> = (&outer).try_into().map_err(|source| StickMapError::Outer {
            what: "not an array of maps",
            source,
        })?;
        let mut tables = BTreeMap::new();
        for service in 0..MAX_SERVICES {
            match view.get(&service, 0) {
                Ok(map) => {
                    let capacity = check(service, &map)?;
                    tables.insert(service, StickTable { capacity, map });
                }
                Err(MapError::KeyNotFound) => {}
                // An array-of-maps slot without a map reads as ENOENT.
                Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => {
                    return Err(StickMapError::Map {
                        service,
                        what: "cannot read its slot",
                        source,
                    });
                }
            }
        }
        Ok(StickTables { outer, tables })
    }

    /// Every table of the pinned outer map at `pin`, on handles of their own.
    pub fn from_pin(pin: &Path) -> Result<Self> {
        let pin_err = |source| StickMapError::Pin {
            path: pin.to_path_buf(),
            source,
        };
        let data = MapData::from_pin(pin).map_err(pin_err)?;
        Self::adopt(Map::from_map_data(data).map_err(pin_err)?)
    }

    /// The capacity of a service's table, if it has one.
    pub fn capacity(&self, service: u32) -> Option<u32> {
        self.tables.get(&service).map(|t| t.capacity)
    }

    pub fn get(&self, service: u32) -> Option<&StickTable> {
        self.tables.get(&service)
    }

    pub fn get_mut(&mut self, service: u32) -> Option<&mut StickTable> {
        self.tables.get_mut(&service)
    }

    /// (service id, table), by service id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &StickTable)> {
        self.tables.iter().map(|(s, t)| (*s, t))
    }

    /// Sum of the capacities of every table.
    pub fn total_capacity(&self) -> u64 {
        self.tables.values().map(|t| t.capacity as u64).sum()
    }

    /// Every entry of one service's table (none without a table).
    pub fn entries_of(&self, service: u32) -> Result<Vec<(StickKey, StickEntry)>> {
        match self.tables.get(&service) {
            Some(t) => crate::datapath::batch::read_all(&t.map, 4096).map_err(|source| StickMapError::Map {
                service,
                what: "cannot read it",
                source,
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Every entry of every table.
    pub fn entries(&self) -> Result<Vec<(StickKey, StickEntry)>> {
        let mut out = Vec::new();
        for service in self.tables.keys() {
            out.extend(self.entries_of(*service)?);
        }
        Ok(out)
    }

    /// Give `service` a table of `capacity` entries: create one, keep the one it has, or replace
    /// it by one of the new size holding its entries (most recently seen last, so a smaller
    /// table keeps the most recent clients). The data path switches tables with one slot write;
    /// entries it created or refreshed in the old table while the copy ran are copied after the
    /// switch. Packets of the service see the old table or the new one, never none.
    pub fn set(&mut self, service: u32, capacity: u32) -> Result<TableChange> {
        if service >= MAX_SERVICES {
            return Err(StickMapError::ServiceId(service));
        }
        let capacity = capacity.max(1);
        if self.capacity(service) == Some(capacity) {
            return Ok(TableChange::Kept);
        }
        let mut new = create(service, capacity)?;
        let map_err = |what| {
            move |source| StickMapError::Map {
                service,
                what,
                source,
            }
        };
        let Some(old) = self.tables.remove(&service) else {
            self.outer_mut()?
                .set(service, &new, 0)
                .map_err(map_err("cannot install it"))?;
            self.tables.insert(service, StickTable { capacity, map: new });
            return Ok(TableChange::Created);
        };
        let mut before =
            crate::datapath::batch::read_all(&old.map, 4096).map_err(map_err("cannot read it"))?;
        before.sort_by_key(|(_, e)| e.last_seen_ns);
        for (k, e) in &before {
            new.insert(k, e, 0).map_err(map_err("cannot copy an entry"))?;
        }
        let installed = self
            .outer_mut()
            .and_then(|mut o| o.set(service, &new, 0).map_err(map_err("cannot install it")));
        if let Err(e) = installed {
            self.tables.insert(service, old);
            return Err(e);
        }
        // What the data path wrote into the old table between the copy and the switch.
        let seen: std::collections::HashMap<StickKey, u64> =
            before.iter().map(|(k, e)| (*k, e.last_seen_ns)).collect();
        let mut after =
            crate::datapath::batch::read_all(&old.map, 4096).map_err(map_err("cannot read it"))?;
        after.retain(|(k, e)| seen.get(k).is_none_or(|t| e.last_seen_ns > *t));
        for (k, e) in &after {
            let newer_in_new = matches!(new.get(k, 0), Ok(n) if n.last_seen_ns >= e.last_seen_ns);
            if !newer_in_new {
                new.insert(k, e, 0).map_err(map_err("cannot copy an entry"))?;
            }
        }
        let copied = before.len() + after.len();
        self.tables.insert(service, StickTable { capacity, map: new });
        Ok(TableChange::Resized {
            from: old.capacity,
            copied,
        })
    }

    /// Remove a service's table: its slot is emptied (the data path then goes by hash) and the
    /// table freed with its entries once no program holds it. False when it had none.
    pub fn remove(&mut self, service: u32) -> Result<bool> {
        if !self.tables.contains_key(&service) {
            return Ok(false);
        }
        delete_slot(self.outer_data(), service).map_err(|e| StickMapError::Map {
            service,
            what: "cannot empty its slot",
            source: MapError::IoError(e),
        })?;
        self.tables.remove(&service);
        Ok(true)
    }

    fn outer_mut(&mut self) -> Result<OuterMut<'_>> {
        (&mut self.outer)
            .try_into()
            .map_err(|source| StickMapError::Outer {
                what: "not an array of maps",
                source,
            })
    }

    fn outer_data(&self) -> &MapData {
        match &self.outer {
            Map::ArrayOfMaps(d) => d,
            _ => unreachable!("checked by `adopt`"),
        }
    }
}

/// A new LRU hash of `capacity` stick entries (flags 0, as the program's template).
fn create(service: u32, capacity: u32) -> Result<StickMap> {
    let def = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
        size_of::<StickKey>() as u32,
        size_of::<StickEntry>() as u32,
        capacity,
        0,
    );
    let map_err = |source| StickMapError::Map {
        service,
        what: "cannot create it",
        source,
    };
    let data = MapData::create(def, &format!("XLB_STICK_{service}"), None).map_err(map_err)?;
    Map::LruHashMap(data).try_into().map_err(map_err)
}

/// Check that a table found in a slot is an LRU hash of our key and value; its capacity.
fn check(service: u32, map: &StickMap) -> Result<u32> {
    let info = map.map().info().map_err(|source| StickMapError::Map {
        service,
        what: "cannot read its description",
        source,
    })?;
    let mismatch = |what: String| StickMapError::Mismatch { service, what };
    match info.map_type() {
        Ok(MapType::LruHash) => {}
        Ok(t) => return Err(mismatch(format!("map type {t:?}, expected LruHash"))),
        Err(e) => return Err(mismatch(format!("unknown map type ({e})"))),
    }
    let (k, v) = (size_of::<StickKey>() as u32, size_of::<StickEntry>() as u32);
    if info.key_size() != k || info.value_size() != v {
        return Err(mismatch(format!(
            "key/value size {}/{} changed to {k}/{v}",
            info.key_size(),
            info.value_size()
        )));
    }
    Ok(info.max_entries())
}

/// Empty slot `index` of an array of maps (aya 0.14 has no delete for it); an empty slot is
/// not an error.
fn delete_slot(outer: &MapData, index: u32) -> io::Result<()> {
    use std::os::fd::AsFd as _;
    crate::datapath::sys::delete_elem(outer.fd().as_fd(), &index).map(|_| ())
}
