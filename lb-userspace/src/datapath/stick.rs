//! The stick tables through the data path's handle: give a service its table (create, keep,
//! resize) or remove it, and read, write or delete one entry. Whole-table walks run on handles
//! of their own (`stick_maps::StickTables::from_pin`), without the agent's lock.

use lb_common::{StickEntry, StickKey};

use crate::datapath::{
    Datapath, DatapathError, Result,
    stick_maps::{StickMap, StickMapError, StickTables, TableChange},
};

impl Datapath {
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

    /// Write `entry` only if `key` has no entry yet (`BPF_NOEXIST`): `false` when it has one,
    /// which is left as it is. One system call either way: what a peer's update of a client
    /// new to this instance costs (the usual case, and all of a rejoining instance's teach).
    pub fn stick_insert_new(&mut self, key: StickKey, entry: StickEntry) -> Result<bool> {
        let service = key.service as u32;
        let t = self
            .sticks
            .get_mut(service)
            .ok_or(DatapathError::NoStickTable { service })?;
        match t.map.insert(key, entry, aya_obj::generated::BPF_NOEXIST as u64) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(Self::stick_table_err(service, "cannot write an entry")(e)),
        }
    }

    /// Delete an entry; a key already gone (or a service without a table) is not an error.
    pub fn stick_delete(&mut self, key: &StickKey) -> Result<bool> {
        let service = key.service as u32;
        let Some(t) = self.sticks.get_mut(service) else {
            return Ok(false);
        };
        crate::datapath::batch::delete_one(&mut t.map, key)
            .map_err(Self::stick_table_err(service, "cannot delete an entry"))
    }

    /// Entries one service's table can hold (None: it has no table).
    pub fn stick_capacity_of(&self, service: u32) -> Option<u32> {
        self.sticks.capacity(service)
    }

    /// Entries all tables together can hold.
    pub fn stick_capacity(&self) -> u64 {
        self.sticks.total_capacity()
    }

    /// A service's stick table itself (benchmarks and tests fill and sweep it directly).
    pub fn stick_map_mut(&mut self, service: u32) -> Option<&mut StickMap> {
        self.sticks.get_mut(service).map(|t| &mut t.map)
    }

    /// Every service's stick table (benchmarks sweep them directly).
    pub fn stick_tables_mut(&mut self) -> &mut StickTables {
        &mut self.sticks
    }
}
