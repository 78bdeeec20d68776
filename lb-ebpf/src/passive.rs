//! Passive health signals (see `lb_common::maps::passive`): a SYN to a VIP is recorded with its
//! ISN and backend; the same SYN again is a retransmission (the backend did not answer); the
//! attempt's first ACK is a finished handshake (it did). Counted per backend, per CPU
//! (`maps::passive_stats`), for the agent's detector.
//!
//! Cost: SYNs pay one `XLB_SYNS` slot (an array lookup the verifier inlines, a compare and a
//! few stores). A packet that may be a first ACK pays the same read only when the SYN map can hold its flow: on stick misses and on services
//! without a table (a new client's first ACK is a miss), and on a stick hit only within
//! `SYN_HINT_TICKS` of its client's last SYN (`StickEntry::syn_at`, stamped by a SYN's stick
//! hit in `select`, which clears `Flow::tcp_at` otherwise) — the packets of established clients
//! read one word of the entry they already hold and go on. UDP pays one test (`tcp_at` is 0).

use aya_ebpf::programs::XdpContext;
use lb_common::{SYN_AT_SHIFT, SYN_HINT_TICKS, SYN_RETRANSMIT_WINDOW_NS, SynKey, SynRecord};

use crate::{
    headers::{L4_DPORT_AT, L4_SPORT_AT, TCP_SEQ_AT},
    maps,
    parse::{Flow, ptr_at},
};

/// Whether this build records the signals (feature `passive`, on but in the benchmarks' baseline
/// object). Off, no packet looks at them: `parse` leaves `Flow::tcp_at` 0 and the tests on it
/// in `select` and `main` are gone at compile time.
pub const ENABLED: bool = cfg!(feature = "passive");

/// The TCP header's first bytes: both ports and the sequence number.
const TCP_PORTS_SEQ_LEN: usize = TCP_SEQ_AT + 4;

/// The coarse clock in `StickEntry::syn_at` units, never 0 (0 = no SYN seen).
#[inline(always)]
pub fn syn_tick(now_ns: u64) -> u32 {
    ((now_ns >> SYN_AT_SHIFT) as u32) | 1
}

/// Whether a stick hit at `now_tick` may be the first ACK of its client's SYN at `syn_at`.
#[inline(always)]
pub fn syn_hinted(now_tick: u32, syn_at: u32) -> bool {
    syn_at != 0 && now_tick.wrapping_sub(syn_at) < SYN_HINT_TICKS
}

/// This CPU's scratch key with `flow`'s attempt written into it, and the packet's
/// sequence number (network order). The ports and the sequence number are read from the TCP
/// header again (`Flow::tcp_at`): kept in `Flow` they would be live through the whole program,
/// whose one stack frame has no room for them.
#[inline(always)]
fn keyed(ctx: &XdpContext, flow: &Flow, service_id: u32) -> Option<(&'static SynKey, u32)> {
    let tcp: *const [u8; TCP_PORTS_SEQ_LEN] = ptr_at(ctx, flow.tcp_at as usize).ok()?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let tcp = unsafe { &*tcp };
    let k = maps::syn_scratch()?;
    k.src = lb_common::hash::bytes_of(flow.src);
    k.sport = u16::from_ne_bytes([tcp[L4_SPORT_AT], tcp[L4_SPORT_AT + 1]]);
    k.dport = u16::from_ne_bytes([tcp[L4_DPORT_AT], tcp[L4_DPORT_AT + 1]]);
    k.service = service_id as u16;
    k.family = flow.family;
    k._pad = 0;
    let q = TCP_SEQ_AT;
    Some((
        k,
        u32::from_ne_bytes([tcp[q], tcp[q + 1], tcp[q + 2], tcp[q + 3]]),
    ))
}

/// A SYN (without ACK) of service `service_id` going to `backend`: a new attempt, or the same
/// attempt again (same 4-tuple and ISN, same backend, within `SYN_RETRANSMIT_WINDOW_NS`).
#[inline(always)]
pub fn syn(ctx: &XdpContext, flow: &Flow, service_id: u32, backend: u32, now: u64) {
    let (Some(ps), Some((key, seq))) = (maps::passive_stats(backend), keyed(ctx, flow, service_id)) else {
        return;
    };
    let Some(slot) = maps::syn_slot(key) else {
        return;
    };
    let r = &mut slot.record;
    if r.seen_ns != 0
        && slot.key.same(key)
        && r.isn == seq
        && r.backend == backend
        && now.saturating_sub(r.seen_ns) <= SYN_RETRANSMIT_WINDOW_NS
    {
        ps.syn_retransmits += 1;
        r.seen_ns = now;
        return;
    }
    // A new attempt (or a new ISN on the tuple, another backend: redispatched, a long-stale
    // record): it takes the slot, whichever attempt held it.
    ps.syn_sent += 1;
    slot.key = *key;
    slot.record = SynRecord {
        // Never 0 (an empty slot); `saturating_sub` above reads the odd nanosecond as fresh.
        seen_ns: now | 1,
        isn: seq,
        backend,
    };
}

/// A TCP packet with ACK set, SYN and RST clear (it may be its handshake's first ACK): if its
/// attempt holds its `XLB_SYNS` slot, the handshake finished (sequence number ISN + 1: counted
/// for the backend the SYN went to) or the record is of no use any more; either way the slot
/// is emptied.
#[inline(always)]
pub fn first_ack(ctx: &XdpContext, flow: &Flow, service_id: u32) {
    let Some((key, seq)) = keyed(ctx, flow, service_id) else {
        return;
    };
    let Some(slot) = maps::syn_slot(key) else {
        return;
    };
    if slot.record.seen_ns == 0 || !slot.key.same(key) {
        return;
    }
    let (isn, backend) = (slot.record.isn, slot.record.backend);
    slot.record.seen_ns = 0;
    if u32::from_be(seq) == u32::from_be(isn).wrapping_add(1)
        && let Some(ps) = maps::passive_stats(backend)
    {
        ps.handshakes += 1;
    }
}
