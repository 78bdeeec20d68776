//! `xlb_decap` and `xlb_decap_tc`: the decapsulator for backend hosts, at XDP or at tc
//! ingress, in an object of its own (so a backend host creates none of the balancer's maps).
//!
//! The balancer's `ipip` and `gue` modes send a client's packet to a backend inside an outer
//! IPv4/IPv6 header (and, for GUE, UDP and a GUE header; the formats are in
//! `lb_common::maps::decap`). This program strips the outer headers of such a packet when its
//! INNER destination is one of this host's VIPs, and passes the inner packet to the stack, which
//! delivers it to the VIP bound on `lo` as if it had come straight from the client: no tunnel
//! device or kernel module is needed. Every packet is passed (`XDP_PASS`; at tc, `TCX_NEXT`: the
//! next program on the hook, if any, sees the inner packet); every packet is counted once under
//! what became of it (`lb_common::decap_stat`).
//!
//! Two hooks, one parser (`parse`, on a `Frame`): XDP (`xlb_decap`) for NICs whose driver runs
//! XDP in place; tc ingress (`xlb_decap_tc`) for veth (containers) and other devices where XDP
//! costs a copy of the packet (veth copies every packet that has less than 256 bytes of headroom
//! before running XDP on it; an encapsulated packet from a balancer that ran XDP has 20 to 48
//! bytes less than that). The strip differs: XDP moves the frame's head
//! (`bpf_xdp_adjust_head`); tc asks the kernel to remove the room (`bpf_skb_adjust_room`), which
//! also keeps the skb's protocol, offsets and GRO sizes right.
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
//!    family's (`strip_xdp`, `strip_tc`).
//!
//! Not checked, as the kernel's own tunnels and Katran's decapsulator do not either: the outer
//! IPv4 header checksum and the UDP checksum (the inner packet's own checksums are checked by
//! the stack), and the outer destination address (the frame reached this host's MAC). One
//! exception, at XDP only: a GUE packet that reached XDP with its skb marked "checksum verified"
//! for the outer UDP header (veth after GRO, which counts a zero UDP checksum as verified; some
//! NICs) keeps the mark after the strip, and the stack then skips the inner packet's checksum.
//! XDP cannot clear it; `strip_tc` does (no `NO_CSUM_RESET` for GUE). IPIP carries no such mark.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

#[path = "../headers.rs"]
#[allow(dead_code)] // shared with the balancer's program, which reads more of them
mod headers;
mod maps;

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_FIXED_GSO,
        BPF_F_ADJ_ROOM_NO_CSUM_RESET, TC_ACT_UNSPEC, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action,
    },
    helpers::bpf_xdp_adjust_head,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_UDP, decap_stat};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

use crate::{
    headers::{
        ETH_P_IP, ETH_P_IPV6, ETH_TYPE_AT, IP_VERSION_SHIFT, IPV4_FRAG_OFFSET_MASK, IPV4_IHL_MASK,
        IPV4_MORE_FRAGMENTS, IPV4_VERSION, IPV6_FRAG_HDR_LEN, IPV6_FRAG_OFFSET_AT, IPV6_FRAG_OFFSET_SHIFT,
        IPV6_FRAGMENT, IPV6_VERSION, MACS_LEN, WORD_LEN,
    },
    maps::VipKey,
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

/// The most a header chain we strip can take: Ethernet, an outer IPv6 header with a fragment
/// header, UDP, GUE with the most optional fields (31 words), the inner IPv6 header. tc pulls
/// this much (or the whole packet, if shorter) into the skb's linear part when that ends short
/// of the headers.
const MAX_HEADERS: u32 = (EthHdr::LEN
    + Ipv6Hdr::LEN
    + IPV6_FRAG_HDR_LEN
    + UdpHdr::LEN
    + GUE_HDR_LEN
    + GUE_HLEN_MASK as usize * WORD_LEN
    + Ipv6Hdr::LEN) as u32;

#[xdp]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    maps::count(match parse(&xdp_frame(&ctx)) {
        Ok(inner) => strip_xdp(&ctx, &inner),
        Err(stat) => stat,
    });
    xdp_action::XDP_PASS
}

/// At tc ingress (a tcx link, first on the hook). Returns `TCX_NEXT` (`TC_ACT_UNSPEC`): the
/// packet goes on to the hook's next program, or to the stack when there is none.
#[classifier]
pub fn xlb_decap_tc(ctx: TcContext) -> i32 {
    let mut parsed = parse(&tc_frame(&ctx));
    // Headers are read in the skb's linear part, which holds them for nearly every packet (a
    // driver's or GRO's skb starts with them). When it ends short of them, pull them into it
    // (copying, so only then) and look again.
    if matches!(parsed, Err(decap_stat::MALFORMED)) {
        let want = if ctx.len() < MAX_HEADERS {
            ctx.len()
        } else {
            MAX_HEADERS
        };
        if ctx.data_end() - ctx.data() < want as usize && ctx.pull_data(want).is_ok() {
            parsed = parse(&tc_frame(&ctx));
        }
    }
    maps::count(match parsed {
        Ok(inner) => strip_tc(&ctx, &inner),
        Err(stat) => stat,
    });
    TC_ACT_UNSPEC
}

/// The skb's bounds now (they change when it is pulled or its room adjusted).
#[inline(always)]
fn tc_frame(ctx: &TcContext) -> Frame {
    Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
        len: ctx.len() as usize,
    }
}

/// The packet as both hooks show it: its headers in place from `data` to `data_end`, and its
/// whole length (at tc, beyond `data_end` when the skb is paged).
struct Frame {
    data: usize,
    data_end: usize,
    len: usize,
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

/// An encapsulated packet to one of our VIPs: where the inner packet starts, its family, and
/// whether it came by IPIP (no outer L4 checksum) or GUE.
struct Inner {
    at: usize,
    family: u8,
    ipip: bool,
}

impl Inner {
    fn ether_type(&self) -> u16 {
        if self.family == FAMILY_V4 {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        }
    }
}

/// An encapsulated packet to one of our VIPs (`Ok`: what to strip), or what else the packet
/// is (`Err`: its `decap_stat`).
#[inline(always)]
fn parse(f: &Frame) -> Result<Inner, u32> {
    let Ok(eth) = ptr_at::<[u8; EthHdr::LEN]>(f, 0) else {
        return Err(decap_stat::NOT_ENCAPSULATED);
    };
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let eth = unsafe { &*eth };
    let outer = match u16::from_be_bytes([eth[ETH_TYPE_AT], eth[ETH_TYPE_AT + 1]]) {
        ETH_P_IP => outer_v4(f)?,
        ETH_P_IPV6 => outer_v6(f)?,
        _ => return Err(decap_stat::NOT_ENCAPSULATED),
    };
    let (inner_proto, inner_at) = match outer.proto {
        PROTO_IPIP | PROTO_IPV6_IN_IP if outer.fragment => return Err(decap_stat::FRAGMENTED),
        PROTO_IPIP | PROTO_IPV6_IN_IP => (outer.proto, outer.payload_at),
        PROTO_UDP => gue(f, &outer)?,
        _ => return Err(decap_stat::NOT_ENCAPSULATED),
    };
    let inner = if inner_proto == PROTO_IPIP {
        inner_v4_dst(f, inner_at)
    } else {
        inner_v6_dst(f, inner_at)
    };
    let key = inner.map_err(|()| decap_stat::MALFORMED)?;
    if !maps::is_vip(&key) {
        return Err(decap_stat::FOREIGN);
    }
    Ok(Inner {
        at: inner_at,
        family: key.0.family,
        ipip: outer.proto != PROTO_UDP,
    })
}

/// Bounds-checked pointer to a `T` at `offset` from the start of the frame: `Ok` only when all
/// of its bytes lie within the frame. Every `T` read through it is made of byte arrays
/// (alignment 1, any bit pattern valid). Valid until the frame's head moves (`strip_xdp`, `strip_tc`).
#[inline(always)]
fn ptr_at<T>(f: &Frame, offset: usize) -> Result<*mut T, ()> {
    if f.data + offset + core::mem::size_of::<T>() > f.data_end {
        return Err(());
    }
    Ok((f.data + offset) as *mut T)
}

/// Whether something that says it is `len` bytes long, starting at `at`, ends within the packet.
#[inline(always)]
fn fits(f: &Frame, at: usize, len: usize) -> bool {
    at + len <= f.len
}

/// The IPv4 header at `at`, whole, valid (version 4, IHL at least 5) and with its total length
/// within the frame; and its header length.
#[inline(always)]
fn whole_v4(f: &Frame, at: usize) -> Result<(&Ipv4Hdr, usize), ()> {
    let ip = ptr_at::<Ipv4Hdr>(f, at)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let ip = unsafe { &*ip };
    let ihl = ((ip.vihl & IPV4_IHL_MASK) as usize) * WORD_LEN;
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if ip.vihl >> IP_VERSION_SHIFT != IPV4_VERSION
        || ihl < Ipv4Hdr::LEN
        || tot_len < ihl
        || !fits(f, at, tot_len)
    {
        return Err(());
    }
    Ok((ip, ihl))
}

/// The IPv6 header at `at`, whole, of version 6 and with its payload within the frame.
#[inline(always)]
fn whole_v6(f: &Frame, at: usize) -> Result<&Ipv6Hdr, ()> {
    let ip = ptr_at::<Ipv6Hdr>(f, at)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let ip = unsafe { &*ip };
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    if ip.vcf[0] >> IP_VERSION_SHIFT != IPV6_VERSION || !fits(f, at, Ipv6Hdr::LEN + payload_len) {
        return Err(());
    }
    Ok(ip)
}

#[inline(always)]
fn outer_v4(f: &Frame) -> Result<Outer, u32> {
    let at = EthHdr::LEN;
    let (ip, ihl) = whole_v4(f, at).map_err(|()| decap_stat::MALFORMED)?;
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
fn outer_v6(f: &Frame) -> Result<Outer, u32> {
    let at = EthHdr::LEN;
    let ip = whole_v6(f, at).map_err(|()| decap_stat::MALFORMED)?;
    let payload_at = at + Ipv6Hdr::LEN;
    if ip.next_hdr != IPV6_FRAGMENT {
        return Ok(Outer {
            proto: ip.next_hdr,
            payload_at,
            fragment: false,
            later_fragment: false,
        });
    }
    let frag = ptr_at::<[u8; IPV6_FRAG_HDR_LEN]>(f, payload_at).map_err(|()| decap_stat::MALFORMED)?;
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
fn gue(f: &Frame, outer: &Outer) -> Result<(u8, usize), u32> {
    let port = maps::gue_port();
    if port == 0 || outer.later_fragment {
        return Err(decap_stat::NOT_ENCAPSULATED);
    }
    let udp = ptr_at::<UdpHdr>(f, outer.payload_at).map_err(|()| decap_stat::MALFORMED)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let udp = unsafe { &*udp };
    if u16::from_ne_bytes(udp.dst) != port {
        return Err(decap_stat::NOT_ENCAPSULATED);
    }
    if outer.fragment {
        return Err(decap_stat::FRAGMENTED);
    }
    let gue_at = outer.payload_at + UdpHdr::LEN;
    let gue = ptr_at::<[u8; GUE_HDR_LEN]>(f, gue_at).map_err(|()| decap_stat::MALFORMED)?;
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
    if udp_len < inner_at - outer.payload_at || !fits(f, outer.payload_at, udp_len) {
        return Err(decap_stat::MALFORMED);
    }
    Ok((proto, inner_at))
}

/// The inner IPv4 header at `at`, whole and within the frame: its destination, as a VIP key.
#[inline(always)]
fn inner_v4_dst(f: &Frame, at: usize) -> Result<VipKey, ()> {
    let (ip, _) = whole_v4(f, at)?;
    let mut key = VipKey::new(FAMILY_V4);
    key.0.addr[..4].copy_from_slice(&ip.dst_addr);
    Ok(key)
}

/// The inner IPv6 header at `at`, whole and within the frame: its destination, as a VIP key.
#[inline(always)]
fn inner_v6_dst(f: &Frame, at: usize) -> Result<VipKey, ()> {
    let mut key = VipKey::new(FAMILY_V6);
    key.0.addr = whole_v6(f, at)?.dst_addr;
    Ok(key)
}

/// XDP: remove everything between the Ethernet header and the inner packet: the MACs move
/// forward to sit just before it, with the inner family's ethertype.
#[inline(always)]
fn strip_xdp(ctx: &XdpContext, inner: &Inner) -> u32 {
    let Ok(macs) = ptr_at::<[u8; MACS_LEN]>(&xdp_frame(ctx), 0) else {
        return decap_stat::MALFORMED;
    };
    // SAFETY: in the frame, alignment 1 (`ptr_at`); copied out before the head moves.
    let macs = unsafe { *macs };
    let outer_len = (inner.at - EthHdr::LEN) as i32;
    // SAFETY: a helper call on this program's own context; it only moves the frame's start.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len) } != 0 {
        return decap_stat::MALFORMED;
    }
    let Ok(eth) = ptr_at::<[u8; EthHdr::LEN]>(&xdp_frame(ctx), 0) else {
        return decap_stat::MALFORMED;
    };
    // SAFETY: in the (moved) frame, alignment 1 (`ptr_at`); nothing else points into it.
    let eth = unsafe { &mut *eth };
    eth[..MACS_LEN].copy_from_slice(&macs);
    eth[ETH_TYPE_AT..].copy_from_slice(&inner.ether_type().to_be_bytes());
    decap_stat::DECAPSULATED
}

/// The XDP frame's bounds now (they change when its head moves).
#[inline(always)]
fn xdp_frame(ctx: &XdpContext) -> Frame {
    Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
        len: ctx.data_end() - ctx.data(),
    }
}

/// tc: the kernel removes the outer headers after the Ethernet header (`BPF_ADJ_ROOM_MAC`) and
/// sets the skb's protocol to the inner family (`DECAP_L3_*`); the ethertype is written here.
/// `FIXED_GSO`: a GRO'd packet's segment size is the inner payload's, which the outer headers
/// never counted. `NO_CSUM_RESET` for IPIP only: an outer IP header carries no L4 checksum, so a
/// "checksum verified" mark on the skb is about the inner packet's (kept); for GUE it may be
/// about the outer UDP checksum, so the mark goes and the stack checks the inner checksum.
#[inline(always)]
fn strip_tc(ctx: &TcContext, inner: &Inner) -> u32 {
    let outer_len = (inner.at - EthHdr::LEN) as i32;
    let family = if inner.family == FAMILY_V4 {
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4
    } else {
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6
    };
    let checksum = if inner.ipip {
        BPF_F_ADJ_ROOM_NO_CSUM_RESET
    } else {
        0
    };
    let flags = (family | checksum | BPF_F_ADJ_ROOM_FIXED_GSO) as u64;
    if ctx.adjust_room(-outer_len, BPF_ADJ_ROOM_MAC, flags).is_err() {
        return decap_stat::MALFORMED;
    }
    if ctx
        .store(ETH_TYPE_AT, &inner.ether_type().to_be_bytes(), 0)
        .is_err()
    {
        return decap_stat::MALFORMED;
    }
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
