//! The stick hit to an encapsulating backend, `v4_ipip_stick_hit` and `v4_gue_stick_hit`, beside
//! the L2 one (`v4_tcp_stick_hit_1x`) and the floor, measured the same way in the same round.
//!
//! `repeat` cannot time them: it runs the program again on its own output, and an encapsulated
//! frame is no longer addressed to a VIP, so every repetition after the first would time the
//! not-VIP path. Each program here runs `CALLS` times with `repeat = 1` on a fresh copy of the
//! frame; the kernel's per-call duration includes the timer's own cost, measured as that of the
//! empty program (`xlb_pass`) and subtracted from every figure before the ratio is taken:
//! ratio = (path − empty) / (floor − empty), per round, then the median of the rounds.
//!
//! The data path looks the next hop up in the kernel's FIB, so everything runs in a routed
//! namespace (`routed::RoutedNs`), received on its wire: the next hop leaves by `XDP_TX`.
//! Every call's verdict is checked, and the counters after each batch: every packet was sent
//! (`tx`), none missed the FIB.

use anyhow::{Context as _, Result};
use lb_common::{PROG_FLOOR, PROG_PASS, gstat::Counter, gstat::Derived};
use xlb::config::{EncapSource, Forward};

use super::{bench_lb, median};
use crate::{
    fixture::*,
    netns,
    packet::*,
    routed::{self, RoutedNs},
};

/// Calls per program per round.
pub const CALLS: u32 = 100_000;

/// One scenario's figures over the rounds: (net ns, net floor ns, ratio).
pub struct Measured {
    pub name: &'static str,
    pub cost: Vec<f64>,
    pub floor: Vec<f64>,
    pub ratio: Vec<f64>,
}

/// `rounds` rounds of the three stick hits and the floor; the figures per scenario.
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
        lb.dp.test_run_on("xlb", &frame, 1, Some(ingress))?; // pins the client
    }
    let names = ["v4_tcp_stick_hit_1x", "v4_ipip_stick_hit", "v4_gue_stick_hit"];
    let mut out: Vec<Measured> = names
        .iter()
        .map(|name| Measured {
            name,
            cost: vec![],
            floor: vec![],
            ratio: vec![],
        })
        .collect();
    for round in 0..rounds {
        let empty = mean_ns(&mut l2, PROG_PASS, &frame, ingress, XDP_PASS)?;
        let floor = mean_ns(&mut l2, PROG_FLOOR, &frame, ingress, XDP_TX)? - empty;
        for (m, lb) in out.iter_mut().zip([&mut l2, &mut ipip, &mut gue]) {
            let before = lb.dp.global_stats()?;
            let cost = mean_ns(lb, "xlb", &frame, ingress, XDP_TX)? - empty;
            let after = lb.dp.global_stats()?;
            let grew = |c: lb_common::gstat::Global| after.get(c) - before.get(c);
            anyhow::ensure!(
                grew(Derived::Tx.into()) == u64::from(CALLS)
                    && grew(Counter::EncapFibMiss.into()) == 0
                    && grew(Derived::StickHit.into()) == u64::from(CALLS),
                "{}: not every call was a stick hit sent by XDP_TX",
                m.name
            );
            m.cost.push(cost);
            m.floor.push(floor);
            m.ratio.push(cost / floor);
            eprintln!(
                "  round {}/{rounds} {:<20} {cost:7.1} ns  floor {floor:6.1} ns  ratio {:5.2} (net of {empty:.1} ns)",
                round + 1,
                m.name,
                cost / floor
            );
        }
    }
    eprintln!(
        "  encap medians: {}",
        out.iter()
            .map(|m| format!("{} {:.2}", m.name, median(&m.ratio)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

/// Mean ns of `CALLS` single runs of `prog` on `frame`, each checked to return `expect`.
fn mean_ns(lb: &mut Lb, prog: &str, frame: &[u8], ingress: u32, expect: u32) -> Result<f64> {
    let mut total = 0u128;
    for _ in 0..CALLS {
        let r = lb
            .dp
            .test_run_on(prog, frame, 1, Some(ingress))
            .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
        anyhow::ensure!(
            r.verdict == expect,
            "{prog}: verdict {} but expected {expect}",
            r.verdict
        );
        total += r.duration.as_nanos();
    }
    Ok(total as f64 / f64::from(CALLS))
}
