//! End to end: the real agent, the real XDP program on the LB host's veth, real backends and
//! real TCP/UDP from many client addresses, in network namespaces. Each test is a scenario of
//! the seed article (HAProxy sticky sessions), asserting exact outcomes. Needs root.

mod announce;
mod encap;
mod failover;
mod interfaces;
mod passive;
mod peers;
mod reload;
mod restart;
mod stickiness;
mod udp;

use std::{collections::HashMap, net::IpAddr, time::Duration};

use harness::lbenv::LbEnv;

/// Which backend each source lands on (one fresh connection each); panics on a failure.
fn pin_all(e: &LbEnv, sources: &[IpAddr]) -> HashMap<IpAddr, String> {
    sources
        .iter()
        .map(|s| {
            (
                *s,
                e.get_vip(*s)
                    .unwrap_or_else(|err| panic!("connection from {s} failed: {err:#}")),
            )
        })
        .collect()
}

fn backend_index(name: &str) -> usize {
    name.trim_start_matches("app").parse::<usize>().expect("appN") - 1
}

/// Sources (of `pins`) pinned to `backend`, and the others.
fn split(pins: &HashMap<IpAddr, String>, backend: &str) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let (a, b): (Vec<_>, Vec<_>) = pins.keys().partition(|s| pins[*s] == backend);
    (a, b)
}

fn wait_state(e: &LbEnv, svc: &str, srv: &str, want: &str, within: Duration) -> Duration {
    let t0 = std::time::Instant::now();
    let ok = e.wait_until(within, || e.server_state(svc, srv).is_ok_and(|s| s == want));
    assert!(
        ok,
        "{svc}/{srv} did not become {want} within {within:?}: {:?}",
        e.server_state(svc, srv)
    );
    t0.elapsed()
}

/// Connections from `sources`, round-robin, until `stop` is set; returns (ok, failed).
fn load(e: &LbEnv, sources: &[IpAddr], stop: &std::sync::atomic::AtomicBool) -> (usize, Vec<String>) {
    let (mut ok, mut failed) = (0, Vec::new());
    let t0 = std::time::Instant::now();
    // Bounded in count and time.
    for i in 0..20_000 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        match e.get_vip(sources[i % sources.len()]) {
            Ok(_) => ok += 1,
            Err(err) => failed.push(format!("{err:#}")),
        }
    }
    (ok, failed)
}
