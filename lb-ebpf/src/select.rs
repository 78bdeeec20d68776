//! Steps 3 and 5 (see `main`): which service (VIP lookup), then which backend (stick table,
//! else Maglev).
//!
//! The stick table policy, in HAProxy's terms:
//! - hit, entry fresh, backend up or draining -> that backend (refresh last-seen at most 1/s);
//! - entry idle longer than `expire` -> a miss (counted as expired), re-picked and overwritten;
//! - backend down or in maintenance -> with redispatch: re-pick and overwrite; without: keep
//!   sending to it (counted) and do not refresh, so the entry still expires;
//! - backend no longer a server of this service (removed; its id maybe reused) -> a miss;
//! - miss -> Maglev; create the entry only from a packet that may pin: for TCP one that proves a
//!   handshake (ACK set, SYN and RST clear), so spoofed SYNs, the RSTs their real owners send
//!   back and SYN+ACKs never fill the table (a bare SYN goes by hash, which its ACK then pins);
//!   never from fragments or ICMP errors. Only such packets refresh an entry, too.
//! - every service has its own table (its own LRU of its `stick.size`): a flood at one service
//!   evicts none of another's clients. A service without a table goes by hash.
//! - every entry written here (never a hit's refresh) is reported to the agent through the
//!   `XLB_INSERTS` ring, which streams it to the peers (`maps::report_insert`).
//! - passive health: a SYN that hits an entry stamps it (`syn_at`); a possible first ACK looks
//!   for its flow's SYN record (`passive`) on every path but a stick hit, and on a hit only
//!   shortly after its client's last SYN (else the hit clears `Flow::tcp_at`).

use lb_common::{
    BACKEND_DRAIN, BACKEND_UP, FAMILY_V4, NO_BACKEND, STICK_NONE, STICK_REFRESH_NS, STICK_SRC_PORT,
    SVC_F_REDISPATCH, Service, ServiceStats, StickEntry, StickKey,
    gstat::Counter,
    hash::{affinity_hash_of, bytes_of, five_tuple_hash_of, words_of},
    maglev_base, vip_words_of,
};

use crate::{maps, parse::Flow, passive};

/// Step 3: the service of a packet with ports, or None (not for a VIP). Exact port first, then
/// port 0 ("any port"). (A later fragment has no ports and never comes here: see `fragment`.)
#[inline(always)]
pub fn service_of(flow: &Flow) -> Option<u32> {
    if let Some(s) = maps::vip(&vip_words_of(flow.dst, flow.dport, flow.proto, flow.family)) {
        return Some(s);
    }
    maps::vip(&vip_words_of(flow.dst, 0, flow.proto, flow.family))
}

/// The coarse clock (jiffies resolution): the same one userspace reads as CLOCK_MONOTONIC_COARSE.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() }
}

/// Maglev: the backend in slot `hash % M` of the service's active table.
#[inline(always)]
fn maglev(service_id: u32, svc: &Service, hash: u32) -> u32 {
    let slot = maps::active_slot(service_id);
    let m = if slot == 0 {
        svc.table_size[0]
    } else {
        svc.table_size[1]
    };
    if m == 0 {
        return NO_BACKEND;
    }
    maps::maglev_slot(maglev_base(service_id, slot) + hash % m).unwrap_or(NO_BACKEND)
}

/// The client address under the service's prefix mask (what its stick key holds), as words.
#[inline(always)]
fn masked(flow: &Flow, svc: &Service) -> [u32; 4] {
    let a = flow.src;
    if flow.family == FAMILY_V4 {
        [a[0] & u32::from_ne_bytes(svc.v4_mask), 0, 0, 0]
    } else {
        let m = words_of(&svc.v6_mask);
        [a[0] & m[0], a[1] & m[1], a[2] & m[2], a[3] & m[3]]
    }
}

/// What a stick entry's backend is to the packet's service.
enum Pinned {
    /// Up or draining: the client stays.
    Usable,
    /// Down or in maintenance: redispatch decides.
    Down,
    /// Not a server of this service any more (removed, its id free or reused by another
    /// service): the entry means nothing; a miss.
    Stale,
}

#[inline(always)]
fn pinned(backend: u32, service_id: u32) -> Pinned {
    match maps::backend(backend) {
        Some(b) if b.serves(service_id) => {
            if b.state == BACKEND_UP || b.state == BACKEND_DRAIN {
                Pinned::Usable
            } else {
                Pinned::Down
            }
        }
        _ => Pinned::Stale,
    }
}

/// Step 5: the backend id for this packet, or `NO_BACKEND`. A stick hit clears `flow.tcp_at`
/// unless its client sent a SYN shortly before (`passive`).
#[inline(always)]
pub fn backend_for(flow: &mut Flow, service_id: u32, svc: &Service, st: &mut ServiceStats) -> u32 {
    // Every packet here has its ports, a first fragment too: its datagram's later fragments
    // follow the record it leaves (`fragment`), so it goes where the flow's whole packets go.
    if svc.stick_mode == STICK_NONE {
        // No table: a hash of the 5-tuple.
        let h = five_tuple_hash_of(flow.src, flow.dst, flow.sport, flow.dport, flow.proto);
        return maglev(service_id, svc, h);
    }
    let port = if svc.stick_mode == STICK_SRC_PORT {
        flow.sport
    } else {
        0
    };
    let addr = masked(flow, svc);
    let key = StickKey::new(bytes_of(addr), service_id as u16, port, flow.family);
    let Some(table) = maps::stick_table(service_id) else {
        // Not given a table (yet): by hash, which is what the table would pin anyway.
        return maglev(service_id, svc, affinity_hash_of(addr, key.port, key.family));
    };
    let now = now_ns();
    flow.now = now;
    let may_insert = !flow.no_handshake && !flow.fragment && !flow.icmp_too_big;

    if let Some(e) = maps::stick_get(table, &key) {
        // SAFETY: a value pointer from the map; fields are read and written as plain integers.
        let (backend, last_seen) = unsafe { ((*e).backend, (*e).last_seen_ns) };
        let idle = now.saturating_sub(last_seen);
        if svc.expire_ns != 0 && idle > svc.expire_ns {
            st.stick_expired += 1;
            // fall through to a miss
        } else {
            match pinned(backend, service_id) {
                Pinned::Usable => {
                    st.stick_hits += 1;
                    if idle > STICK_REFRESH_NS && may_insert {
                        // SAFETY: as above; a racing writer at worst leaves an older time.
                        unsafe { (*e).last_seen_ns = now };
                    }
                    if passive::ENABLED && flow.tcp_at != 0 {
                        // SAFETY: as above (a plain u32; a racing writer leaves either stamp).
                        let syn_at = unsafe { (*e).syn_at };
                        if flow.syn_only {
                            // SAFETY: as above.
                            unsafe { (*e).syn_at = passive::syn_tick(now) };
                        } else if !passive::syn_hinted(passive::syn_tick(now), syn_at) {
                            flow.tcp_at = 0;
                        }
                    }
                    return backend;
                }
                Pinned::Down if svc.flags & SVC_F_REDISPATCH != 0 => {
                    let pick = maglev(service_id, svc, affinity_hash_of(addr, key.port, key.family));
                    if pick != NO_BACKEND {
                        st.redispatches += 1;
                        if may_insert {
                            insert(table, &key, pick, now, st);
                        }
                    }
                    return pick;
                }
                Pinned::Down => {
                    st.pinned_down += 1;
                    return backend;
                }
                // The agent deletes such entries; until it has, they are misses.
                Pinned::Stale => maps::count(Counter::StickStale),
            }
        }
    }

    st.stick_misses += 1;
    let pick = maglev(service_id, svc, affinity_hash_of(addr, key.port, key.family));
    if pick == NO_BACKEND {
        return pick;
    }
    if may_insert {
        insert(table, &key, pick, now, st);
    } else if flow.syn_only {
        maps::count(Counter::SynNoInsert);
    } else if flow.no_handshake {
        maps::count(Counter::NoHandshakeNoInsert);
    }
    pick
}

#[inline(always)]
fn insert(table: &maps::StickTable, key: &StickKey, backend: u32, now: u64, st: &mut ServiceStats) {
    if !maps::may_create_entry(now) {
        maps::count(Counter::InsertCapped);
        return;
    }
    let entry = StickEntry {
        last_seen_ns: now,
        backend,
        // Written from a packet that proves a handshake, never from a SYN.
        syn_at: 0,
    };
    if maps::stick_put(table, key, &entry) {
        st.stick_inserts += 1;
        maps::report_insert(key, &entry);
    } else {
        maps::count(Counter::InsertFailed);
    }
}
