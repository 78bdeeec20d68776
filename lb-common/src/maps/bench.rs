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

/// The bench wrapper for stick hits to encapsulating backends: it puts the client's frame
/// (`MAP_BENCH_FRAME`) back before it runs `xlb`, so that BPF_PROG_TEST_RUN's `repeat`, which
/// feeds each run the previous run's (encapsulated) output, times the same stick hit again.
pub const PROG_BENCH_RESTORE: &str = "xlb_bench_restore";
/// That wrapper's own cost: the same restore, then the floor. Subtracted.
pub const PROG_BENCH_RESTORE_FLOOR: &str = "xlb_bench_restore_floor";
/// The frame `PROG_BENCH_RESTORE` puts back (index 0: a `BenchFrame`).
pub const MAP_BENCH_FRAME: &str = "XLB_BENCH_FRAME";

/// Bytes of the client's frame `PROG_BENCH_RESTORE` writes back: Ethernet, IPv4 and TCP
/// headers without options.
pub const BENCH_FRAME_HEAD: usize = 54;

/// Value of `MAP_BENCH_FRAME` (index 0): the client's frame, `len` bytes long, of which the
/// first `BENCH_FRAME_HEAD` are `head` (the rest is never changed by the data path).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchFrame {
    pub len: u32,
    pub head: [u8; BENCH_FRAME_HEAD],
    pub _pad: [u8; 2],
}
map_type!(BenchFrame, 60);

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
