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

use super::{bench_lb, median};
use crate::{
    fixture::*,
    netns,
    packet::*,
    routed::{self, RoutedNs},
};

/// Repetitions per run.
pub const REPEAT: u32 = 1_000_000;

/// One scenario's figures over the rounds: net ns, ratio to the floor, and net ns over the L2
/// hit's.
pub struct Measured {
    pub name: &'static str,
    pub cost: Vec<f64>,
    pub floor: Vec<f64>,
    pub ratio: Vec<f64>,
    pub relative: Vec<f64>,
}

/// `rounds` rounds of the three stick hits; the figures per scenario.
pub fn run(rounds: usize) -> Result<Vec<Measured>> {
    let r = RoutedNs::new("bench_encap")?;
    let ingress = r.wire_ifindex;
    netns::run_in(r.ns(), || measure(rounds, ingress))?
}

fn measure(rounds: usize, ingress: u32) -> Result<Vec<Measured>> {
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
    for round in 0..rounds {
        let mut l2_cost = f64::NAN;
        for (m, lb) in out.iter_mut().zip([&mut l2, &mut ipip, &mut gue]) {
            let floor = ns(lb, PROG_FLOOR, &frame, ingress)?;
            let wrapper = ns(lb, PROG_BENCH_RESTORE_FLOOR, &frame, ingress)?;
            let before = lb.dp.global_stats()?;
            let wrapped = ns(lb, PROG_BENCH_RESTORE, &frame, ingress)?;
            let after = lb.dp.global_stats()?;
            let grew = |c: lb_common::gstat::Global| after.get(c) - before.get(c);
            anyhow::ensure!(
                grew(Derived::Tx.into()) == u64::from(REPEAT)
                    && grew(Derived::StickHit.into()) == u64::from(REPEAT)
                    && grew(Counter::EncapFibMiss.into()) == 0
                    && grew(Counter::EncapStageMissing.into()) == 0,
                "{}: not every repetition was a stick hit sent by XDP_TX",
                m.name
            );
            let cost = (wrapped - (wrapper - floor)).max(0.0);
            if l2_cost.is_nan() {
                l2_cost = cost; // the first scenario is the L2 hit
            }
            m.cost.push(cost);
            m.floor.push(floor);
            m.ratio.push(cost / floor);
            m.relative.push(cost / l2_cost);
            eprintln!(
                "  round {}/{rounds} {:<26} {cost:7.1} ns  floor {floor:6.1} ns  ratio {:5.2}  x L2 hit {:5.2}",
                round + 1,
                m.name,
                cost / floor,
                cost / l2_cost
            );
        }
    }
    eprintln!(
        "  encap medians: {}",
        out.iter()
            .map(|m| format!("{} x{:.2}", m.name, median(&m.relative)))
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
