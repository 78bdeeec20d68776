//! Scenario 5: every server of the VIPs goes DOWN (the backends' HTTP stops): each balancer
//! withdraws the VIPs and the router has no route left; one server UP again and every
//! balancer announces them again.

use std::time::{Duration, Instant};

use harness::{
    fleet::{AgentOpts, BACKENDS, BALANCERS, Fleet, VIPS},
    lbenv::stat_state,
};

use crate::agent_fleet;

const BOUND: Duration = Duration::from_secs(20);

#[test]
fn vips_are_withdrawn_everywhere_when_every_server_is_down() {
    let mut fleet = agent_fleet("fleet_down", AgentOpts::default());
    let down = Instant::now();
    for http in &mut fleet.http {
        http.stop();
    }
    // Until every balancer has seen every server DOWN and the router has no route left, each
    // moment taken when first seen (polled; `show stat` of the three agents, then the router).
    let (mut last_down, mut gone) = (None, None);
    while last_down.is_none() || gone.is_none() {
        assert!(down.elapsed() < BOUND, "{}", fleet.report("not withdrawn"));
        if last_down.is_none() && (0..BALANCERS).all(|lb| all_servers_down(&fleet, lb)) {
            last_down = Some(down.elapsed());
        }
        if gone.is_none()
            && VIPS
                .iter()
                .all(|vip| fleet.router_next_hops(*vip).expect("router").is_empty())
        {
            gone = Some(down.elapsed());
        }
    }
    let (last_down, gone) = (last_down.unwrap(), gone.unwrap());
    println!("{}", fleet.report("every backend's HTTP stopped"));
    let routes = fleet.router_table().expect("router table");
    println!("router's whole table:\n{routes}");
    for vip in VIPS {
        assert!(!routes.contains(&vip.to_string()), "{vip} in\n{routes}");
    }
    // The health checks must first see the servers DOWN (fall 2 x inter 200 ms, timeouts).
    println!(
        "all down: every balancer saw every server DOWN {last_down:?} after the backends \
         stopped; the router had no route to either VIP {gone:?} after; withdraw_s (after the \
         last DOWN seen, polled) = {:.3}",
        gone.saturating_sub(last_down).as_secs_f64()
    );

    let up = Instant::now();
    fleet.http[0].restart().expect("restart app1");
    for vip in VIPS {
        fleet
            .wait_next_hops(vip, &[0, 1, 2], BOUND)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let back = up.elapsed();
    println!("{}", fleet.report("app1 UP again"));
    println!("all down: every balancer announced again {back:?} after app1 came back");
    for s in fleet.sources.iter().step_by(50) {
        assert_eq!(
            fleet.get_vip(*s).unwrap_or_else(|e| panic!("{e:#}")),
            "app1",
            "{s}"
        );
    }
}

/// Whether balancer `lb` has every server of both services DOWN.
fn all_servers_down(fleet: &Fleet, lb: usize) -> bool {
    let stat = fleet.api(lb, "show stat").expect("show stat");
    ["be_app", "be_app6"].iter().all(|service| {
        (1..=BACKENDS).all(|i| stat_state(&stat, service, &format!("app{i}")).is_ok_and(|s| s == "DOWN"))
    })
}
