//! The network around a fleet of balancers (issue 11), with no agent yet: BIRD on each
//! balancer announces what is in its kernel table 200 (as xlb's agent will keep it), the
//! router's BIRD makes one ECMP route per VIP of them, BFD drops a balancer that vanishes, and
//! the router's L4 hash spreads new connections over the balancers. Needs root and BIRD.

mod bfd;
mod cleanup;
mod routes;
mod spread;

use std::net::IpAddr;

use harness::{
    fleet::{BALANCERS, Fleet},
    require_root,
    topology::{VIP4, VIP6},
};

/// The two VIPs every test announces.
const VIPS: [IpAddr; 2] = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)];

/// A fleet whose balancers all announce both VIPs, once the router has all three next hops
/// for each; prints the router's routes.
fn announced_fleet(test: &str) -> Fleet {
    require_root();
    let fleet = Fleet::new(test).unwrap_or_else(|e| panic!("fleet: {e:#}"));
    let all: Vec<usize> = (0..BALANCERS).collect();
    for lb in 0..BALANCERS {
        for vip in VIPS {
            fleet.announce(lb, vip).expect("announce");
        }
    }
    for vip in VIPS {
        let took = fleet
            .wait_next_hops(vip, &all, std::time::Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e:#}"));
        println!(
            "{test}: router's route to {vip} ({took:?} after the announcements):\n{}",
            fleet.router_route(vip).expect("ip route")
        );
    }
    fleet
}
