//! Step 7 for backends on other networks (see `main`): IP-in-IP or GUE encapsulation, with the
//! next hop from the kernel's FIB. For a backend whose `Backend::forward` is not `FORWARD_L2`.
//! A program of its own, `xlb_encap` (the encapsulation stage), which the main program reaches
//! by a tail call after it chose the backend; what it knows of the packet comes in this CPU's
//! handoff slot (`lb_common::EncapHandoff`), the frame itself as the client sent it.
//!
//! The frame that leaves (the wire format `xlb decap` and a kernel `ipip`/`fou` device read):
//! - Ethernet: destination = the next hop's MAC, source = the egress interface's MAC, both from
//!   `bpf_fib_lookup` on the outer destination (the host's own routes and neighbours). No VLAN
//!   tag: a tag the client's frame carried is dropped with its Ethernet header.
//! - Outer IPv4 (`ipip` of an IPv4 service; GUE too): version 4, IHL 5, TOS copied from the
//!   inner packet (DSCP and ECN), total length, identification 0, Don't Fragment set (the
//!   balancer answers "too big" itself, below, and a decapsulator never sees fragments),
//!   TTL 64, protocol 4 (IP in IP) or 17 (UDP), header checksum, source = `Encap::src` (the
//!   balancer's `encap_source`; with a prefix, its host bits from the flow's entropy hash),
//!   destination = the server's address.
//! - Outer IPv6: version 6, traffic class copied from the inner packet, flow label = the low
//!   20 bits of the entropy hash, payload length, next header 41 (IPv6) or 17 (UDP), hop limit
//!   64, source and destination as for IPv4.
//! - GUE only: UDP, source port = 49152 + (entropy hash mod 16384), destination port = the
//!   backend's `gue_port`, length, checksum 0 — for IPv4 "no checksum"; for IPv6 the zero
//!   checksum RFC 6935/6936 allow for tunnels (computing it would read the whole packet; the
//!   inner packet carries its own). Then GUE (draft-ietf-intarea-gue) version 0, C 0, Hlen 0,
//!   protocol = the inner packet's (4 or 41), flags 0: 4 bytes.
//! - The inner IP packet, byte for byte as the client sent it (TTL not decremented).
//!
//! The entropy hash (`lb_common::encap_entropy`) is of the client's address and source port:
//! every packet of a connection carries the same outer source, UDP port and flow label, and
//! different connections spread over the backend's receive queues (RSS).
//!
//! Not forwarded (the frame passed to the kernel untouched, counted): any FIB answer other
//! than success or "fragmentation needed" (`encap_fib_miss`: no route, unreachable, no
//! neighbour entry for the next hop yet, forwarding disabled on the interface) and a driver
//! without headroom (`encap_no_headroom`). The FIB lookup is the forwarding kind, so the
//! receiving interface needs forwarding on (`net.ipv4.conf.IF.forwarding=1`,
//! `net.ipv6.conf.IF.forwarding=1`). When the FIB says the outer packet exceeds the egress MTU,
//! the client gets an ICMP error instead (`too_big`).
//!
//! The FIB's answer (next hop MACs, egress interface, route MTU) is cached per CPU and backend
//! for a second (`NEXT_HOP_TTL_NS`): a lookup costs about twice a whole L2 stick hit. A route
//! or neighbour change is followed within that second; a miss is never cached. The lookup is
//! per backend, from the `encap_source` address (its prefix base) with TOS 0: policy routing
//! by the flow's own source or TOS is not followed. With the answer the cache keeps the outer
//! headers themselves (`outer::Head`), built for the backend's `Encap`, mode and family; an
//! entry made for any other (a changed source or GUE port, a reused backend id) is made afresh
//! by the next packet, whatever its age.
//!
//! Cost (`cargo xtask bench datapath`, `v4_ipip_stick_hit`, `v4_gue_stick_hit`): about 1.20 ×
//! the L2 stick hit on this machine kind (runs 1.19–1.22), some 20 ns over it. Where it went
//! before the build allowed unaligned loads and stores (about 24 ns then; throwaway builds
//! returning early, timed against the whole stage in the same run): the
//! tail call and handoff about 2 ns; one read of the inner IP header for the entropy hash and
//! the outer header's fields (`plain_facts`; a full parse only for IPv4 options, IPv6
//! extension headers, fragments and ICMP errors) about 5; the two map slots and the cache's
//! check against the clock the main program already read (`EncapHandoff::now`) about 4;
//! `bpf_xdp_adjust_head` about 7 (the helper call itself: measured moving the head by 0); the
//! cached headers copied 8 bytes at a time with the packet's own fields written over them
//! (`outer`) the rest.
//!
//! Egress: `XDP_TX` when the FIB's interface is the receiving one; else `bpf_redirect` to it by
//! ifindex (no devmap port needed; counted as `redirect`). That interface's driver must take
//! XDP frames (`ndo_xdp_xmit`; a veth only when its peer runs an XDP program), or the kernel
//! drops the frame (seen in the `xdp:xdp_redirect_err` tracepoint).

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibLookupParams, xdp_action, xdp_md},
    helpers::{bpf_fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{Encap, FAMILY_V6, FORWARD_GUE, PROTO_TCP, PROTO_UDP, encap_entropy_of, gstat::Counter};

use crate::{
    headers::*,
    maps,
    outer::{Head, Packet},
    parse, too_big,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `bpf_fib_lookup` answers we act on (`BPF_FIB_LKUP_RET_*`).
const FIB_SUCCESS: i64 = 0;
const FIB_FRAG_NEEDED: i64 = 8;

/// `struct bpf_fib_lookup` (64 bytes), with every union as the member used here: `tot_len` in
/// (the outer packet's length), `mtu_result` out; `tos` (IPv4) in the flowinfo word. Built in
/// a per-CPU scratch slot (`maps::fib_params`), where `too_big_mtu` finds the MTU left there.
#[repr(C)]
pub struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    tot_len_or_mtu: u16,
    ifindex: u32,
    tos_or_flowinfo: [u8; 4],
    src: [u8; 16],
    dst: [u8; 16],
    vlan: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<FibParams>() == 64);

/// How long a cached next hop is used before the FIB is asked again (a route or neighbour
/// change is followed within this time).
const NEXT_HOP_TTL_NS: u64 = 1_000_000_000;

/// A backend's next hop as the FIB last gave it, and the outer headers through it, in this
/// CPU's cache (`maps::next_hop_slot`, index: backend id). Zero `checked_ns` = nothing cached.
#[repr(C)]
pub struct NextHop {
    /// The backend's `Encap` it was made for: any other (a reused backend id, a new address,
    /// source or GUE port) makes it afresh.
    encap: Encap,
    /// The backend's mode and family it was made for (`kind`).
    kind: u8,
    _pad: u8,
    /// The route's MTU (`u16::MAX`: none below that).
    mtu: u16,
    ifindex: u32,
    /// `bpf_ktime_get_coarse_ns` of the lookup (odd: never 0).
    checked_ns: u64,
    head: Head,
}

/// `NextHop::kind` of a backend reached by GUE (`gue`) or IP in IP, of the family `v6`.
#[inline(always)]
fn kind(v6: bool, gue: bool) -> u8 {
    (v6 as u8) << 1 | gue as u8
}

/// `e`'s 40 bytes as five 8-byte words: compared in five steps.
#[inline(always)]
fn encap_words(e: &Encap) -> &[u64; 5] {
    const _: () = assert!(core::mem::size_of::<Encap>() == 40 && core::mem::align_of::<Encap>() == 8);
    // SAFETY: `Encap` is 40 bytes of integers with its padding explicit (no uninitialised
    // byte), aligned to 8 (both checked above), as `[u64; 5]` is.
    unsafe { &*(e as *const Encap as *const [u64; 5]) }
}

/// The inner packet's facts the outer header needs: where it starts, its length, its TOS.
struct Inner {
    /// Offset of its IP header in the frame (after Ethernet and at most one VLAN tag).
    l3: usize,
    len: usize,
    tos: u8,
}

/// What `to_backend` returns instead of a verdict when the packet, encapsulated, would exceed
/// the egress MTU: `stage` answers with `too_big::reply`, for the MTU `too_big_mtu` says.
/// (Not an XDP action.)
const TOO_BIG: u32 = u32::MAX;

/// The MTU the client must use after `to_backend` returned `TOO_BIG`: the egress MTU less the
/// encapsulation's overhead, left in this CPU's FIB slot.
#[inline(always)]
fn too_big_mtu() -> u16 {
    maps::fib_params().map_or(0, |f| f.tot_len_or_mtu)
}

/// The encapsulation stage: the packet the main program handed over (its backend in this
/// CPU's handoff slot), encapsulated and sent, or answered with "too big", or passed, counted.
#[inline(always)]
pub fn stage(ctx: &XdpContext) -> u32 {
    let Some(h) = maps::encap_handoff() else {
        return pass(Counter::EncapStageMissing);
    };
    let (id, mode) = (h.backend, h.forward);
    // The main program's clock reading, when its stick lookup made one: a helper call saved.
    let now = match h.now {
        0 => {
            // SAFETY: helper without arguments.
            unsafe { bpf_ktime_get_coarse_ns() }
        }
        now => now,
    } | 1;
    let mut facts = plain_facts(ctx);
    if facts == NO_FLOW {
        facts = flow_facts(ctx.ctx);
    }
    if facts == NO_FLOW {
        // Cannot happen: the main program forwarded this very frame.
        return pass(Counter::ParseError);
    }
    let (entropy, v6, icmp_too_big) = (facts as u32, facts & FACT_V6 != 0, facts & FACT_TOO_BIG != 0);
    let inner = Inner {
        l3: if facts & FACT_TAGGED != 0 {
            ETH_HLEN + VLAN_HLEN
        } else {
            ETH_HLEN
        },
        tos: (facts >> FACT_TOS_SHIFT) as u8,
        len: (facts >> FACT_LEN_SHIFT) as usize,
    };
    match to_backend(ctx, id, entropy, mode, inner, v6, icmp_too_big, now) {
        TOO_BIG => too_big::reply(ctx, v6, too_big_mtu()),
        verdict => verdict,
    }
}

/// `flow_facts`, beside the entropy hash (bits 0..32): the flow is IPv6; it is an ICMP "too
/// big" about a VIP flow; the frame has a VLAN tag (its IP header at 18, not 14); the inner
/// packet's TOS (bits 40..48) and length (bits 48..64). `NO_FLOW`: the frame did not parse.
const FACT_V6: u64 = 1 << 32;
const FACT_TOO_BIG: u64 = 1 << 33;
const FACT_TAGGED: u64 = 1 << 34;
const FACT_TOS_SHIFT: u32 = 40;
const FACT_LEN_SHIFT: u32 = 48;
const NO_FLOW: u64 = u64::MAX;

/// The facts of the inner packet (`Inner`) in their bits.
#[inline(always)]
fn inner_facts(inner: &Inner) -> u64 {
    let tagged = if inner.l3 != ETH_HLEN { FACT_TAGGED } else { 0 };
    tagged | (inner.tos as u64) << FACT_TOS_SHIFT | (inner.len as u64) << FACT_LEN_SHIFT
}

/// `flow_facts` of the common case, read straight from the frame (no parse, no call): an IPv4
/// packet without options and not a fragment, or an IPv6 packet without extension headers,
/// carrying TCP or UDP (the address and port where `parse` finds them then). `NO_FLOW` for
/// anything else, which `flow_facts` parses in full.
#[inline(always)]
fn plain_facts(ctx: &XdpContext) -> u64 {
    const V4_SPAN: usize = IPV4_HLEN + L4_PORTS_LEN;
    const V6_SPAN: usize = IPV6_HLEN + L4_PORTS_LEN;
    const V4_FIRST: u8 = (IPV4_VERSION << IP_VERSION_SHIFT) | IPV4_IHL_MIN_WORDS;
    let l4 = |proto: u8| proto == PROTO_TCP || proto == PROTO_UDP;
    let Some(l3) = l3_offset(ctx) else {
        return NO_FLOW;
    };
    let start = ctx.data() + l3;
    if start + V4_SPAN > ctx.data_end() {
        return NO_FLOW;
    }
    // SAFETY: V4_SPAN bytes bounds-checked above; alignment 1.
    let ip = unsafe { &*(start as *const [u8; V4_SPAN]) };
    if ip[0] == V4_FIRST {
        let frags = u16::from_be(word16(ip, 6));
        if !l4(ip[9]) || frags & (IPV4_MORE_FRAGMENTS | IPV4_FRAG_OFFSET_MASK) != 0 {
            return NO_FLOW;
        }
        let inner = Inner {
            l3,
            len: u16::from_be(word16(ip, IPV4_TOT_LEN_AT)) as usize,
            tos: ip[IPV4_TOS_AT],
        };
        let (client, sport) = (word32(ip, IPV4_SRC_AT), word16(ip, IPV4_HLEN));
        return encap_entropy_of(client, sport) as u64 | inner_facts(&inner);
    }
    if ip[0] >> IP_VERSION_SHIFT != IPV6_VERSION || !l4(ip[IPV6_NEXT_HDR_AT]) {
        return NO_FLOW;
    }
    if start + V6_SPAN > ctx.data_end() {
        return NO_FLOW;
    }
    // SAFETY: V6_SPAN bytes bounds-checked above; alignment 1.
    let ip = unsafe { &*(start as *const [u8; V6_SPAN]) };
    let s = IPV6_SRC_AT;
    let folded = word32(ip, s) ^ word32(ip, s + 4) ^ word32(ip, s + 8) ^ word32(ip, s + 12);
    let sport = word16(ip, IPV6_HLEN);
    let inner = Inner {
        l3,
        len: IPV6_HLEN + u16::from_be(word16(ip, IPV6_PAYLOAD_LEN_AT)) as usize,
        tos: (ip[0] << 4) | (ip[1] >> 4),
    };
    encap_entropy_of(folded, sport) as u64 | FACT_V6 | inner_facts(&inner)
}

/// The 16 bits at `at` of the IP header `ip`, as they lie in the frame (network order), in one
/// load (of any alignment, see `lb-userspace/build.rs`). 0 for an `at` past `ip` (a constant
/// once inlined).
#[inline(always)]
fn word16<const N: usize>(ip: &[u8; N], at: usize) -> u16 {
    if at + 2 > N {
        return 0;
    }
    // SAFETY: `at..at + 2` is within `ip` (checked above); any alignment.
    unsafe { (ip.as_ptr().add(at) as *const u16).read_unaligned() }
}

/// The 32 bits at `at` of `ip` as `u32::from_ne_bytes` of them, in one load (as `word16`).
#[inline(always)]
fn word32<const N: usize>(ip: &[u8; N], at: usize) -> u32 {
    if at + 4 > N {
        return 0;
    }
    // SAFETY: `at..at + 4` is within `ip` (checked above); any alignment.
    unsafe { (ip.as_ptr().add(at) as *const u32).read_unaligned() }
}

/// What the stage needs of the flow, parsed again from the frame as the main program parsed it
/// (the frame is as it came; handing the flow's fields over instead would cost the main
/// program's one frame room it does not have): the entropy hash of its client's address and
/// port (low 32 bits) and the other facts (`FACT_*`), as `plain_facts` gives them for the
/// common case; or `NO_FLOW`.
///
/// A BPF-to-BPF call of its own (in the stage only), that answers with one number: inlined,
/// the compiler starts on the hash before the parse is known to have succeeded, in registers
/// the verifier then finds unset or holding packet pointers on the failing paths. It takes the
/// raw context behind `black_box`, so the compiler cannot turn it into two bare integers (the
/// packet's start and end), which the verifier would no longer know for packet pointers.
#[inline(never)]
fn flow_facts(raw: *mut xdp_md) -> u64 {
    let ctx = XdpContext::new(core::hint::black_box(raw));
    let flow = match parse::parse(&ctx) {
        Ok(Some(flow)) => flow,
        Ok(None) | Err(()) => return NO_FLOW,
    };
    let v6 = flow.family == FAMILY_V6;
    let inner = inner(&ctx, v6);
    if inner.l3 == 0 {
        return NO_FLOW;
    }
    let a = flow.src;
    let mut facts = encap_entropy_of(a[0] ^ a[1] ^ a[2] ^ a[3], flow.sport) as u64 | inner_facts(&inner);
    if v6 {
        facts |= FACT_V6;
    }
    if flow.icmp_too_big {
        facts |= FACT_TOO_BIG;
    }
    facts
}

/// Encapsulate the frame for backend `id` (mode `mode`, the flow's entropy hash `hash`) and
/// send it to the FIB's next hop; or `TOO_BIG` (never for an ICMP "too big" itself).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn to_backend(
    ctx: &XdpContext,
    id: u32,
    hash: u32,
    mode: u8,
    inner: Inner,
    v6: bool,
    icmp_too_big: bool,
    now: u64,
) -> u32 {
    let Some(e) = maps::encap(id) else {
        return pass(Counter::EncapFibMiss);
    };
    let gue = mode == FORWARD_GUE;
    let ip_len = if v6 { IPV6_HLEN } else { IPV4_HLEN };
    let outer_len = ip_len + if gue { UDP_HLEN + GUE_HLEN } else { 0 };
    let total = outer_len + inner.len;
    let ingress = ingress_ifindex(ctx);
    let Some(hop) = next_hop(ctx, e, id, v6, gue, ingress, now) else {
        return pass(Counter::EncapFibMiss);
    };
    if total > hop.mtu as usize {
        // An ICMP "too big" about a VIP flow, too big itself: no error about an error.
        let Some(fib) = maps::fib_params().filter(|_| !icmp_too_big) else {
            return pass(Counter::EncapFibMiss);
        };
        fib.tot_len_or_mtu = hop.mtu.saturating_sub(outer_len as u16);
        return TOO_BIG;
    }
    let delta = inner.l3 as i32 - (ETH_HLEN + outer_len) as i32;
    // SAFETY: the program's own context; every packet pointer is taken afresh afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return pass(Counter::EncapNoHeadroom);
    }
    let p = Packet {
        inner_len: inner.len,
        tos: inner.tos,
        hash,
    };
    let h = &hop.head;
    let written = match (v6, gue) {
        (false, false) => h.write::<{ ETH_HLEN + IPV4_HLEN }>(ctx, false, false, &p),
        (false, true) => h.write::<{ ETH_HLEN + IPV4_HLEN + UDP_HLEN + GUE_HLEN }>(ctx, false, true, &p),
        (true, false) => h.write::<{ ETH_HLEN + IPV6_HLEN }>(ctx, true, false, &p),
        (true, true) => h.write::<{ ETH_HLEN + IPV6_HLEN + UDP_HLEN + GUE_HLEN }>(ctx, true, true, &p),
    };
    if !written {
        // The room just made is missing: cannot happen, and a half-built frame must not leave.
        return xdp_action::XDP_ABORTED;
    }
    if hop.ifindex == ingress {
        xdp_action::XDP_TX
    } else {
        maps::count(Counter::Redirect);
        // SAFETY: helper without pointers.
        unsafe { bpf_redirect(hop.ifindex, 0) as u32 }
    }
}

/// The next hop to backend `id` (its `Encap`: `e`; of family `v6`, reached by GUE: `gue`) and
/// the outer headers through it, from this CPU's cache when the cache holds them for this
/// `Encap`, mode and family and looked the next hop up less than `NEXT_HOP_TTL_NS` ago, else
/// from the FIB (and cached). `now`: the coarse clock, odd (never 0). None: the FIB has no
/// usable answer (not cached: the next packet asks again).
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    e: &Encap,
    id: u32,
    v6: bool,
    gue: bool,
    ingress: u32,
    now: u64,
) -> Option<&'static NextHop> {
    let hop = maps::next_hop_slot(id)?;
    let (a, b) = (encap_words(&hop.encap), encap_words(e));
    let same = (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0;
    let kind = kind(v6, gue);
    if same && hop.kind == kind && hop.checked_ns != 0 && now.wrapping_sub(hop.checked_ns) < NEXT_HOP_TTL_NS {
        return Some(hop);
    }
    hop.checked_ns = 0;
    let l4 = match (gue, v6) {
        (true, _) => PROTO_UDP,
        (false, true) => PROTO_IPV6,
        (false, false) => PROTO_IPIP,
    };
    let fib = maps::fib_params()?;
    // First the route's MTU: a length no route takes gets "fragmentation needed" with it (the
    // answer comes before the neighbour's); then the route and neighbour themselves.
    let mtu = match fib_lookup(ctx, fib, e, v6, l4, ingress, u16::MAX) {
        FIB_FRAG_NEEDED => fib.tot_len_or_mtu,
        FIB_SUCCESS => u16::MAX,
        _ => return None,
    };
    if fib_lookup(ctx, fib, e, v6, l4, ingress, 0) != FIB_SUCCESS {
        return None;
    }
    hop.encap = *e;
    hop.kind = kind;
    hop.head.build(e, &fib.dmac, &fib.smac, v6, gue);
    hop.ifindex = fib.ifindex;
    hop.mtu = mtu;
    hop.checked_ns = now;
    Some(hop)
}

/// One `bpf_fib_lookup` (the forwarding kind, from the receiving interface) of `e`'s outer
/// destination from its source, for a packet of `tot_len` bytes (0: no MTU check).
#[inline(always)]
fn fib_lookup(
    ctx: &XdpContext,
    fib: &mut FibParams,
    e: &Encap,
    v6: bool,
    l4: u8,
    ingress: u32,
    tot_len: u16,
) -> i64 {
    fib.family = if v6 { AF_INET6 } else { AF_INET };
    fib.l4_protocol = l4;
    fib.sport = 0;
    fib.dport = 0;
    fib.tot_len_or_mtu = tot_len;
    fib.ifindex = ingress;
    fib.tos_or_flowinfo = [0; 4];
    fib.src = e.src;
    fib.dst = e.dst;
    fib.vlan = 0;
    // SAFETY: `fib` is a 64-byte `struct bpf_fib_lookup` in this CPU's scratch slot, valid for
    // the call; the context pointer is the program's own.
    unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            fib as *mut FibParams as *mut FibLookupParams,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    }
}

/// The interface the frame came in on.
#[inline(always)]
fn ingress_ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: the program's own context, valid while it runs.
    unsafe { (*ctx.ctx).ingress_ifindex }
}

/// Where the inner IP header starts, its packet's length (from its own header: Ethernet
/// padding is not part of it) and its TOS / traffic class. `l3` 0: the frame is too short.
#[inline(always)]
fn inner(ctx: &XdpContext, v6: bool) -> Inner {
    const FIRST: usize = IPV6_PAYLOAD_LEN_AT + 2;
    const NONE: Inner = Inner {
        l3: 0,
        len: 0,
        tos: 0,
    };
    let start = ctx.data();
    let Some(l3) = l3_offset(ctx) else {
        return NONE;
    };
    if start + l3 + FIRST > ctx.data_end() {
        return NONE;
    }
    // SAFETY: bounds-checked above; alignment 1.
    let ip = unsafe { &*((start + l3) as *const [u8; FIRST]) };
    let (len, tos) = if v6 {
        let at = IPV6_PAYLOAD_LEN_AT;
        (
            IPV6_HLEN + u16::from_be_bytes([ip[at], ip[at + 1]]) as usize,
            (ip[0] << 4) | (ip[1] >> 4),
        )
    } else {
        let at = IPV4_TOT_LEN_AT;
        (u16::from_be_bytes([ip[at], ip[at + 1]]) as usize, ip[IPV4_TOS_AT])
    };
    Inner { l3, len, tos }
}

/// Where the IP header starts: after Ethernet and at most one VLAN tag (what `parse` accepts).
#[inline(always)]
pub fn l3_offset(ctx: &XdpContext) -> Option<usize> {
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds-checked above; alignment 1.
    let eth = unsafe { &*(start as *const [u8; ETH_HLEN]) };
    if u16::from_be_bytes([eth[ETH_TYPE_AT], eth[ETH_TYPE_AT + 1]]) == ETH_P_8021Q {
        Some(ETH_HLEN + VLAN_HLEN)
    } else {
        Some(ETH_HLEN)
    }
}

#[inline(always)]
fn pass(counter: Counter) -> u32 {
    maps::count(counter);
    xdp_action::XDP_PASS
}
