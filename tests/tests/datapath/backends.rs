//! Backend states in the data path: down with and without redispatch, maint, drain, entries
//! naming another service's or a removed server.

use harness::fixture::*;
use harness::packet::*;
use lb_common::{
    BACKEND_DOWN, BACKEND_DRAIN, BACKEND_MAINT, BACKEND_UP, FAMILY_V4, StickEntry, StickKey, gstat,
};
use xlb::datapath::coarse_now_ns;

use crate::t4;

// --- backend down: redispatch on / off ----------------------------------------------------------

#[test]
fn backend_down_with_redispatch_repicks_and_overwrites() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(7);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    lb.set_state(b, BACKEND_DOWN);
    let b2 = lb.forwarded_to(&t4(c, 40001, TCP_ACK));
    assert_ne!(b2, b, "redispatched away from the dead backend");
    assert_eq!(
        lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().backend,
        b2,
        "entry overwritten"
    );
    assert_eq!(lb.gstat(gstat::Derived::Redispatch), 1);
    // The backend returns: the client stays on its new backend.
    lb.set_state(b, BACKEND_UP);
    assert_eq!(lb.forwarded_to(&t4(c, 40002, TCP_ACK)), b2);
}

#[test]
fn backend_down_without_redispatch_stays_pinned_and_counts() {
    let mut lb = Lb::new(Svc {
        redispatch: false,
        ..Default::default()
    });
    let c = client4(8);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    lb.set_state(b, BACKEND_DOWN);
    let seen_before = lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().last_seen_ns;
    assert_eq!(
        lb.forwarded_to(&t4(c, 40001, TCP_ACK)),
        b,
        "HAProxy without redispatch: still pinned"
    );
    assert_eq!(lb.gstat(gstat::Derived::PinnedDown), 1);
    assert_eq!(
        lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().last_seen_ns,
        seen_before,
        "not refreshed, so it can expire"
    );
    // A maintenance backend is treated as down.
    lb.set_state(b, BACKEND_MAINT);
    assert_eq!(lb.forwarded_to(&t4(c, 40002, TCP_ACK)), b);
    assert_eq!(lb.gstat(gstat::Derived::PinnedDown), 2);
}

/// Issue 9, item 1: a stick entry's backend id was trusted by itself; after a reload handed a
/// removed server's id to another service's server, the entry sent its client there.
#[test]
fn stick_entry_naming_another_services_backend_is_a_miss() {
    let mut lb = Lb::new(Svc {
        redispatch: false,
        ..Default::default()
    });
    let c = client4(9);
    // Service 0's client, pinned (as a stale entry would be) to backend 5, which serves service 1.
    let key = StickKey::new(v4(c), 0, 0, FAMILY_V4);
    let stale = StickEntry {
        last_seen_ns: coarse_now_ns(),
        backend: 5,
        syn_at: 0,
    };
    lb.dp.stick_insert(key, stale).unwrap();
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    assert!(
        b < 4,
        "service 0's client went to backend {b}, a server of another service"
    );
    assert_eq!(
        lb.entry(0, v4(c), FAMILY_V4, 0).map(|e| e.backend),
        Some(b),
        "re-pinned"
    );
    assert_eq!(lb.gstat(gstat::Counter::StickStale), 1);
    assert_eq!(lb.gstat(gstat::Derived::PinnedDown), 0);
    assert_eq!(lb.forwarded_to(&t4(c, 40001, TCP_ACK)), b, "and then a plain hit");
    assert_eq!(lb.gstat(gstat::Derived::StickHit), 1);
}

/// Issue 9, item 1: an entry naming a removed server (its slot zeroed) sent frames to MAC
/// 00:00:00:00:00:00 when redispatch was off; it is a miss instead.
#[test]
fn stick_entry_naming_a_removed_server_is_a_miss_not_a_zero_mac() {
    let mut lb = Lb::new(Svc {
        redispatch: false,
        ..Default::default()
    });
    let c = client4(10);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    // The agent removes server b: its slot is zeroed and its table slots go to the others.
    lb.states[b as usize] = 0;
    lb.dp.set_backend(b, lb_common::Backend::default()).unwrap();
    lb.rebuild(0);
    let now = lb.forwarded_to(&t4(c, 40001, TCP_ACK));
    assert!(now < 4 && now != b, "went to {now} after backend {b} was removed");
    assert_eq!(lb.gstat(gstat::Counter::StickStale), 1);
    assert_eq!(lb.gstat(gstat::Derived::PinnedDown), 0);
}

#[test]
fn maint_with_redispatch_moves_the_client() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(9);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    lb.set_state(b, BACKEND_MAINT);
    assert_ne!(lb.forwarded_to(&t4(c, 40001, TCP_ACK)), b);
}

// --- drain ----------------------------------------------------------------------------------------

#[test]
fn drain_keeps_pinned_clients_and_takes_no_new_ones() {
    let mut lb = Lb::new(Svc::default());
    // Pin 64 clients, find one backend's clients.
    let mut pinned = Vec::new();
    for n in 0..64u8 {
        pinned.push((n, lb.forwarded_to(&t4(client4(n), 40000, TCP_ACK))));
    }
    let drained = pinned[0].1;
    lb.set_state(drained, BACKEND_DRAIN);
    for (n, b) in &pinned {
        assert_eq!(
            lb.forwarded_to(&t4(client4(*n), 40001, TCP_ACK)),
            *b,
            "pinned client {n} keeps its backend"
        );
    }
    for n in 0..200u8 {
        let b = lb.forwarded_to(&t4([10, 77, 3, n], 40000, TCP_ACK));
        assert_ne!(b, drained, "a new client must never land on a draining backend");
    }
    assert_eq!(lb.gstat(gstat::Derived::Redispatch), 0);
}
