//! Every map of the data path. Key, value, who writes, who reads — at the definition.
//!
//! None is pinned by the object itself: the agent gives each a pin path under its bpffs
//! directory at load time (and so adopts the pinned maps of an earlier run), while tests load
//! the same object without pins.

use aya_ebpf::{
    btf_maps::{ArrayOfMaps, LruHashMap},
    macros::{btf_map, map},
    maps::{Array, DevMap, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use lb_common::{
    Backend, BackendStats, ENCAP_STAGE_SLOT, Encap, EncapHandoff, FRAGMENT_RECORDS, FloorTarget, FragmentKey,
    FragmentRecord, INSERTS_RING_BYTES, InsertRecord, LIMIT_NEW_ENTRIES_PER_CPU, MAGLEV_MAX_SIZE,
    MAX_BACKENDS, MAX_SERVICES, MAX_TX_PORTS, NEW_ENTRIES_WINDOW_NS, NameSlot, OwnMac, PassiveStats,
    RateWindow, SYN_SLOTS, Service, ServiceStats, StickEntry, StickKey, SynKey, SynSlot, VIP_PROBES,
    VIP_TABLE_SIZE, VipSlot, bench_slot, gstat::Counter, vip_home,
};

/// VIPs: two open-addressed tables of `VIP_TABLE_SIZE` slots (index `slot * VIP_TABLE_SIZE +
/// i`). A slot holds the key words (address, port or 0 for any port, protocol, family) and the
/// service id; a key sits within `VIP_PROBES` slots of `vip_home`. Array lookups are inlined by
/// the verifier: cheaper per packet than a hash map. Written by the agent (inactive table, then
/// `XLB_VIP_ACTIVE` flipped); read per packet.
#[map(name = "XLB_VIPS")]
static VIPS: Array<VipSlot> = Array::with_max_entries(2 * VIP_TABLE_SIZE, 0);

/// Which VIP table is active (0 or 1). Index 0. Written by the agent; read per packet.
#[map(name = "XLB_VIP_ACTIVE")]
static VIP_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// Per-service settings (stick mode, masks, expiry, redispatch, Maglev size per slot).
/// Index: service id. Written by the agent; read per VIP packet.
#[map(name = "XLB_SERVICES")]
static SERVICES: Array<Service> = Array::with_max_entries(MAX_SERVICES, 0);

/// The active Maglev slot (0 or 1) of each service. Index: service id. The agent writes the
/// inactive slot's table first, then flips this one u32: a packet sees the old table or the
/// new one, never a half-written one. Read on stick misses.
#[map(name = "XLB_ACTIVE")]
static ACTIVE: Array<u32> = Array::with_max_entries(MAX_SERVICES, 0);

/// Maglev lookup tables, flat: service s, slot k occupies
/// `[maglev_base(s, k), maglev_base(s, k) + table_size[k])`. Value: backend id or
/// `NO_BACKEND`. Written by the agent (inactive slot only); read on stick misses.
#[map(name = "XLB_MAGLEV")]
static MAGLEV: Array<u32> = Array::with_max_entries(MAX_SERVICES * 2 * MAGLEV_MAX_SIZE, 0);

/// Backends. Index: backend id. Value: MACs, output port, folded health/admin state.
/// Written by the agent on health or admin changes; read for every forwarded packet.
#[map(name = "XLB_BACKENDS")]
static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// How backends on other networks are reached: outer destination and source, GUE port.
/// Index: backend id, as `XLB_BACKENDS`. Written by the agent with the backend (before the
/// backend's `forward` names an encapsulation); read for every packet to such a backend.
#[map(name = "XLB_ENCAP")]
static ENCAP: Array<Encap> = Array::with_max_entries(MAX_BACKENDS, 0);

/// The encapsulation stage: a program array of one entry, index `ENCAP_STAGE_SLOT`, value the
/// program `xlb_encap` (`encap`). The main program tail-calls it for every packet to a backend
/// whose `forward` is an encapsulation, so the L2 path carries none of the stage's code or
/// stack. Written by the agent at load time (`Datapath::load`, which test fixtures and
/// benchmarks use too), before the main program is attached; read by the tail call. Empty
/// (an agent that has not filled it): the tail call fails, and the frame is passed, counted
/// (`encap_stage_missing`). Pinned: the kernel empties a program array when its last user-space
/// reference goes, and the data path runs on while no agent does.
#[map(name = "XLB_ENCAP_STAGE")]
static ENCAP_STAGE: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Per CPU, index 0: what the main program hands the encapsulation stage (`EncapHandoff`: the
/// backend, its mode, the clock the stick lookup read). Written by the main program just
/// before its tail call into `XLB_ENCAP_STAGE`; read by the stage as it starts (the same packet
/// on the same CPU: nothing runs between the two). Pinned, like the stage: while an agent replaces the program,
/// the main program of one load may tail-call the stage of the next, and both must use the same
/// slot (its layout is part of `PIN_FORMAT`).
#[map(name = "XLB_ENCAP_HANDOFF")]
static ENCAP_HANDOFF: PerCpuArray<EncapHandoff> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's handoff slot (see `ENCAP_HANDOFF`).
#[inline(always)]
pub fn encap_handoff() -> Option<&'static mut EncapHandoff> {
    // SAFETY: per-CPU slot, see `count`; one packet at a time uses it on this CPU.
    ENCAP_HANDOFF.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Tail-call the encapsulation stage. Returns only when the call failed (the stage is not in
/// `XLB_ENCAP_STAGE`).
#[inline(always)]
pub fn tail_call_encap_stage(ctx: &XdpContext) {
    // SAFETY: the stage is an XDP program that takes the same context; control never comes
    // back on success, and nothing here waits for it to.
    unsafe { ENCAP_STAGE.tail_call(ctx, ENCAP_STAGE_SLOT) };
}

/// The stick tables: one LRU hash per service, so a flood aimed at one service evicts only
/// that service's clients. Index: service id. Value: that service's table, created by the agent
/// with the service's own `stick.size` (a reload that changes the size copies the entries into
/// a new table and swaps it in here); no table = the service keeps no entries (packets go by
/// hash). Inner table key: (service, masked client address, [source port], family); value:
/// backend id and last-seen time. Entries are written by the data path (insert, refresh,
/// redispatch) and by the agent (expiry sweep, `clear table`, peers); read per VIP packet.
/// LRU: when a service's table is full, that service's least recently used entry makes room.
/// The inner map's `max_entries` here is only the template's: the kernel checks type, key and
/// value sizes and flags of what the agent stores, never a hash map's size.
#[btf_map(name = "XLB_STICKS")]
static STICK_TABLES: ArrayOfMaps<StickTable, { MAX_SERVICES as usize }> = ArrayOfMaps::new();

/// One service's stick table (see `STICK_TABLES`).
pub type StickTable = LruHashMap<StickKey, StickEntry, 1>;

/// Fragmented datagrams in flight. Key: one datagram (client and VIP address, IP
/// identification, protocol, family). Value: the service and backend its first fragment went
/// to. Written by the data path for every forwarded first fragment (a new datagram with the same
/// key overwrites the old record); read by the data path for every later fragment (no L4
/// header, so no service lookup of its own), which goes where the record says. Never touched by
/// the agent. LRU of `FRAGMENT_RECORDS`: a record matters only until its datagram's last
/// fragment, microseconds later.
#[map(name = "XLB_FRAGMENTS")]
static FRAGMENTS: aya_ebpf::maps::LruHashMap<FragmentKey, FragmentRecord> =
    aya_ebpf::maps::LruHashMap::with_max_entries(FRAGMENT_RECORDS, 0);

/// Per CPU: where a fragment's datagram key (`FragmentKey`, 40 bytes) is built before it is
/// looked up or recorded in `XLB_FRAGMENTS`. Keeps it off the stack: the data path is inlined
/// into one frame, which must stay within the verifier's 512 bytes, and a BPF-to-BPF call
/// instead (a frame of its own) measurably slowed every packet of the program. Written and read
/// by the data path on fragment paths only; not pinned (nothing in it outlives a packet).
#[map(name = "XLB_FRAG_KEY")]
static FRAG_KEY: PerCpuArray<FragmentKey> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch slot for a datagram key (see `FRAG_KEY`).
#[inline(always)]
pub fn fragment_key_slot() -> Option<&'static mut FragmentKey> {
    // SAFETY: per-CPU slot, see `count`; its one user finishes with it before the program ends.
    FRAG_KEY.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Per CPU: where the encapsulation stage (`encap`) builds its `bpf_fib_lookup` parameters
/// (64 bytes) and reads the answer, and leaves the MTU of a "too big" for `too_big`. Written
/// and read by the stage only; not pinned (nothing in it outlives a packet).
#[map(name = "XLB_FIB")]
static FIB: PerCpuArray<crate::encap::FibParams> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch slot for FIB lookup parameters (see `FIB`).
#[inline(always)]
pub fn fib_params() -> Option<&'static mut crate::encap::FibParams> {
    // SAFETY: per-CPU slot, see `count`; its one user finishes with it before the program ends.
    FIB.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Per CPU: the next hop of each encapsulating backend as the FIB last gave it and the outer
/// headers through it (index: backend id), reused for a second (`encap::NextHop`). Written and
/// read by the encapsulation stage only; not pinned (a restart looks every next hop up again).
#[map(name = "XLB_NEXT_HOPS")]
static NEXT_HOPS: PerCpuArray<crate::encap::NextHop> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// This CPU's cached next hop of backend `id` (see `NEXT_HOPS`).
#[inline(always)]
pub fn next_hop_slot(id: u32) -> Option<&'static mut crate::encap::NextHop> {
    // SAFETY: per-CPU slot, see `count`; one packet at a time uses it on this CPU.
    NEXT_HOPS.get_ptr_mut(id).map(|p| unsafe { &mut *p })
}

/// Output interfaces for backends that are not on the receiving interface. Index: the
/// backend's `tx_port` (1..). Written by the agent; read by `XDP_REDIRECT`.
#[map(name = "XLB_TX_PORTS")]
static TX_PORTS: DevMap = DevMap::with_max_entries(MAX_TX_PORTS, 0);

/// Global counters, per CPU. Index: `gstat::Counter`, only what the data path counts itself
/// (the agent derives the rest from `XLB_SSTATS`). Written by the data path; summed by the agent.
#[map(name = "XLB_GSTATS")]
static GSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Per-service counters, per CPU. Index: service id. Written by the data path; summed by the
/// agent (`show stat`, metrics).
#[map(name = "XLB_SSTATS")]
static SSTATS: PerCpuArray<ServiceStats> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Per-backend counters, per CPU. Index: backend id. Written by the data path; summed by the agent.
#[map(name = "XLB_BSTATS")]
static BSTATS: PerCpuArray<BackendStats> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Passive health: TCP connection attempts whose handshake is not yet seen to finish. An array
/// of `SYN_SLOTS` slots; index: the attempt's `SynKey::slot` (a hash of client address and
/// port, service, VIP port, family). Value: the attempt that holds the slot (its key) and its
/// SYN's sequence number (the ISN), the backend it went to and when it was last seen
/// (`SynSlot`; `seen_ns` 0: empty). Written by the data path on every TCP SYN to a VIP (the
/// same key and ISN again: a retransmission; anything else is a new attempt and takes the slot,
/// whoever held it) and emptied at the attempt's first ACK; read by the data path on SYNs and
/// on the packets that may be a first ACK (`passive`). Never touched by the agent. A flood of
/// spoofed SYNs only overwrites records (fewer signals, alike on every backend). CPUs that
/// write one slot at once may tear it: at worst one attempt is miscounted. An array, not an
/// LRU hash: a SYN costs a lookup the verifier inlines and a few stores, not a hash insert
/// with its eviction (a SYN flood writes one per packet). Not pinned: a record lives a round
/// trip.
#[map(name = "XLB_SYNS")]
static SYNS: Array<SynSlot> = Array::with_max_entries(SYN_SLOTS, 0);

/// Per CPU: where a SYN's key is built before its `XLB_SYNS` slot is read, off the stack (see
/// `FRAG_KEY`: the one frame must stay within 512 bytes). Written and read by the data path on
/// the SYN and first-ACK paths only; not pinned.
#[map(name = "XLB_SYN_SCRATCH")]
static SYN_SCRATCH: PerCpuArray<SynKey> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch key for a SYN record (see `SYN_SCRATCH`).
#[inline(always)]
pub fn syn_scratch() -> Option<&'static mut SynKey> {
    // SAFETY: per-CPU slot, see `count`; its one user finishes with it before the program ends.
    SYN_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Passive health counters, per CPU. Index: backend id. Value: SYNs sent, SYNs retransmitted,
/// handshakes finished (`PassiveStats`). Written by the data path on TCP SYNs and first ACKs
/// only; summed by the agent, whose detector compares each backend with its siblings
/// (`health::passive`) and shows them (`show stat`, metrics). Not pinned: the detector reads
/// differences, and the counters of a new program start from 0.
#[map(name = "XLB_PASSIVE")]
static PASSIVE: PerCpuArray<PassiveStats> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Names of service and backend ids (`name_slot_service`, `name_slot_backend`). Never read by
/// the data path: it keeps the agent's id allocation alive with the pins, so a restarted agent
/// maps every stick entry's backend id back to the same server.
#[map(name = "XLB_NAMES")]
static NAMES: Array<NameSlot> = Array::with_max_entries(MAX_SERVICES + MAX_BACKENDS, 0);

/// Limits set by the agent. Index `LIMIT_NEW_ENTRIES_PER_CPU`: new stick entries each CPU may
/// create per second (0 = no cap). Written by the agent at start; read on inserts.
#[map(name = "XLB_LIMITS")]
static LIMITS: Array<u64> = Array::with_max_entries(1, 0);

/// Per CPU: the current one-second window of entry creations (for the cap above). Written and
/// read by the data path on inserts only.
#[map(name = "XLB_NEW_ENTRIES")]
static NEW_ENTRIES: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);

/// New stick entries, as the data path writes them: a ring buffer of `InsertRecord` (the key,
/// with its service id, and the entry: backend id, time). Written by the data path after each
/// entry it creates or overwrites (a miss that inserts, an expired entry replaced, a
/// redispatch), never on a stick hit; read by the agent, which streams each record to its peers
/// at once (`agent::replicator`). Rate-capped by what it reports: only entries that passed the
/// per-CPU cap on new entries (`XLB_LIMITS`) are written at all. When the ring is full (the
/// agent fell behind, or no agent runs) the record is dropped and counted
/// (`Counter::InsertRingFull`): the sweep still replicates the entry. Not pinned: each loaded
/// program has its own ring, read by the agent that loaded it.
#[map(name = "XLB_INSERTS")]
static INSERTS: RingBuf = RingBuf::with_byte_size(INSERTS_RING_BYTES, 0);

/// What the agent records about its pins (`lb_common::meta`: format version, the link's
/// interface and XDP mode). Written and read by the agent only; never read per packet.
#[map(name = "XLB_META")]
static META: Array<u64> = Array::with_max_entries(lb_common::meta::COUNT, 0);

/// The receiving interface's own MAC (index 0). Written by the agent before it attaches (and
/// by test fixtures); read for every VIP frame: only frames sent to this MAC are forwarded.
/// The program cannot ask the kernel for its interface's MAC, hence the map.
#[map(name = "XLB_OWN_MAC")]
static OWN_MAC: Array<OwnMac> = Array::with_max_entries(1, 0);

/// Benchmark only: index `bench_slot::COUNTER` is the per-CPU counter `xlb_bench_fresh` turns
/// into a fresh client address on every iteration; `bench_slot::WRAP`, when not 0, wraps it
/// (1..=n: a working set of n clients). Written by the benchmark runner; never touched by the
/// production program.
#[map(name = "XLB_BENCH")]
static BENCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(bench_slot::COUNT, 0);

/// Benchmark only: the client's frame `xlb_bench_restore` puts back before every repetition
/// (index 0). Written by the benchmark runner; never touched by the production program.
#[map(name = "XLB_BENCH_FRAME")]
static BENCH_FRAME: Array<lb_common::BenchFrame> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn bench_frame() -> Option<&'static lb_common::BenchFrame> {
    BENCH_FRAME.get(0)
}

/// Benchmark only: the e2e floor program's one VIP and backend (index 0). Written by the
/// benchmark runner; never touched by the production program.
#[map(name = "XLB_FLOOR_TARGET")]
static FLOOR_TARGET: Array<FloorTarget> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn floor_target() -> Option<&'static FloorTarget> {
    FLOOR_TARGET.get(0)
}

/// The service of a VIP key (as words), probing the active table.
#[inline(always)]
pub fn vip(words: &[u32; 5]) -> Option<u32> {
    let base = (VIP_ACTIVE.get(0).copied().unwrap_or(0) & 1) * VIP_TABLE_SIZE;
    let home = vip_home(words);
    for i in 0..VIP_PROBES {
        let s = VIPS.get(base + ((home + i) & (VIP_TABLE_SIZE - 1)))?;
        if s.used == 0 {
            return None;
        }
        // Word by word: `==` on arrays compiles to a call to a byte-wise memcmp.
        let k = &s.key;
        let diff =
            (k[0] ^ words[0]) | (k[1] ^ words[1]) | (k[2] ^ words[2]) | (k[3] ^ words[3]) | (k[4] ^ words[4]);
        if diff == 0 {
            return Some(s.service);
        }
    }
    None
}

/// Whether a frame's destination MAC (its first 6 bytes, as a u32 and a u16) is ours. False
/// while the agent has not written our MAC.
#[inline(always)]
pub fn is_own_mac(dst_hi: u32, dst_lo: u16) -> bool {
    let Some(m) = OWN_MAC.get(0) else {
        return false;
    };
    let hi = u32::from_ne_bytes([m.mac[0], m.mac[1], m.mac[2], m.mac[3]]);
    let lo = u16::from_ne_bytes([m.mac[4], m.mac[5]]);
    m.set != 0 && ((hi ^ dst_hi) | (lo ^ dst_lo) as u32) == 0
}

#[inline(always)]
pub fn service(id: u32) -> Option<&'static Service> {
    SERVICES.get(id)
}

#[inline(always)]
pub fn active_slot(service: u32) -> u32 {
    ACTIVE.get(service).copied().unwrap_or(0) & 1
}

#[inline(always)]
pub fn maglev_slot(index: u32) -> Option<u32> {
    MAGLEV.get(index).copied()
}

#[inline(always)]
pub fn backend(id: u32) -> Option<&'static Backend> {
    BACKENDS.get(id)
}

#[inline(always)]
pub fn encap(id: u32) -> Option<&'static Encap> {
    ENCAP.get(id)
}

/// The stick table of a service, if the agent gave it one.
#[inline(always)]
pub fn stick_table(service: u32) -> Option<&'static StickTable> {
    STICK_TABLES.get(service)
}

#[inline(always)]
pub fn stick_get(table: &StickTable, key: &StickKey) -> Option<*mut StickEntry> {
    table.get_ptr_mut(key)
}

#[inline(always)]
pub fn stick_put(table: &StickTable, key: &StickKey, entry: &StickEntry) -> bool {
    table.insert(key, entry, 0).is_ok()
}

/// Where the first fragment of `datagram` went, if it came through here.
#[inline(always)]
pub fn fragment_record(datagram: &FragmentKey) -> Option<FragmentRecord> {
    // SAFETY: a value pointer from the map, copied out at once.
    unsafe { FRAGMENTS.get(datagram).copied() }
}

/// Remember where the first fragment of `datagram` went (replacing an older datagram's record
/// with the same key). A failed write leaves the later fragments without a record: counted there.
#[inline(always)]
pub fn record_fragment(datagram: &FragmentKey, record: &FragmentRecord) {
    let _ = FRAGMENTS.insert(datagram, record, 0);
}

/// Whether this CPU may create one more stick entry now (and count it if so): a cap of new
/// entries per second per CPU, so a flood of spoofed non-SYN packets cannot churn the table
/// faster than the cap.
#[inline(always)]
pub fn may_create_entry(now: u64) -> bool {
    let cap = LIMITS.get(LIMIT_NEW_ENTRIES_PER_CPU).copied().unwrap_or(0);
    if cap == 0 {
        return true;
    }
    let Some(w) = NEW_ENTRIES.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: per-CPU slot, see `count`.
    let w = unsafe { &mut *w };
    if now.wrapping_sub(w.start_ns) >= NEW_ENTRIES_WINDOW_NS {
        w.start_ns = now;
        w.count = 0;
    }
    if w.count >= cap {
        return false;
    }
    w.count += 1;
    true
}

/// Report an entry just written to the agent (`XLB_INSERTS`), or count it when the ring is full.
/// The record is written in place in the ring: nothing on the stack.
#[inline(always)]
pub fn report_insert(key: &StickKey, entry: &StickEntry) {
    match INSERTS.reserve::<InsertRecord>(0) {
        Some(mut r) => {
            let p = r.as_mut_ptr();
            // SAFETY: `p` is the reserved record, valid for writes of one `InsertRecord` until
            // it is submitted; written field by field, with no copy of the record on the stack.
            unsafe {
                core::ptr::addr_of_mut!((*p).key).write(*key);
                core::ptr::addr_of_mut!((*p).entry).write(*entry);
            }
            r.submit(0);
        }
        None => count(Counter::InsertRingFull),
    }
}

#[inline(always)]
pub fn redirect(port: u32) -> u32 {
    TX_PORTS
        .redirect(port, 0)
        .unwrap_or(aya_ebpf::bindings::xdp_action::XDP_ABORTED)
}

/// Count one `counter` event on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(c) = GSTATS.get_ptr_mut(counter.index()) {
        // SAFETY: per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn service_stats(id: u32) -> Option<&'static mut ServiceStats> {
    // SAFETY: per-CPU slot, see `count`.
    SSTATS.get_ptr_mut(id).map(|p| unsafe { &mut *p })
}

/// The `XLB_SYNS` slot of a connection attempt (whichever attempt holds it now), to read and
/// update in place.
#[inline(always)]
pub fn syn_slot(key: &SynKey) -> Option<&'static mut SynSlot> {
    // SAFETY: a value pointer from the map; its fields are plain integers. Racing writers at
    // worst tear a record (see `SYNS`).
    SYNS.get_ptr_mut(key.slot()).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn passive_stats(backend: u32) -> Option<&'static mut PassiveStats> {
    // SAFETY: per-CPU slot, see `count`.
    PASSIVE.get_ptr_mut(backend).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn backend_stats(id: u32) -> Option<&'static mut BackendStats> {
    // SAFETY: per-CPU slot, see `count`.
    BSTATS.get_ptr_mut(id).map(|p| unsafe { &mut *p })
}

/// Benchmark only: next value of this CPU's counter (wrapped to 1..=n when the wrap slot is n).
#[inline(always)]
pub fn bench_next() -> u32 {
    let wrap = BENCH.get(bench_slot::WRAP).copied().unwrap_or(0);
    match BENCH.get_ptr_mut(bench_slot::COUNTER) {
        // SAFETY: per-CPU slot, see `count`.
        Some(p) => unsafe {
            let mut n = (*p).wrapping_add(1);
            if wrap != 0 && n > wrap {
                n = 1;
            }
            *p = n;
            if wrap != 0 {
                return n;
            }
            // Fresh clients: the CPU in the top byte. BPF_PROG_TEST_RUN may move a long run to
            // another CPU between repetitions, whose counter would otherwise give addresses
            // this one already gave (hits, not fresh clients).
            (n & 0x00ff_ffff) | aya_ebpf::helpers::bpf_get_smp_processor_id() << 24
        },
        None => 0,
    }
}
