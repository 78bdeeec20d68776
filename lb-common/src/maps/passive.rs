//! Passive health signals (`MAP_SYNS`, `MAP_PASSIVE_STATS`): what the client's side of a TCP
//! handshake proves about a backend. In DSR the balancer sees only the client's packets, and two
//! of them say something: a SYN sent again (same 4-tuple, same initial sequence number) means
//! the backend did not answer the first; the handshake's first ACK (sequence number ISN + 1)
//! means it did. The data path counts both per backend; the agent compares a backend with its
//! service's other backends (`health::passive`).

/// Slots of `MAP_SYNS`: TCP SYNs whose handshake has not been seen to finish. A record matters
/// from a SYN to its first ACK (a round trip) or to its retransmission (1 s, then 3 s, 7 s... on
/// Linux); the LRU drops the oldest, so a SYN flood only makes the signals rarer, never false.
pub const SYN_RECORDS: u32 = 32_768;

/// A SYN seen again with the same 4-tuple and ISN within this time of the record's last SYN is
/// a retransmission (nanoseconds); later, it counts as a new attempt.
pub const SYN_RETRANSMIT_WINDOW_NS: u64 = 5_000_000_000;

/// `StickEntry::syn_at` keeps the coarse clock shifted right by this many bits: units of
/// 2^20 ns, about 1 ms, so that 32 bits last 52 days (a wrap costs one needless lookup).
pub const SYN_AT_SHIFT: u32 = 20;

/// A stick hit looks for its flow's SYN record only this many `syn_at` units (about 1 s) after
/// its client's last SYN: a handshake's first ACK follows its SYN by a round trip, and every
/// other packet of an established client skips the lookup.
pub const SYN_HINT_TICKS: u32 = 1024;

/// Key of `MAP_SYNS`: one TCP connection attempt, from the client's side. The service id and
/// destination port stand for the VIP (one address per service; port 0 services take any port).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SynKey {
    /// Client address (IPv4 in the first 4 bytes, as everywhere in these maps).
    pub src: [u8; 16],
    /// Client and VIP ports, network order.
    pub sport: u16,
    pub dport: u16,
    pub service: u16,
    pub family: u8,
    /// Padding as a scalar (see `StickKey`).
    pub _pad: u8,
}
map_type!(SynKey, 24);

impl SynKey {
    pub const fn new(src: [u8; 16], sport: u16, dport: u16, service: u16, family: u8) -> Self {
        SynKey {
            src,
            sport,
            dport,
            service,
            family,
            _pad: 0,
        }
    }
}

/// Value of `MAP_SYNS`: the attempt's last SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynRecord {
    /// Coarse clock when its SYN was last seen (first sent or retransmitted).
    pub seen_ns: u64,
    /// The SYN's sequence number (the client's ISN), as it sits in the packet (network order).
    pub isn: u32,
    /// The backend the SYN went to.
    pub backend: u32,
}
map_type!(SynRecord, 16);

/// Value of `MAP_PASSIVE_STATS` (per CPU, index: backend id): the handshake signals of the
/// backend's TCP traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PassiveStats {
    /// SYNs of new connection attempts sent to the backend (a new 4-tuple, or a new ISN on one).
    pub syn_sent: u64,
    /// SYNs sent again: the same 4-tuple and ISN within `SYN_RETRANSMIT_WINDOW_NS` of the last.
    pub syn_retransmits: u64,
    /// Handshakes finished: the first ACK (sequence number ISN + 1) of an attempt recorded here.
    pub handshakes: u64,
}
map_type!(PassiveStats, 24);

impl PassiveStats {
    /// Add another CPU's counters to these.
    pub fn add(&mut self, o: &PassiveStats) {
        self.syn_sent += o.syn_sent;
        self.syn_retransmits += o.syn_retransmits;
        self.handshakes += o.handshakes;
    }
}
