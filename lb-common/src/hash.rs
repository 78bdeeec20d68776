//! The flow hash: murmur3's 32-bit mix over whole words, with a fixed seed.
//!
//! One function for both sides. Its input is a fixed-size array of words, so the eBPF build
//! unrolls it (no loop the verifier must bound), and userspace can say which Maglev slot a
//! client lands in. The seed is fixed: two balancers with one config agree slot for slot.

/// Fixed seed: changing it moves every client that has no stick entry.
pub const FLOW_HASH_SEED: u32 = 0x9e37_79b9;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix(h: u32, w: u32) -> u32 {
    let k = w.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// murmur3_32 over `N` words (the words are taken as they are in memory order).
#[inline(always)]
pub fn hash_words<const N: usize>(words: &[u32; N]) -> u32 {
    let mut h = FLOW_HASH_SEED;
    let mut i = 0;
    while i < N {
        h = mix(h, words[i]);
        i += 1;
    }
    fmix(h ^ (N as u32 * 4))
}

/// The hash of an affinity key: the (masked) client address as four words, the source port
/// (0 unless the service sticks on `src-port`) and the family. IPv4 addresses occupy the first
/// word, the rest zero.
#[inline(always)]
pub fn affinity_hash(addr: &[u8; 16], port_be: u16, family: u8) -> u32 {
    affinity_hash_of(words_of(addr), port_be, family)
}

/// [`affinity_hash`] of an address given as its [`words_of`] (what the data path keeps).
#[inline(always)]
pub fn affinity_hash_of(a: [u32; 4], port_be: u16, family: u8) -> u32 {
    hash_words(&[a[0], a[1], a[2], a[3], ((port_be as u32) << 8) | family as u32])
}

/// The hash of a 5-tuple for services with `stick.on = "none"`.
#[inline(always)]
pub fn five_tuple_hash(src: &[u8; 16], dst: &[u8; 16], sport_be: u16, dport_be: u16, proto: u8) -> u32 {
    five_tuple_hash_of(words_of(src), words_of(dst), sport_be, dport_be, proto)
}

/// [`five_tuple_hash`] of addresses given as their [`words_of`].
#[inline(always)]
pub fn five_tuple_hash_of(s: [u32; 4], d: [u32; 4], sport_be: u16, dport_be: u16, proto: u8) -> u32 {
    hash_words(&[
        s[0],
        s[1],
        s[2],
        s[3],
        d[0],
        d[1],
        d[2],
        d[3],
        ((sport_be as u32) << 16) | dport_be as u32,
        proto as u32,
    ])
}

/// The 16 bytes of an address given as its [`words_of`].
#[inline(always)]
pub fn bytes_of(w: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        w[0].to_ne_bytes(),
        w[1].to_ne_bytes(),
        w[2].to_ne_bytes(),
        w[3].to_ne_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3],
    ]
}

/// Native-endian words of a 16-byte address (the same bytes give the same words on both sides:
/// the data path and the agent both run little-endian here).
#[inline(always)]
pub fn words_of(addr: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ]
}

/// A stable 32-bit hash of a byte string (FNV-1a then the murmur finaliser), for Maglev's
/// per-server permutation. Never `std`'s hasher: that one is seeded randomly per process.
pub fn name_hash(bytes: &[u8], seed: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5 ^ seed;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    fmix(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data path hashes addresses it keeps as words (`*_of`); the agent, the same
    /// addresses as bytes: both must agree, or the agent's view of where a client goes would
    /// differ from the data path's.
    #[test]
    fn the_word_forms_agree_with_the_byte_forms() {
        let a = [0xfd, 0x77, 0, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0xfe];
        let b = [10, 77, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(bytes_of(words_of(&a)), a);
        assert_eq!(words_of(&b), [u32::from_ne_bytes([10, 77, 0, 3]), 0, 0, 0]);
        assert_eq!(
            affinity_hash_of(words_of(&a), 0x5000, 6),
            affinity_hash(&a, 0x5000, 6)
        );
        assert_eq!(
            five_tuple_hash_of(words_of(&b), words_of(&a), 1, 2, 6),
            five_tuple_hash(&b, &a, 1, 2, 6)
        );
        assert_eq!(
            crate::vip_words_of(words_of(&a), 80, 6, 6),
            crate::vip_words(&a, 80, 6, 6)
        );
    }

    /// Golden values: a change here moves every unpinned client of every deployment. Computed
    /// once from this implementation and checked against an independent murmur3_x86_32 (over
    /// the words' little-endian bytes, seed `FLOW_HASH_SEED`); the data path's use of the same
    /// function is checked by the fixture test `data_path_picks_the_maglev_slot_of_the_flow_hash`.
    #[test]
    fn hash_is_stable_across_builds() {
        assert_eq!(hash_words(&[0u32; 1]), 0xb465_8096);
        let c = [10, 77, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(affinity_hash(&c, 0, 4), 0x6fd7_060d);
        assert_eq!(
            affinity_hash(&[10, 77, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, 4),
            0x3325_63bf
        );
        assert_eq!(affinity_hash(&c, 8080u16.to_be(), 4), 0x97dc_1a25);
        let v6 = [0xfd, 0x77, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(affinity_hash(&v6, 0, 6), 0xc052_afb2);
        let vip = [10, 77, 200, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            five_tuple_hash(&c, &vip, 40000u16.to_be(), 80u16.to_be(), 6),
            0x70fe_72ae
        );
        assert_eq!(name_hash(b"app1", 0), 0x6e02_59e4);
        assert_eq!(name_hash(b"app1", 1), 0x171d_c476);
    }

    #[test]
    fn family_and_port_change_the_hash() {
        let addr = [1u8; 16];
        assert_ne!(affinity_hash(&addr, 0, 4), affinity_hash(&addr, 0, 6));
        assert_ne!(affinity_hash(&addr, 80, 4), affinity_hash(&addr, 81, 4));
    }
}
