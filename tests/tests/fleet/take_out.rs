//! Scenario 4: the operator takes a balancer out of the fleet (`disable announce`): the VIPs
//! leave the router's next hops while its data path keeps forwarding what still arrives, so no
//! connection fails, fresh or long-lived; `enable announce` brings it back.

use std::time::{Duration, Instant};

use harness::fleet::{AgentOpts, VIPS};

use crate::{LongLived, agent_fleet, load_until, pin_sources, some_sources};

const BOUND: Duration = Duration::from_secs(20);

#[test]
fn disable_announce_takes_a_balancer_out_without_failing_a_connection() {
    let fleet = agent_fleet("fleet_out", AgentOpts::default());
    let pins = pin_sources(&fleet, &fleet.sources);
    let mut long = LongLived::open(&fleet, &some_sources(&fleet, 200, 40));

    let out = fleet.api(0, "disable announce").expect("disable announce");
    assert_eq!(out.trim(), "", "{out}");
    let t0 = Instant::now();
    let gone = |fleet: &harness::fleet::Fleet| {
        let lb1 = |vip| fleet.balancer_addr(0, vip);
        VIPS.iter()
            .all(|vip| !fleet.router_next_hops(*vip).expect("router").contains(&lb1(*vip)))
    };
    let load = load_until(&fleet, &pins, &mut long, BOUND, || gone(&fleet))
        .unwrap_or_else(|e| panic!("lb1 still announced: {e}\n{}", fleet.report("lb1 out")));
    let left = t0.elapsed();
    // And a second more of it, all through the two other balancers.
    let t1 = Instant::now();
    let after = load_until(&fleet, &pins, &mut long, BOUND, || {
        t1.elapsed() >= Duration::from_secs(1)
    })
    .expect("a second of load");
    let mut bad = load.bad;
    bad.extend(after.bad);
    bad.extend(long.exercise());
    println!("{}", fleet.report("`disable announce` on lb1"));
    println!(
        "take out: the VIPs left the router's next hops {left:?} after `disable announce` \
         (measured with load running); drain_failed_conns = {} ({} fresh connections during \
         the change and {} in the second after it, {} long-lived)",
        bad.len(),
        load.connections,
        after.connections,
        long.0.len()
    );
    assert!(bad.is_empty(), "failed or moved: {bad:#?}");

    let back = fleet.api(0, "enable announce").expect("enable announce");
    assert_eq!(back.trim(), "", "{back}");
    let t2 = Instant::now();
    for vip in VIPS {
        fleet
            .wait_next_hops(vip, &[0, 1, 2], BOUND)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let bad = long.exercise();
    println!(
        "take out: lb1 back in the router's next hops {:?} after `enable announce`",
        t2.elapsed()
    );
    assert!(
        bad.is_empty(),
        "long-lived connections after the return: {bad:#?}"
    );
}
