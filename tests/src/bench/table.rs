//! Stick-hit cost with the table holding 1k, 100k and 1M live entries (filled through the map
//! from userspace), for one hot client and for a working set cycling through every entry
//! (`xlb_bench_fresh` with a wrap = the table's size), each a ratio to the floor of the same
//! round; the map's memory at 1M; one expiry sweep over 1M entries.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use lb_common::{FAMILY_V4, PROG_FLOOR, StickEntry, StickKey};
use serde_json::json;
use xlb::{balancer::stick, datapath::coarse_now_ns};

use super::{Report, median};
use crate::{fixture::*, packet::*};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;

fn key(n: u32) -> StickKey {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&n.to_be_bytes());
    StickKey::new(addr, 0, 0, FAMILY_V4)
}

fn fill(lb: &mut Lb, n: u32) -> Result<()> {
    let now = coarse_now_ns();
    let map = lb.dp.stick_map_mut(0).context("service 0 has a stick table")?;
    for i in 1..=n {
        map.insert(
            key(i),
            StickEntry {
                last_seen_ns: now,
                backend: i % 4,
                syn_at: 0,
            },
            0,
        )
        .with_context(|| format!("insert entry {i}"))?;
    }
    Ok(())
}

/// ns per repetition; the data path's runs are checked to have forwarded every repetition
/// (see `super::bench_lb`).
fn ns(lb: &mut Lb, prog: &str, f: &[u8]) -> Result<f64> {
    let counter = (prog != PROG_FLOOR && prog != "xlb_bench_fresh_floor")
        .then_some(lb_common::gstat::Derived::Tx.into());
    super::ns(lb, prog, f, REPEAT, XDP_TX, counter)
}

/// memlock of our LRU map of `entries` entries, from /proc/self/fdinfo.
fn map_memlock(entries: u32) -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if text.contains("map_type:\t9") && text.contains(&format!("max_entries:\t{entries}")) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix("memlock:\t"))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

pub fn run() -> Result<Report> {
    let mut out = format!(
        "table: stick-hit cost vs live entries (repeat {REPEAT}, {ROUNDS} rounds, medians; ratio to floor)\n{:>9}{:>14}{:>10}{:>18}{:>10}\n",
        "entries", "hot ns/pkt", "hot ×", "working-set ns", "ws ×"
    );
    let mut rows = Vec::new();
    let mut extra = json!({});
    for n in [1_000u32, 100_000, 1_000_000] {
        // Only service 0 (VIP4:80/tcp, the one measured) gets the big table.
        let mut lb = super::bench_lb(
            Svc {
                expire_s: 3600,
                ..Default::default()
            },
            std::array::from_fn(|s| if s == 0 { n + n / 8 + 1024 } else { 1024 }),
        )?;
        let t0 = Instant::now();
        fill(&mut lb, n)?;
        let fill_time = t0.elapsed();
        let hot = Frame::tcp([0, 0, 0, 1], 40000, VIP4, 80, TCP_ACK)
            .macs(CLIENT_MAC, LB_MAC)
            .bytes();
        let (mut hr, mut wr, mut hn, mut wn) = (vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            let floor = ns(&mut lb, PROG_FLOOR, &hot)?;
            let h = ns(&mut lb, "xlb", &hot)?;
            lb.dp.set_bench_wrap(n)?;
            let ws = ns(&mut lb, lb_common::PROG_BENCH_FRESH, &hot)?;
            let wrapper = ns(&mut lb, "xlb_bench_fresh_floor", &hot)?;
            let w = (ws - (wrapper - floor)).max(0.0);
            hr.push(h / floor);
            wr.push(w / floor);
            hn.push(h);
            wn.push(w);
        }
        let g = lb.gstat(lb_common::gstat::Derived::StickMiss);
        let (h, hx, w, wx) = (median(&hn), median(&hr), median(&wn), median(&wr));
        out.push_str(&format!("{n:>9}{h:>14.1}{hx:>10.2}{w:>18.1}{wx:>10.2}\n"));
        rows.push(json!({"entries": n, "hot_ns": h, "hot_ratio": hx, "working_set_ns": w, "working_set_ratio": wx, "misses_during_run": g, "fill_ms": fill_time.as_secs_f64() * 1e3}));
        if n == 1_000_000 {
            let capacity = lb.dp.stick_capacity_of(0).unwrap_or(0);
            let mem = map_memlock(capacity);
            out.push_str(&format!(
                "stick map memory at 1M entries (capacity {capacity}): {}\n",
                mem.map(|m| format!("{:.1} MiB", m as f64 / 1048576.0))
                    .unwrap_or("unknown".into())
            ));
            // One sweep where every entry is idle past expire: walk + delete 1M entries.
            let policy = xlb::balancer::SweepPolicy {
                expire: [(0u16, 1u64)].into(),
                owner: (0..4).map(|b| (b, 0u16)).collect(),
                ..Default::default()
            };
            std::thread::sleep(Duration::from_millis(20));
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            let t0 = Instant::now();
            let stick::Swept { seen, deleted, .. } = stick::sweep(
                lb.dp.stick_tables_mut(),
                &policy,
                None,
                10_000,
                || {
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                },
                || true,
            )?;
            let sweep = t0.elapsed();
            out.push_str(&format!(
                "expiry sweep over {seen} entries: {deleted} deleted in {:.0} ms; longest step {:.1} ms (one batched read of every entry, or 10k deletions); agent lock held: only to copy the expiry settings (the sweep uses its own map handle off the runtime)\n",
                sweep.as_secs_f64() * 1e3,
                longest.as_secs_f64() * 1e3
            ));
            extra = json!({"memlock_bytes_1m": mem, "sweep_1m_ms": sweep.as_secs_f64() * 1e3, "sweep_longest_batch_ms": longest.as_secs_f64() * 1e3, "sweep_deleted": deleted});
        }
    }
    let hot_1k = rows[0]["hot_ns"].as_f64().unwrap_or(1.0);
    let hot_1m = rows[2]["hot_ns"].as_f64().unwrap_or(0.0);
    out.push_str(&format!(
        "hot client at 1M vs 1k entries: {:.2}×\n",
        hot_1m / hot_1k
    ));
    Ok(Report {
        table: out,
        json: json!({"rows": rows, "hot_1m_over_1k": hot_1m / hot_1k, "extra": extra}),
    })
}
