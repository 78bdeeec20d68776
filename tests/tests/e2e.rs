//! End to end: the real agent, the real XDP program on the LB host's veth, real backends and
//! real TCP/UDP from many client addresses, in network namespaces. Each test is a scenario of
//! the seed article (HAProxy sticky sessions), asserting exact outcomes. Needs root.

use std::{collections::HashMap, net::IpAddr};

use harness::lbenv::{LbEnv, Opts};

fn env(name: &str, opts: Opts) -> LbEnv {
    let mut e = LbEnv::new(name, opts).unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    e.start_agent().unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    e
}

/// Which backend each source lands on (one fresh connection each); panics on a failure.
fn pin_all(e: &LbEnv, sources: &[IpAddr]) -> HashMap<IpAddr, String> {
    sources
        .iter()
        .map(|s| (*s, e.get_vip(*s).unwrap_or_else(|err| panic!("connection from {s} failed: {err:#}"))))
        .collect()
}

#[test]
fn s01_stickiness_v4_v6_and_spread() {
    let e = env("stick", Opts { v4_sources: 1000, ..Default::default() });
    // 200 IPv4 sources x 10 fresh connections each: one backend per source.
    let first = pin_all(&e, &e.sources4[..200]);
    for round in 1..10 {
        for s in &e.sources4[..200] {
            let b = e.get_vip(*s).unwrap_or_else(|err| panic!("round {round}, {s}: {err:#}"));
            assert_eq!(b, first[s], "round {round}: {s} moved from {} to {b}", first[s]);
        }
    }
    // The same with 50 IPv6 sources.
    let first6 = pin_all(&e, &e.sources6);
    for _ in 1..10 {
        for s in &e.sources6 {
            assert_eq!(e.get_vip(*s).unwrap(), first6[s], "{s} moved");
        }
    }
    // Spread: 1000 distinct sources, one connection each: every backend between 20% and 30%.
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in &e.sources4[..1000] {
        let b = if let Some(b) = first.get(s) { b.clone() } else { e.get_vip(*s).unwrap() };
        *count.entry(b).or_default() += 1;
    }
    assert_eq!(count.len(), 4, "{count:?}");
    for (b, n) in &count {
        assert!((200..=300).contains(n), "backend {b} got {n} of 1000 sources: {count:?}");
    }
    // The table tells the truth: one entry per source that connected.
    assert_eq!(e.table("be_app").unwrap().len(), 1000);
    assert_eq!(e.table("be_app6").unwrap().len(), 50);
}
