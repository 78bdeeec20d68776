//! Scenario 1: every source opens connections that the router spreads over the three
//! balancers, and reaches one backend only; also when a backend is drained, then made ready
//! again, on one balancer only (Maglev alone would then send that balancer's new clients
//! elsewhere than the other balancers do: the streamed stick entries keep them together).

use harness::fleet::AgentOpts;

use crate::{Reached, agent_fleet, connect_rounds, split_sources};

/// Connections per source and phase.
const ROUNDS: usize = 5;

#[test]
fn every_source_reaches_one_backend_over_all_balancers() {
    let fleet = agent_fleet("fleet_consist", AgentOpts::default());
    let sources = fleet.sources.clone();

    let mut reached = Reached::new();
    let failed = connect_rounds(&fleet, &sources, ROUNDS, &mut reached);
    let split = split_sources(&reached);
    println!(
        "consistency: {} sources x {ROUNDS} connections: split_sources = {}, failed = {}",
        sources.len(),
        split.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed connections: {failed:#?}");
    assert!(
        split.is_empty(),
        "sources that reached several backends: {split:?}"
    );
}

#[test]
fn a_backend_drained_and_readied_on_one_balancer_moves_no_source() {
    let fleet = agent_fleet("fleet_drain1", AgentOpts::default());
    let sources = fleet.sources.clone();
    let api = |lb: usize, cmd: &str| {
        let out = fleet.api(lb, cmd).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(out.trim(), "", "lb{} `{cmd}`: {out}", lb + 1);
    };
    // On lb1 only, app2 takes no new clients while every source arrives (spread over the
    // three balancers): Maglev sends a quarter of them to app2 on lb2 and lb3, elsewhere on lb1.
    for service in ["be_app", "be_app6"] {
        api(0, &format!("set server {service}/app2 state drain"));
    }
    let mut reached = Reached::new();
    let failed = connect_rounds(&fleet, &sources, ROUNDS, &mut reached);
    let while_drained = split_sources(&reached).len();
    let on_app2 = reached.values().filter(|b| b[0] == "app2").count();
    println!("{}", fleet.report("app2 drained on lb1 only"));
    // Ready again on lb1: the sources keep the backends they have.
    for service in ["be_app", "be_app6"] {
        api(0, &format!("set server {service}/app2 state ready"));
    }
    let failed_after = connect_rounds(&fleet, &sources, ROUNDS, &mut reached);
    let split = split_sources(&reached);
    println!(
        "consistency with app2 drained on lb1: {} sources x {ROUNDS} connections while drained \
         (first on app2: {on_app2}), then x {ROUNDS} after ready: split_sources = {} while \
         drained, {} overall; failed = {}",
        sources.len(),
        while_drained,
        split.len(),
        failed.len() + failed_after.len()
    );
    assert!(
        failed.is_empty() && failed_after.is_empty(),
        "{failed:#?} {failed_after:#?}"
    );
    assert!(
        split.is_empty(),
        "sources that reached several backends: {split:?}"
    );
}
