//! Fragmented datagrams in flight (`MAP_FRAGMENTS`): where a datagram's first fragment went,
//! so its later fragments (no L4 header) follow it.

/// Slots of `MAP_FRAGMENTS`: IP datagrams whose first fragment the data path remembers. A record
/// is needed only from a datagram's first fragment to its last (microseconds apart); the LRU
/// drops the oldest.
pub const FRAGMENT_RECORDS: u32 = 4096;

/// Key of `MAP_FRAGMENTS`: one IP datagram, as the receiver's reassembly identifies it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragmentKey {
    /// Client address (IPv4 in the first 4 bytes, as everywhere in these maps).
    pub src: [u8; 16],
    /// VIP address.
    pub dst: [u8; 16],
    /// The datagram's identification: IPv4's 16-bit id, or the 32-bit identification of the
    /// IPv6 fragment header (host order).
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    /// Padding as a scalar (see `StickKey`).
    pub _pad: u16,
}
map_type!(FragmentKey, 40);

/// Value of `MAP_FRAGMENTS`: where the datagram's first fragment went.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragmentRecord {
    pub service: u32,
    pub backend: u32,
}
map_type!(FragmentRecord, 8);
