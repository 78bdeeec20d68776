//! `cargo xtask demo fleet`: three balancers (BIRD + xlb) behind a router that spreads the
//! clients' connections over them by ECMP; one balancer's host dies, nobody moves; it comes
//! back (announcing only once its peers have taught it), nobody moves. Under two minutes.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Result;
use harness::{
    bench::fleet::{backends_by_source, host_dies, host_returns, moved},
    fleet::{AgentOpts, BALANCERS, Fleet, VIPS},
};

use crate::step;

/// The balancer whose host dies (lb2).
const VICTIM: usize = 1;
/// Connections per source in the first round.
const CONNS: usize = 3;

/// Each balancer's forwarded packets so far (`show info`, `Xdp_tx`-like counters summed).
fn forwarded(fleet: &Fleet) -> Vec<u64> {
    (0..BALANCERS)
        .map(|lb| {
            fleet
                .api(lb, "show info")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("Xdp_tx:") || l.starts_with("Xdp_Tx:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .sum()
        })
        .collect()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

pub fn run() -> Result<()> {
    let t0 = Instant::now();
    step(
        t0,
        "Building the fleet: a router (BIRD, ECMP over L4 hashes), three balancers lb1..lb3 (BIRD + `xlb run`, \
         peers of each other), four backends, a client with 1000 IPv4 and 200 IPv6 sources",
    )?;
    let fleet = Fleet::with_agents("demo-fleet", AgentOpts::default())?;
    println!("    the router learnt the VIPs by BGP from each balancer's BIRD; its routes:");
    for vip in VIPS {
        print!("{}", indent(&fleet.router_route(vip)?));
    }
    println!("    (one route per VIP, three next hops: the balancers)");

    step(
        t0,
        &format!(
            "Each source opens {CONNS} fresh connections to the VIP; the router hashes each connection to a balancer"
        ),
    )?;
    let before_fwd = forwarded(&fleet);
    let first = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, CONNS)?;
    let after_fwd = forwarded(&fleet);
    let pins = first.first();
    for lb in 0..BALANCERS {
        println!(
            "    lb{} forwarded {} packets",
            lb + 1,
            after_fwd[lb].saturating_sub(before_fwd[lb])
        );
    }
    let per: Vec<String> = first
        .per_backend()
        .iter()
        .map(|(b, n)| format!("{b} {n}"))
        .collect();
    println!("    sources per backend: {}", per.join(", "));
    println!(
        "    sources that reached more than one backend: {} of {} ({} connections failed)",
        first.split(),
        fleet.sources.len(),
        first.failed.len()
    );
    println!(
        "    (a source's connections cross different balancers: the stick entries are streamed between them)"
    );
    println!("    lb1 `show peers`:");
    print!("{}", indent(&fleet.api(0, "show peers")?));

    step(
        t0,
        &format!(
            "lb{}'s host dies: its link goes down at the switch, no goodbye; BFD tells the router",
            VICTIM + 1
        ),
    )?;
    let cut = Instant::now();
    host_dies(&fleet, VICTIM)?;
    let survivors: Vec<usize> = (0..BALANCERS).filter(|lb| *lb != VICTIM).collect();
    fleet.wait_next_hops(VIPS[0], &survivors, Duration::from_secs(20))?;
    println!(
        "    the router dropped lb{} {:.2}s after the cut:",
        VICTIM + 1,
        cut.elapsed().as_secs_f64()
    );
    print!("{}", indent(&fleet.router_route(VIPS[0])?));

    step(t0, "Every source opens a fresh connection: who moved?")?;
    let loss = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, 1)?;
    print_moves(&pins, &loss.first(), loss.failed.len());

    step(
        t0,
        &format!(
            "lb{} comes back, as after a reboot (empty tables); it announces only once its peers have taught it (warm-up {} at most)",
            VICTIM + 1,
            AgentOpts::default().warmup
        ),
    )?;
    let back = Instant::now();
    host_returns(&fleet, VICTIM)?;
    println!("    lb{} `show frontends` right after its start:", VICTIM + 1);
    print!("{}", indent(&fleet.api(VICTIM, "show frontends")?));
    let all: Vec<usize> = (0..BALANCERS).collect();
    fleet.wait_next_hops(VIPS[0], &all, Duration::from_secs(30))?;
    println!(
        "    the router has three next hops again {:.2}s after lb{}'s agent started:",
        back.elapsed().as_secs_f64(),
        VICTIM + 1
    );
    print!("{}", indent(&fleet.router_route(VIPS[0])?));
    println!("    lb{} `show peers`:", VICTIM + 1);
    print!("{}", indent(&fleet.api(VICTIM, "show peers")?));

    step(t0, "Every source opens a fresh connection again: who moved?")?;
    let rejoin = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, 1)?;
    print_moves(&pins, &rejoin.first(), rejoin.failed.len());

    step(t0, "Tearing down (BIRD daemons, agents, namespaces, pins)")?;
    drop(fleet);
    println!("\nDemo finished in {:.1}s.", t0.elapsed().as_secs_f64());
    Ok(())
}

fn print_moves(pins: &BTreeMap<IpAddr, String>, now: &BTreeMap<IpAddr, String>, failed: usize) {
    let n = moved(pins, now);
    println!(
        "    moved: {n} of {} sources (each compared with its backend before); failed connections: {failed}",
        pins.len()
    );
    let sample: Vec<String> = pins
        .iter()
        .step_by(pins.len().div_ceil(6).max(1))
        .map(|(s, b)| {
            format!(
                "{s}: {b} -> {}",
                now.get(s).map(String::as_str).unwrap_or("(failed)")
            )
        })
        .collect();
    println!("    for example: {}", sample.join(", "));
}
