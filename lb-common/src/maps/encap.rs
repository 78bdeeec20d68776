//! Encapsulation to backends on other networks (`MAP_ENCAP`): how a backend whose
//! `Backend::forward` is `FORWARD_IPIP` or `FORWARD_GUE` is reached, and the flow's entropy
//! hash that spreads its flows over the backend's receive queues. The wire format itself is
//! documented where the data path writes it (`lb-ebpf/src/encap.rs`).

/// `Backend::forward`: L2 direct server return (the backend is on a connected segment; only
/// the MACs are rewritten). 0, so a backend written by an xlb without encapsulation is L2.
pub const FORWARD_L2: u8 = 0;
/// IP in IP: IPv4 in IPv4 (protocol 4), IPv6 in IPv6 (next header 41).
pub const FORWARD_IPIP: u8 = 1;
/// The same inside UDP with a GUE header (version 0), to the backend's `gue_port`.
pub const FORWARD_GUE: u8 = 2;

/// Value of `MAP_ENCAP` (index: backend id): the outer header's addresses and the GUE port of
/// a backend that is reached by encapsulation. Read only for backends whose `forward` is not
/// `FORWARD_L2`. Addresses as `MAP_BACKENDS` keeps them: IPv4 in the first 4 bytes. Aligned to
/// 8 (as the kernel keeps map values), so the data path compares it as five 8-byte words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Encap {
    /// Outer destination: the server's address.
    pub dst: [u8; 16],
    /// Outer source: the balancer's `encap_source` address, or the base of its prefix.
    pub src: [u8; 16],
    /// Host order: the bits of the outer source's last 32-bit word (the whole IPv4 address,
    /// bytes 12..16 of an IPv6 one) taken from the flow's entropy hash instead of `src`; 0 = the
    /// source is `src` itself. From `encap_source = "prefix/len"`: the host bits, at most 32.
    pub src_hash_mask: u32,
    /// Network order: the backend's GUE (UDP) port; 0 for IPIP.
    pub gue_port: u16,
    pub _pad: u16,
}
map_type!(Encap, 40);

/// The encapsulation stage: program `PROG_ENCAP`, a program of its own that the main program
/// `PROG_XLB` reaches by a tail call, so the L2 path carries none of its code or stack. It is
/// the only entry of `MAP_ENCAP_STAGE`, at `ENCAP_STAGE_SLOT`.
pub const PROG_ENCAP: &str = "xlb_encap";
/// Index of `PROG_ENCAP` in `MAP_ENCAP_STAGE`.
pub const ENCAP_STAGE_SLOT: u32 = 0;

/// Value of `MAP_ENCAP_HANDOFF` (per CPU, index 0): what the main program hands the
/// encapsulation stage with a packet, written just before the tail call, read by the stage
/// first thing. Only what the main program has in hand there (its one stack frame has no room
/// to keep the flow's fields until then): the stage reads the rest from the frame, which
/// nothing changed in between.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EncapHandoff {
    /// The backend chosen (index of `MAP_BACKENDS`, `MAP_ENCAP`).
    pub backend: u32,
    /// The backend's `Backend::forward`: `FORWARD_IPIP` or `FORWARD_GUE`.
    pub forward: u8,
    pub _pad: [u8; 3],
    /// The coarse clock (`bpf_ktime_get_coarse_ns`) as the main program's stick lookup read
    /// it for this packet, so the stage's next-hop cache need not read it again; 0 when the
    /// packet took no stick lookup (the stage reads the clock itself).
    pub now: u64,
}
map_type!(EncapHandoff, 16);

/// The flow's entropy hash: the client address (folded to a word) and source port, mixed. The
/// outer source address (with a prefix `encap_source`), the GUE UDP source port and the IPv6
/// flow label carry it, so a backend's NIC spreads the balancer's flows over its queues (RSS)
/// while every packet of one connection takes the same queue.
#[inline(always)]
pub fn encap_entropy(client: &[u8; 16], sport_be: u16) -> u32 {
    let a = crate::hash::words_of(client);
    encap_entropy_of(a[0] ^ a[1] ^ a[2] ^ a[3], sport_be)
}

/// `encap_entropy` of a client address already folded to one word (the XOR of its four native
/// words; an IPv4 address is its one word).
///
/// Two 64-bit multiplies by an odd constant (2^64 / the golden ratio), the high half of the
/// first XORed into its low half in between, the result the high half of the second: every
/// bit of the 48-bit key (address word, port) reaches every bit of the result. The
/// encapsulation stage computes it for every packet; the flow hash's MurmurHash3 rounds would
/// cost it about 40 BPF instructions more, and spreading flows over receive queues needs no
/// more than this. Unkeyed, like the flow hash: not meant to resist sources chosen to collide.
#[inline(always)]
pub fn encap_entropy_of(folded: u32, sport_be: u16) -> u32 {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let x = ((folded as u64) << 16 | sport_be as u64).wrapping_mul(GOLDEN);
    ((x ^ x >> 32).wrapping_mul(GOLDEN) >> 32) as u32
}

/// The outer source for a flow of entropy `hash`: `src` with its `src_hash_mask` bits (of the
/// last word of the family's address) replaced by the hash's.
#[inline(always)]
pub fn encap_source(e: &Encap, hash: u32, v6: bool) -> [u8; 16] {
    let mut a = e.src;
    let at = if v6 { 12 } else { 0 };
    let w = encap_source_word(e, hash, v6).to_be_bytes();
    a[at] = w[0];
    a[at + 1] = w[1];
    a[at + 2] = w[2];
    a[at + 3] = w[3];
    a
}

/// The last word of `encap_source` (host order): the whole IPv4 address, bytes 12..16 of an
/// IPv6 one; the bytes before it are `e.src`'s.
#[inline(always)]
pub fn encap_source_word(e: &Encap, hash: u32, v6: bool) -> u32 {
    let a = &e.src;
    let at = if v6 { 12 } else { 0 };
    let base = u32::from_be_bytes([a[at], a[at + 1], a[at + 2], a[at + 3]]);
    (base & !e.src_hash_mask) | (hash & e.src_hash_mask)
}

/// The GUE UDP source port for entropy `hash` (host order): in the dynamic range 49152..=65535,
/// as RFC 7510 asks of such ports.
#[inline(always)]
pub const fn gue_source_port(hash: u32) -> u16 {
    0xc000 | (hash & 0x3fff) as u16
}

/// The outer IPv6 flow label for entropy `hash`: its low 20 bits.
#[inline(always)]
pub const fn flow_label(hash: u32) -> u32 {
    hash & 0x000f_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bits the outer headers carry (`gue_source_port`: the low 14) spread the flows of
    /// one client's consecutive ports, and of one port from consecutive clients, evenly.
    #[test]
    fn the_entropy_hash_spreads_ports_and_clients_over_the_low_bits() {
        const BUCKETS: usize = 16;
        const FLOWS: u32 = 16_000;
        let spread = |hash: &dyn Fn(u32) -> u32| {
            let mut count = [0u32; BUCKETS];
            let mut ports = [false; 1 << 14];
            for i in 0..FLOWS {
                let h = hash(i);
                count[h as usize % BUCKETS] += 1;
                ports[(gue_source_port(h) & 0x3fff) as usize] = true;
            }
            let mean = FLOWS / BUCKETS as u32;
            let (lo, hi) = (count.iter().min().unwrap(), count.iter().max().unwrap());
            assert!(*lo > mean * 9 / 10 && *hi < mean * 11 / 10, "{count:?}");
            // 16,000 keys into 16,384 ports at random fill about 62 % of them.
            let used = ports.iter().filter(|&&p| p).count();
            assert!(used > 9_000, "{used} of 16384 ports");
        };
        let client = u32::from_ne_bytes([10, 1, 2, 3]);
        spread(&|i| encap_entropy_of(client, (i as u16).to_be()));
        spread(&|i| {
            encap_entropy_of(
                u32::from_ne_bytes([10, 1, (i >> 8) as u8, i as u8]),
                443u16.to_be(),
            )
        });
        let v6 = |i: u32| {
            let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            a[14] = (i >> 8) as u8;
            a[15] = i as u8;
            a
        };
        spread(&|i| encap_entropy(&v6(i), 443u16.to_be()));
    }
}
