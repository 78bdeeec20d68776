//! Step 1: parse Ethernet (one 802.1Q tag), IPv4/IPv6 (with extension headers and fragments),
//! TCP/UDP, and ICMP/ICMPv6 "too big" errors, into a `Flow` seen from the client's side.
//!
//! `Ok(None)` = not a packet we balance (not IP, other protocols): pass untouched.
//! `Err(())` = truncated or invalid headers: pass to the kernel, counted, never forwarded.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, MAX_IPV6_EXT_HEADERS, PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
/// Where the ethertype sits in an Ethernet header (after the two MACs).
pub const ETH_TYPE_AT: usize = 12;
const VLAN_HLEN: usize = 4;
/// Where the inner ethertype sits in an 802.1Q tag (after the tag control field).
const VLAN_INNER_TYPE_AT: usize = 2;
const IPV4_VERSION: u8 = 4;
const IPV6_VERSION: u8 = 6;
/// The IPv4 header length field (low nibble of `vihl`) counts 32-bit words.
const IPV4_IHL_MASK: u8 = 0x0f;
const IPV4_IHL_MIN_WORDS: u8 = 5;
/// Where the source and destination addresses sit in an IPv4 header.
pub const IPV4_SRC_AT: usize = 12;
pub const IPV4_DST_AT: usize = 16;
/// Where the source address sits in an IPv6 header.
pub const IPV6_SRC_AT: usize = 8;
/// IPv4 `frags` field (host order): the More Fragments flag and the fragment offset.
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Hop-by-hop, routing and destination options headers give their length in 8-byte units, not
/// counting the first 8 bytes.
const IPV6_EXT_LEN_UNIT: usize = 8;
const IPV6_FRAG_HDR_LEN: usize = 8;
/// The IPv6 fragment header's offset field (bytes 2..4) holds the offset above 3 flag bits.
const IPV6_FRAG_OFFSET_SHIFT: u16 = 3;
/// ICMP and ICMPv6 headers (type, code, checksum, 4 more bytes) before the quoted packet.
const ICMP_HDR_LEN: usize = 8;
/// Where the data offset (high nibble, 32-bit words) and the flags sit in a TCP header.
const TCP_DATA_OFFSET_AT: usize = 12;
const TCP_FLAGS_AT: usize = 13;
const TCP_DATA_OFFSET_MIN_WORDS: u8 = 5;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;

/// A packet as the balancer sees it: always oriented client -> VIP (for an ICMP error the inner
/// header is turned around, so the flow is the one the error is about).
pub struct Flow {
    pub src: [u8; 16],
    pub dst: [u8; 16],
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
    /// ICMP need-frag / ICMPv6 packet-too-big about a VIP flow.
    pub icmp_too_big: bool,
}

/// Bounds-checked pointer to a `T` at `offset` from the start of the frame.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
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
    // SAFETY: bounds checked by ptr_at.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_8021Q {
        // One tag: the inner ethertype sits in the tag's last two bytes.
        let inner: *const [u8; 2] = ptr_at(ctx, off + VLAN_INNER_TYPE_AT)?;
        // SAFETY: bounds checked by ptr_at.
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

#[inline(always)]
fn v4_addr(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0] = a[0];
    out[1] = a[1];
    out[2] = a[2];
    out[3] = a[3];
    out
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Result<Option<Flow>, ()> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, off)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let vihl = ip.vihl;
    if vihl >> 4 != IPV4_VERSION {
        return Err(());
    }
    let ihl = ((vihl & IPV4_IHL_MASK) as usize) * 4;
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
    let mut flow = Flow {
        src: v4_addr(ip.src_addr),
        dst: v4_addr(ip.dst_addr),
        sport: 0,
        dport: 0,
        family: FAMILY_V4,
        proto: ip.proto,
        fragment,
        later_fragment: false,
        frag_id: 0,
        syn_only: false,
        no_handshake: false,
        icmp_too_big: false,
    };
    if fragment {
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
fn quoted_flow(quoted_src: [u8; 16], quoted_dst: [u8; 16], ports: &[u8; 4], family: u8, proto: u8) -> Flow {
    Flow {
        src: quoted_dst,
        dst: quoted_src,
        sport: u16::from_ne_bytes([ports[2], ports[3]]),
        dport: u16::from_ne_bytes([ports[0], ports[1]]),
        family,
        proto,
        fragment: false,
        later_fragment: false,
        frag_id: 0,
        syn_only: false,
        no_handshake: false,
        icmp_too_big: true,
    }
}

/// Ports (and TCP flags) of the L4 header at `l4`.
#[inline(always)]
fn l4_ports(ctx: &XdpContext, l4: usize, flow: &mut Flow) -> Result<(), ()> {
    if flow.proto == PROTO_TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, l4)?;
        // SAFETY: bounds checked by ptr_at.
        let raw = unsafe { &*(tcp as *const [u8; TcpHdr::LEN]) };
        if raw[TCP_DATA_OFFSET_AT] >> 4 < TCP_DATA_OFFSET_MIN_WORDS {
            return Err(()); // data offset below the minimal header
        }
        let flags = raw[TCP_FLAGS_AT];
        let handshake_flags = flags & (TCP_FLAG_ACK | TCP_FLAG_SYN | TCP_FLAG_RST);
        flow.syn_only = handshake_flags == TCP_FLAG_SYN;
        flow.no_handshake = handshake_flags != TCP_FLAG_ACK;
        flow.sport = u16::from_ne_bytes([raw[0], raw[1]]);
        flow.dport = u16::from_ne_bytes([raw[2], raw[3]]);
    } else {
        let udp: *const UdpHdr = ptr_at(ctx, l4)?;
        // SAFETY: bounds checked by ptr_at.
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
    // SAFETY: bounds checked by ptr_at.
    let icmp = unsafe { &*icmp };
    if icmp[0] != ICMP_DEST_UNREACH || icmp[1] != ICMP_FRAG_NEEDED {
        return Ok(None);
    }
    let inner_off = l4 + ICMP_HDR_LEN;
    let inner: *const Ipv4Hdr = ptr_at(ctx, inner_off)?;
    // SAFETY: bounds checked by ptr_at.
    let inner = unsafe { &*inner };
    if inner.vihl >> 4 != IPV4_VERSION || (inner.vihl & IPV4_IHL_MASK) < IPV4_IHL_MIN_WORDS {
        return Err(());
    }
    let ihl = ((inner.vihl & IPV4_IHL_MASK) as usize) * 4;
    if inner.proto != PROTO_TCP && inner.proto != PROTO_UDP {
        return Ok(None);
    }
    // The quote holds at least 8 bytes of L4 header: the two ports.
    let ports: *const [u8; 4] = ptr_at(ctx, inner_off + ihl)?;
    // SAFETY: bounds checked by ptr_at.
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
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != IPV6_VERSION {
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
                // SAFETY: bounds checked by ptr_at.
                let ext = unsafe { &*ext };
                proto = ext[0];
                l4 += (ext[1] as usize + 1) * IPV6_EXT_LEN_UNIT;
            }
            IPV6_FRAGMENT => {
                let ext: *const [u8; IPV6_FRAG_HDR_LEN] = ptr_at(ctx, l4)?;
                // SAFETY: bounds checked by ptr_at.
                let ext = unsafe { &*ext };
                proto = ext[0];
                fragment = true;
                frag_id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                later_fragment = u16::from_be_bytes([ext[2], ext[3]]) >> IPV6_FRAG_OFFSET_SHIFT != 0;
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
    let flow = Flow {
        src: ip.src_addr,
        dst: ip.dst_addr,
        sport: 0,
        dport: 0,
        family: FAMILY_V6,
        proto,
        fragment,
        later_fragment: false,
        frag_id,
        syn_only: false,
        no_handshake: false,
        icmp_too_big: false,
    };
    transport(ctx, l4, flow, later_fragment)
}

/// ICMPv6 "packet too big" about a VIP flow; see `icmp4_too_big`. The quoted IPv6 header is
/// taken without extension headers (what backends send).
#[inline(always)]
fn icmp6_too_big(ctx: &XdpContext, l4: usize) -> Result<Option<Flow>, ()> {
    let icmp: *const [u8; ICMP_HDR_LEN] = ptr_at(ctx, l4)?;
    // SAFETY: bounds checked by ptr_at.
    let icmp = unsafe { &*icmp };
    if icmp[0] != ICMPV6_PKT_TOOBIG {
        return Ok(None);
    }
    let inner_off = l4 + ICMP_HDR_LEN;
    let inner: *const Ipv6Hdr = ptr_at(ctx, inner_off)?;
    // SAFETY: bounds checked by ptr_at.
    let inner = unsafe { &*inner };
    if inner.next_hdr != PROTO_TCP && inner.next_hdr != PROTO_UDP {
        return Ok(None);
    }
    let ports: *const [u8; 4] = ptr_at(ctx, inner_off + Ipv6Hdr::LEN)?;
    // SAFETY: bounds checked by ptr_at.
    let ports = unsafe { &*ports };
    Ok(Some(quoted_flow(
        inner.src_addr,
        inner.dst_addr,
        ports,
        FAMILY_V6,
        inner.next_hdr,
    )))
}
