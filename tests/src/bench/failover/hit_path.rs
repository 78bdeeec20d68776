//! `hit_path_ratio_change`: the stick-hit ratio to the floor timed now, with the datapath
//! bench's own code ([`datapath::stick_hit_ratio`]), over the same ratio in a datapath JSON
//! written before this work (see the parent module), timed only while the kernel's per-program
//! run-time accounting is off.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::Figures;
use crate::bench::datapath;

/// The kernel's switch for per-program run-time accounting.
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The longest wait for it to be off before the stick hit is timed.
const BPF_STATS_WAIT: Duration = Duration::from_secs(60);

fn bpf_stats_on() -> bool {
    std::fs::read_to_string(BPF_STATS).is_ok_and(|v| v.trim() != "0")
}

/// The datapath JSON the stick-hit ratio is compared with.
fn baseline_path() -> PathBuf {
    std::env::var_os("XLB_BENCH_HIT_BASELINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/xlb-bench/datapath-baseline.json"))
}

pub(super) fn hit_path_ratio_change(figs: &mut Figures) -> Result<f64> {
    let path = baseline_path();
    let before = read_ratio(&path)?;
    // The kernel's run-time accounting adds its own cost to every program run, the floor's
    // too, which squeezes the ratio towards 1 (seen: 1.9 instead of 4.6). It is machine-wide,
    // and the e2e bench turns it on while it runs.
    let t0 = Instant::now();
    while bpf_stats_on() {
        if t0.elapsed() > BPF_STATS_WAIT {
            bail!(
                "{BPF_STATS} stayed on for {BPF_STATS_WAIT:?} (an e2e bench running?): it would squeeze the ratio"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let now = datapath::stick_hit_ratio()?;
    if bpf_stats_on() {
        bail!(
            "{BPF_STATS} was turned on while the stick hit was timed (an e2e bench running?): ratio {now:.2} not trusted"
        );
    }
    figs.note(format!(
        "stick hit / floor: {now:.2} now against {before:.2} in {} (written {})",
        path.display(),
        modified(&path)
    ));
    Ok(now / before)
}

fn read_ratio(path: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "read the baseline {}: make it on the commit before this work with \
             `cargo xtask bench datapath --json {}` (or point XLB_BENCH_HIT_BASELINE at one)",
            path.display(),
            path.display()
        )
    })?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    datapath::ratio_of(&json, datapath::STICK_HIT)
}

/// When `path` was last written (UTC, from `date`), or "?".
fn modified(path: &Path) -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("-r")
        .arg(path)
        .arg("+%Y-%m-%d %H:%M:%S UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}
