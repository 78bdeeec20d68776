//! The VIP table (`MAP_VIPS`): which service a packet's (address, port, protocol, family) is.
//! Two open-addressed tables, double-buffered like the Maglev tables (`MAP_VIP_ACTIVE` says
//! which is live).

/// Slots of one VIP table; `MAP_VIPS` holds two (double-buffered, like the Maglev tables).
pub const VIP_TABLE_SIZE: u32 = 1024;
/// Linear-probe length of the VIP table: a key sits within this many slots of its hash.
pub const VIP_PROBES: u32 = 4;

/// A VIP key as five words (what the data path compares).
#[inline(always)]
pub fn vip_words(addr: &[u8; 16], port_be: u16, proto: u8, family: u8) -> [u32; 5] {
    vip_words_of(crate::hash::words_of(addr), port_be, proto, family)
}

/// [`vip_words`] of an address given as its `hash::words_of`.
#[inline(always)]
pub fn vip_words_of(a: [u32; 4], port_be: u16, proto: u8, family: u8) -> [u32; 5] {
    [
        a[0],
        a[1],
        a[2],
        a[3],
        port_be as u32 | (proto as u32) << 16 | (family as u32) << 24,
    ]
}

/// Home slot of a VIP key in a table.
#[inline(always)]
pub fn vip_home(words: &[u32; 5]) -> u32 {
    crate::hash::hash_words(words) & (VIP_TABLE_SIZE - 1)
}

/// Value of `MAP_VIPS`: one slot of an open-addressed VIP table (index: `slot * VIP_TABLE_SIZE
/// + i`). `used` = 0 ends a probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipSlot {
    pub key: [u32; 5],
    pub service: u32,
    pub used: u32,
}
map_type!(VipSlot, 28);

/// A VIP as the agent describes it (`MAP_VIPS` stores it as `VipSlot` words).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: [u8; 16],
    /// Network byte order; 0 = any port.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
map_type!(VipKey, 20);

impl VipKey {
    pub fn words(&self) -> [u32; 5] {
        vip_words(&self.addr, self.port, self.proto, self.family)
    }
}
