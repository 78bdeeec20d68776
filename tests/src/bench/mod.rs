//! Benchmark runners (see `src/bin/xlb-bench.rs`). Each returns a printable table and JSON.

pub mod datapath;
pub mod e2e;
pub mod maglev;
pub mod table;

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

/// (min, max) of a non-empty slice.
pub fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}
