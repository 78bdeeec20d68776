//! ns per packet through BPF_PROG_TEST_RUN for each path, beside the floor program (swap MACs,
//! XDP_TX) measured in the same round; ratios are per round, then the median of the rounds.
//!
//! Paths that must see a new client on every repetition run under `xlb_bench_fresh`, which
//! writes a counter into the source address first; that wrapper's own cost (measured by
//! `xlb_bench_fresh_floor` = the same write + the floor) is subtracted.
//!
//! `repeat` runs the program again and again on the same buffer, each time on the previous
//! run's output. The data path forwards only frames sent to its own MAC, and forwarding
//! rewrites the destination MAC to the backend's: so the benchmark gives every backend the LB's
//! own MAC, and a forwarded frame is again addressed to us on the next repetition. Every timed
//! run of `xlb` is then checked against the counters: exactly `repeat` packets took the named
//! path (forwarded or passed as not-VIP), none took the "not our MAC" path.
//!
//! Miss-and-insert is measured twice: on the default-size table, which the rounds fill so that
//! every insert evicts (the official `v4_tcp_miss_insert`), and on a table with room for every
//! insert of a round (`v4_tcp_miss_insert_room`, fresh maps each round): the steady state of a
//! table sized above its working set, whose idle entries the sweeper frees.
//!
//! The stick hits to encapsulating backends (`v4_ipip_stick_hit`, `v4_gue_stick_hit`) cannot
//! be timed with plain `repeat` (the output is no longer addressed to a VIP); `encap` times
//! them under a wrapper that restores the client's frame first, beside the L2 hit timed the
//! same way, and their rows follow.

use anyhow::Result;
use lb_common::PROG_FLOOR;
use serde_json::json;

use super::{Report, bench_lb, counter_of, median, ns, spread};
use crate::{fixture::*, packet::*};

pub const REPEAT: u32 = 1_000_000;
pub const ROUNDS: usize = 5;

struct Scenario {
    name: &'static str,
    frame: Vec<u8>,
    /// Run under the fresh-source wrapper.
    fresh: bool,
    /// On its own data path with fresh maps each round, with room for every insert.
    room: bool,
    expect: u32,
}

/// The stick capacity of the `room` scenario: more than one round's inserts.
const ROOM_CAPACITY: u32 = REPEAT + REPEAT / 4;

/// `f` as the client sends it: from its MAC to the LB's.
fn from_client(f: Frame) -> Vec<u8> {
    f.macs(CLIENT_MAC, LB_MAC).bytes()
}

/// The scenario the stick-hit figures name.
pub const STICK_HIT: &str = "v4_tcp_stick_hit";

/// The frame of [`STICK_HIT`]: an established client's TCP ACK to the v4 VIP.
pub fn stick_hit_frame() -> Vec<u8> {
    from_client(Frame::tcp(client4(1), 40000, VIP4, 80, TCP_ACK))
}

/// The scenarios, measured as the module's doc says.
pub fn run() -> Result<Report> {
    // The default `stick.size` (100k): the miss+insert rounds fill it and then evict, as a full
    // production table does. (The `table` benchmark covers 1k, 100k and 1M live entries.)
    let mut lb = bench_lb(Svc::default(), [100_000; SERVICES as usize])?;
    let c4 = client4(1);
    let c6 = client6(1);
    let scenarios = [
        Scenario {
            name: STICK_HIT,
            frame: stick_hit_frame(),
            fresh: false,
            room: false,
            expect: XDP_TX,
        },
        Scenario {
            name: "v4_tcp_syn_new",
            frame: from_client(Frame::tcp(c4, 40000, VIP4, 80, TCP_SYN)),
            fresh: true,
            room: false,
            expect: XDP_TX,
        },
        Scenario {
            name: "v4_tcp_miss_insert",
            frame: from_client(Frame::tcp([10, 78, 0, 0], 40000, VIP4, 80, TCP_ACK)),
            fresh: true,
            room: false,
            expect: XDP_TX,
        },
        Scenario {
            name: "v4_tcp_miss_insert_room",
            frame: from_client(Frame::tcp([10, 78, 0, 0], 40000, VIP4, 80, TCP_ACK)),
            fresh: true,
            room: true,
            expect: XDP_TX,
        },
        Scenario {
            name: "v4_udp_stick_hit",
            frame: from_client(Frame::udp(c4, 5000, VIP4, 53)),
            fresh: false,
            room: false,
            expect: XDP_TX,
        },
        Scenario {
            name: "v6_tcp_stick_hit",
            frame: from_client(Frame::tcp(c6, 40000, VIP6, 80, TCP_ACK)),
            fresh: false,
            room: false,
            expect: XDP_TX,
        },
        Scenario {
            name: "v4_non_vip_pass",
            frame: from_client(Frame::tcp(c4, 40000, [10, 0, 0, 99], 80, TCP_ACK)),
            fresh: false,
            room: false,
            expect: XDP_PASS,
        },
    ];
    // The floor runs on the stick hit's frame.
    let floor_frame = &scenarios[0].frame.clone();
    // Warm: pin the hit-path clients (a non-SYN packet creates the entry).
    for s in scenarios.iter().filter(|s| !s.fresh) {
        lb.dp.test_run("xlb", &s.frame, 1)?;
    }
    let mut rows = Vec::new();
    let mut per: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        scenarios.iter().map(|_| (vec![], vec![], vec![])).collect();
    for round in 0..ROUNDS {
        for (i, s) in scenarios.iter().enumerate() {
            let mut own;
            let lb = if s.room {
                let mut sizes = [1024; SERVICES as usize];
                sizes[0] = ROOM_CAPACITY;
                own = bench_lb(Svc::default(), sizes)?;
                &mut own
            } else {
                &mut lb
            };
            let floor = ns(lb, PROG_FLOOR, floor_frame, REPEAT, XDP_TX, None)?;
            let cost = if s.fresh {
                // The wrapper alone first: on the room table, the measured run must be the
                // first to insert.
                let wrapper = ns(lb, "xlb_bench_fresh_floor", &s.frame, REPEAT, XDP_TX, None)?;
                let wrapped = ns(
                    lb,
                    lb_common::PROG_BENCH_FRESH,
                    &s.frame,
                    REPEAT,
                    s.expect,
                    Some(counter_of(s.expect)),
                )?;
                (wrapped - (wrapper - floor)).max(0.0)
            } else {
                ns(lb, "xlb", &s.frame, REPEAT, s.expect, Some(counter_of(s.expect)))?
            };
            if s.room {
                let used = lb.dp.stick_entries()?.len();
                anyhow::ensure!(
                    used >= REPEAT as usize * 99 / 100,
                    "{}: {used} entries after {REPEAT} inserts: the table evicted",
                    s.name
                );
            }
            per[i].0.push(cost);
            per[i].1.push(floor);
            per[i].2.push(cost / floor);
            eprintln!(
                "  round {}/{ROUNDS} {:<20} {cost:7.1} ns  floor {floor:6.1} ns  ratio {:5.2}",
                round + 1,
                s.name,
                cost / floor
            );
        }
    }
    let mut table = format!(
        "datapath: BPF_PROG_TEST_RUN, repeat {REPEAT}, {ROUNDS} rounds, medians (ratio = path / floor in the same round)\n{:<22}{:>10}{:>12}{:>8}{:>16}\n",
        "scenario", "ns/pkt", "floor ns", "ratio", "ratio spread"
    );
    for (s, (cost, floor, ratio)) in scenarios.iter().zip(&per) {
        let (lo, hi) = spread(ratio);
        let (c, f, r) = (median(cost), median(floor), median(ratio));
        table.push_str(&format!(
            "{:<22}{c:>10.1}{f:>12.1}{r:>8.2}{:>16}\n",
            s.name,
            format!("{lo:.2}..{hi:.2}")
        ));
        rows.push(json!({"name": s.name, "ns_per_pkt": c, "floor_ns_per_pkt": f, "ratio": r, "ratio_min": lo, "ratio_max": hi}));
    }
    // The encapsulating stick hits, timed under the restoring wrapper (see `encap`), in the
    // same run; beside each, its cost over the L2 hit timed the same way.
    for m in super::encap::run()? {
        let (lo, hi) = spread(&m.ratio);
        let (c, f, r, rel) = (median(&m.cost), median(&m.floor), median(&m.ratio), m.relative());
        table.push_str(&format!(
            "{:<22}{c:>10.1}{f:>12.1}{r:>8.2}{:>16}  ({rel:.3} x the L2 hit, restored frames, {} rounds)\n",
            m.name,
            format!("{lo:.2}..{hi:.2}"),
            super::encap::ROUNDS
        ));
        rows.push(json!({"name": m.name, "ns_per_pkt": c, "floor_ns_per_pkt": f, "ratio": r, "ratio_min": lo, "ratio_max": hi, "relative_to_l2_stick_hit": rel, "rounds": super::encap::ROUNDS, "method": format!("repeat under a wrapper that restores the client's frame, its own cost subtracted; relative to the L2 stick hit timed the same way in the same round (three clients of one loaded data path, the rounds going round {} loads), pinned to one CPU; interquartile mean of the rounds", super::encap::LOADS)}));
    }
    Ok(Report {
        table,
        json: json!({"repeat": REPEAT, "rounds": ROUNDS, "scenarios": rows}),
    })
}
