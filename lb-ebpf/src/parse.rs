//! Step 1 (see `main`): parse Ethernet (one 802.1Q tag), IPv4/IPv6 (with extension headers and
//! fragments), TCP/UDP, and ICMP/ICMPv6 "too big" errors, into a `Flow` seen from the client's
//! side. Where each field sits is named in `headers`.
//!
//! `Ok(None)` = not a packet we balance (not IP, other protocols): pass untouched.
//! `Err(())` = truncated or invalid headers: pass to the kernel, counted, never forwarded.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, MAX_IPV6_EXT_HEADERS, PROTO_TCP, PROTO_UDP, hash::words_of};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::headers::*;

/// A packet as the balancer sees it: always oriented client -> VIP (for an ICMP error the inner
/// header is turned around, so the flow is the one the error is about).
pub struct Flow {
    /// The addresses as `lb_common::hash::words_of` their 16 bytes (IPv4: the first word, the
    /// rest 0): every later step reads them word by word. (As bytes, the compiler kept them as
    /// 32 values, each with a stack slot of its own, and the one 512-byte frame had no room
    /// left.)
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Network byte order as in the packet; 0 when `has_ports` is false.
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub proto: u8,
    /// Any IP fragment (first or later).
    pub fragment: bool,
    /// A TCP/UDP fragment after the first: no L4 header (ports 0). It has no service lookup of
    /// its own and follows the record its datagram's first fragment left.
    pub later_fragment: bool,
    /// The datagram a fragment belongs to: IPv4's 16-bit id or the IPv6 fragment header's
    /// 32-bit identification (host order). Read from the packet on fragment paths only; 0 for
    /// a whole packet.
    pub frag_id: u32,
    /// A TCP SYN without ACK or RST (a connection's first packet): forwarded by hash, never
    /// creates a stick entry (its ACK does).
    pub syn_only: bool,
    /// A TCP packet that does not prove a finished handshake: anything but ACK set with SYN and
    /// RST clear (so a bare SYN, a SYN+ACK, an RST, a packet without ACK). Anyone can send one
    /// from a spoofed address (and the real owners of spoofed addresses answer a backend's
    /// SYN-ACK with an RST), so it never creates or refreshes a stick entry; it goes where the
    /// table or the hash says. False for UDP.
    pub no_handshake: bool,
    /// Where the TCP header starts in the frame, for `passive`, which reads the ports and the
    /// sequence number there again rather than keep them live through the program (its one stack
    /// frame has no room for them). 0 for UDP and ICMP errors, and once a stick hit has found
    /// that its client sent no SYN lately (`select`): then a packet with ACK set, SYN and RST
    /// clear does not look for the SYN record its handshake's first ACK would finish.
    pub tcp_at: u16,
    /// ICMP need-frag / ICMPv6 packet-too-big about a VIP flow.
    pub icmp_too_big: bool,
    /// The coarse clock as the stick lookup read it (`select`), handed to the encapsulation
    /// stage with the packet (`lb_common::EncapHandoff::now`); 0 when there was no lookup.
    pub now: u64,
}

impl Flow {
    /// A flow between two addresses, as yet without ports, flags or fragment facts.
    #[inline(always)]
    fn new(src: [u32; 4], dst: [u32; 4], family: u8, proto: u8) -> Flow {
        Flow {
            src,
            dst,
            sport: 0,
            dport: 0,
            family,
            proto,
            fragment: false,
            later_fragment: false,
            frag_id: 0,
            syn_only: false,
            no_handshake: false,
            tcp_at: 0,
            icmp_too_big: false,
            now: 0,
        }
    }
}

/// Bounds-checked pointer to a `T` at `offset` from the start of the frame: `Ok` only when all
/// of its `size_of::<T>()` bytes lie within the frame, so it may be read until the program ends
/// (nothing here moves or resizes the frame). Every `T` read through it is made of integers
/// (any bit pattern valid) and, but for `EthHdr`, of byte arrays (alignment 1).
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Option<Flow>, ()> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let mut off = EthHdr::LEN;
    // SAFETY: in the frame (`ptr_at`); its u16 field is aligned, as the kernel starts a frame
    // at an even address and this program never moves the start.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_8021Q {
        // One tag: the inner ethertype sits in the tag's last two bytes.
        let inner: *const [u8; 2] = ptr_at(ctx, off + VLAN_INNER_TYPE_AT)?;
        // SAFETY: in the frame, alignment 1 (`ptr_at`).
        ether_type = u16::from_be_bytes(unsafe { *inner });
        off += VLAN_HLEN;
    }
    match ether_type {
        ETH_P_IP => parse_v4(ctx, off),
        ETH_P_IPV6 => parse_v6(ctx, off),
        // ARP, LLDP, a second VLAN tag, ...: not ours.
        _ => Ok(None),
    }
}

/// An IPv4 address as `Flow` keeps it: the words of the maps' 16 bytes (the first 4 bytes
/// the address, the rest zero).
#[inline(always)]
fn v4_addr(a: [u8; IPV4_ADDR_LEN]) -> [u32; 4] {
    [u32::from_ne_bytes(a), 0, 0, 0]
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Result<Option<Flow>, ()> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, off)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let ip = unsafe { &*ip };
    let vihl = ip.vihl;
    if vihl >> IP_VERSION_SHIFT != IPV4_VERSION {
        return Err(());
    }
    let ihl = ((vihl & IPV4_IHL_MASK) as usize) * WORD_LEN;
    if ihl < Ipv4Hdr::LEN {
        return Err(());
    }
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if tot_len < ihl || ctx.data() + off + tot_len > ctx.data_end() {
        return Err(());
    }
    let frags = u16::from_be_bytes(ip.frags);
    let more_fragments = frags & IPV4_MORE_FRAGMENTS != 0;
    let frag_offset = frags & IPV4_FRAG_OFFSET_MASK;
    let fragment = more_fragments || frag_offset != 0;
    let l4 = off + ihl;
    let mut flow = Flow::new(v4_addr(ip.src_addr), v4_addr(ip.dst_addr), FAMILY_V4, ip.proto);
    if fragment {
        flow.fragment = true;
        flow.frag_id = u16::from_be_bytes(ip.id) as u32;
    }
    transport(ctx, l4, flow, frag_offset != 0)
}

/// The L4 step of both families: ports for TCP/UDP (none in a later fragment, which has no L4
/// header and follows its datagram's first fragment), ICMP "too big" errors, nothing else.
#[inline(always)]
fn transport(ctx: &XdpContext, l4: usize, mut flow: Flow, later_fragment: bool) -> Result<Option<Flow>, ()> {
    match flow.proto {
        PROTO_TCP | PROTO_UDP if later_fragment => {
            flow.later_fragment = true;
            Ok(Some(flow))
        }
        PROTO_TCP | PROTO_UDP => {
            l4_ports(ctx, l4, &mut flow)?;
            Ok(Some(flow))
        }
        PROTO_ICMP if !later_fragment && flow.family == FAMILY_V4 => icmp4_too_big(ctx, l4),
        PROTO_ICMPV6 if !later_fragment && flow.family == FAMILY_V6 => icmp6_too_big(ctx, l4),
        _ => Ok(None),
    }
}

/// The flow an ICMP error is about, turned around: the quoted packet went VIP -> client, the
/// flow reads client -> VIP. `ports` are the quote's first four L4 bytes.
#[inline(always)]
fn quoted_flow(
    quoted_src: [u32; 4],
    quoted_dst: [u32; 4],
    ports: &[u8; L4_PORTS_LEN],
    family: u8,
    proto: u8,
) -> Flow {
    let mut flow = Flow::new(quoted_dst, quoted_src, family, proto);
    flow.sport = u16::from_ne_bytes([ports[L4_DPORT_AT], ports[L4_DPORT_AT + 1]]);
    flow.dport = u16::from_ne_bytes([ports[L4_SPORT_AT], ports[L4_SPORT_AT + 1]]);
    flow.icmp_too_big = true;
    flow
}

/// Ports (and TCP flags) of the L4 header at `l4`.
#[inline(always)]
fn l4_ports(ctx: &XdpContext, l4: usize, flow: &mut Flow) -> Result<(), ()> {
    if flow.proto == PROTO_TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, l4)?;
        // SAFETY: in the frame, alignment 1 (`ptr_at`).
        let raw = unsafe { &*(tcp as *const [u8; TcpHdr::LEN]) };
        if raw[TCP_DATA_OFFSET_AT] >> TCP_DATA_OFFSET_SHIFT < TCP_DATA_OFFSET_MIN_WORDS {
            return Err(()); // data offset below the minimal header
        }
        let flags = raw[TCP_FLAGS_AT];
        let handshake_flags = flags & (TCP_FLAG_ACK | TCP_FLAG_SYN | TCP_FLAG_RST);
        flow.syn_only = handshake_flags == TCP_FLAG_SYN;
        flow.no_handshake = handshake_flags != TCP_FLAG_ACK;
        if crate::passive::ENABLED {
            flow.tcp_at = l4 as u16;
        }
        flow.sport = u16::from_ne_bytes([raw[L4_SPORT_AT], raw[L4_SPORT_AT + 1]]);
        flow.dport = u16::from_ne_bytes([raw[L4_DPORT_AT], raw[L4_DPORT_AT + 1]]);
    } else {
        let udp: *const UdpHdr = ptr_at(ctx, l4)?;
        // SAFETY: in the frame, alignment 1 (`ptr_at`).
        let udp = unsafe { &*udp };
        flow.sport = u16::from_ne_bytes(udp.src);
        flow.dport = u16::from_ne_bytes(udp.dst);
    }
    Ok(())
}

/// ICMP "fragmentation needed": the quoted header is a packet the backend sent (VIP -> client);
/// turn it around so the flow reads client -> VIP and goes to the backend that owns it.
#[inline(always)]
fn icmp4_too_big(ctx: &XdpContext, l4: usize) -> Result<Option<Flow>, ()> {
    let icmp: *const [u8; ICMP_HDR_LEN] = ptr_at(ctx, l4)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let icmp = unsafe { &*icmp };
    if icmp[ICMP_TYPE_AT] != ICMP_DEST_UNREACH || icmp[ICMP_CODE_AT] != ICMP_FRAG_NEEDED {
        return Ok(None);
    }
    let inner_off = l4 + ICMP_HDR_LEN;
    let inner: *const Ipv4Hdr = ptr_at(ctx, inner_off)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let inner = unsafe { &*inner };
    if inner.vihl >> IP_VERSION_SHIFT != IPV4_VERSION || (inner.vihl & IPV4_IHL_MASK) < IPV4_IHL_MIN_WORDS {
        return Err(());
    }
    let ihl = ((inner.vihl & IPV4_IHL_MASK) as usize) * WORD_LEN;
    if inner.proto != PROTO_TCP && inner.proto != PROTO_UDP {
        return Ok(None);
    }
    // The quote holds at least 8 bytes of L4 header: the two ports.
    let ports: *const [u8; L4_PORTS_LEN] = ptr_at(ctx, inner_off + ihl)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let ports = unsafe { &*ports };
    Ok(Some(quoted_flow(
        v4_addr(inner.src_addr),
        v4_addr(inner.dst_addr),
        ports,
        FAMILY_V4,
        inner.proto,
    )))
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Result<Option<Flow>, ()> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, off)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> IP_VERSION_SHIFT != IPV6_VERSION {
        return Err(());
    }
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    if ctx.data() + off + Ipv6Hdr::LEN + payload_len > ctx.data_end() {
        return Err(());
    }
    let mut proto = ip.next_hdr;
    let mut l4 = off + Ipv6Hdr::LEN;
    let (mut fragment, mut later_fragment, mut frag_id) = (false, false, 0);
    // Walk at most MAX_IPV6_EXT_HEADERS extension headers; a longer chain is malformed for us.
    let mut done = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match proto {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let ext: *const [u8; 2] = ptr_at(ctx, l4)?;
                // SAFETY: in the frame, alignment 1 (`ptr_at`).
                let ext = unsafe { &*ext };
                proto = ext[IPV6_EXT_NEXT_HDR_AT];
                l4 += (ext[IPV6_EXT_LEN_AT] as usize + 1) * IPV6_EXT_LEN_UNIT;
            }
            IPV6_FRAGMENT => {
                let ext: *const [u8; IPV6_FRAG_HDR_LEN] = ptr_at(ctx, l4)?;
                // SAFETY: in the frame, alignment 1 (`ptr_at`).
                let ext = unsafe { &*ext };
                proto = ext[IPV6_EXT_NEXT_HDR_AT];
                fragment = true;
                let id = IPV6_FRAG_ID_AT;
                frag_id = u32::from_be_bytes([ext[id], ext[id + 1], ext[id + 2], ext[id + 3]]);
                let at = IPV6_FRAG_OFFSET_AT;
                later_fragment = u16::from_be_bytes([ext[at], ext[at + 1]]) >> IPV6_FRAG_OFFSET_SHIFT != 0;
                l4 += IPV6_FRAG_HDR_LEN;
            }
            _ => {
                done = true;
                break;
            }
        }
    }
    if !done {
        return Err(());
    }
    let mut flow = Flow::new(words_of(&ip.src_addr), words_of(&ip.dst_addr), FAMILY_V6, proto);
    flow.fragment = fragment;
    flow.frag_id = frag_id;
    transport(ctx, l4, flow, later_fragment)
}

/// ICMPv6 "packet too big" about a VIP flow; see `icmp4_too_big`. The quoted IPv6 header is
/// taken without extension headers (what backends send).
#[inline(always)]
fn icmp6_too_big(ctx: &XdpContext, l4: usize) -> Result<Option<Flow>, ()> {
    let icmp: *const [u8; ICMP_HDR_LEN] = ptr_at(ctx, l4)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let icmp = unsafe { &*icmp };
    if icmp[ICMP_TYPE_AT] != ICMPV6_PKT_TOOBIG {
        return Ok(None);
    }
    let inner_off = l4 + ICMP_HDR_LEN;
    let inner: *const Ipv6Hdr = ptr_at(ctx, inner_off)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let inner = unsafe { &*inner };
    if inner.next_hdr != PROTO_TCP && inner.next_hdr != PROTO_UDP {
        return Ok(None);
    }
    let ports: *const [u8; L4_PORTS_LEN] = ptr_at(ctx, inner_off + Ipv6Hdr::LEN)?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let ports = unsafe { &*ports };
    Ok(Some(quoted_flow(
        words_of(&inner.src_addr),
        words_of(&inner.dst_addr),
        ports,
        FAMILY_V6,
        inner.next_hdr,
    )))
}
