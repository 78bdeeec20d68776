//! Values that parse but would hurt: each limit is a constant with the reason it is there, and
//! each check gives the value, the reason and the fix.

use std::time::Duration;

use super::{ConfigError, Service, error::Place, units::format_duration};

/// The data path refreshes an entry's last-seen time at most once per `STICK_REFRESH_NS`, so an
/// entry of a client that sends steadily can look idle for just under two refresh intervals
/// (refreshed at t, a packet at t + 0.9 s does not refresh, the next at t + 1.8 s does). An
/// `expire` at or below that throws out active clients; one more interval of margin gives the
/// smallest value accepted.
pub const MIN_STICK_EXPIRE: Duration = Duration::from_nanos(3 * lb_common::STICK_REFRESH_NS);

/// The expiry sweeper's interval: below this it walks the table so often that the walk is the
/// agent's main work; above it expired entries linger in `show table` and in memory for hours.
pub const SWEEP_INTERVAL_MIN: Duration = Duration::from_millis(100);
pub const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(3600);

/// The most kernel memory all stick tables together may take: 2 GiB, about 18 million clients
/// (`stick_memory_bytes`). A table bigger than that is a typo ("100m" for "100k") far more
/// often than a plan, and the kernel allocates an LRU map's every element when it is created.
pub const STICK_MEMORY_CAP: u64 = 2 << 30;

/// Kernel memory of an LRU hash map of `entries` stick entries, as the kernel accounts it
/// (`memlock` in the map's fdinfo; 104 778 112 bytes for 1 000 000 entries, measured on 6.18):
/// per element 88 bytes (key 24 + value 16 + 48 of `htab_elem` header with its LRU node), plus
/// 16 bytes per hash bucket, the buckets rounded up to a power of two, plus 896 for the map.
pub fn stick_memory_bytes(entries: u64) -> u64 {
    const KEY: u64 = std::mem::size_of::<lb_common::StickKey>() as u64;
    const VALUE: u64 = std::mem::size_of::<lb_common::StickEntry>() as u64;
    const ELEMENT_HEADER: u64 = 48;
    const BUCKET: u64 = 16;
    const MAP: u64 = 896;
    entries * (ELEMENT_HEADER + KEY + VALUE) + BUCKET * entries.max(1).next_power_of_two() + MAP
}

/// The most entries whose memory stays within `STICK_MEMORY_CAP` (18 302 407).
pub fn stick_max_entries() -> u64 {
    let (mut lo, mut hi) = (0u64, u64::from(u32::MAX));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if stick_memory_bytes(mid) <= STICK_MEMORY_CAP {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

pub(super) fn stick_memory_reason(entries: u64, total: u64) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    format!(
        "{entries} entries bring the stick tables of all services to {total} entries, which take \
         {:.1} GiB of kernel memory (about {} bytes each: 24 key + 16 value + 48 kernel element \
         header + a 16-byte hash bucket); the cap is {:.0} GiB, at most {} entries in all: lower \
         stick.size (e.g. \"100k\")",
        gib(stick_memory_bytes(total)),
        stick_memory_bytes(total) / total.max(1),
        gib(STICK_MEMORY_CAP),
        stick_max_entries(),
    )
}

/// The stick tables' memory, summed over the services in order: the service that crosses
/// `STICK_MEMORY_CAP` is named.
pub(super) fn check_stick_memory(services: &[Service], file: &str) -> Result<(), ConfigError> {
    let mut total = 0u64;
    for s in services {
        total += u64::from(s.stick.size);
        if stick_memory_bytes(total) > STICK_MEMORY_CAP {
            return Err(Place::service(file, &s.name)
                .err("stick.size", stick_memory_reason(u64::from(s.stick.size), total)));
        }
    }
    Ok(())
}

pub(super) fn check_stick_expire(d: Duration) -> Result<(), String> {
    if d.is_zero() || d >= MIN_STICK_EXPIRE {
        return Ok(());
    }
    let refresh = Duration::from_nanos(lb_common::STICK_REFRESH_NS);
    Err(format!(
        "\"{}\" is below the minimum of {}: the data path refreshes an entry at most once per {}, \
         so an active client's entry can look idle for up to {} and would be dropped; use \"{}\" \
         or more (or \"0s\": entries never expire)",
        format_duration(d),
        format_duration(MIN_STICK_EXPIRE),
        format_duration(refresh),
        format_duration(refresh * 2),
        format_duration(MIN_STICK_EXPIRE),
    ))
}

pub(super) fn check_sweep_interval(d: Duration) -> Result<(), String> {
    if d < SWEEP_INTERVAL_MIN {
        return Err(format!(
            "\"{}\" is below {}: the sweeper would walk the whole stick table nearly all the \
             time; use e.g. \"1s\"",
            format_duration(d),
            format_duration(SWEEP_INTERVAL_MIN)
        ));
    }
    if d > SWEEP_INTERVAL_MAX {
        return Err(format!(
            "\"{}\" is above {}: expired entries would stay in memory and in `show table` that \
             long; use e.g. \"1s\"",
            format_duration(d),
            format_duration(SWEEP_INTERVAL_MAX)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stick_memory_matches_the_kernels_accounting() {
        assert_eq!(stick_max_entries(), 18_302_407);
        assert!(stick_memory_bytes(18_302_408) > STICK_MEMORY_CAP);
        // memlock of an LRU hash map (key 24, value 16) in its fdinfo, Linux 6.18.
        assert_eq!(stick_memory_bytes(1_000_000), 104_778_112);
        assert_eq!(stick_memory_bytes(1_048_576), 109_052_800);
        assert_eq!(stick_memory_bytes(100_000), 10_898_048);
    }
}
