//! Scenario 7: an agent killed with -9 under load: nothing is withdrawn (its routes stay in
//! table 200, so BIRD keeps announcing), its data path keeps forwarding, no connection fails;
//! restarted, it keeps the routes through its warm-up.

use std::time::{Duration, Instant};

use harness::fleet::{AgentOpts, BALANCERS, VIPS};

use crate::{LongLived, agent_fleet, load_until, pin_sources, some_sources};

/// How long the load runs with the agent dead, and again after its restart.
const LOAD: Duration = Duration::from_secs(2);

#[test]
fn an_agent_killed_under_load_fails_no_connection() {
    let fleet = agent_fleet("fleet_kill", AgentOpts::default());
    let pins = pin_sources(&fleet, &fleet.sources);
    let mut long = LongLived::open(&fleet, &some_sources(&fleet, 200, 40));
    // Asked after every connection: the router is read after every tenth.
    let mut asked = 0u32;
    let mut all_hops = || {
        asked += 1;
        !asked.is_multiple_of(10)
            || VIPS
                .iter()
                .all(|vip| fleet.router_next_hops(*vip).expect("router").len() == BALANCERS)
    };

    fleet.kill_agent(0);
    let t0 = Instant::now();
    let mut withdrawn = false;
    let dead = load_until(&fleet, &pins, &mut long, 2 * LOAD, || {
        withdrawn |= !all_hops();
        t0.elapsed() >= LOAD
    })
    .expect("load with the agent dead");
    println!("{}", fleet.report("lb1's agent killed (-9)"));
    assert!(
        !withdrawn,
        "a next hop left the router while lb1's agent was dead"
    );

    fleet.start_agent(0).unwrap_or_else(|e| panic!("{e:#}"));
    let t1 = Instant::now();
    let restarted = load_until(&fleet, &pins, &mut long, 2 * LOAD, || {
        withdrawn |= !all_hops();
        t1.elapsed() >= LOAD
    })
    .expect("load after the restart");
    let mut bad = dead.bad;
    bad.extend(restarted.bad);
    bad.extend(long.exercise());
    println!("{}", fleet.report("lb1's agent restarted"));
    println!(
        "agent kill -9: failed or moved = {} ({} fresh connections with the agent dead, {} \
         after its restart, {} long-lived); a next hop withdrawn: {withdrawn}",
        bad.len(),
        dead.connections,
        restarted.connections,
        long.0.len()
    );
    assert!(
        !withdrawn,
        "a next hop left the router after lb1's agent restarted"
    );
    assert!(bad.is_empty(), "failed or moved: {bad:#?}");
}
