//! The outer headers of an encapsulated frame (the wire format `encap`'s module doc describes):
//! Ethernet, IPv4 or IPv6, and for GUE the UDP and GUE headers. Built once per backend and
//! next hop (`Head::build`, when the FIB has answered; kept in the next-hop cache), then copied
//! in front of every packet with the packet's own fields filled in (`Head::write`): the
//! lengths, the TOS / traffic class, the IPv6 flow label, the outer source's hashed bits, the
//! IPv4 header checksum and GUE's UDP source port. The built headers go into the frame 8 bytes
//! at a time (`copy_head`), the packet's fields over them 16 bits at a time (`put_word`): loads
//! and stores of any alignment, one instruction each (see `lb-userspace/build.rs`).

use aya_ebpf::programs::XdpContext;
use lb_common::{Encap, PROTO_UDP, encap_source_word, flow_label, gue_source_port};

use crate::{checksum, headers::*};

/// TTL / hop limit of the outer header.
const OUTER_TTL: u8 = 64;
/// The longest outer headers: Ethernet, IPv6, UDP, GUE (66 bytes).
pub const HEAD_LEN: usize = ETH_HLEN + IPV6_HLEN + UDP_HLEN + GUE_HLEN;
const IPV4_FIRST: u8 = (IPV4_VERSION << IP_VERSION_SHIFT) | IPV4_IHL_MIN_WORDS;
/// Where the outer IP header starts.
const IP: usize = ETH_HLEN;
/// The outer source's last 32-bit word (all of an IPv4 address), where its hashed bits are.
const V4_SRC_WORD: usize = IP + IPV4_SRC_AT;
const V6_SRC_WORD: usize = IP + IPV6_SRC_AT + IPV6_ADDR_LEN - WORD_LEN;
/// Where UDP starts (GUE only).
const V4_UDP: usize = IP + IPV4_HLEN;
const V6_UDP: usize = IP + IPV6_HLEN;
const UDP_LEN_AT: usize = 4;

/// One backend's outer headers as every packet to it starts, for the next hop the FIB gave
/// (`encap::NextHop::head`, per CPU).
#[repr(C)]
pub struct Head {
    /// The frame's first bytes (`HEAD_LEN`, of which the mode and family use the first
    /// `ETH_HLEN + IP header [+ UDP_HLEN + GUE_HLEN]`) as they go on the wire, 16 bits a word
    /// (each word's bytes in memory are the wire's). The fields `write` fills in per packet are
    /// 0 here, but for the outer source's last word: there its bits that are not hashed.
    words: [u16; HEAD_LEN / 2],
    _pad: u16,
    /// IPv4: the sum (RFC 1071, not folded) of the IP header's words as above, to which `write`
    /// adds the fields it fills in.
    sum: u32,
    /// The outer source's last word (host order) with its hashed bits 0 (`encap_source_word`).
    src_base: u32,
    /// Its hashed bits (`Encap::src_hash_mask`).
    src_mask: u32,
}

/// What `Head::write` fills in: the inner packet's length and TOS / traffic class, the flow's
/// entropy hash.
pub struct Packet {
    pub inner_len: usize,
    pub tos: u8,
    pub hash: u32,
}

impl Head {
    /// Builds the headers to `e`'s server through the next hop with MACs `dmac` (its) and `smac`
    /// (the egress interface's), for an IPv6 (`v6`) or IPv4 inner packet, in GUE (`gue`) or IP
    /// in IP. The slow path: once per backend and next-hop lookup.
    #[inline(always)]
    pub fn build(&mut self, e: &Encap, dmac: &[u8; MAC_LEN], smac: &[u8; MAC_LEN], v6: bool, gue: bool) {
        let inner_proto = if v6 { PROTO_IPV6 } else { PROTO_IPIP };
        let next = if gue { PROTO_UDP } else { inner_proto };
        self.src_base = encap_source_word(e, 0, v6);
        self.src_mask = e.src_hash_mask;
        let src = self.src_base.to_be_bytes();
        self.set_bytes(0, dmac);
        self.set_bytes(MAC_LEN, smac);
        let ether_type = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
        self.set(ETH_TYPE_AT, ether_type.to_be_bytes());
        if v6 {
            self.set(IP, [0, 0]);
            self.set(IP + 2, [0, 0]);
            self.set(IP + IPV6_PAYLOAD_LEN_AT, [0, 0]);
            self.set(IP + IPV6_NEXT_HDR_AT, [next, OUTER_TTL]);
            let s = &e.src;
            self.set_bytes(
                IP + IPV6_SRC_AT,
                &[
                    s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11],
                ],
            );
            self.set_bytes(V6_SRC_WORD, &src);
            self.set_bytes(IP + IPV6_SRC_AT + IPV6_ADDR_LEN, &e.dst);
        } else {
            let d = &e.dst;
            self.set(IP, [IPV4_FIRST, 0]);
            self.set(IP + IPV4_TOT_LEN_AT, [0, 0]);
            self.set(IP + 4, [0, 0]); // identification
            self.set(IP + 6, IPV4_DONT_FRAGMENT.to_be_bytes());
            self.set(IP + 8, [OUTER_TTL, next]);
            self.set(IP + IPV4_CSUM_AT, [0, 0]);
            self.set_bytes(V4_SRC_WORD, &src);
            self.set_bytes(IP + IPV4_DST_AT, &[d[0], d[1], d[2], d[3]]);
            let mut sum = 0;
            let mut at = IP;
            while at < IP + IPV4_HLEN {
                sum += u16::from_be_bytes(self.get(at)) as u32;
                at += 2;
            }
            self.sum = sum;
        }
        if gue {
            let udp = if v6 { V6_UDP } else { V4_UDP };
            self.set(udp, [0, 0]); // source port: per packet
            self.set(udp + 2, e.gue_port.to_ne_bytes());
            self.set(udp + UDP_LEN_AT, [0, 0]);
            self.set(udp + 6, [0, 0]); // checksum: none (see `encap`)
            self.set(udp + UDP_HLEN, [0, inner_proto]); // GUE version 0, C 0, Hlen 0; the protocol
            self.set(udp + UDP_HLEN + 2, [0, 0]); // flags
        }
    }

    /// Writes the headers into the first `N` bytes of the frame (`N`: their length for the
    /// family `v6` and mode `gue` they were built for), then `p`'s fields over them. False when
    /// the frame has no `N` bytes.
    #[inline(always)]
    pub fn write<const N: usize>(&self, ctx: &XdpContext, v6: bool, gue: bool, p: &Packet) -> bool {
        let start = ctx.data();
        if start + N > ctx.data_end() {
            return false;
        }
        // SAFETY: N bytes bounds-checked above.
        let f = unsafe { &mut *(start as *mut [u8; N]) };
        let udp = if v6 { V6_UDP } else { V4_UDP };
        let src_at = if v6 { V6_SRC_WORD } else { V4_SRC_WORD };
        copy_head(&self.words, f);
        // Then this packet's own fields over them.
        let hashed = p.hash & self.src_mask;
        let src = (self.src_base | hashed).to_be_bytes();
        put_word(f, src_at, [src[0], src[1]]);
        put_word(f, src_at + 2, [src[2], src[3]]);
        let ip_len = if v6 { IPV6_HLEN } else { IPV4_HLEN };
        if v6 {
            let first = (IPV6_VERSION as u32) << 28 | (p.tos as u32) << 20 | flow_label(p.hash);
            put_word(f, IP, ((first >> 16) as u16).to_be_bytes());
            put_word(f, IP + 2, (first as u16).to_be_bytes());
            let payload = (N - ETH_HLEN - ip_len + p.inner_len) as u16;
            put_word(f, IP + IPV6_PAYLOAD_LEN_AT, payload.to_be_bytes());
        } else {
            let tot_len = (N - ETH_HLEN + p.inner_len) as u16;
            put_word(f, IP, [IPV4_FIRST, p.tos]);
            put_word(f, IP + IPV4_TOT_LEN_AT, tot_len.to_be_bytes());
            // The built header's sum and the fields just written (the hashed bits are 0 in
            // the sum's source word, so its halves add without a carry between them).
            let sum = self.sum + p.tos as u32 + tot_len as u32 + (hashed >> 16) + (hashed & 0xffff);
            put_word(f, IP + IPV4_CSUM_AT, checksum::finish(sum).to_be_bytes());
        }
        if gue {
            put_word(f, udp, gue_source_port(p.hash).to_be_bytes());
            let len = (UDP_HLEN + GUE_HLEN + p.inner_len) as u16;
            put_word(f, udp + UDP_LEN_AT, len.to_be_bytes());
        }
        true
    }

    /// The word at `at` (even, within `HEAD_LEN`), as its bytes.
    #[inline(always)]
    fn get(&self, at: usize) -> [u8; 2] {
        self.words.get(at / 2).map_or([0, 0], |w| w.to_ne_bytes())
    }

    /// Sets the word at `at` (even, within `HEAD_LEN`) to bytes `b`.
    #[inline(always)]
    fn set(&mut self, at: usize, b: [u8; 2]) {
        if let Some(w) = self.words.get_mut(at / 2) {
            *w = u16::from_ne_bytes(b);
        }
    }

    /// Sets the words from `at` (even) to the bytes of `src` (an even number of them).
    #[inline(always)]
    fn set_bytes<const M: usize>(&mut self, at: usize, src: &[u8; M]) {
        let mut i = 0;
        while i + 1 < M {
            self.set(at + i, [src[i], src[i + 1]]);
            i += 2;
        }
    }
}

/// Copies the first `N` bytes of the built headers `words` (`N` ≤ `HEAD_LEN`) into the frame
/// `f`: 8 bytes at a time, the last 2 to 6 in steps of 4 and 2.
#[inline(always)]
fn copy_head<const N: usize>(words: &[u16; HEAD_LEN / 2], f: &mut [u8; N]) {
    let end = N.min(HEAD_LEN);
    let mut at = 0;
    while at + 8 <= end {
        copy_at::<u64, N>(words, f, at);
        at += 8;
    }
    if at + 4 <= end {
        copy_at::<u32, N>(words, f, at);
        at += 4;
    }
    if at + 2 <= end {
        copy_at::<u16, N>(words, f, at);
    }
}

/// Copies the `size_of::<T>()` bytes at `at` of `words` to the same place in `f`: one load and
/// one store of any alignment. Nothing when they do not lie within both (a constant check once
/// inlined).
#[inline(always)]
fn copy_at<T: Copy, const N: usize>(words: &[u16; HEAD_LEN / 2], f: &mut [u8; N], at: usize) {
    let size = core::mem::size_of::<T>();
    if at + size > N || at + size > HEAD_LEN {
        return;
    }
    // SAFETY: `at..at + size` is within both (checked above); `T` is an integer (any bits
    // valid), read and written unaligned.
    unsafe {
        let from = (words.as_ptr() as *const u8).add(at).cast::<T>();
        f.as_mut_ptr()
            .add(at)
            .cast::<T>()
            .write_unaligned(from.read_unaligned());
    }
}

/// Writes the two bytes `b` at `at` as one 16-bit store. An `at` past the frame writes nothing
/// (`N` is the frame's checked length).
#[inline(always)]
fn put_word<const N: usize>(f: &mut [u8; N], at: usize, b: [u8; 2]) {
    if at + 2 <= N {
        // SAFETY: `at..at + 2` is within `f` (checked above, a constant once inlined); any
        // alignment.
        unsafe { (f.as_mut_ptr().add(at) as *mut u16).write_unaligned(u16::from_ne_bytes(b)) };
    }
}

/// Writes `v` big-endian at `at`.
#[inline(always)]
pub fn put16<const N: usize>(f: &mut [u8; N], at: usize, v: u16) {
    let b = v.to_be_bytes();
    f[at] = b[0];
    f[at + 1] = b[1];
}
