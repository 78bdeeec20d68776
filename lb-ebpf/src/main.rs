//! xlb's data path: one XDP program, one-armed, L2 direct server return.
//!
//! `balance` reads top to bottom in the order a packet travels, and the steps below are
//! numbered in that order. (The brief's "Data path" lists the same rules by topic; its number
//! for each is in brackets.)
//! 1. `parse` [1, 7]: Ethernet (one 802.1Q tag), IPv4/IPv6, TCP/UDP, ICMP "too big", into a
//!    `Flow`. Not ours: passed untouched; malformed: passed, counted, never forwarded. An ICMP
//!    "too big" about a VIP flow is turned round into that flow and takes steps 3–5 and 7 as it.
//! 2. `later_fragment` [7]: a fragment after the first has no ports, so no service lookup of
//!    its own: it takes step 4, then follows the record its datagram's first fragment left in
//!    step 6 to the same backend (step 7), or is passed, counted, without one (`fragment`).
//! 3. `select::service_of` [2]: the VIP lookup by (address, port, protocol), port 0 = any.
//! 4. `forward::addressed_to_us` [6]: only frames sent to our own MAC are forwarded. Checked
//!    after the VIP lookup, so non-VIP traffic pays nothing for it.
//! 5. `select::backend_for` [3–5]: the service's affinity key, its stick table, Maglev on a
//!    miss, and the entry a miss creates (for TCP only from a packet that proves a handshake).
//! 6. `fragment::record_first` [7]: a first fragment records where it went, for step 2.
//! 7. `send`, `forward::to_backend` [6]: L2 DSR, `XDP_TX` or `XDP_REDIRECT`; for a backend on
//!    another network a tail call into the encapsulation stage, `xlb_encap` (`encap`): IP-in-IP
//!    or GUE, the next hop from the kernel's FIB, or an ICMP "too big" back to the client
//!    (`too_big`).
//!
//! Between 5 and 6, `passive` records the handshake signals of TCP flows for passive health: a
//! SYN (new or retransmitted), and a first ACK where step 5 says one may be.
//!
//! Throughout:
//! - Counters [8]: per service and per backend (`maps::service_stats`, `maps::backend_stats`);
//!   global ones (`maps::count`, `lb_common::gstat::Counter`) only for events that belong to no
//!   service or are rare; the agent derives the rest (`lb_common::gstat::Derived`).
//! - Hot path economy [9]: a stick hit refreshes its entry at most once a second, every loop
//!   has a fixed bound, and every function is `#[inline(always)]` into one program (a
//!   BPF-to-BPF call measurably slows every packet) whose one stack frame stays within the
//!   verifier's 512 bytes. Encapsulation is a program of its own, `xlb_encap`, reached by a
//!   tail call (`maps::ENCAP_STAGE`), with its own frame: the L2 path carries none of its code,
//!   and a BPF-to-BPF call into it (tried first) cost every L2 stick hit a quarter more.
//!
//! Every map is documented at its definition in `maps`; every header offset and protocol
//! number is named in `headers`.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

mod checksum;
mod encap;
mod forward;
mod fragment;
mod headers;
mod maps;
mod outer;
mod parse;
mod passive;
mod select;
mod too_big;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{BENCH_FRAME_HEAD, Backend, FORWARD_L2, NO_BACKEND, gstat::Counter};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::headers::{
    ETH_P_IP, ETH_P_IPV6, ETH_TYPE_AT, IPV4_ADDR_LEN, IPV4_DST_AT, IPV4_SRC_AT, IPV6_ADDR_LEN, IPV6_SRC_AT,
    MAC_LEN, MACS_LEN,
};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    balance(&ctx)
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> u32 {
    let mut flow = match parse::parse(ctx) {
        Ok(Some(flow)) => flow,
        Ok(None) => return pass(Counter::PassNotVip),
        Err(()) => return pass(Counter::ParseError),
    };
    if flow.later_fragment {
        return later_fragment(ctx, &flow);
    }
    let Some(service_id) = select::service_of(&flow) else {
        return pass(Counter::PassNotVip);
    };
    let (Some(svc), Some(st)) = (maps::service(service_id), maps::service_stats(service_id)) else {
        return pass(Counter::PassNotVip);
    };
    if svc.enabled == 0 {
        return pass(Counter::PassNotVip);
    }
    if !forward::addressed_to_us(ctx) {
        return pass(Counter::PassNotOurMac);
    }
    let len = (ctx.data_end() - ctx.data()) as u64;
    st.packets += 1;
    st.bytes += len;
    if flow.icmp_too_big {
        maps::count(Counter::IcmpTooBig);
    }

    let id = select::backend_for(&mut flow, service_id, svc, st);
    let backend = if id == NO_BACKEND { None } else { maps::backend(id) };
    let Some(backend) = backend else {
        // Every server of the service is down: nothing can answer. Dropped, counted.
        st.no_backend += 1;
        return xdp_action::XDP_DROP;
    };
    if flow.fragment {
        // A first fragment: the rest of its datagram follows it (`later_fragment`).
        maps::count(Counter::Fragment);
        fragment::record_first(&flow, service_id, id);
    }
    // Before `send`, whose encapsulation stage may move the TCP header or turn the frame into
    // an ICMP reply: the passive signals read the client's TCP header where `parse` found it.
    if passive::ENABLED && flow.tcp_at != 0 {
        if flow.syn_only {
            passive::syn(ctx, &flow, service_id, id, select::now_ns());
        } else if !flow.no_handshake {
            passive::first_ack(ctx, &flow, service_id);
        }
    }
    send(ctx, id, backend, len, flow.now)
}

/// A fragment after the first: it has no ports, so no service lookup of its own; it goes to
/// the backend its datagram's first fragment went to, or, without a record of that, to the
/// kernel (see `fragment`).
#[inline(always)]
fn later_fragment(ctx: &XdpContext, flow: &parse::Flow) -> u32 {
    if !forward::addressed_to_us(ctx) {
        return pass(Counter::PassNotOurMac);
    }
    let Some(first) = fragment::first_of(flow) else {
        return pass(Counter::FragmentNoRecord);
    };
    let (Some(svc), Some(st)) = (maps::service(first.service), maps::service_stats(first.service)) else {
        return pass(Counter::PassNotVip);
    };
    if svc.enabled == 0 {
        // The service was deleted since the first fragment.
        return pass(Counter::PassNotVip);
    }
    let len = (ctx.data_end() - ctx.data()) as u64;
    st.packets += 1;
    st.bytes += len;
    maps::count(Counter::Fragment);
    // The server may have been removed since the first fragment (its id maybe reused): then
    // the datagram cannot be completed anywhere.
    let backend = maps::backend(first.backend).filter(|b| b.serves(first.service));
    let Some(backend) = backend else {
        st.no_backend += 1;
        return xdp_action::XDP_DROP;
    };
    send(ctx, first.backend, backend, len, 0)
}

/// Count a packet for backend `id` and forward it there: L2 DSR (the fast path, tested
/// first), else by a tail call into the encapsulation stage (`xlb_encap`), with the backend in
/// this CPU's handoff slot (and `now`, the clock the stick lookup read, 0 if none). A failed
/// tail call (no stage loaded) returns here: the frame is
/// passed untouched, counted, never dropped.
#[inline(always)]
fn send(ctx: &XdpContext, id: u32, backend: &Backend, len: u64, now: u64) -> u32 {
    if let Some(bs) = maps::backend_stats(id) {
        bs.packets += 1;
        bs.bytes += len;
    }
    if backend.forward == FORWARD_L2 {
        return forward::to_backend(ctx, backend);
    }
    // Index 0 of a one-entry array: the lookup cannot fail.
    if let Some(h) = maps::encap_handoff() {
        h.backend = id;
        h.forward = backend.forward;
        h.now = now;
        maps::tail_call_encap_stage(ctx);
    }
    pass(Counter::EncapStageMissing)
}

/// The encapsulation stage (`encap`), reached only by the tail call in `send`: it reads the
/// handoff slot written there.
#[xdp]
pub fn xlb_encap(ctx: XdpContext) -> u32 {
    encap::stage(&ctx)
}

#[inline(always)]
fn pass(counter: Counter) -> u32 {
    maps::count(counter);
    xdp_action::XDP_PASS
}

/// Test topologies only: attached to the far end of a veth pair whose near end runs `xlb`.
/// veth wakes the receiving side for XDP_TX frames only when that side has an XDP program of
/// its own; this one passes everything on to the stack. Real NICs need nothing of the kind.
#[xdp]
pub fn xlb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark floor: swap MACs, `XDP_TX`. The cheapest program that forwards a frame.
#[xdp]
pub fn xlb_floor(ctx: XdpContext) -> u32 {
    forward::swap_macs(&ctx)
}

/// Benchmark floor for the e2e harness: the best any XDP balancer can do there. Every untagged
/// IPv4 frame to the one VIP in `XLB_FLOOR_TARGET` leaves by `XDP_TX` to the one backend MAC
/// there; everything else is passed. No parse beyond the IPv4 destination, no table, no hash.
#[xdp]
pub fn xlb_e2e_floor(ctx: XdpContext) -> u32 {
    /// An untagged Ethernet header and an IPv4 header without options.
    const FRAME_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN;
    const VIP_AT: usize = EthHdr::LEN + IPV4_DST_AT;
    let start = ctx.data();
    if start + FRAME_LEN > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let Some(t) = maps::floor_target() else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: FRAME_LEN bytes bounds-checked above.
    let frame = unsafe { &mut *(start as *mut [u8; FRAME_LEN]) };
    let [type_hi, type_lo] = ETH_P_IP.to_be_bytes();
    if frame[ETH_TYPE_AT] != type_hi
        || frame[ETH_TYPE_AT + 1] != type_lo
        || frame[VIP_AT..VIP_AT + IPV4_ADDR_LEN] != t.vip
    {
        return xdp_action::XDP_PASS;
    }
    frame[..MAC_LEN].copy_from_slice(&t.backend_mac);
    frame[MAC_LEN..MACS_LEN].copy_from_slice(&t.own_mac);
    xdp_action::XDP_TX
}

/// Benchmark wrapper: give every iteration a fresh client address (from a per-CPU counter),
/// then run the data path, so BPF_PROG_TEST_RUN's `repeat` measures misses, not hits.
#[xdp]
pub fn xlb_bench_fresh(ctx: XdpContext) -> u32 {
    fresh_source(&ctx);
    balance(&ctx)
}

/// Benchmark wrapper's own cost: the same fresh address, then the floor. Subtracted.
#[xdp]
pub fn xlb_bench_fresh_floor(ctx: XdpContext) -> u32 {
    fresh_source(&ctx);
    forward::swap_macs(&ctx)
}

/// Benchmark wrapper for the stick hits to encapsulating backends: put the client's frame back
/// (`restore_frame`), then run the data path, so BPF_PROG_TEST_RUN's `repeat`, which feeds each
/// repetition the previous one's encapsulated output, times the same stick hit every time.
#[xdp]
pub fn xlb_bench_restore(ctx: XdpContext) -> u32 {
    restore_frame(&ctx);
    balance(&ctx)
}

/// That wrapper's own cost: the same restore, then the floor. Subtracted.
#[xdp]
pub fn xlb_bench_restore_floor(ctx: XdpContext) -> u32 {
    restore_frame(&ctx);
    forward::swap_macs(&ctx)
}

/// Makes the frame the client's again (`maps::bench_frame`): its length restored by moving the
/// start (the encapsulation added outer headers there), its first `BENCH_FRAME_HEAD` bytes
/// written back. The same work whether the frame grew or not: the start is moved even by 0.
#[inline(always)]
fn restore_frame(ctx: &XdpContext) {
    let Some(client) = maps::bench_frame() else {
        return;
    };
    let grown = (ctx.data_end() - ctx.data()) as i32 - client.len as i32;
    // SAFETY: the program's own context; packet pointers are taken afresh below.
    if unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, grown) } != 0 {
        return;
    }
    let start = ctx.data();
    if start + BENCH_FRAME_HEAD > ctx.data_end() {
        return;
    }
    // SAFETY: BENCH_FRAME_HEAD bytes bounds-checked above; alignment 1.
    let frame = unsafe { &mut *(start as *mut [u8; BENCH_FRAME_HEAD]) };
    let mut i = 0;
    while i < BENCH_FRAME_HEAD {
        frame[i] = client.head[i];
        i += 1;
    }
}

/// Writes the next counter value (4 bytes) into the low 4 bytes of the client address of an
/// untagged IPv4 or IPv6 frame.
#[inline(always)]
fn fresh_source(ctx: &XdpContext) {
    /// An untagged Ethernet header and the larger of the two IP headers.
    const FRAME_LEN: usize = EthHdr::LEN + Ipv6Hdr::LEN;
    /// The low 4 bytes of each family's client (source) address: all of an IPv4 address.
    const LOW_LEN: usize = IPV4_ADDR_LEN;
    const V4_LOW_AT: usize = EthHdr::LEN + IPV4_SRC_AT;
    const V6_LOW_AT: usize = EthHdr::LEN + IPV6_SRC_AT + IPV6_ADDR_LEN - LOW_LEN;
    const IPV4: [u8; 2] = ETH_P_IP.to_be_bytes();
    const IPV6: [u8; 2] = ETH_P_IPV6.to_be_bytes();
    let n = maps::bench_next().to_be_bytes();
    let start = ctx.data();
    if start + FRAME_LEN > ctx.data_end() {
        return;
    }
    // SAFETY: FRAME_LEN bytes bounds-checked above (an IPv4 or IPv6 header after Ethernet).
    let frame = unsafe { &mut *(start as *mut [u8; FRAME_LEN]) };
    let at = match [frame[ETH_TYPE_AT], frame[ETH_TYPE_AT + 1]] {
        IPV4 => V4_LOW_AT,
        IPV6 => V6_LOW_AT,
        _ => return,
    };
    frame[at..at + LOW_LEN].copy_from_slice(&n);
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
