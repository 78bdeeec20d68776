//! The stick hit to an encapsulating backend, `v4_ipip_stick_hit` and `v4_gue_stick_hit`, beside
//! the L2 one (`v4_tcp_stick_hit_restored`), measured the same way in the same round.
//!
//! `repeat` runs the program again on its own output, and an encapsulated frame is no longer
//! addressed to a VIP. So every path here runs under the wrapper `xlb_bench_restore`, which
//! first puts the client's frame back (its length and its first 54 bytes), then runs `xlb`;
//! the wrapper's own cost (`xlb_bench_restore_floor`: the same restore, then the floor) is
//! subtracted, as `datapath` does for the fresh-source wrapper. The ratio is to the floor
//! (`xlb_floor`) of the same round, as for every other path; `relative` is the path over the
//! L2 hit timed the same way in the same round.
//!
//! The three paths are three clients of one loaded data path (`load`): service 0's backend 1
//! is reached by IP in IP, backend 2 by GUE, 0 and 3 are on the L2 segment, and each client is
//! pinned to one kind (`clients_per_kind`). The data path is loaded `LOADS` times and the
//! rounds go round the loads: each load's programs are compiled to another place in memory,
//! and in one run one load's figure differed from another's by up to 0.04 (the same build);
//! with a load per path, as before, a run's figure depended on where its two or three loads
//! happened to land.
//!
//! Steadied as `hit_path` is: the thread stays on one CPU (`PinnedToThisCpu`), each round times
//! the floor and the wrapper once and the three paths in a rotating order, and the figure over
//! the L2 hit is the interquartile mean of `ROUNDS` rounds (`Measured::relative`). What is
//! left from run to run (a few hundredths) moves all loads alike: the machine, not the method.
//!
//! The data path looks the next hop up in the kernel's FIB, so everything runs in a routed
//! namespace (`routed::RoutedNs`), received on its wire: the next hop leaves by `XDP_TX`.
//! Every run's counters are checked: every repetition was a stick hit sent by `XDP_TX`, none
//! missed the FIB or the encapsulation stage.

use anyhow::{Context as _, Result};
use lb_common::{
    PROG_BENCH_RESTORE, PROG_BENCH_RESTORE_FLOOR, PROG_FLOOR,
    gstat::{Counter, Derived},
};
use xlb::config::{EncapSource, Forward};

use super::{bench_lb, interquartile_mean, pinned::PinnedToThisCpu};
use crate::{
    fixture::*,
    netns,
    packet::*,
    routed::{self, RoutedNs},
};

/// Repetitions per run.
pub const REPEAT: u32 = 1_000_000;
/// Rounds (each times the floor, the wrapper and the three paths: about half a second), as
/// many on each load.
pub const ROUNDS: usize = 80;
/// Loads of the data path the rounds go round.
pub const LOADS: usize = 4;

/// One scenario's figures over the rounds: net ns, ratio to the floor, and net ns over the L2
/// hit's.
pub struct Measured {
    pub name: &'static str,
    pub cost: Vec<f64>,
    pub floor: Vec<f64>,
    pub ratio: Vec<f64>,
    pub relative: Vec<f64>,
}

impl Measured {
    /// The figure over the L2 hit: the interquartile mean of the rounds' (see
    /// `interquartile_mean` for why not the median).
    pub fn relative(&self) -> f64 {
        interquartile_mean(&self.relative)
    }
}

/// `ROUNDS` rounds of the three stick hits over `LOADS` loads; the figures per scenario.
pub fn run() -> Result<Vec<Measured>> {
    let r = RoutedNs::new("bench_encap")?;
    let ingress = r.wire_ifindex;
    netns::run_in(r.ns(), || measure(ingress))?
}

fn measure(ingress: u32) -> Result<Vec<Measured>> {
    let _pinned = PinnedToThisCpu::new()?;
    let mut loads = Vec::new();
    for _ in 0..LOADS {
        loads.push(load(ingress)?);
    }
    let names = [
        "v4_tcp_stick_hit_restored",
        "v4_ipip_stick_hit",
        "v4_gue_stick_hit",
    ];
    let mut out: Vec<Measured> = names
        .iter()
        .map(|name| Measured {
            name,
            cost: vec![],
            floor: vec![],
            ratio: vec![],
            relative: vec![],
        })
        .collect();
    for round in 0..ROUNDS {
        let (lb, frames) = &mut loads[round % LOADS];
        let floor = ns(lb, PROG_FLOOR, &frames[0], ingress)?;
        lb.dp.set_bench_frame(&frames[0])?;
        let wrapper = ns(lb, PROG_BENCH_RESTORE_FLOOR, &frames[0], ingress)?;
        let mut cost = [0.0; 3];
        for k in 0..names.len() {
            let i = (round / LOADS + k) % names.len();
            let (frame, name) = (&frames[i], names[i]);
            lb.dp.set_bench_frame(frame)?;
            let before = lb.dp.global_stats()?;
            let wrapped = ns(lb, PROG_BENCH_RESTORE, frame, ingress)?;
            let after = lb.dp.global_stats()?;
            let grew = |c: lb_common::gstat::Global| after.get(c) - before.get(c);
            anyhow::ensure!(
                grew(Derived::Tx.into()) == u64::from(REPEAT)
                    && grew(Derived::StickHit.into()) == u64::from(REPEAT)
                    && grew(Counter::EncapFibMiss.into()) == 0
                    && grew(Counter::EncapStageMissing.into()) == 0,
                "{name}: not every repetition was a stick hit sent by XDP_TX"
            );
            cost[i] = (wrapped - (wrapper - floor)).max(0.0);
        }
        for (m, c) in out.iter_mut().zip(cost) {
            // The first scenario is the L2 hit.
            m.cost.push(c);
            m.floor.push(floor);
            m.ratio.push(c / floor);
            m.relative.push(c / cost[0]);
            eprintln!(
                "  round {}/{ROUNDS} load {} {:<26} {c:7.1} ns  floor {floor:6.1} ns  ratio {:5.2}  x L2 hit {:5.2}",
                round + 1,
                round % LOADS,
                m.name,
                c / floor,
                c / cost[0]
            );
        }
    }
    // How far one load's figure is from another's (the reason for several).
    for m in &out {
        let per_load: Vec<String> = (0..LOADS)
            .map(|l| {
                let rounds: Vec<f64> = m.relative.iter().skip(l).step_by(LOADS).copied().collect();
                format!("{:.3}", interquartile_mean(&rounds))
            })
            .collect();
        eprintln!("  {} x the L2 hit per load: {}", m.name, per_load.join(" "));
    }
    eprintln!(
        "  encap, x the L2 hit (interquartile means): {}",
        out.iter()
            .map(|m| format!("{} x{:.3}", m.name, m.relative()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

/// One load of the data path for all three paths: service 0's backend 1 reached by IP in IP,
/// backend 2 by GUE, 0 and 3 on the L2 segment; a client pinned to each kind.
fn load(ingress: u32) -> Result<(Lb, [Vec<u8>; 3])> {
    let source = EncapSource {
        addr: [192, 0, 2, 1].into(),
        prefix: 32,
    };
    let mut lb = bench_lb(Svc::default(), [100_000; SERVICES as usize])?;
    let routed = |i: u8| routed::host4(routed::ROUTED4, 10 + i).into();
    lb.set_forward(1, routed(1), Forward::Ipip { source });
    lb.set_forward(2, routed(2), Forward::Gue { source, port: 6080 });
    let frames = clients_per_kind(&mut lb, ingress)?;
    Ok((lb, frames))
}

/// Growth of the frame by each kind of backend: none (L2), an IPv4 header (IP in IP), IPv4,
/// UDP and GUE headers (GUE).
const GROWTH: [usize; 3] = [0, 20, 32];

/// One client's frame per kind of backend (L2, IP in IP, GUE, as `GROWTH`), each client
/// pinned to a backend of that kind by the run that found it.
fn clients_per_kind(lb: &mut Lb, ingress: u32) -> Result<[Vec<u8>; 3]> {
    let mut found: [Option<Vec<u8>>; 3] = [None, None, None];
    for n in 1..=u8::MAX {
        let frame = Frame::tcp(client4(n), 40000, VIP4, 80, TCP_ACK)
            .macs(CLIENT_MAC, LB_MAC)
            .bytes();
        let r = lb.dp.test_run_on("xlb", &frame, 1, Some(ingress))?;
        anyhow::ensure!(
            r.verdict == XDP_TX,
            "client {n}: verdict {} but expected XDP_TX",
            r.verdict
        );
        let kind = GROWTH.iter().position(|&g| r.data.len() == frame.len() + g);
        if let Some(k) = kind {
            found[k].get_or_insert(frame);
        }
        if found.iter().all(Option::is_some) {
            return Ok(found.map(|f| f.expect("all found")));
        }
    }
    anyhow::bail!("no client of 255 was sent to each kind of backend")
}

/// ns per repetition of `prog` on `frame` (received on `ingress`), checked to return `XDP_TX`.
fn ns(lb: &mut Lb, prog: &str, frame: &[u8], ingress: u32) -> Result<f64> {
    let r = lb
        .dp
        .test_run_on(prog, frame, REPEAT, Some(ingress))
        .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
    anyhow::ensure!(
        r.verdict == XDP_TX,
        "{prog}: verdict {} but expected XDP_TX",
        r.verdict
    );
    Ok(r.duration.as_nanos() as f64)
}
