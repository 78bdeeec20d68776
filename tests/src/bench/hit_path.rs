//! `cargo xtask bench hit-path` (and `failover.json`'s `hit_path_ratio_change`): what passive
//! health's packet code (issue 12) costs the stick hit, timed in one run. The data path as built
//! ([`xlb::datapath::OBJECT`]) and the same source built without that code (feature `passive`
//! off: [`xlb::datapath::OBJECT_WITHOUT_PASSIVE`]) are loaded side by side with the same maps.
//! Each round times the floor program once (the same program in both objects, from each in
//! turn) and the datapath bench's `v4_tcp_stick_hit` frame on both, alternating which goes
//! first. A round's change is hit with / hit without, which is also the change of the hit's
//! ratio to that round's floor (each program over a floor of its own would add two more
//! timings' noise to every round). The figure is the interquartile mean of the rounds' changes
//! ([`HitPath::ratio_change`] says why not the median).
//!
//! The thread stays on one CPU for the whole comparison ([`PinnedToThisCpu`](super::pinned::PinnedToThisCpu)). Timed only
//! while `kernel.bpf_stats_enabled` is off: the kernel's run-time accounting adds a
//! cost to every program run, the floor's too, which squeezes every ratio towards 1 (seen: 1.9
//! instead of 4.6); it is machine-wide, and the e2e bench turns it on while it runs.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lb_common::PROG_FLOOR;
use serde_json::json;

use super::{
    Report, bench_lb_of, counter_of, datapath, interquartile_mean, median, ns, pinned::PinnedToThisCpu,
    spread,
};
use crate::fixture::{SERVICES, Svc, XDP_TX};

/// Rounds of the comparison (each times the floor and both hits: about 0.3 s).
pub const ROUNDS: usize = 41;

/// The kernel's switch for per-program run-time accounting.
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The longest wait for it to be off before timing.
const BPF_STATS_WAIT: Duration = Duration::from_secs(60);

fn bpf_stats_on() -> bool {
    std::fs::read_to_string(BPF_STATS).is_ok_and(|v| v.trim() != "0")
}

/// One comparison's per-round figures.
pub struct HitPath {
    /// Stick hit / floor with passive health's packet code, per round.
    pub with: Vec<f64>,
    /// The same without it.
    pub without: Vec<f64>,
    /// `with / without`, per round.
    pub change: Vec<f64>,
}

impl HitPath {
    /// The figure: the interquartile mean of the rounds' changes (the mean of the middle half).
    /// The kernel reports whole ns per repetition, and 1 ns is about 1 % of a stick hit: a
    /// median would land on one of a few quantised values, while the mean of the middle half
    /// resolves finer and still ignores the rounds a neighbour's load disturbed.
    pub fn ratio_change(&self) -> f64 {
        interquartile_mean(&self.change)
    }

    /// One line for a report: the median ratios to the floor, the change and its spread.
    pub fn summary(&self) -> String {
        let (lo, hi) = spread(&self.change);
        format!(
            "stick hit / floor: {:.2} with passive health's packet code, {:.2} without (same run, {} rounds); change {:.3} (interquartile mean; rounds {lo:.3}..{hi:.3})",
            median(&self.with),
            median(&self.without),
            self.change.len(),
            self.ratio_change()
        )
    }
}

/// Time both programs, `rounds` rounds, as the module's doc says.
pub fn measure(rounds: usize) -> Result<HitPath> {
    let t0 = Instant::now();
    while bpf_stats_on() {
        if t0.elapsed() > BPF_STATS_WAIT {
            bail!(
                "{BPF_STATS} stayed on for {BPF_STATS_WAIT:?} (an e2e bench running?): it would squeeze the ratios"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let _pinned = PinnedToThisCpu::new()?;
    let sizes = [100_000; SERVICES as usize];
    let mut with = bench_lb_of(Svc::default(), sizes, None)?;
    let mut without = bench_lb_of(Svc::default(), sizes, Some(xlb::datapath::OBJECT_WITHOUT_PASSIVE))?;
    let frame = datapath::stick_hit_frame();
    for lb in [&mut with, &mut without] {
        // Pin the client (a non-SYN packet creates the entry).
        lb.dp.test_run("xlb", &frame, 1)?;
    }
    let hit = |lb: &mut crate::fixture::Lb| {
        ns(
            lb,
            "xlb",
            &frame,
            datapath::REPEAT,
            XDP_TX,
            Some(counter_of(XDP_TX)),
        )
    };
    let mut r = HitPath {
        with: vec![],
        without: vec![],
        change: vec![],
    };
    for round in 0..rounds {
        // One floor per round (the same program in both objects), timed from each in turn.
        let floor_lb = if round % 2 == 0 { &mut with } else { &mut without };
        let floor = ns(floor_lb, PROG_FLOOR, &frame, datapath::REPEAT, XDP_TX, None)?;
        let (w, wo) = if round % 2 == 0 {
            let w = hit(&mut with)?;
            (w, hit(&mut without)?)
        } else {
            let wo = hit(&mut without)?;
            (hit(&mut with)?, wo)
        };
        eprintln!(
            "  round {}/{rounds}: floor {floor:3.0} ns  with {w:4.0} ns ({:.2})  without {wo:4.0} ns ({:.2})  change {:.3}",
            round + 1,
            w / floor,
            wo / floor,
            w / wo
        );
        r.with.push(w / floor);
        r.without.push(wo / floor);
        r.change.push(w / wo);
    }
    if bpf_stats_on() {
        bail!(
            "{BPF_STATS} was turned on while the stick hits were timed (an e2e bench running?): ratios not trusted"
        );
    }
    Ok(r)
}

/// `cargo xtask bench hit-path`.
pub fn run() -> Result<Report> {
    let r = measure(ROUNDS)?;
    let (lo, hi) = spread(&r.change);
    Ok(Report {
        table: format!("hit-path: {}\n", r.summary()),
        json: json!({
            "rounds": r.change.len(),
            "with_passive": median(&r.with),
            "without_passive": median(&r.without),
            "hit_path_ratio_change": r.ratio_change(),
            "change_spread": [lo, hi],
        }),
    })
}
