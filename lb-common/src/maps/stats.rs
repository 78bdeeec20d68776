//! The global, per-service and per-backend counters: `MAP_GLOBAL_STATS` (index enum
//! `gstat::Counter`), `MAP_SERVICE_STATS` and `MAP_BACKEND_STATS`. All per CPU, written by the
//! data path, summed by the agent.

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
        /// New stick entries not reported to the agent through `MAP_INSERTS` because the ring
        /// was full (the agent fell behind). Safe: the next sweep replicates them as before.
        InsertRingFull = 12,
        /// Passed: a frame for an encapsulating backend whose outer destination the kernel's
        /// FIB could not resolve (no route, no neighbour entry for the next hop, forwarding off
        /// on the interface, an ICMP error that would itself be too big). The frame is passed
        /// untouched.
        EncapFibMiss = 13,
        /// A frame that would exceed the egress MTU once encapsulated: answered with ICMP
        /// "fragmentation needed" / ICMPv6 "packet too big" to the client (sent by `XDP_TX`).
        EncapTooBig = 14,
        /// Passed: the driver left no headroom for the outer headers (`bpf_xdp_adjust_head`
        /// failed). The frame is passed untouched.
        EncapNoHeadroom = 15,
        /// Passed: a frame for an encapsulating backend whose tail call into the encapsulation
        /// stage (`PROG_ENCAP` in `MAP_ENCAP_STAGE`) failed: the stage is not loaded there (an
        /// agent that has not filled the map yet). The frame is passed untouched.
        EncapStageMissing = 16,
    }

    impl Counter {
        /// Entries of `MAP_GLOBAL_STATS`.
        pub const COUNT: u32 = 17;
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
            Counter::InsertRingFull,
            Counter::EncapFibMiss,
            Counter::EncapTooBig,
            Counter::EncapNoHeadroom,
            Counter::EncapStageMissing,
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
                Counter::InsertRingFull => "insert_ring_full",
                Counter::EncapFibMiss => "encap_fib_miss",
                Counter::EncapTooBig => "encap_too_big",
                Counter::EncapNoHeadroom => "encap_no_headroom",
                Counter::EncapStageMissing => "encap_stage_missing",
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
        /// Sent with XDP_TX: forwarded out of the receiving interface, or an ICMP "too big"
        /// answered to a client (`Counter::EncapTooBig`).
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
        Global::Counted(Counter::InsertRingFull),
        Global::Counted(Counter::EncapFibMiss),
        Global::Counted(Counter::EncapTooBig),
        Global::Counted(Counter::EncapNoHeadroom),
        Global::Counted(Counter::EncapStageMissing),
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
map_type!(ServiceStats, 72);

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
map_type!(BackendStats, 16);
