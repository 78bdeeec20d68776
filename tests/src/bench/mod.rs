//! Benchmark runners (see `src/bin/xlb-bench.rs`). Each returns a printable table and JSON.

pub mod datapath;
pub mod e2e;
pub mod e2e_ipip;
pub mod encap;
pub mod failover;
pub mod fleet;
pub mod hit_path;
pub mod maglev;
mod pinned;
pub mod table;

use anyhow::{Context as _, Result};
use lb_common::gstat::{Counter, Derived, Global};

use crate::fixture::{LB_MAC, Lb, SERVICES, Svc, XDP_PASS};

/// What a benchmark produced.
pub struct Report {
    pub table: String,
    pub json: serde_json::Value,
}

/// Median of a non-empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The mean of the middle half of `v` (non-empty).
pub fn interquartile_mean(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let q = s.len() / 4;
    let mid = &s[q..s.len() - q];
    mid.iter().sum::<f64>() / mid.len() as f64
}

/// (min, max) of a non-empty slice.
pub fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// The fixture's data path with every backend's MAC set to the LB's own. `BPF_PROG_TEST_RUN`
/// with `repeat` runs the program again on its own output; the data path forwards only frames
/// sent to its own MAC and rewrites the destination to the backend's, so with any other backend
/// MAC every repetition after the first would time the "not our MAC" path. This way a
/// forwarded frame is again addressed to us, and `ns` checks that it was.
pub fn bench_lb(svc: Svc, stick_sizes: [u32; SERVICES as usize]) -> Result<Lb> {
    bench_lb_of(svc, stick_sizes, None)
}

/// As [`bench_lb`], loading `object` (`None`: the data path itself).
pub fn bench_lb_of(
    svc: Svc,
    stick_sizes: [u32; SERVICES as usize],
    object: Option<&'static [u8]>,
) -> Result<Lb> {
    let mut lb = Lb::of_object(svc, stick_sizes, object);
    for id in 0..4 * SERVICES {
        let mut be = lb.dp.backend(id)?;
        be.mac = LB_MAC;
        lb.dp.set_backend(id, be)?;
    }
    Ok(lb)
}

/// ns per repetition of `prog`; for the data path itself (`counter` given), also checks that
/// all `repeat` packets took that path: the counter grew by `repeat`, and no frame was passed
/// as not addressed to us.
pub fn ns(
    lb: &mut Lb,
    prog: &str,
    frame: &[u8],
    repeat: u32,
    expect: u32,
    counter: Option<Global>,
) -> Result<f64> {
    let before = lb.dp.global_stats()?;
    let r = lb
        .dp
        .test_run(prog, frame, repeat)
        .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
    anyhow::ensure!(
        r.verdict == expect,
        "{prog}: verdict {} but expected {expect}",
        r.verdict
    );
    if let Some(c) = counter {
        let after = lb.dp.global_stats()?;
        let grew = |g: Global| after.get(g) - before.get(g);
        let not_ours = Counter::PassNotOurMac.into();
        anyhow::ensure!(
            grew(c) == u64::from(repeat) && grew(not_ours) == 0,
            "{prog}: {} of {repeat} repetitions took the path counted as {} ({} not addressed to us): \
             the benchmark would time another path",
            grew(c),
            c.name(),
            grew(not_ours)
        );
    }
    Ok(r.duration.as_nanos() as f64)
}

/// The counter that counts every packet of a path with this verdict.
pub fn counter_of(verdict: u32) -> Global {
    if verdict == XDP_PASS {
        Counter::PassNotVip.into()
    } else {
        Derived::Tx.into()
    }
}

#[cfg(test)]
mod tests {
    use super::interquartile_mean;

    #[test]
    fn the_interquartile_mean_ignores_the_outer_quarters() {
        assert_eq!(interquartile_mean(&[1.0]), 1.0);
        assert_eq!(interquartile_mean(&[9.0, 1.0, 2.0, 3.0]), 2.5);
        // A disturbed round (1.4) and a lucky one (0.8) move nothing.
        assert_eq!(
            interquartile_mean(&[1.4, 1.02, 0.8, 1.04, 1.03, 1.01, 1.03, 1.05]),
            1.03
        );
    }
}
