//! Health and admin states: failover with and without redispatch, drain.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use harness::lbenv::{LbEnv, Opts, env};

use crate::{backend_index, pin_all, split, wait_state};

#[test]
fn s02_failover_with_redispatch() {
    let mut e = env("failover", Opts::sources(120, 0));
    let sources = e.sources4.clone();
    let victim = fail_over_and_back(&mut e, &sources);
    let log = e.agent_log();
    assert!(
        log.contains(&format!("be_app/{victim} DOWN")) && log.contains("3/3 failed"),
        "{log}"
    );
}

/// With redispatch: the server of `sources[0]` stops; the sources pinned to it move to others
/// once it is DOWN, the others do not move; it comes back UP and the moved ones stay where they
/// are now. Returns that server's name.
pub(crate) fn fail_over_and_back(e: &mut LbEnv, sources: &[IpAddr]) -> String {
    let pins = pin_all(e, sources);
    let victim = pins[&sources[0]].clone();
    let (moved, stayed) = split(&pins, &victim);
    assert!(
        !moved.is_empty() && !stayed.is_empty(),
        "sources on {victim} and on others: {pins:?}"
    );
    e.http[backend_index(&victim)].stop();
    // fall (3) x inter (200 ms) plus one interval, plus the check timeout (500 ms) of the last one.
    let took = wait_state(e, "be_app", &victim, "DOWN", Duration::from_secs(5));
    eprintln!("{victim} marked DOWN {took:?} after its server stopped");
    let mut new_home = HashMap::new();
    for s in &moved {
        let b = e
            .get_vip(*s)
            .unwrap_or_else(|err| panic!("{s} (pinned to dead {victim}) failed: {err:#}"));
        assert_ne!(b, victim);
        new_home.insert(*s, b);
    }
    for s in &stayed {
        assert_eq!(
            e.get_vip(*s).unwrap(),
            pins[s],
            "{s} was not pinned to {victim} and must not move"
        );
    }
    // The backend comes back: redispatched clients stay where they are now.
    e.http[backend_index(&victim)].restart().unwrap();
    wait_state(e, "be_app", &victim, "UP", Duration::from_secs(5));
    for s in &moved {
        assert_eq!(
            e.get_vip(*s).unwrap(),
            new_home[s],
            "{s} must stay on its new backend"
        );
    }
    victim
}

#[test]
fn s03_without_redispatch_pinned_clients_fail_until_expiry() {
    let mut e = env(
        "noredisp",
        Opts {
            redispatch: false,
            expire: "4s".into(),
            ..Opts::sources(60, 0)
        },
    );
    let pins = pin_all(&e, &e.sources4);
    let victim = pins[&e.sources4[0]].clone();
    let (moved, stayed) = split(&pins, &victim);
    e.http[backend_index(&victim)].stop();
    wait_state(&e, "be_app", &victim, "DOWN", Duration::from_secs(5));
    // HAProxy without `option redispatch`: the pinned clients keep hitting the dead server.
    for s in &moved {
        assert!(
            e.get_vip(*s).is_err(),
            "{s} is pinned to dead {victim}: it must fail (no redispatch)"
        );
    }
    for s in &stayed {
        assert_eq!(e.get_vip(*s).unwrap(), pins[s]);
    }
    // Their entries are not refreshed by failing traffic: after `expire` they are re-balanced.
    let gone = e.wait_until(Duration::from_secs(10), || {
        e.table("be_app").unwrap().iter().all(|(_, srv)| *srv != victim)
    });
    assert!(
        gone,
        "entries pinned to {victim} must expire: {:?}",
        e.table("be_app")
    );
    for s in &moved {
        let b = e
            .get_vip(*s)
            .unwrap_or_else(|err| panic!("{s} after expiry: {err:#}"));
        assert_ne!(b, victim);
    }
}

#[test]
fn s04_drain_keeps_pinned_clients_and_takes_no_new_ones() {
    let e = env("drain", Opts::sources(500, 0));
    let pins = pin_all(&e, &e.sources4[..100]);
    let drained = pins[&e.sources4[0]].clone();
    assert_eq!(
        e.api(&format!("set server be_app/{drained} state drain"))
            .unwrap(),
        ""
    );
    assert_eq!(e.server_state("be_app", &drained).unwrap(), "DRAIN");
    for (s, b) in &pins {
        assert_eq!(
            &e.get_vip(*s).unwrap(),
            b,
            "pinned client {s} keeps its backend while {drained} drains"
        );
    }
    for s in &e.sources4[100..300] {
        assert_ne!(
            e.get_vip(*s).unwrap(),
            drained,
            "new source {s} landed on draining {drained}"
        );
    }
    // ready: back in rotation, for new sources only.
    assert_eq!(
        e.api(&format!("set server be_app/{drained} state ready"))
            .unwrap(),
        ""
    );
    let fresh: Vec<String> = e.sources4[300..500]
        .iter()
        .map(|s| e.get_vip(*s).unwrap())
        .collect();
    let n = fresh.iter().filter(|b| **b == drained).count();
    assert!(
        n > 0,
        "after `ready`, new sources must reach {drained} again ({n} of 200)"
    );
    for s in &e.sources4[100..300] {
        assert_ne!(
            e.get_vip(*s).unwrap(),
            drained,
            "{s} was pinned elsewhere while draining and stays"
        );
    }
}
