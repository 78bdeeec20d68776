//! Passive health signals (see `lb_common::maps::passive`): a SYN to a VIP is recorded with its
//! ISN and backend; the same SYN again is a retransmission (the backend did not answer); the
//! attempt's first ACK is a finished handshake (it did). Counted per backend, per CPU
//! (`maps::passive_stats`), for the agent's detector.
//!
//! Cost: SYNs pay one `XLB_SYNS` lookup (and a write when new). A packet that may be a first
//! ACK pays a lookup only when the SYN map can hold its flow: on stick misses and on services
//! without a table (a new client's first ACK is a miss), and on a stick hit only within
//! `SYN_HINT_TICKS` of its client's last SYN (`StickEntry::syn_at`, stamped by a SYN's stick
//! hit in `select`, which clears `Flow::tcp_at` otherwise) — the packets of established clients
//! read one word of the entry they already hold and go on. UDP pays one test (`tcp_at` is 0).

use aya_ebpf::programs::XdpContext;
use lb_common::{SYN_AT_SHIFT, SYN_HINT_TICKS, SYN_RETRANSMIT_WINDOW_NS};

use crate::{
    headers::{L4_DPORT_AT, L4_SPORT_AT, TCP_SEQ_AT},
    maps,
    parse::{Flow, ptr_at},
};

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

/// This CPU's scratch slot with the key of `flow`'s attempt written into it, and the packet's
/// sequence number (network order). The ports and the sequence number are read from the TCP
/// header again (`Flow::tcp_at`): kept in `Flow` they would be live through the whole program,
/// whose one stack frame has no room for them.
#[inline(always)]
fn keyed(ctx: &XdpContext, flow: &Flow, service_id: u32) -> Option<(&'static mut maps::SynScratch, u32)> {
    let tcp: *const [u8; TCP_PORTS_SEQ_LEN] = ptr_at(ctx, flow.tcp_at as usize).ok()?;
    // SAFETY: in the frame, alignment 1 (`ptr_at`).
    let tcp = unsafe { &*tcp };
    let s = maps::syn_scratch()?;
    let k = &mut s.key;
    k.src = flow.src;
    k.sport = u16::from_ne_bytes([tcp[L4_SPORT_AT], tcp[L4_SPORT_AT + 1]]);
    k.dport = u16::from_ne_bytes([tcp[L4_DPORT_AT], tcp[L4_DPORT_AT + 1]]);
    k.service = service_id as u16;
    k.family = flow.family;
    k._pad = 0;
    let q = TCP_SEQ_AT;
    Some((
        s,
        u32::from_ne_bytes([tcp[q], tcp[q + 1], tcp[q + 2], tcp[q + 3]]),
    ))
}

/// A SYN (without ACK) of service `service_id` going to `backend`: a new attempt, or the same
/// attempt again (same 4-tuple and ISN, same backend, within `SYN_RETRANSMIT_WINDOW_NS`).
#[inline(always)]
pub fn syn(ctx: &XdpContext, flow: &Flow, service_id: u32, backend: u32, now: u64) {
    let (Some(ps), Some((s, seq))) = (maps::passive_stats(backend), keyed(ctx, flow, service_id)) else {
        return;
    };
    if let Some(r) = maps::syn_record(&s.key) {
        // SAFETY: a value pointer from the map; its fields are plain integers. A racing CPU at
        // worst makes one count land as a new attempt instead of a retransmission.
        let r = unsafe { &mut *r };
        let again = r.isn == seq && r.backend == backend;
        let fresh = now.wrapping_sub(r.seen_ns) <= SYN_RETRANSMIT_WINDOW_NS;
        if again && fresh {
            ps.syn_retransmits += 1;
        } else {
            // A new ISN on the tuple, another backend (redispatched) or a long-stale record.
            ps.syn_sent += 1;
            r.isn = seq;
            r.backend = backend;
        }
        r.seen_ns = now;
        return;
    }
    ps.syn_sent += 1;
    s.record.seen_ns = now;
    s.record.isn = seq;
    s.record.backend = backend;
    maps::record_syn(s);
}

/// A TCP packet with ACK set, SYN and RST clear (it may be its handshake's first ACK): if the SYN map holds its
/// attempt, the handshake finished (sequence number ISN + 1: counted for the backend the SYN
/// went to) or the record is of no use any more; either way it goes.
#[inline(always)]
pub fn first_ack(ctx: &XdpContext, flow: &Flow, service_id: u32) {
    let Some((s, seq)) = keyed(ctx, flow, service_id) else {
        return;
    };
    let Some(r) = maps::syn_record(&s.key) else {
        return;
    };
    // SAFETY: as in `syn`; copied out before the record is deleted.
    let (isn, backend) = unsafe { ((*r).isn, (*r).backend) };
    if u32::from_be(seq) == u32::from_be(isn).wrapping_add(1)
        && let Some(ps) = maps::passive_stats(backend)
    {
        ps.handshakes += 1;
    }
    maps::forget_syn(&s.key);
}
