//! `xlb_decap`: the decapsulator for backend hosts, an XDP program of its own object (so a
//! backend host creates none of the balancer's maps).
//!
//! The balancer's `ipip` and `gue` modes send a client's packet to a backend inside an outer
//! IPv4/IPv6 header (and, for GUE, UDP and a GUE header; the formats are in
//! `lb_common::maps::decap`). This program strips the outer headers of such a packet when its
//! INNER destination is one of this host's VIPs, and passes the inner packet to the stack, which
//! delivers it to the VIP bound on `lo` as if it had come straight from the client: no tunnel
//! device or kernel module is needed. Every packet is passed (`XDP_PASS`); every packet is
//! counted once under what became of it (`lb_common::decap_stat`).
//!
//! In the order a packet is looked at:
//! 1. Ethernet, untagged: any other ethertype (or an 802.1Q tag) is not ours.
//! 2. The outer IPv4 header (any IHL) or IPv6 header (a fragment header is the one extension
//!    header looked through, to count fragments). Cut short or invalid: malformed.
//! 3. Protocol 4 or 41: IPIP (v4 or v6 inside, whatever the outer family). UDP to the GUE port:
//!    the GUE header (version 0, data, inner protocol 4 or 41, its optional fields skipped).
//!    Anything else: not encapsulated. An encapsulated outer fragment: counted, passed.
//! 4. The inner IPv4/IPv6 header must be whole and fit the frame (else malformed), its
//!    destination one of our VIPs (else foreign).
//! 5. Strip: the MACs move forward over the outer headers, the ethertype becomes the inner
//!    family's, the frame's head moves up (`bpf_xdp_adjust_head`).
//!
//! Not checked, as the kernel's own tunnels and Katran's decapsulator do not either: the outer
//! IPv4 header checksum and the UDP checksum (the inner packet's own checksums are checked by
//! the stack), and the outer destination address (the frame reached this host's MAC).
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

#[path = "../headers.rs"]
#[allow(dead_code)] // shared with the balancer's program, which reads more of them
mod headers;
mod maps;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext};
use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_UDP, decap_stat};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

use crate::headers::{
    ETH_P_IP, ETH_P_IPV6, ETH_TYPE_AT, IP_VERSION_SHIFT, IPV4_FRAG_OFFSET_MASK, IPV4_IHL_MASK,
    IPV4_MORE_FRAGMENTS, IPV4_VERSION, IPV6_FRAG_HDR_LEN, IPV6_FRAG_OFFSET_AT, IPV6_FRAG_OFFSET_SHIFT,
    IPV6_FRAGMENT, IPV6_VERSION, MACS_LEN, WORD_LEN,
};

/// IP protocol numbers of an encapsulated packet: IPv4 inside (IPIP, RFC 2003) and IPv6
/// inside (RFC 2473, 4213). GUE names its inner protocol with the same numbers.
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6_IN_IP: u8 = 41;
/// The GUE header (version 0): version (2 bits), C (1 bit), Hlen (5 bits), then the inner
/// protocol, then 2 bytes of flags; Hlen 32-bit words of optional fields follow.
const GUE_HDR_LEN: usize = 4;
const GUE_VERSION_SHIFT: u8 = 6;
const GUE_CONTROL: u8 = 0x20;
const GUE_HLEN_MASK: u8 = 0x1f;
const GUE_PROTO_AT: usize = 1;

#[xdp]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    maps::count(decap(&ctx));
    xdp_action::XDP_PASS
}

/// The outer IP header: the protocol it carries and where that starts.
struct Outer {
    proto: u8,
    payload_at: usize,
    /// Any fragment (first or later).
    fragment: bool,
    /// A fragment after the first: no UDP header to read.
    later_fragment: bool,
}

/// Strip the outer headers of an encapsulated packet to one of our VIPs; what became of the
/// packet (`decap_stat`).
#[inline(always)]
fn decap(ctx: &XdpContext) -> u32 {
    let Ok(eth) = ptr_at::<[u8; EthHdr::LEN]>(ctx, 0) else {
        return decap_stat::NOT_ENCAPSULATED;
    };
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let eth = unsafe { &*eth };
    let outer = match u16::from_be_bytes([eth[ETH_TYPE_AT], eth[ETH_TYPE_AT + 1]]) {
        ETH_P_IP => outer_v4(ctx),
        ETH_P_IPV6 => outer_v6(ctx),
        _ => return decap_stat::NOT_ENCAPSULATED,
    };
    let outer = match outer {
        Ok(o) => o,
        Err(stat) => return stat,
    };
    let (inner_proto, inner_at) = match outer.proto {
        PROTO_IPIP | PROTO_IPV6_IN_IP if outer.fragment => return decap_stat::FRAGMENTED,
        PROTO_IPIP | PROTO_IPV6_IN_IP => (outer.proto, outer.payload_at),
        PROTO_UDP => match gue(ctx, &outer) {
            Ok(inner) => inner,
            Err(stat) => return stat,
        },
        _ => return decap_stat::NOT_ENCAPSULATED,
    };
    let inner = if inner_proto == PROTO_IPIP {
        inner_v4_dst(ctx, inner_at)
    } else {
        inner_v6_dst(ctx, inner_at)
    };
    let (family, dst) = match inner {
        Ok(d) => d,
        Err(()) => return decap_stat::MALFORMED,
    };
    if !maps::is_vip(dst, family) {
        return decap_stat::FOREIGN;
    }
    let ether_type = if family == FAMILY_V4 { ETH_P_IP } else { ETH_P_IPV6 };
    strip(ctx, inner_at, ether_type)
}

/// Bounds-checked pointer to a `T` at `offset` from the start of the frame: `Ok` only when all
/// of its bytes lie within the frame. Every `T` read through it is made of byte arrays
/// (alignment 1, any bit pattern valid). Valid until the frame's head moves (`strip`).
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    if ctx.data() + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return Err(());
    }
    Ok((ctx.data() + offset) as *mut T)
}

/// Where a header that says it is `len` bytes long, starting at `at`, ends within the frame.
#[inline(always)]
fn fits(ctx: &XdpContext, at: usize, len: usize) -> bool {
    ctx.data() + at + len <= ctx.data_end()
}

/// The IPv4 header at `at`, whole, valid (version 4, IHL at least 5) and with its total length
/// within the frame; and its header length.
#[inline(always)]
fn whole_v4(ctx: &XdpContext, at: usize) -> Result<(&Ipv4Hdr, usize), ()> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, at)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let ip = unsafe { &*ip };
    let ihl = ((ip.vihl & IPV4_IHL_MASK) as usize) * WORD_LEN;
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if ip.vihl >> IP_VERSION_SHIFT != IPV4_VERSION
        || ihl < Ipv4Hdr::LEN
        || tot_len < ihl
        || !fits(ctx, at, tot_len)
    {
        return Err(());
    }
    Ok((ip, ihl))
}

/// The IPv6 header at `at`, whole, of version 6 and with its payload within the frame.
#[inline(always)]
fn whole_v6(ctx: &XdpContext, at: usize) -> Result<&Ipv6Hdr, ()> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, at)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let ip = unsafe { &*ip };
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    if ip.vcf[0] >> IP_VERSION_SHIFT != IPV6_VERSION || !fits(ctx, at, Ipv6Hdr::LEN + payload_len) {
        return Err(());
    }
    Ok(ip)
}

#[inline(always)]
fn outer_v4(ctx: &XdpContext) -> Result<Outer, u32> {
    let at = EthHdr::LEN;
    let (ip, ihl) = whole_v4(ctx, at).map_err(|()| decap_stat::MALFORMED)?;
    let frags = u16::from_be_bytes(ip.frags);
    let offset = frags & IPV4_FRAG_OFFSET_MASK;
    Ok(Outer {
        proto: ip.proto,
        payload_at: at + ihl,
        fragment: frags & IPV4_MORE_FRAGMENTS != 0 || offset != 0,
        later_fragment: offset != 0,
    })
}

#[inline(always)]
fn outer_v6(ctx: &XdpContext) -> Result<Outer, u32> {
    let at = EthHdr::LEN;
    let ip = whole_v6(ctx, at).map_err(|()| decap_stat::MALFORMED)?;
    let payload_at = at + Ipv6Hdr::LEN;
    if ip.next_hdr != IPV6_FRAGMENT {
        return Ok(Outer {
            proto: ip.next_hdr,
            payload_at,
            fragment: false,
            later_fragment: false,
        });
    }
    let frag = ptr_at::<[u8; IPV6_FRAG_HDR_LEN]>(ctx, payload_at).map_err(|()| decap_stat::MALFORMED)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let frag = unsafe { &*frag };
    let offset = u16::from_be_bytes([frag[IPV6_FRAG_OFFSET_AT], frag[IPV6_FRAG_OFFSET_AT + 1]])
        >> IPV6_FRAG_OFFSET_SHIFT;
    Ok(Outer {
        proto: frag[0],
        payload_at: payload_at + IPV6_FRAG_HDR_LEN,
        fragment: true,
        later_fragment: offset != 0,
    })
}

/// UDP to the GUE port and a GUE data header we strip: the inner protocol and where the inner
/// packet starts.
#[inline(always)]
fn gue(ctx: &XdpContext, outer: &Outer) -> Result<(u8, usize), u32> {
    let port = maps::gue_port();
    if port == 0 || outer.later_fragment {
        return Err(decap_stat::NOT_ENCAPSULATED);
    }
    let udp = ptr_at::<UdpHdr>(ctx, outer.payload_at).map_err(|()| decap_stat::MALFORMED)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let udp = unsafe { &*udp };
    if u16::from_ne_bytes(udp.dst) != port {
        return Err(decap_stat::NOT_ENCAPSULATED);
    }
    if outer.fragment {
        return Err(decap_stat::FRAGMENTED);
    }
    let gue_at = outer.payload_at + UdpHdr::LEN;
    let gue = ptr_at::<[u8; GUE_HDR_LEN]>(ctx, gue_at).map_err(|()| decap_stat::MALFORMED)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let gue = unsafe { &*gue };
    let proto = gue[GUE_PROTO_AT];
    // Another GUE version (1 = IP straight after UDP), a control message, or another payload:
    // not a packet the balancer sent.
    if gue[0] >> GUE_VERSION_SHIFT != 0
        || gue[0] & GUE_CONTROL != 0
        || (proto != PROTO_IPIP && proto != PROTO_IPV6_IN_IP)
    {
        return Err(decap_stat::FOREIGN);
    }
    let inner_at = gue_at + GUE_HDR_LEN + (gue[0] & GUE_HLEN_MASK) as usize * WORD_LEN;
    let udp_len = u16::from_be_bytes(udp.len) as usize;
    if udp_len < inner_at - outer.payload_at || !fits(ctx, outer.payload_at, udp_len) {
        return Err(decap_stat::MALFORMED);
    }
    Ok((proto, inner_at))
}

/// The inner IPv4 header at `at`, whole and within the frame: its destination.
#[inline(always)]
fn inner_v4_dst(ctx: &XdpContext, at: usize) -> Result<(u8, [u8; 16]), ()> {
    let (ip, _) = whole_v4(ctx, at)?;
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&ip.dst_addr);
    Ok((FAMILY_V4, dst))
}

/// The inner IPv6 header at `at`, whole and within the frame: its destination.
#[inline(always)]
fn inner_v6_dst(ctx: &XdpContext, at: usize) -> Result<(u8, [u8; 16]), ()> {
    Ok((FAMILY_V6, whole_v6(ctx, at)?.dst_addr))
}

/// Remove everything between the Ethernet header and the inner packet at `inner_at`: the
/// MACs move forward to sit just before it, with the inner family's `ether_type`.
#[inline(always)]
fn strip(ctx: &XdpContext, inner_at: usize, ether_type: u16) -> u32 {
    let Ok(macs) = ptr_at::<[u8; MACS_LEN]>(ctx, 0) else {
        return decap_stat::MALFORMED;
    };
    // SAFETY: in the frame, alignment 1 (`ptr_at`); copied out before the head moves.
    let macs = unsafe { *macs };
    let outer_len = (inner_at - EthHdr::LEN) as i32;
    // SAFETY: a helper call on this program's own context; it only moves the frame's start.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len) } != 0 {
        return decap_stat::MALFORMED;
    }
    let Ok(eth) = ptr_at::<[u8; EthHdr::LEN]>(ctx, 0) else {
        return decap_stat::MALFORMED;
    };
    // SAFETY: in the (moved) frame, alignment 1 (`ptr_at`); nothing else points into it.
    let eth = unsafe { &mut *eth };
    eth[..MACS_LEN].copy_from_slice(&macs);
    eth[ETH_TYPE_AT..].copy_from_slice(&ether_type.to_be_bytes());
    decap_stat::DECAPSULATED
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY: the kernel reads the program's license from this section under this symbol; nothing
// else is placed there or has the name.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
