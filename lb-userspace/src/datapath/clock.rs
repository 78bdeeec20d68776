//! The clock of the data path: stick entries are stamped with `bpf_ktime_get_coarse_ns`, so the
//! agent measures idleness on the same clock.

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock the data path stamps entries with
/// (`bpf_ktime_get_coarse_ns`).
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
