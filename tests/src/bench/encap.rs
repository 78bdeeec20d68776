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
//! Steadied as `hit_path` is: the thread stays on one CPU (`PinnedToThisCpu`), each round times
//! the floor and the wrapper once (the same programs in all three fixtures, from each in turn)
//! and the three paths in a rotating order, and the figure over the L2 hit is the
//! interquartile mean of `ROUNDS` rounds (`Measured::relative`). With five rounds, unpinned,
//! and a floor and wrapper timed per path, the same build's figure wandered by 0.05 from run
//! to run.
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
/// Rounds (each times the floor, the wrapper and the three paths: about a second).
pub const ROUNDS: usize = 21;

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

/// `ROUNDS` rounds of the three stick hits; the figures per scenario.
pub fn run() -> Result<Vec<Measured>> {
    let r = RoutedNs::new("bench_encap")?;
    let ingress = r.wire_ifindex;
    netns::run_in(r.ns(), || measure(ingress))?
}

fn measure(ingress: u32) -> Result<Vec<Measured>> {
    let _pinned = PinnedToThisCpu::new()?;
    let source = EncapSource {
        addr: [192, 0, 2, 1].into(),
        prefix: 32,
    };
    let mut l2 = bench_lb(Svc::default(), [100_000; SERVICES as usize])?;
    let mut ipip = bench_lb(Svc::default(), [100_000; SERVICES as usize])?;
    let mut gue = bench_lb(Svc::default(), [100_000; SERVICES as usize])?;
    for i in 0..4u8 {
        let a = routed::host4(routed::ROUTED4, 10 + i).into();
        ipip.set_forward(i as u32, a, Forward::Ipip { source });
        gue.set_forward(i as u32, a, Forward::Gue { source, port: 6080 });
    }
    let frame = Frame::tcp(client4(1), 40000, VIP4, 80, TCP_ACK)
        .macs(CLIENT_MAC, LB_MAC)
        .bytes();
    for lb in [&mut l2, &mut ipip, &mut gue] {
        lb.dp.set_bench_frame(&frame)?;
        lb.dp.test_run_on("xlb", &frame, 1, Some(ingress))?; // pins the client
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
    let mut lbs = [l2, ipip, gue];
    for round in 0..ROUNDS {
        // One floor and one wrapper per round, timed from each fixture in turn.
        let shared = &mut lbs[round % lbs.len()];
        let floor = ns(shared, PROG_FLOOR, &frame, ingress)?;
        let wrapper = ns(shared, PROG_BENCH_RESTORE_FLOOR, &frame, ingress)?;
        let mut cost = [0.0; 3];
        for k in 0..lbs.len() {
            let i = (round + k) % lbs.len();
            let (lb, name) = (&mut lbs[i], names[i]);
            let before = lb.dp.global_stats()?;
            let wrapped = ns(lb, PROG_BENCH_RESTORE, &frame, ingress)?;
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
                "  round {}/{ROUNDS} {:<26} {c:7.1} ns  floor {floor:6.1} ns  ratio {:5.2}  x L2 hit {:5.2}",
                round + 1,
                m.name,
                c / floor,
                c / cost[0]
            );
        }
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
