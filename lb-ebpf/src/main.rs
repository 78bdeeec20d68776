//! xlb's data path: one XDP program, one-armed, L2 direct server return.
//!
//! Read top to bottom in the order a packet travels:
//! `parse` (step 1) -> `select::service_of` (step 2) -> `forward::addressed_to_us` (step 2b:
//! only frames sent to our own MAC) -> `select::backend_for` (steps 3–5:
//! affinity key, stick table, Maglev) -> `forward` (step 6). Counters (step 8) along the way.
//! IP fragments (step 7, `fragment`): a first fragment takes that path and records where it
//! went; a later one (no L4 header) skips steps 2–5 and follows that record, or is passed to
//! the kernel, counted, when there is none.
//! Every map is documented at its definition in `maps`.
#![no_std]
#![no_main]

mod forward;
mod fragment;
mod maps;
mod parse;
mod select;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{Backend, NO_BACKEND, gstat};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    balance(&ctx)
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> u32 {
    let flow = match parse::parse(ctx) {
        Ok(Some(flow)) => flow,
        Ok(None) => return pass(gstat::PASS_NOT_VIP),
        Err(()) => return pass(gstat::PARSE_ERROR),
    };
    if flow.later_fragment {
        return later_fragment(ctx, &flow);
    }
    let Some(service_id) = select::service_of(&flow) else {
        return pass(gstat::PASS_NOT_VIP);
    };
    let (Some(svc), Some(st)) = (maps::service(service_id), maps::service_stats(service_id)) else {
        return pass(gstat::PASS_NOT_VIP);
    };
    if svc.enabled == 0 {
        return pass(gstat::PASS_NOT_VIP);
    }
    if !forward::addressed_to_us(ctx) {
        return pass(gstat::PASS_NOT_OUR_MAC);
    }
    let len = (ctx.data_end() - ctx.data()) as u64;
    st.packets += 1;
    st.bytes += len;
    if flow.icmp_too_big {
        maps::count(gstat::ICMP_TOO_BIG);
    }

    let id = select::backend_for(&flow, service_id, svc, st);
    let backend = if id == NO_BACKEND { None } else { maps::backend(id) };
    let Some(backend) = backend else {
        // Every server of the service is down: nothing can answer. Dropped, counted.
        st.no_backend += 1;
        return xdp_action::XDP_DROP;
    };
    if flow.fragment {
        // A first fragment: the rest of its datagram follows it (`later_fragment`).
        maps::count(gstat::FRAGMENT);
        fragment::record_first(&flow, service_id, id);
    }
    send(ctx, id, backend, len)
}

/// A fragment after the first: it has no ports, so no service lookup of its own; it goes to
/// the backend its datagram's first fragment went to, or, without a record of that, to the
/// kernel (see `fragment`).
#[inline(always)]
fn later_fragment(ctx: &XdpContext, flow: &parse::Flow) -> u32 {
    if !forward::addressed_to_us(ctx) {
        return pass(gstat::PASS_NOT_OUR_MAC);
    }
    let Some(first) = fragment::first_of(flow) else {
        return pass(gstat::FRAGMENT_NO_RECORD);
    };
    let (Some(svc), Some(st)) = (maps::service(first.service), maps::service_stats(first.service)) else {
        return pass(gstat::PASS_NOT_VIP);
    };
    if svc.enabled == 0 {
        // The service was deleted since the first fragment.
        return pass(gstat::PASS_NOT_VIP);
    }
    let len = (ctx.data_end() - ctx.data()) as u64;
    st.packets += 1;
    st.bytes += len;
    maps::count(gstat::FRAGMENT);
    // The server may have been removed since the first fragment (its id maybe reused): then
    // the datagram cannot be completed anywhere.
    let backend = maps::backend(first.backend).filter(|b| b.serves(first.service));
    let Some(backend) = backend else {
        st.no_backend += 1;
        return xdp_action::XDP_DROP;
    };
    send(ctx, first.backend, backend, len)
}

/// Count a packet for backend `id` and forward it there.
#[inline(always)]
fn send(ctx: &XdpContext, id: u32, backend: &Backend, len: u64) -> u32 {
    if let Some(bs) = maps::backend_stats(id) {
        bs.packets += 1;
        bs.bytes += len;
    }
    forward::to_backend(ctx, backend)
}

#[inline(always)]
fn pass(counter: u32) -> u32 {
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
    let start = ctx.data();
    if start + 14 + 20 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let Some(t) = maps::floor_target() else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: 34 bytes (Ethernet + an IPv4 header) bounds-checked above.
    let frame = unsafe { &mut *(start as *mut [u8; 34]) };
    if frame[12] != 0x08 || frame[13] != 0x00 || frame[30..34] != t.vip {
        return xdp_action::XDP_PASS;
    }
    frame[0..6].copy_from_slice(&t.backend_mac);
    frame[6..12].copy_from_slice(&t.own_mac);
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

/// Writes the next counter value into the low 4 bytes of the client address of an untagged
/// IPv4 or IPv6 frame.
#[inline(always)]
fn fresh_source(ctx: &XdpContext) {
    let n = maps::bench_next().to_be_bytes();
    let start = ctx.data();
    if start + 14 + 40 > ctx.data_end() {
        return;
    }
    // SAFETY: 54 bytes bounds-checked above (an IPv4 or IPv6 header after Ethernet).
    let frame = unsafe { &mut *(start as *mut [u8; 54]) };
    let at = match (frame[12], frame[13]) {
        (0x08, 0x00) => 14 + 12,
        (0x86, 0xdd) => 14 + 8 + 12,
        _ => return,
    };
    frame[at..at + 4].copy_from_slice(&n);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
