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
