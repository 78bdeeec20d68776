//! Map keys, values, indices and limits shared by the data path and the agent.
//!
//! The maps themselves are defined (and documented: key, value, writer, reader) in
//! `lb-ebpf/src/maps.rs`; their names are the `MAP_*` constants below.
//!
//! Byte order: addresses and ports are kept in network byte order, exactly as they sit in the
//! packet, so the data path never swaps bytes. IPv4 addresses fill the first 4 bytes of a
//! 16-byte address, the other 12 are zero.

/// Services (VIP:port/protocol entries of the config) the data path can hold.
pub const MAX_SERVICES: u32 = 32;
/// Backends (a server of a service; the same host in two services is two backends).
pub const MAX_BACKENDS: u32 = 4096;
/// Entries of `MAP_TX_PORTS`: port 0 means `XDP_TX`, so up to 63 other output interfaces.
pub const MAX_TX_PORTS: u32 = 64;
/// Largest Maglev table a service may use (a prime). Each service owns two regions of this
/// size in `MAP_MAGLEV`: slot 0 and slot 1.
pub const MAGLEV_MAX_SIZE: u32 = 65537;
/// Default Maglev table size (prime).
pub const MAGLEV_DEFAULT_SIZE: u32 = 65537;
/// A Maglev slot that names no backend (the service has no usable server).
pub const NO_BACKEND: u32 = u32::MAX;
/// Maximum IPv6 extension headers the parser walks before it calls the packet malformed.
pub const MAX_IPV6_EXT_HEADERS: u32 = 4;
/// The data path refreshes an entry's last-seen time at most this often (nanoseconds).
pub const STICK_REFRESH_NS: u64 = 1_000_000_000;

/// Index of `service`'s region for table `slot` (0 or 1) in `MAP_MAGLEV`.
#[inline(always)]
pub const fn maglev_base(service: u32, slot: u32) -> u32 {
    (service * 2 + slot) * MAGLEV_MAX_SIZE
}

pub const MAP_VIPS: &str = "XLB_VIPS";
pub const MAP_VIP_ACTIVE: &str = "XLB_VIP_ACTIVE";
pub const MAP_SERVICES: &str = "XLB_SERVICES";
pub const MAP_ACTIVE_SLOT: &str = "XLB_ACTIVE";
pub const MAP_MAGLEV: &str = "XLB_MAGLEV";
pub const MAP_BACKENDS: &str = "XLB_BACKENDS";
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
/// Every map the program defines (the agent pins and adopts these).
pub const ALL_MAPS: [&str; 17] = [
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
];

/// Format of the pinned maps: bumped whenever a map's type, key, value, size or meaning
/// changes. Format 1 (xlb up to c887b59) had no `MAP_META`; format 2 (up to 011ecc8) had 21
/// entries in `MAP_GLOBAL_STATS`, counted and derived counters mixed. The agent migrates both.
pub const PIN_FORMAT: u64 = 3;

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

/// Value of `MAP_OWN_MAC` (index 0): the MAC of the interface XDP runs on. Only frames sent to
/// it are forwarded; `set` is 0 until the agent (or a test fixture) writes it, and until then
/// every VIP frame is passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OwnMac {
    pub mac: [u8; 6],
    pub set: u8,
    pub _pad: u8,
}

/// Index of `MAP_LIMITS`: new stick entries each CPU may create per second (0 = no cap).
pub const LIMIT_NEW_ENTRIES_PER_CPU: u32 = 0;

/// Value of `MAP_NEW_ENTRIES` (per CPU): the current one-second window of entry creations.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateWindow {
    pub start_ns: u64,
    pub count: u64,
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

impl Default for NameSlot {
    fn default() -> Self {
        NameSlot { name: [0; 64] }
    }
}

/// The XDP program's name in the object; the floor program for benchmarks; the bench wrapper
/// that gives every iteration a fresh client address.
pub const PROG_XLB: &str = "xlb";
pub const PROG_FLOOR: &str = "xlb_floor";
pub const PROG_BENCH_FRESH: &str = "xlb_bench_fresh";
pub const PROG_PASS: &str = "xlb_pass";
/// The e2e benchmark's floor: every frame to one VIP goes to one backend (see `FloorTarget`).
pub const PROG_E2E_FLOOR: &str = "xlb_e2e_floor";
/// Its map (not pinned; never used by the production program).
pub const MAP_FLOOR_TARGET: &str = "XLB_FLOOR_TARGET";

/// Value of `MAP_FLOOR_TARGET` (index 0), for `PROG_E2E_FLOOR`: IPv4 frames to `vip` leave by
/// `XDP_TX` with destination `backend_mac` and source `own_mac`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FloorTarget {
    pub vip: [u8; 4],
    pub backend_mac: [u8; 6],
    pub own_mac: [u8; 6],
}

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Slots of one VIP table; `MAP_VIPS` holds two (double-buffered, like the Maglev tables).
pub const VIP_TABLE_SIZE: u32 = 1024;
/// Linear-probe length of the VIP table: a key sits within this many slots of its hash.
pub const VIP_PROBES: u32 = 4;

/// A VIP key as five words (what the data path compares).
#[inline(always)]
pub fn vip_words(addr: &[u8; 16], port_be: u16, proto: u8, family: u8) -> [u32; 5] {
    let a = crate::hash::words_of(addr);
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

impl VipKey {
    pub fn words(&self) -> [u32; 5] {
        vip_words(&self.addr, self.port, self.proto, self.family)
    }
}

/// `Service::stick_mode`
pub const STICK_NONE: u8 = 0;
pub const STICK_SRC: u8 = 1;
pub const STICK_SRC_PORT: u8 = 2;

/// `Service::flags`
pub const SVC_F_REDISPATCH: u8 = 1;

/// Value of `MAP_SERVICES` (index: service id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Idle time after which a stick entry no longer counts (ns); 0 = never expires.
    pub expire_ns: u64,
    /// Client address mask for IPv4 (network byte order, as bytes: /24 = ff ff ff 00).
    pub v4_mask: [u8; 4],
    /// Client address mask for IPv6.
    pub v6_mask: [u8; 16],
    /// Maglev table size M of slot 0 and slot 1 (each written before its slot is made active).
    pub table_size: [u32; 2],
    pub stick_mode: u8,
    pub flags: u8,
    /// 1 when the entry is in use (a deleted service is zeroed: packets to it are passed).
    pub enabled: u8,
    pub _pad: [u8; 1],
}

/// `Backend::state` as the data path sees it (the agent folds health and admin state in).
/// Up and in rotation: new clients may be given it.
pub const BACKEND_UP: u8 = 1;
/// Draining: pinned clients stay, new clients never get it (not in the Maglev table).
pub const BACKEND_DRAIN: u8 = 2;
/// Health check says down.
pub const BACKEND_DOWN: u8 = 3;
/// Administratively in maintenance: treated as down.
pub const BACKEND_MAINT: u8 = 4;

/// Value of `MAP_BACKENDS` (index: backend id). All zero = a free id (`state` 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Destination MAC written into forwarded frames.
    pub mac: [u8; 6],
    /// Source MAC for forwarded frames; all zero = the frame's own destination MAC (ours).
    pub src_mac: [u8; 6],
    /// 0 = `XDP_TX` out of the receiving interface; n > 0 = `XDP_REDIRECT` to `MAP_TX_PORTS[n]`.
    pub tx_port: u32,
    /// `BACKEND_*`; 0 = the id is free (its server was removed).
    pub state: u8,
    pub _pad: u8,
    /// The service this backend belongs to. Backend ids are reused after a server is removed,
    /// so a stick entry's backend id alone proves nothing: the data path follows an entry only
    /// when the backend's `service` is the packet's service and its state is not 0.
    pub service: u16,
}

impl Backend {
    /// Whether this backend is a live server of service `service` (a stick entry of that
    /// service may follow it; whether it is up is `state`'s business).
    #[inline(always)]
    pub fn serves(&self, service: u32) -> bool {
        self.state != 0 && self.service as u32 == service
    }
}

/// Key of `MAP_STICK`.
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

/// Value of `MAP_STICK`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StickEntry {
    /// `bpf_ktime_get_coarse_ns()` when the client was last seen (refreshed at most once per
    /// `STICK_REFRESH_NS`). Userspace reads the same clock as `CLOCK_MONOTONIC_COARSE`.
    pub last_seen_ns: u64,
    pub backend: u32,
    pub _pad: u32,
}

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

/// Value of `MAP_FRAGMENTS`: where the datagram's first fragment went.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragmentRecord {
    pub service: u32,
    pub backend: u32,
}

/// Global counters, in two kinds with an index enum each: `Counter`, what the data path counts
/// itself in `MAP_GLOBAL_STATS` (events that belong to no service, or are rare), and `Derived`,
/// what the agent sums from the per-service counters (`ServiceStats`), so a forwarded packet
/// touches only its service's and backend's counters. `SHOWN` is the one list both make for
/// the user (`show info`, metrics), by name.
pub mod gstat {
    /// Indices of `MAP_GLOBAL_STATS` (per-CPU u64 counters): the events the data path counts.
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Counter {
        /// Passed: not for a configured VIP (or not IP at all).
        PassNotVip = 0,
        /// Passed: headers truncated or invalid. Never forwarded.
        ParseError = 1,
        /// Forwarded with XDP_REDIRECT.
        Redirect = 2,
        /// IP fragments of VIP datagrams handled: first fragments (which record their
        /// datagram's service and backend in `MAP_FRAGMENTS`) and later ones that followed such
        /// a record.
        Fragment = 3,
        /// ICMP need-frag / ICMPv6 packet-too-big about a VIP flow, forwarded to its backend.
        IcmpTooBig = 4,
        /// Stick table insert failed.
        InsertFailed = 5,
        /// Bare TCP SYNs forwarded by hash without creating an entry.
        SynNoInsert = 6,
        /// Entries not created because this CPU reached its cap of new entries per second (the
        /// packet still went to the backend Maglev picks).
        InsertCapped = 7,
        /// Stick entries found pointing at a backend that no longer serves their service (the
        /// server was removed, its id maybe reused by another service): treated as a miss.
        StickStale = 8,
        /// Passed: a frame to a VIP whose destination MAC is not the interface's own
        /// (broadcast, multicast, another host's unicast, seen through flooding or promiscuous
        /// mode). Not counted in the service's packets: it was not balanced.
        PassNotOurMac = 9,
        /// TCP packets of a client without an entry that prove no handshake and are not a bare
        /// SYN (an RST, a SYN+ACK, a packet without ACK): forwarded by hash, no entry created.
        NoHandshakeNoInsert = 10,
        /// Passed: a later TCP/UDP fragment (no L4 header) with no record of its datagram's
        /// first fragment (it came before the first, the record was evicted, or it is not VIP
        /// traffic at all, such as the LB host's own fragmented traffic).
        FragmentNoRecord = 11,
    }

    impl Counter {
        /// Entries of `MAP_GLOBAL_STATS`.
        pub const COUNT: u32 = 12;
        /// Every counter, in index order.
        pub const ALL: [Counter; Counter::COUNT as usize] = [
            Counter::PassNotVip,
            Counter::ParseError,
            Counter::Redirect,
            Counter::Fragment,
            Counter::IcmpTooBig,
            Counter::InsertFailed,
            Counter::SynNoInsert,
            Counter::InsertCapped,
            Counter::StickStale,
            Counter::PassNotOurMac,
            Counter::NoHandshakeNoInsert,
            Counter::FragmentNoRecord,
        ];

        /// Index in `MAP_GLOBAL_STATS`.
        #[inline(always)]
        pub const fn index(self) -> u32 {
            self as u32
        }

        pub const fn name(self) -> &'static str {
            match self {
                Counter::PassNotVip => "pass_not_vip",
                Counter::ParseError => "parse_error",
                Counter::Redirect => "redirect",
                Counter::Fragment => "fragment",
                Counter::IcmpTooBig => "icmp_too_big",
                Counter::InsertFailed => "insert_failed",
                Counter::SynNoInsert => "syn_no_insert",
                Counter::InsertCapped => "insert_capped",
                Counter::StickStale => "stick_stale",
                Counter::PassNotOurMac => "pass_not_our_mac",
                Counter::NoHandshakeNoInsert => "no_handshake_no_insert",
                Counter::FragmentNoRecord => "fragment_no_record",
            }
        }
    }

    /// The global counters the agent derives from the per-service counters (and `Counter`s);
    /// the data path never writes them. Index: the agent's own array of them.
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Derived {
        /// Every packet the program saw.
        Rx = 0,
        /// Forwarded with XDP_TX.
        Tx = 1,
        /// Dropped: the service has no usable backend.
        NoBackend = 2,
        StickHit = 3,
        StickMiss = 4,
        StickInsert = 5,
        /// An entry found idle longer than its service's expire (replaced).
        StickExpired = 6,
        /// Pinned backend down/maint, client sent elsewhere (redispatch on).
        Redispatch = 7,
        /// Pinned backend down/maint, client kept on it (redispatch off).
        PinnedDown = 8,
    }

    impl Derived {
        pub const COUNT: u32 = 9;

        /// Index in the agent's array of derived counters.
        pub const fn index(self) -> u32 {
            self as u32
        }

        pub const fn name(self) -> &'static str {
            match self {
                Derived::Rx => "rx",
                Derived::Tx => "tx",
                Derived::NoBackend => "no_backend",
                Derived::StickHit => "stick_hit",
                Derived::StickMiss => "stick_miss",
                Derived::StickInsert => "stick_insert",
                Derived::StickExpired => "stick_expired",
                Derived::Redispatch => "redispatch",
                Derived::PinnedDown => "pinned_down",
            }
        }
    }

    /// A global counter as the user sees it: counted by the data path or derived by the agent.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Global {
        Counted(Counter),
        Derived(Derived),
    }

    impl Global {
        /// Its name in `show info` (`Xdp_<name>`) and in metrics (`event="<name>"`).
        pub const fn name(self) -> &'static str {
            match self {
                Global::Counted(c) => c.name(),
                Global::Derived(d) => d.name(),
            }
        }
    }

    impl From<Counter> for Global {
        fn from(c: Counter) -> Self {
            Global::Counted(c)
        }
    }

    impl From<Derived> for Global {
        fn from(d: Derived) -> Self {
            Global::Derived(d)
        }
    }

    /// Every global counter, in the order `show info` and metrics list them.
    pub const SHOWN: [Global; (Counter::COUNT + Derived::COUNT) as usize] = [
        Global::Derived(Derived::Rx),
        Global::Counted(Counter::PassNotVip),
        Global::Counted(Counter::ParseError),
        Global::Derived(Derived::Tx),
        Global::Counted(Counter::Redirect),
        Global::Derived(Derived::NoBackend),
        Global::Derived(Derived::StickHit),
        Global::Derived(Derived::StickMiss),
        Global::Derived(Derived::StickInsert),
        Global::Derived(Derived::StickExpired),
        Global::Derived(Derived::Redispatch),
        Global::Derived(Derived::PinnedDown),
        Global::Counted(Counter::Fragment),
        Global::Counted(Counter::IcmpTooBig),
        Global::Counted(Counter::InsertFailed),
        Global::Counted(Counter::SynNoInsert),
        Global::Counted(Counter::InsertCapped),
        Global::Counted(Counter::StickStale),
        Global::Counted(Counter::PassNotOurMac),
        Global::Counted(Counter::NoHandshakeNoInsert),
        Global::Counted(Counter::FragmentNoRecord),
    ];

    // `Counter::ALL` is in index order, and `SHOWN` names every counter of both kinds once.
    const _: () = {
        let mut i = 0;
        while i < Counter::COUNT as usize {
            assert!(Counter::ALL[i].index() as usize == i);
            i += 1;
        }
        let (mut counted, mut derived) = (0u32, 0u32);
        let mut i = 0;
        while i < SHOWN.len() {
            match SHOWN[i] {
                Global::Counted(c) => counted |= 1 << c.index(),
                Global::Derived(d) => derived |= 1 << d.index(),
            }
            i += 1;
        }
        assert!(counted == (1 << Counter::COUNT) - 1 && derived == (1 << Derived::COUNT) - 1);
    };
}

/// Value of `MAP_SERVICE_STATS` (per-CPU, index: service id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceStats {
    pub packets: u64,
    pub bytes: u64,
    pub stick_hits: u64,
    pub stick_misses: u64,
    pub stick_inserts: u64,
    pub stick_expired: u64,
    pub redispatches: u64,
    pub pinned_down: u64,
    pub no_backend: u64,
}

impl ServiceStats {
    /// Add another CPU's (or service's) counters to these.
    pub fn add(&mut self, o: &ServiceStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.stick_hits += o.stick_hits;
        self.stick_misses += o.stick_misses;
        self.stick_inserts += o.stick_inserts;
        self.stick_expired += o.stick_expired;
        self.redispatches += o.redispatches;
        self.pinned_down += o.pinned_down;
        self.no_backend += o.no_backend;
    }
}

/// Value of `MAP_BACKEND_STATS` (per-CPU, index: backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
}

// Compile-time layout checks: a change here is a change of the pinned maps' format.
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);
const _: () = assert!(core::mem::size_of::<VipSlot>() == 28);
const _: () = assert!(core::mem::size_of::<Service>() == 40);
const _: () = assert!(core::mem::size_of::<Backend>() == 20);
const _: () = assert!(core::mem::size_of::<StickKey>() == 24);
const _: () = assert!(core::mem::size_of::<StickEntry>() == 16);
const _: () = assert!(core::mem::size_of::<ServiceStats>() == 72);
const _: () = assert!(core::mem::size_of::<BackendStats>() == 16);
const _: () = assert!(core::mem::size_of::<NameSlot>() == 64);
const _: () = assert!(core::mem::size_of::<RateWindow>() == 16);
const _: () = assert!(core::mem::size_of::<OwnMac>() == 8);
const _: () = assert!(core::mem::size_of::<FloorTarget>() == 16);
const _: () = assert!(core::mem::size_of::<FragmentKey>() == 40);
const _: () = assert!(core::mem::size_of::<FragmentRecord>() == 8);

#[cfg(feature = "user")]
mod user {
    use super::*;
    macro_rules! pod {
        ($($t:ty),*) => {$(
            // SAFETY: #[repr(C)], only integer fields, explicit padding: any bit pattern is valid.
            unsafe impl aya::Pod for $t {}
            unsafe impl bytemuck::Zeroable for $t {}
            unsafe impl bytemuck::Pod for $t {}
        )*};
    }
    pod!(
        VipKey,
        VipSlot,
        Service,
        Backend,
        StickKey,
        StickEntry,
        ServiceStats,
        BackendStats,
        NameSlot,
        RateWindow,
        OwnMac,
        FloorTarget,
        FragmentKey,
        FragmentRecord
    );
}
