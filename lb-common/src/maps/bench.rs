//! The benchmark programs and their maps: never used by the production program `xlb`, never
//! pinned.

/// The floor for benchmarks: swap MACs, `XDP_TX`.
pub const PROG_FLOOR: &str = "xlb_floor";
/// The bench wrapper that gives every iteration a fresh client address, then runs `xlb`.
pub const PROG_BENCH_FRESH: &str = "xlb_bench_fresh";
/// The e2e benchmark's floor: every frame to one VIP goes to one backend (see `FloorTarget`).
pub const PROG_E2E_FLOOR: &str = "xlb_e2e_floor";
/// Its map (index 0: a `FloorTarget`).
pub const MAP_FLOOR_TARGET: &str = "XLB_FLOOR_TARGET";

/// The fresh-address counter of `PROG_BENCH_FRESH` (per-CPU u32 slots).
pub const MAP_BENCH: &str = "XLB_BENCH";
/// Slots of `MAP_BENCH`.
pub mod bench_slot {
    /// The per-CPU counter that becomes the low 4 bytes of the client address (without `WRAP`,
    /// the CPU's number in their top byte, so that CPUs give different addresses).
    pub const COUNTER: u32 = 0;
    /// When not 0, n: the counter wraps to 1..=n (a working set of n clients).
    pub const WRAP: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Value of `MAP_FLOOR_TARGET` (index 0), for `PROG_E2E_FLOOR`: IPv4 frames to `vip` leave by
/// `XDP_TX` with destination `backend_mac` and source `own_mac`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FloorTarget {
    pub vip: [u8; 4],
    pub backend_mac: [u8; 6],
    pub own_mac: [u8; 6],
}
map_type!(FloorTarget, 16);
