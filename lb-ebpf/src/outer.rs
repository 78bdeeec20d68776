//! The outer headers of an encapsulated frame (the wire format `encap`'s module doc describes),
//! written in front of the inner packet once the FIB has answered: Ethernet, IPv4 or IPv6, and
//! for GUE the UDP and GUE headers; 16 bits at a time (`put_word`).

use aya_ebpf::programs::XdpContext;
use lb_common::{Encap, PROTO_UDP, flow_label, gue_source_port};

use crate::{checksum, encap::NextHop, headers::*};

/// TTL / hop limit of the outer header.
const OUTER_TTL: u8 = 64;

/// What the outer headers hold, once the FIB has answered.
pub struct Outer<'a> {
    /// The next hop: the MACs.
    pub hop: &'a NextHop,
    /// The backend's `Encap`: the addresses.
    pub e: &'a Encap,
    /// The outer source's last word (`encap_source_word`).
    pub src_word: u32,
    pub inner_len: usize,
    pub tos: u8,
    pub hash: u32,
    pub inner_proto: u8,
}

impl Outer<'_> {
    /// Writes Ethernet, the outer IP header and (`gue`) UDP and GUE into the first `N` bytes
    /// of the frame, 16 bits at a time (`put_word`). False when the frame has no `N` bytes.
    #[inline(always)]
    pub fn write<const N: usize>(&self, ctx: &XdpContext, v6: bool, gue: bool) -> bool {
        let start = ctx.data();
        if start + N > ctx.data_end() {
            return false;
        }
        // SAFETY: N bytes bounds-checked above.
        let f = unsafe { &mut *(start as *mut [u8; N]) };
        copy_words(f, 0, &self.hop.dmac);
        copy_words(f, MAC_LEN, &self.hop.smac);
        let ether_type = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
        put_word(f, ETH_TYPE_AT, ether_type.to_be_bytes());
        let ip_len = if v6 { IPV6_HLEN } else { IPV4_HLEN };
        let payload = N - ETH_HLEN - ip_len + self.inner_len;
        let next = if gue { PROTO_UDP } else { self.inner_proto };
        if v6 {
            self.ipv6(f, payload, next);
        } else {
            self.ipv4(f, payload, next);
        }
        if gue {
            let u = ETH_HLEN + ip_len;
            put_word(f, u, gue_source_port(self.hash).to_be_bytes());
            put_word(f, u + 2, self.e.gue_port.to_ne_bytes());
            put_word(
                f,
                u + 4,
                ((UDP_HLEN + GUE_HLEN + self.inner_len) as u16).to_be_bytes(),
            );
            put_word(f, u + 6, [0, 0]);
            let g = u + UDP_HLEN;
            put_word(f, g, [0, self.inner_proto]); // version 0, C 0, Hlen 0; the protocol
            put_word(f, g + 2, [0, 0]);
        }
        true
    }

    #[inline(always)]
    fn ipv4<const N: usize>(&self, f: &mut [u8; N], payload: usize, next: u8) {
        const FIRST: u8 = (IPV4_VERSION << IP_VERSION_SHIFT) | IPV4_IHL_MIN_WORDS;
        let h = ETH_HLEN;
        let tot_len = (IPV4_HLEN + payload) as u16;
        let src = self.src_word.to_be_bytes();
        let d = &self.e.dst;
        put_word(f, h, [FIRST, self.tos]);
        put_word(f, h + IPV4_TOT_LEN_AT, tot_len.to_be_bytes());
        put_word(f, h + 4, [0, 0]); // identification
        put_word(f, h + 6, IPV4_DONT_FRAGMENT.to_be_bytes());
        put_word(f, h + 8, [OUTER_TTL, next]);
        put_word(f, h + IPV4_SRC_AT, [src[0], src[1]]);
        put_word(f, h + IPV4_SRC_AT + 2, [src[2], src[3]]);
        copy_words(f, h + IPV4_DST_AT, &[d[0], d[1], d[2], d[3]]);
        // The header checksum from the values just written (not read back from the frame):
        // its words, identification and checksum 0.
        let be = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]) as u32;
        let sum = be(FIRST, self.tos)
            + tot_len as u32
            + IPV4_DONT_FRAGMENT as u32
            + be(OUTER_TTL, next)
            + (self.src_word >> 16)
            + (self.src_word & 0xffff)
            + be(d[0], d[1])
            + be(d[2], d[3]);
        put_word(f, h + IPV4_CSUM_AT, checksum::finish(sum).to_be_bytes());
    }

    #[inline(always)]
    fn ipv6<const N: usize>(&self, f: &mut [u8; N], payload: usize, next: u8) {
        let h = ETH_HLEN;
        let label = flow_label(self.hash);
        let first = (IPV6_VERSION << IP_VERSION_SHIFT) | (self.tos >> 4);
        put_word(f, h, [first, (self.tos << 4) | (label >> 16) as u8]);
        put_word(f, h + 2, (label as u16).to_be_bytes());
        put_word(f, h + IPV6_PAYLOAD_LEN_AT, (payload as u16).to_be_bytes());
        put_word(f, h + 6, [next, OUTER_TTL]);
        let (s, src) = (&self.e.src, self.src_word.to_be_bytes());
        copy_words(
            f,
            h + IPV6_SRC_AT,
            &[
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11],
            ],
        );
        copy_words(f, h + IPV6_SRC_AT + 12, &src);
        copy_words(f, h + IPV6_SRC_AT + IPV6_ADDR_LEN, &self.e.dst);
    }
}

/// Writes the two bytes `b` at `at` (even) as one 16-bit store. Aligned: every field the outer
/// headers hold starts at an even offset, and the frame at an even address (the kernel's
/// headroom is even, as `parse` assumes, and `to_backend` moves the start by an even amount).
/// An `at` past the frame writes nothing (`N` is the frame's checked length).
#[inline(always)]
fn put_word<const N: usize>(f: &mut [u8; N], at: usize, b: [u8; 2]) {
    if at % 2 == 0 && at + 2 <= N {
        // SAFETY: `at..at + 2` is within `f` (checked above, a constant once inlined); the
        // address is even, as said above.
        unsafe { (f.as_mut_ptr().add(at) as *mut u16).write(u16::from_ne_bytes(b)) };
    }
}

/// Copies `src` (an even number of bytes) to `at` (even), 16 bits at a time.
#[inline(always)]
fn copy_words<const N: usize, const M: usize>(f: &mut [u8; N], at: usize, src: &[u8; M]) {
    let mut i = 0;
    while i + 1 < M {
        put_word(f, at + i, [src[i], src[i + 1]]);
        i += 2;
    }
}

/// Writes `v` big-endian at `at`.
#[inline(always)]
pub fn put16<const N: usize>(f: &mut [u8; N], at: usize, v: u16) {
    let b = v.to_be_bytes();
    f[at] = b[0];
    f[at + 1] = b[1];
}
