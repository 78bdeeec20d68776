//! What the data path looks up for each packet, written by the agent: the VIP table and every
//! service's Maglev table — both double buffered: the new content goes into the inactive slot,
//! then one write flips the active slot, so a packet sees the old table or the new one, never a
//! mix — and the services, backends, names, transmit ports, the new-entry cap and the
//! interface's own MAC.

use lb_common::{
    Backend, MAGLEV_MAX_SIZE, MAP_ACTIVE_SLOT, MAP_BACKENDS, MAP_LIMITS, MAP_MAGLEV, MAP_NAMES, MAP_OWN_MAC,
    MAP_SERVICES, MAP_TX_PORTS, MAP_VIP_ACTIVE, MAP_VIPS, NameSlot, Service, VIP_PROBES, VIP_TABLE_SIZE,
    VipKey, VipSlot, maglev_base,
};

use crate::datapath::{Datapath, DatapathError, Result, map_err};

impl Datapath {
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
        let (slots, values): (Vec<u32>, Vec<u32>) = table
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                !old.as_ref()
                    .is_some_and(|o| o.len() == table.len() && o[*i] == **b)
            })
            .map(|(i, b)| (base + i as u32, *b))
            .unzip();
        crate::datapath::batch::set_slots(&mut self.maglev, &slots, &values).map_err(map_err(MAP_MAGLEV))?;
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

    /// How backend `id` is reached when it encapsulates; written before its `Backend` names an
    /// encapsulation, so the data path never reads a stale value.
    pub fn set_encap(&mut self, id: u32, e: lb_common::Encap) -> Result<()> {
        self.encap.set(id, e, 0).map_err(map_err(lb_common::MAP_ENCAP))
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
}
