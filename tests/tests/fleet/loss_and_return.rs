//! Scenarios 2 and 3: a balancer's host is lost (its link cut at the switch: no goodbye), the
//! router drops its next hop by BFD, and no source moves: the other balancers hold the same
//! stick entries, so even a long-lived connection hashed to the lost balancer reaches its
//! backend through another one. Then the host comes back as from a reboot (fresh agent, no
//! pins, no routes in table 200): it announces only once its peers have taught it their
//! tables, and again no source moves.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use harness::{
    agent::remove_agent_files,
    fleet::{AgentOpts, BALANCERS, VIP_TABLE, VIPS},
};

use crate::{LongLived, agent_fleet, moved_sources, pin_sources, some_sources};

/// The balancer that is lost (lb2).
const LOST: usize = 1;
/// Bound on the router's reactions (BFD takes a fraction of a second; BGP's own timers more).
const ROUTER_BOUND: Duration = Duration::from_secs(30);

#[test]
fn losing_a_balancer_host_and_its_return_move_no_source() {
    // A long warm-up: the returning balancer must be let in by its peers' teach, not a timer.
    let opts = AgentOpts {
        warmup: "60s".into(),
        ..Default::default()
    };
    let fleet = agent_fleet("fleet_loss", opts);
    let pins = pin_sources(&fleet, &fleet.sources);
    let mut long = LongLived::open(&fleet, &some_sources(&fleet, 200, 40));

    // Loss.
    let cut = Instant::now();
    fleet.cut_link(LOST).expect("cut the link");
    let survivors: Vec<usize> = (0..BALANCERS).filter(|lb| *lb != LOST).collect();
    let mut detect = Vec::new();
    for vip in VIPS {
        fleet
            .wait_next_hops(vip, &survivors, ROUTER_BOUND)
            .unwrap_or_else(|e| panic!("{e:#}"));
        detect.push(cut.elapsed());
    }
    let failed_long = long.exercise();
    let (moved, failed) = moved_sources(&fleet, &pins);
    println!("{}", fleet.report("lb2's link cut, BFD has dropped it"));
    println!(
        "loss: lb_loss_detect_s = {:.3} (v4 {:?}, v6 {:?}); lb_loss_moved_sources = {} of {}; \
         lb_loss_failed_conns = {} of {} long-lived; failed fresh connections = {}",
        detect[1].as_secs_f64(),
        detect[0],
        detect[1],
        moved.len(),
        pins.len(),
        failed_long.len(),
        long.0.len(),
        failed.len()
    );
    assert!(failed_long.is_empty(), "long-lived connections: {failed_long:#?}");
    assert!(moved.is_empty() && failed.is_empty(), "{moved:#?} {failed:#?}");

    // The host reboots while away: agent, pins and kernel routes gone.
    let agent = &fleet.agents[LOST];
    agent.kill();
    remove_agent_files(&agent.bpffs);
    for family in ["-4", "-6"] {
        let _ = fleet.topo.exec(
            fleet.balancers[LOST],
            &["ip", family, "route", "flush", "table", &VIP_TABLE.to_string()],
        );
    }
    let back = Instant::now();
    fleet.restore_link(LOST).expect("restore the link");
    fleet.start_agent(LOST).unwrap_or_else(|e| panic!("{e:#}"));
    // Until the router has lb2 again: each time it has, lb2 must say every peer taught it
    // (read after the route, and `taught` never goes back, so it held when lb2 announced).
    let lost_addr = fleet.balancer_addr(LOST, VIPS[0]);
    let mut last_tick = Instant::now();
    let mut failed_long = Vec::new();
    let announced = loop {
        let hops = fleet.router_next_hops(VIPS[0]).expect("router");
        if hops.contains(&lost_addr) {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < ROUTER_BOUND,
            "{}",
            fleet.report("lb2 never came back")
        );
        // The backends close idle connections after 10 s: keep the long-lived ones busy.
        if last_tick.elapsed() > Duration::from_secs(2) {
            failed_long.extend(long.exercise());
            last_tick = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let peers = fleet.api(LOST, "show peers").expect("show peers");
    let taught: Vec<&str> = peers
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert!(
        taught.len() == BALANCERS - 1 && taught.iter().all(|t| *t == "yes"),
        "lb2 announced before its peers taught it:\n{peers}"
    );
    let entries = fleet
        .api(LOST, "show table be_app")
        .expect("show table")
        .lines()
        .filter(|l| l.contains("key="))
        .count();
    for vip in VIPS {
        fleet
            .wait_next_hops(vip, &[0, 1, 2], ROUTER_BOUND)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    failed_long.extend(long.exercise());
    let (moved, failed) = moved_sources(&fleet, &pins);
    println!(
        "{}",
        fleet.report("lb2 back (rebooted host, taught by its peers)")
    );
    let v4_pins = pins.keys().filter(|s: &&IpAddr| s.is_ipv4()).count();
    println!(
        "return: lb2 announced {announced:?} after its link came back, taught by both peers \
         ({entries} be_app entries, {v4_pins} IPv4 sources pinned); rejoin_moved_sources = {}; \
         rejoin_failed_conns = {} of {} long-lived; failed fresh connections = {}",
        moved.len(),
        failed_long.len(),
        long.0.len(),
        failed.len()
    );
    assert!(failed_long.is_empty(), "long-lived connections: {failed_long:#?}");
    assert!(moved.is_empty() && failed.is_empty(), "{moved:#?} {failed:#?}");
}
