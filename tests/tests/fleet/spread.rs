//! The router spreads new connections to a VIP over the balancers by its L4 hash: SYNs from
//! the client's sources, counted where they arrive (nftables counters in each balancer's
//! namespace; the balancers forward nothing yet).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use harness::fleet::{
    BALANCERS, Fleet,
    syns::{SynCount, SynCounter, send_syns},
};

use crate::{VIPS, announced_fleet};

/// Sends `flows` to `vip`:80 and returns the SYNs each balancer counted (once all arrived, or
/// after a bounded wait). First waits for the router to route `vip` to every balancer again: on
/// a loaded machine a BFD session may flap (100 ms x 3) and take a next hop away for a moment.
fn spread(fleet: &Fleet, counters: &[SynCounter], flows: Vec<(IpAddr, u16)>, vip: IpAddr) -> Vec<u64> {
    let all: Vec<usize> = (0..BALANCERS).collect();
    fleet
        .wait_next_hops(vip, &all, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let family = |c: SynCount| if vip.is_ipv4() { c.v4 } else { c.v6 };
    let before: Vec<u64> = counters.iter().map(|c| family(c.read().unwrap())).collect();
    let sent = send_syns(&fleet.topo, fleet.client, flows, SocketAddr::new(vip, 80))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got: Vec<u64> = counters
            .iter()
            .zip(&before)
            .map(|(c, b)| family(c.read().unwrap()) - b)
            .collect();
        let total: u64 = got.iter().sum();
        if total >= sent as u64 || Instant::now() >= deadline {
            assert_eq!(
                total, sent as u64,
                "SYNs counted per balancer {got:?}, sent {sent}"
            );
            // What the router did with them, should the spread be wrong.
            println!(
                "router's route to {vip} after the SYNs:\n{}",
                fleet.router_route(vip).unwrap_or_else(|e| format!("{e:#}"))
            );
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every balancer got at least a tenth of the SYNs (a fair hash gives each about a third).
fn assert_spread(what: &str, got: &[u64]) {
    let total: u64 = got.iter().sum();
    println!("{what}: SYNs per balancer {got:?} (of {total})");
    assert_eq!(got.len(), BALANCERS);
    for (lb, n) in got.iter().enumerate() {
        assert!(
            *n * 10 >= total,
            "{what}: balancer {} got {n} of {total}: {got:?}",
            lb + 1
        );
    }
}

#[test]
fn router_spreads_syns_over_the_balancers() {
    let fleet = announced_fleet("fleet_spread");
    let counters: Vec<SynCounter> = fleet
        .balancers
        .iter()
        .map(|lb| SynCounter::install(&fleet.topo, *lb, VIPS[0], VIPS[1]).expect("nft"))
        .collect();
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = fleet.sources.iter().partition(|s| s.is_ipv4());

    // The client's first packets resolve its neighbour (the router): not part of the count.
    send_syns(
        &fleet.topo,
        fleet.client,
        vec![(v4[0], 0)],
        SocketAddr::new(VIPS[0], 80),
    )
    .and_then(|_| {
        send_syns(
            &fleet.topo,
            fleet.client,
            vec![(v6[0], 0)],
            SocketAddr::new(VIPS[1], 80),
        )
    })
    .expect("warm-up SYNs");
    std::thread::sleep(Duration::from_millis(200));

    let by_source = |srcs: &[IpAddr]| srcs.iter().map(|s| (*s, 0)).collect::<Vec<_>>();
    assert_spread(
        "IPv4, one SYN per source",
        &spread(&fleet, &counters, by_source(&v4), VIPS[0]),
    );
    assert_spread(
        "IPv6, one SYN per source",
        &spread(&fleet, &counters, by_source(&v6), VIPS[1]),
    );
    // One source, many source ports: only an L4 hash spreads these.
    let ports = |src: IpAddr| (20_000..20_300).map(|p| (src, p)).collect::<Vec<_>>();
    assert_spread(
        "IPv4, one source, 300 ports",
        &spread(&fleet, &counters, ports(v4[1]), VIPS[0]),
    );
    assert_spread(
        "IPv6, one source, 300 ports",
        &spread(&fleet, &counters, ports(v6[1]), VIPS[1]),
    );
}
