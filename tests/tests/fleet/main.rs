//! A fleet of balancers behind ECMP (issue 11). First the network alone (BIRD on each balancer
//! announces what is in its kernel table 200, put there by hand; the router's BIRD makes one
//! ECMP route per VIP of them, BFD drops a balancer that vanishes, the router's L4 hash spreads
//! new connections): bfd, cleanup, routes, spread. Then the scenarios with an xlb agent on each
//! balancer ([`Fleet::with_agents`]), issue 11's scenarios 1-5 and 7: consistency,
//! loss_and_return, take_out, all_down, agent_kill. Needs root and BIRD. Times and counts are
//! printed (what the closing note quotes), not asserted against thresholds.

mod agent_kill;
mod all_down;
mod bfd;
mod cleanup;
mod consistency;
mod loss_and_return;
mod routes;
mod spread;
mod take_out;

use std::{collections::HashMap, net::IpAddr, time::Duration};

use harness::{
    client::KeepAlive,
    fleet::{AgentOpts, BALANCERS, Fleet, VIPS},
    require_root,
};

/// A fleet with an agent on each balancer, announced everywhere (see [`Fleet::with_agents`]);
/// prints what the router and the agents say.
fn agent_fleet(test: &str, opts: AgentOpts) -> Fleet {
    require_root();
    let t0 = std::time::Instant::now();
    let fleet = Fleet::with_agents(test, opts).unwrap_or_else(|e| panic!("fleet with agents: {e:#}"));
    println!(
        "{test}: fleet up in {:?}\n{}",
        t0.elapsed(),
        fleet.report("every balancer announces")
    );
    fleet
}

/// The backends each source reached, over all its connections so far.
type Reached = HashMap<IpAddr, Vec<String>>;

/// Sources that reached more than one backend.
fn split_sources(reached: &Reached) -> Vec<(IpAddr, Vec<String>)> {
    let mut split: Vec<_> = reached
        .iter()
        .filter_map(|(s, b)| {
            let mut distinct = b.clone();
            distinct.sort();
            distinct.dedup();
            (distinct.len() > 1).then_some((*s, distinct))
        })
        .collect();
    split.sort();
    split
}

/// `rounds` rounds of one fresh connection from each of `sources` (a source's connections
/// are a round apart, each from a new source port, so the router spreads them); records the
/// backends in `reached` and returns the connections that failed.
fn connect_rounds(fleet: &Fleet, sources: &[IpAddr], rounds: usize, reached: &mut Reached) -> Vec<String> {
    let mut failed = Vec::new();
    for _ in 0..rounds {
        for s in sources {
            match fleet.get_vip(*s) {
                Ok(b) => reached.entry(*s).or_default().push(b),
                Err(e) => failed.push(format!("{s}: {e:#}")),
            }
        }
    }
    failed
}

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

/// Each source's backend: one fresh connection from each of `sources`; panics if one fails.
fn pin_sources(fleet: &Fleet, sources: &[IpAddr]) -> HashMap<IpAddr, String> {
    sources
        .iter()
        .map(|s| {
            let b = fleet
                .get_vip(*s)
                .unwrap_or_else(|e| panic!("connection from {s}: {e:#}"));
            (*s, b)
        })
        .collect()
}

/// One fresh connection from each source of `pins`: (sources that reached another backend
/// than their pin, connections that failed).
fn moved_sources(fleet: &Fleet, pins: &HashMap<IpAddr, String>) -> (Vec<String>, Vec<String>) {
    let (mut moved, mut failed) = (Vec::new(), Vec::new());
    for (s, b) in pins {
        match fleet.get_vip(*s) {
            Ok(got) if &got != b => moved.push(format!("{s}: {b} -> {got}")),
            Ok(_) => {}
            Err(e) => failed.push(format!("{s}: {e:#}")),
        }
    }
    (moved, failed)
}

/// Long-lived keep-alive connections, each with the backend of its first request.
struct LongLived(Vec<(IpAddr, KeepAlive, String)>);

/// How long one request on a keep-alive connection may take (a retransmission included).
const KEEP_ALIVE_REQUEST: Duration = Duration::from_secs(3);

impl LongLived {
    /// One connection from each of `sources`, each answered once.
    fn open(fleet: &Fleet, sources: &[IpAddr]) -> LongLived {
        LongLived(
            sources
                .iter()
                .map(|s| {
                    let mut c = fleet
                        .keep_alive(*s)
                        .unwrap_or_else(|e| panic!("keep-alive from {s}: {e:#}"));
                    let b = c
                        .get(KEEP_ALIVE_REQUEST)
                        .unwrap_or_else(|e| panic!("first request from {s}: {e:#}"));
                    (*s, c, b)
                })
                .collect(),
        )
    }

    /// One request on each connection: those that failed or reached another backend.
    fn exercise(&mut self) -> Vec<String> {
        let mut bad = Vec::new();
        for (s, c, b) in &mut self.0 {
            match c.get(KEEP_ALIVE_REQUEST) {
                Ok(got) if &got != b => bad.push(format!("{s}: {b} -> {got}")),
                Ok(_) => {}
                Err(e) => bad.push(format!("{s}: {e:#}")),
            }
        }
        bad
    }
}

/// The first `v4` IPv4 and `v6` IPv6 sources of the fleet.
fn some_sources(fleet: &Fleet, v4: usize, v6: usize) -> Vec<IpAddr> {
    let (four, six): (Vec<IpAddr>, Vec<IpAddr>) = fleet.sources.iter().partition(|s| s.is_ipv4());
    four.into_iter()
        .take(v4)
        .chain(six.into_iter().take(v6))
        .collect()
}

/// What [`load_until`] saw: fresh connections made, and those that failed or moved.
struct Load {
    connections: usize,
    bad: Vec<String>,
}

/// Fresh connections from the sources of `pins` in turn (each checked against its pin), and a
/// request on every long-lived connection every second, until `done()` (asked after each
/// connection) or `bound` passes; an error if `bound` passes first.
fn load_until(
    fleet: &Fleet,
    pins: &HashMap<IpAddr, String>,
    long: &mut LongLived,
    bound: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<Load, String> {
    let start = std::time::Instant::now();
    let mut tick = start;
    let mut load = Load {
        connections: 0,
        bad: Vec::new(),
    };
    for (s, b) in pins.iter().cycle() {
        match fleet.get_vip(*s) {
            Ok(got) if &got != b => load.bad.push(format!("{s}: {b} -> {got}")),
            Ok(_) => {}
            Err(e) => load.bad.push(format!("{s}: {e:#}")),
        }
        load.connections += 1;
        if tick.elapsed() >= Duration::from_secs(1) {
            load.bad.extend(long.exercise());
            tick = std::time::Instant::now();
        }
        if done() {
            return Ok(load);
        }
        if start.elapsed() >= bound {
            return Err(format!("not done after {bound:?}"));
        }
    }
    unreachable!("cycle() never ends")
}
