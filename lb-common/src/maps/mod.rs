//! Map keys, values, indices and limits shared by the data path and the agent: one file per
//! table (VIP, service and Maglev, backend, stick, fragment, counters, benchmark), and here
//! what spans them all: the capacities, the names of the programs and maps, the pin format and
//! the agent's own records.
//!
//! The maps themselves are defined (and documented: key, value, writer, reader) in
//! `lb-ebpf/src/maps.rs`; their names are the `MAP_*` constants below.
//!
//! Byte order: addresses and ports are kept in network byte order, exactly as they sit in the
//! packet, so the data path never swaps bytes. IPv4 addresses fill the first 4 bytes of a
//! 16-byte address, the other 12 are zero.

mod backend;
mod bench;
mod decap;
mod encap;
mod fragment;
mod passive;
mod service;
mod stats;
mod stick;
mod vip;

pub use backend::*;
pub use bench::*;
pub use decap::*;
pub use encap::*;
pub use fragment::*;
pub use passive::*;
pub use service::*;
pub use stats::*;
pub use stick::*;
pub use vip::*;

/// Services (VIP:port/protocol entries of the config) the data path can hold.
pub const MAX_SERVICES: u32 = 32;
/// Backends (a server of a service; the same host in two services is two backends).
pub const MAX_BACKENDS: u32 = 4096;
/// Entries of `MAP_TX_PORTS`: port 0 means `XDP_TX`, so up to 63 other output interfaces.
pub const MAX_TX_PORTS: u32 = 64;
/// Maximum IPv6 extension headers the parser walks before it calls the packet malformed.
pub const MAX_IPV6_EXT_HEADERS: u32 = 4;

/// Address families and IP protocols as keys store them.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const MAP_VIPS: &str = "XLB_VIPS";
pub const MAP_VIP_ACTIVE: &str = "XLB_VIP_ACTIVE";
pub const MAP_SERVICES: &str = "XLB_SERVICES";
pub const MAP_ACTIVE_SLOT: &str = "XLB_ACTIVE";
pub const MAP_MAGLEV: &str = "XLB_MAGLEV";
pub const MAP_BACKENDS: &str = "XLB_BACKENDS";
/// How backends on other networks are reached (`Encap`, index: backend id).
pub const MAP_ENCAP: &str = "XLB_ENCAP";
/// The encapsulation stage, a program array of one entry (`PROG_ENCAP` at `ENCAP_STAGE_SLOT`)
/// filled by the agent at load time.
pub const MAP_ENCAP_STAGE: &str = "XLB_ENCAP_STAGE";
/// What the main program hands the encapsulation stage (`EncapHandoff`, per CPU, index 0).
pub const MAP_ENCAP_HANDOFF: &str = "XLB_ENCAP_HANDOFF";
/// The stick tables: an array of maps, one LRU hash per service (index: service id).
pub const MAP_STICK_TABLES: &str = "XLB_STICKS";
/// The single stick table of xlb releases before per-service tables. Not defined by this
/// program: a pin of that name means pins written by an older release.
pub const MAP_STICK_SINGLE: &str = "XLB_STICK";
pub const MAP_TX_PORTS: &str = "XLB_TX_PORTS";
pub const MAP_GLOBAL_STATS: &str = "XLB_GSTATS";
pub const MAP_SERVICE_STATS: &str = "XLB_SSTATS";
pub const MAP_BACKEND_STATS: &str = "XLB_BSTATS";
pub const MAP_NAMES: &str = "XLB_NAMES";
pub const MAP_LIMITS: &str = "XLB_LIMITS";
pub const MAP_NEW_ENTRIES: &str = "XLB_NEW_ENTRIES";
pub const MAP_META: &str = "XLB_META";
pub const MAP_OWN_MAC: &str = "XLB_OWN_MAC";
pub const MAP_FRAGMENTS: &str = "XLB_FRAGMENTS";
/// The ring of new stick entries (`InsertRecord`). Not pinned: each loaded program has its
/// own, read by the agent that loaded it.
pub const MAP_INSERTS: &str = "XLB_INSERTS";
/// SYNs whose handshake is not yet seen to finish (an array of `SynSlot`). Not pinned: a
/// record lives a round trip; a new program starts with none and misses a second's signals.
pub const MAP_SYNS: &str = "XLB_SYNS";
/// Per-backend handshake signals, per CPU (`PassiveStats`). Not pinned: the agent's detector
/// reads differences, and a new program's counters start from 0.
pub const MAP_PASSIVE_STATS: &str = "XLB_PASSIVE";
/// Every map the program defines (the agent pins and adopts these).
pub const ALL_MAPS: [&str; 20] = [
    MAP_VIPS,
    MAP_VIP_ACTIVE,
    MAP_SERVICES,
    MAP_ACTIVE_SLOT,
    MAP_MAGLEV,
    MAP_BACKENDS,
    MAP_STICK_TABLES,
    MAP_TX_PORTS,
    MAP_GLOBAL_STATS,
    MAP_SERVICE_STATS,
    MAP_BACKEND_STATS,
    MAP_NAMES,
    MAP_LIMITS,
    MAP_NEW_ENTRIES,
    MAP_META,
    MAP_OWN_MAC,
    MAP_FRAGMENTS,
    MAP_ENCAP,
    MAP_ENCAP_STAGE,
    MAP_ENCAP_HANDOFF,
];

/// The XDP program's name in the object; the one a test topology attaches to a veth's far end.
/// (The benchmark programs are in `bench`.)
pub const PROG_XLB: &str = "xlb";
pub const PROG_PASS: &str = "xlb_pass";

/// Format of the pinned maps: bumped whenever a map's type, key, value, size or meaning
/// changes. Format 1 (xlb up to c887b59) had no `MAP_META`; format 2 (up to 011ecc8) had 21
/// entries in `MAP_GLOBAL_STATS`, counted and derived counters mixed; format 3 (up to d968612)
/// had 12 there (no `insert_ring_full`); format 4 (up to 8c5e4e7) had 13 there and none of
/// the encapsulation maps (`MAP_ENCAP`, `MAP_ENCAP_STAGE`, `MAP_ENCAP_HANDOFF`). The agent
/// migrates all four.
pub const PIN_FORMAT: u64 = 5;

/// Slots of `MAP_META` (u64 each), written by the agent, never read by the data path.
pub mod meta {
    /// `PIN_FORMAT` of the pins.
    pub const FORMAT: u32 = 0;
    /// ifindex the pinned XDP link was attached to.
    pub const IFINDEX: u32 = 1;
    /// The XDP mode the config asked for when the link was made: `MODE_NATIVE` or
    /// `MODE_GENERIC` (0 = unknown).
    pub const MODE: u32 = 2;
    pub const COUNT: u32 = 4;
    pub const MODE_NATIVE: u64 = 1;
    pub const MODE_GENERIC: u64 = 2;
}

/// Index of a service's name in `MAP_NAMES`.
#[inline(always)]
pub const fn name_slot_service(service: u32) -> u32 {
    service
}

/// Index of a backend's name (`service/server`) in `MAP_NAMES`.
#[inline(always)]
pub const fn name_slot_backend(backend: u32) -> u32 {
    MAX_SERVICES + backend
}

/// Value of `MAP_NAMES`: a NUL-padded UTF-8 name; all zero = the id is free.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameSlot {
    pub name: [u8; 64],
}
map_type!(NameSlot, 64);

impl Default for NameSlot {
    fn default() -> Self {
        NameSlot { name: [0; 64] }
    }
}
