//! The stick hit to an encapsulating backend, `v4_ipip_stick_hit` and `v4_gue_stick_hit`, beside
//! the L2 one (`v4_tcp_stick_hit_1x`), measured the same way in the same round.
//!
//! `repeat` cannot time them: it runs the program again on its own output, and an encapsulated
//! frame is no longer addressed to a VIP, so every repetition after the first would time the
//! not-VIP path. Each program here runs `CALLS` times with `repeat = 1` on a fresh copy of the
//! frame; the kernel's per-call duration includes the timer's own cost, measured as that of the
//! empty program (`xlb_pass`) and subtracted. Net of it the floor is a few ns, too little to
//! divide by, so each path is set against the L2 stick hit timed the same way in the same
//! round: `relative` = path / L2 hit. `datapath` turns that into a ratio to the floor with the
//! L2 hit's own ratio from its `repeat` rounds (ratio = relative × that). A single call runs on
//! cold caches, the encapsulating paths touching more lines (the headroom, the next-hop cache):
//! the figure errs high.
//!
//! The data path looks the next hop up in the kernel's FIB, so everything runs in a routed
//! namespace (`routed::RoutedNs`), received on its wire: the next hop leaves by `XDP_TX`.
//! Every call's verdict is checked, and the counters after each batch: every packet was sent
//! (`tx`), none missed the FIB.

use anyhow::{Context as _, Result};
use lb_common::{PROG_PASS, gstat::Counter, gstat::Derived};
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

/// One scenario's figures over the rounds: net ns, and that over the L2 hit's net ns.
pub struct Measured {
    pub name: &'static str,
    pub cost: Vec<f64>,
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
        lb.dp.test_run_on("xlb", &frame, 1, Some(ingress))?; // pins the client
    }
    let names = ["v4_tcp_stick_hit_1x", "v4_ipip_stick_hit", "v4_gue_stick_hit"];
    let mut out: Vec<Measured> = names
        .iter()
        .map(|name| Measured {
            name,
            cost: vec![],
            relative: vec![],
        })
        .collect();
    for round in 0..rounds {
        let empty = mean_ns(&mut l2, PROG_PASS, &frame, ingress, XDP_PASS)?;
        let mut l2_cost = f64::NAN;
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
            if l2_cost.is_nan() {
                l2_cost = cost; // the first scenario is the L2 hit
            }
            m.cost.push(cost);
            m.relative.push(cost / l2_cost);
            eprintln!(
                "  round {}/{rounds} {:<20} {cost:7.1} ns  x L2 hit {:5.2} (single calls, net of {empty:.1} ns)",
                round + 1,
                m.name,
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
