//! When a target's next check runs: the first after a random delay below `inter` (so that
//! targets configured together do not check in lockstep), each later one `inter` after the
//! previous ended, or `fastinter` while passive health suspects the target, or `downinter`
//! while it is Down. A check of a suspected target is bounded by `fastinter` when that is
//! shorter than its `timeout` (as HAProxy bounds a check by its current interval), so that a
//! silent target is confirmed DOWN quickly.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher},
    sync::Mutex,
    time::Duration,
};

use super::{CheckSpec, Health, Slot, TargetKey, lock};

/// The first check's delay: pseudo-random in `[0, inter)`. `RandomState` is seeded randomly per
/// process, and the key, generation and clock spread it further; no `rand` needed.
pub(super) fn jitter(key: &TargetKey, generation: u64, inter: Duration) -> Duration {
    let nanos = inter.as_nanos();
    if nanos == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    key.hash(&mut h);
    generation.hash(&mut h);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        .hash(&mut h);
    let r = u128::from(h.finish()) % nanos;
    Duration::from_nanos(u64::try_from(r).unwrap_or(u64::MAX))
}

/// The delay before the next check of `key`.
pub(super) fn next_delay(
    shared: &Mutex<HashMap<TargetKey, Slot>>,
    key: &TargetKey,
    spec: &CheckSpec,
) -> Duration {
    match lock(shared).get(key).map(|s| &s.status) {
        Some(s) if s.health == Health::Down => spec.downinter,
        Some(s) if s.suspicion.is_some() => spec.fastinter,
        _ => spec.inter,
    }
}

/// The bound on the check of `key` about to run: `timeout`, or `fastinter` if shorter while the
/// target is suspected.
pub(super) fn timeout_now(
    shared: &Mutex<HashMap<TargetKey, Slot>>,
    key: &TargetKey,
    spec: &CheckSpec,
) -> Duration {
    match lock(shared).get(key).map(|s| &s.status) {
        Some(s) if s.health != Health::Down && s.suspicion.is_some() => spec.timeout.min(spec.fastinter),
        _ => spec.timeout,
    }
}
