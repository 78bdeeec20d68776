//! The router's ECMP route follows the balancers' table 200: one next hop per balancer that
//! has the VIP there, v4 and v6.

use std::time::Duration;

use harness::fleet::BALANCERS;

use crate::{VIPS, announced_fleet};

/// Every wait for BIRD to carry a change is bounded by this (changes take milliseconds).
const BOUND: Duration = Duration::from_secs(10);

#[test]
fn router_has_one_next_hop_per_announcing_balancer() {
    let fleet = announced_fleet("fleet_ecmp");
    for vip in VIPS {
        let text = fleet.router_route(vip).expect("ip route");
        assert_eq!(
            text.matches("nexthop via").count(),
            BALANCERS,
            "one `nexthop via` per balancer in:\n{text}"
        );
        assert!(text.contains("proto bird"), "{text}");
    }

    // Withdrawing on balancer 1 (index 1) removes exactly its next hop, for each family apart.
    fleet.withdraw(1, VIPS[0]).expect("withdraw v4");
    fleet
        .wait_next_hops(VIPS[0], &[0, 2], BOUND)
        .unwrap_or_else(|e| panic!("{e:#}"));
    fleet
        .wait_next_hops(VIPS[1], &[0, 1, 2], BOUND)
        .unwrap_or_else(|e| panic!("{e:#}"));
    fleet.withdraw(1, VIPS[1]).expect("withdraw v6");
    fleet
        .wait_next_hops(VIPS[1], &[0, 2], BOUND)
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "after balancer 2 withdrew both VIPs:\n{}{}",
        fleet.router_route(VIPS[0]).unwrap(),
        fleet.router_route(VIPS[1]).unwrap()
    );

    // Announced again, it is back.
    for vip in VIPS {
        fleet.announce(1, vip).expect("announce again");
        fleet
            .wait_next_hops(vip, &[0, 1, 2], BOUND)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    // The last balancer to withdraw takes the route away.
    for lb in 0..BALANCERS {
        fleet.withdraw(lb, VIPS[0]).expect("withdraw");
    }
    fleet
        .wait_next_hops(VIPS[0], &[], BOUND)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(fleet.router_route(VIPS[0]).unwrap().trim(), "");
}

#[test]
fn only_xlb_routes_inside_the_vip_range_are_announced() {
    let fleet = announced_fleet("fleet_filter");
    // In table 200 but not xlb's (another protocol), and xlb's but outside the VIP range.
    fleet
        .topo
        .ip_batch(
            fleet.balancers[0],
            &[
                "route replace 10.77.200.9/32 dev eth0 proto static table 200".into(),
                "route replace 10.77.201.1/32 dev eth0 proto 250 table 200".into(),
                "route replace 10.77.200.10/32 dev eth0 proto 250 table 200".into(),
            ],
        )
        .expect("routes");
    // The one that qualifies shows up, so the others had every chance to.
    let ten: std::net::IpAddr = "10.77.200.10".parse().unwrap();
    fleet
        .wait_next_hops(ten, &[0], BOUND)
        .unwrap_or_else(|e| panic!("{e:#}"));
    for other in ["10.77.200.9", "10.77.201.1"] {
        let hops = fleet.router_next_hops(other.parse().unwrap()).unwrap();
        assert!(hops.is_empty(), "{other} reached the router: {hops:?}");
    }
    let table = fleet.balancer_birds[0].birdc("show route table vips4").unwrap();
    assert!(
        !table.contains("10.77.200.9/32") && !table.contains("10.77.201.1/32"),
        "{table}"
    );
}
