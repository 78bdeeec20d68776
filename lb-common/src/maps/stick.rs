//! The stick tables' key and entry (`MAP_STICK_TABLES`: one LRU hash per service), the cap
//! on new entries per second per CPU (`MAP_LIMITS`, `MAP_NEW_ENTRIES`), and the record of each
//! entry the data path writes (`MAP_INSERTS`). How a client address becomes a key is
//! `crate::stick`.

/// The data path refreshes an entry's last-seen time at most this often (nanoseconds).
pub const STICK_REFRESH_NS: u64 = 1_000_000_000;

/// Key of a stick table (`MAP_STICK_TABLES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct StickKey {
    /// Client address after the service's prefix mask.
    pub addr: [u8; 16],
    pub service: u16,
    /// Client source port (network order) for `src-port` services, else 0.
    pub port: u16,
    pub family: u8,
    /// Padding as scalars: an array here makes the eBPF build call a byte-wise memset.
    pub _pad0: u8,
    pub _pad1: u16,
}
map_type!(StickKey, 24);

impl StickKey {
    pub const fn new(addr: [u8; 16], service: u16, port: u16, family: u8) -> Self {
        StickKey {
            addr,
            service,
            port,
            family,
            _pad0: 0,
            _pad1: 0,
        }
    }
}

/// Value of a stick table (`MAP_STICK_TABLES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StickEntry {
    /// `bpf_ktime_get_coarse_ns()` when the client was last seen (refreshed at most once per
    /// `STICK_REFRESH_NS`). Userspace reads the same clock as `CLOCK_MONOTONIC_COARSE`.
    pub last_seen_ns: u64,
    pub backend: u32,
    /// Passive health's hint: the coarse clock `>> SYN_AT_SHIFT` (with its lowest bit set, so
    /// never 0) when the client last sent a SYN, 0 = none seen. A stick hit looks for its flow's
    /// SYN record (`MAP_SYNS`) only within `SYN_HINT_TICKS` of it. Written by the data path on
    /// SYNs that hit the entry; 0 in entries the agent writes (peers, migration).
    pub syn_at: u32,
}
map_type!(StickEntry, 16);

/// Index of `MAP_LIMITS`: new stick entries each CPU may create per second (0 = no cap).
pub const LIMIT_NEW_ENTRIES_PER_CPU: u32 = 0;

/// Length of the window the cap above counts in: one second (nanoseconds).
pub const NEW_ENTRIES_WINDOW_NS: u64 = 1_000_000_000;

/// Value of `MAP_NEW_ENTRIES` (per CPU): the current one-second window of entry creations.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateWindow {
    pub start_ns: u64,
    pub count: u64,
}
map_type!(RateWindow, 16);

/// Bytes of `MAP_INSERTS` (a power of 2 times the page size): about 26,000 records of
/// [`InsertRecord`] with the ring's 8-byte headers, several seconds of new clients at the
/// per-CPU cap's default even if the agent stalled.
pub const INSERTS_RING_BYTES: u32 = 1 << 20;

/// A record of `MAP_INSERTS`: one stick entry the data path has just written (a new client, an
/// expired entry replaced, a redispatch), as it wrote it. The agent sends it to the peers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InsertRecord {
    /// The entry's key; its `service` is the service id.
    pub key: StickKey,
    /// The entry: backend id and the time it was written.
    pub entry: StickEntry,
}
map_type!(InsertRecord, 40);
