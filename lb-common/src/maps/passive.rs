//! Passive health signals (`MAP_SYNS`, `MAP_PASSIVE_STATS`): what the client's side of a TCP
//! handshake proves about a backend. In DSR the balancer sees only the client's packets, and two
//! of them say something: a SYN sent again (same 4-tuple, same initial sequence number) means
//! the backend did not answer the first; the handshake's first ACK (sequence number ISN + 1)
//! means it did. The data path counts both per backend; the agent compares a backend with its
//! service's other backends (`health::passive`).

/// `MAP_SYNS` has 2^this slots: TCP SYNs whose handshake has not been seen to finish. A record
/// matters from a SYN to its first ACK (a round trip) or to its retransmission (1 s, then 3 s,
/// 7 s... on Linux). A record sits in the slot its key hashes to (`SynKey::slot`) and a new
/// attempt takes its slot from whatever held it, so a SYN flood only makes the signals rarer.
pub const SYN_SLOTS_BITS: u32 = 16;
/// Slots of `MAP_SYNS` (65,536; 2.5 MiB).
pub const SYN_SLOTS: u32 = 1 << SYN_SLOTS_BITS;

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

/// One TCP connection attempt, from the client's side (the key of a `MAP_SYNS` record). The
/// service id and destination port stand for the VIP (one address per service; port 0
/// services take any port). 8-aligned with no padding, so that it is compared and hashed as
/// three words.
#[repr(C, align(8))]
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

    /// The key as three words (no `memcmp` in the data path).
    #[inline(always)]
    pub fn words(&self) -> [u64; 3] {
        // SAFETY: `SynKey` is 24 bytes (checked above), 8-aligned, with every byte a field
        // (no padding), so it reads as three initialised words.
        unsafe { *(self as *const SynKey as *const [u64; 3]) }
    }

    /// Whether `self` and `other` are the same attempt.
    #[inline(always)]
    pub fn same(&self, other: &SynKey) -> bool {
        let (a, b) = (self.words(), other.words());
        a[0] == b[0] && a[1] == b[1] && a[2] == b[2]
    }

    /// The `MAP_SYNS` slot of this attempt, below `SYN_SLOTS` (a multiplicative hash of its
    /// words; not the flow hash, which is keyed on the source only).
    #[inline(always)]
    pub fn slot(&self) -> u32 {
        let [a, b, c] = self.words();
        let x = a ^ b.rotate_left(21) ^ c.rotate_left(42);
        (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SYN_SLOTS_BITS)) as u32
    }
}

/// What a `MAP_SYNS` record keeps of an attempt's last SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynRecord {
    /// Coarse clock when its SYN was last seen (first sent or retransmitted); 0: an empty slot.
    pub seen_ns: u64,
    /// The SYN's sequence number (the client's ISN), as it sits in the packet (network order).
    pub isn: u32,
    /// The backend the SYN went to.
    pub backend: u32,
}
map_type!(SynRecord, 16);

/// Value of `MAP_SYNS` (index: `SynKey::slot`): the attempt that holds the slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynSlot {
    pub record: SynRecord,
    pub key: SynKey,
}
map_type!(SynSlot, 40);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_an_attempt_tells_it_apart_and_its_slot_is_in_range() {
        let k = SynKey::new([10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1, 2, 3, 4);
        let others = [
            SynKey {
                src: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ..k
            },
            SynKey {
                src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
                ..k
            },
            SynKey { sport: 9, ..k },
            SynKey { dport: 9, ..k },
            SynKey { service: 9, ..k },
            SynKey { family: 9, ..k },
        ];
        assert!(k.same(&{ k }));
        for o in &others {
            assert!(!k.same(o) && !o.same(&k), "{o:?}");
            assert!(o.slot() < SYN_SLOTS);
        }
        // Consecutive ports of one client spread over the slots.
        let mut slots = [0u32; 1000];
        for (p, s) in slots.iter_mut().enumerate() {
            *s = SynKey { sport: p as u16, ..k }.slot();
        }
        slots.sort_unstable();
        let distinct = 1 + slots.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(distinct > 950, "{distinct} distinct slots of 1000");
    }
}
