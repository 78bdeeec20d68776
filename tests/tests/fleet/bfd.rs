//! A balancer that vanishes (its link cut at the switch: no BGP notification, no withdrawal)
//! is dropped from the router's ECMP route by BFD; once its link is back, BGP and BFD come up
//! again and so does its next hop. The times are printed, not asserted.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{VIPS, announced_fleet};

#[test]
fn bfd_drops_a_balancer_whose_link_goes_down() {
    let fleet = announced_fleet("fleet_bfd");
    let cut = Instant::now();
    fleet.cut_link(1).expect("cut the link");
    // Generous: BGP's own hold timer (90 s by default) would be far slower than this bound.
    let bound = Duration::from_secs(20);
    let mut detect = Vec::new();
    for vip in VIPS {
        fleet
            .wait_next_hops(vip, &[0, 2], bound)
            .unwrap_or_else(|e| panic!("{e:#}"));
        detect.push((vip, cut.elapsed()));
    }
    for (vip, took) in &detect {
        println!("BFD: the router dropped balancer 2's next hop to {vip} {took:?} after its link went down");
    }
    let v4: IpAddr = VIPS[0];
    println!(
        "router's route to {v4} now:\n{}\nrouter's BFD sessions:\n{}",
        fleet.router_route(v4).unwrap(),
        fleet.router_bird.birdc("show bfd sessions").unwrap()
    );
    // The survivors' sessions stay up: their next hops are still there.
    assert_eq!(
        fleet.router_next_hops(v4).unwrap(),
        vec![fleet.balancer_addr(0, v4), fleet.balancer_addr(2, v4)]
    );

    // Back on the segment: the balancer's BIRD reconnects (connect retry 2 s in the example)
    // and announces again what is still in its table 200.
    let back = Instant::now();
    fleet.restore_link(1).expect("restore the link");
    for vip in VIPS {
        fleet
            .wait_next_hops(vip, &[0, 1, 2], Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    println!(
        "balancer 2's next hops were back {:?} after its link came up",
        back.elapsed()
    );
}
