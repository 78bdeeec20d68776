//! ICMP "fragmentation needed" (IPv4, RFC 792/1191) and ICMPv6 "packet too big" (RFC 4443),
//! built in XDP from the client's frame when its packet, encapsulated, would exceed the egress
//! MTU (`encap`). The frame is turned round in place and sent back by `XDP_TX`:
//! - Ethernet: the MACs swapped; a VLAN tag is kept as it came.
//! - IP: from the VIP (the address the client sent to) to the client (the quoted header's
//!   addresses, swapped); IPv4: TOS 0, id 0, no
//!   flags, TTL 64, protocol 1, checksum. IPv6: traffic class and flow label 0, hop limit 64,
//!   next header 58.
//! - ICMP: type 3 code 4 with the next-hop MTU in the header's last 16 bits, or ICMPv6 type 2
//!   code 0 with the MTU in its last 32; checksum (ICMPv6's over the pseudo-header too).
//! - The quote: the first `QUOTE_V4` (64) / `QUOTE_V6` (128) bytes of the client's IP packet
//!   (its header and at least 8 bytes of TCP/UDP: what the client's stack matches on).
//!
//! The MTU announced is the egress MTU less the encapsulation's overhead, so the client's next
//! packets fit once encapsulated. For TCP the better cure is a smaller MSS: see the README
//! (backends announce an MSS that leaves room for the outer headers).
//!
//! Sent for every packet too big, IPv4 with or without Don't Fragment (the data path cannot
//! fragment). A frame too short to quote (only with an MTU below any real one) is passed and
//! counted as `encap_fib_miss`.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::gstat::Counter;

use crate::{checksum, encap::l3_offset, headers::*, maps, outer::put16};

/// Bytes of the client's packet quoted in an ICMP / ICMPv6 error.
const QUOTE_V4: usize = 64;
const QUOTE_V6: usize = 128;
const TTL: u8 = 64;

/// Answer the client (of an IPv6 packet: `v6`) that packets above `mtu` do not pass. Part of
/// the encapsulation stage (`encap::stage`).
#[inline(always)]
pub fn reply(ctx: &XdpContext, v6: bool, mtu: u16) -> u32 {
    const TAGGED: usize = ETH_HLEN + VLAN_HLEN;
    const V4: usize = IPV4_HLEN + ICMP_HDR_LEN + QUOTE_V4;
    const V6: usize = IPV6_HLEN + ICMP_HDR_LEN + QUOTE_V6;
    let tagged = match l3_offset(ctx) {
        Some(l3) => l3 != ETH_HLEN,
        None => return xdp_action::XDP_PASS,
    };
    let verdict = match (v6, tagged) {
        (false, false) => turn_round::<ETH_HLEN, { ETH_HLEN + V4 }>(ctx, mtu, false),
        (false, true) => turn_round::<TAGGED, { TAGGED + V4 }>(ctx, mtu, false),
        (true, false) => turn_round::<ETH_HLEN, { ETH_HLEN + V6 }>(ctx, mtu, true),
        (true, true) => turn_round::<TAGGED, { TAGGED + V6 }>(ctx, mtu, true),
    };
    if verdict == xdp_action::XDP_TX {
        maps::count(Counter::EncapTooBig);
    }
    verdict
}

/// The error for a frame with `L2` bytes of Ethernet header, `N` bytes in all once built.
#[inline(always)]
fn turn_round<const L2: usize, const N: usize>(ctx: &XdpContext, mtu: u16, v6: bool) -> u32 {
    let ip_len = if v6 { IPV6_HLEN } else { IPV4_HLEN };
    let pushed = ip_len + ICMP_HDR_LEN;
    // The whole quote must be there.
    if ctx.data() + N - pushed > ctx.data_end() {
        maps::count(Counter::EncapFibMiss);
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the program's own context; packet pointers are taken afresh below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(pushed as i32)) } != 0 {
        maps::count(Counter::EncapNoHeadroom);
        return xdp_action::XDP_PASS;
    }
    let len = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: as above. Shrinks the frame to N bytes (it holds more: checked above).
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, N as i32 - len) } != 0 {
        return xdp_action::XDP_ABORTED;
    }
    let start = ctx.data();
    if start + N > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: N bytes bounds-checked above; alignment 1.
    let f = unsafe { &mut *(start as *mut [u8; N]) };
    // Now: [pushed bytes][the client's L2 header][its IP packet, cut to the quote]. The new L2
    // header (MACs swapped) goes first; IP and ICMP then fill the rest up to the quote,
    // overwriting the old L2 header, already copied (pushed >= L2: no overlap).
    let mut i = 0;
    while i < MAC_LEN {
        f[i] = f[pushed + MAC_LEN + i];
        f[MAC_LEN + i] = f[pushed + i];
        i += 1;
    }
    let mut i = MACS_LEN;
    while i < L2 {
        f[i] = f[pushed + i];
        i += 1;
    }
    let icmp_len = N - L2 - ip_len;
    let icmp = L2 + ip_len;
    if v6 {
        f[L2] = IPV6_VERSION << IP_VERSION_SHIFT;
        f[L2 + 1] = 0;
        put16(f, L2 + 2, 0);
        put16(f, L2 + IPV6_PAYLOAD_LEN_AT, icmp_len as u16);
        f[L2 + 6] = PROTO_ICMPV6;
        f[L2 + 7] = TTL;
        // From the VIP to the client: the quoted header's destination and source.
        let quoted = L2 + pushed;
        let mut i = 0;
        while i < IPV6_ADDR_LEN {
            f[L2 + IPV6_SRC_AT + i] = f[quoted + IPV6_SRC_AT + IPV6_ADDR_LEN + i];
            f[L2 + IPV6_SRC_AT + IPV6_ADDR_LEN + i] = f[quoted + IPV6_SRC_AT + i];
            i += 1;
        }
        f[icmp + ICMP_TYPE_AT] = ICMPV6_PKT_TOOBIG;
        f[icmp + ICMP_CODE_AT] = 0;
        put16(f, icmp + ICMP_CSUM_AT, 0);
        put16(f, icmp + ICMPV6_MTU_AT, 0);
        put16(f, icmp + ICMPV6_MTU_AT + 2, mtu);
        // The pseudo-header: source, destination, upper-layer length, next header.
        let addrs = checksum::add_words(f, L2 + IPV6_SRC_AT, 2 * IPV6_ADDR_LEN, 0);
        let pseudo = addrs + icmp_len as u32 + PROTO_ICMPV6 as u32;
        checksum::write(f, icmp, icmp_len, ICMP_CSUM_AT, pseudo);
    } else {
        f[L2] = (IPV4_VERSION << IP_VERSION_SHIFT) | IPV4_IHL_MIN_WORDS;
        f[L2 + IPV4_TOS_AT] = 0;
        put16(f, L2 + IPV4_TOT_LEN_AT, (N - L2) as u16);
        put16(f, L2 + 4, 0);
        put16(f, L2 + 6, 0);
        f[L2 + 8] = TTL;
        f[L2 + 9] = PROTO_ICMP;
        put16(f, L2 + IPV4_CSUM_AT, 0);
        let quoted = L2 + pushed;
        let mut i = 0;
        while i < IPV4_ADDR_LEN {
            f[L2 + IPV4_SRC_AT + i] = f[quoted + IPV4_DST_AT + i];
            f[L2 + IPV4_DST_AT + i] = f[quoted + IPV4_SRC_AT + i];
            i += 1;
        }
        checksum::write(f, L2, IPV4_HLEN, IPV4_CSUM_AT, 0);
        f[icmp + ICMP_TYPE_AT] = ICMP_DEST_UNREACH;
        f[icmp + ICMP_CODE_AT] = ICMP_FRAG_NEEDED;
        put16(f, icmp + ICMP_CSUM_AT, 0);
        put16(f, icmp + 4, 0);
        put16(f, icmp + ICMP_MTU_AT, mtu);
        checksum::write(f, icmp, icmp_len, ICMP_CSUM_AT, 0);
    }
    xdp_action::XDP_TX
}
