//! The checker's tests: rise and fall, transitions, spec changes, removal and shutdown, run
//! against loopback servers.

use std::{sync::atomic::Ordering, time::Duration};

use tokio::{sync::mpsc, time::timeout};

use super::*;
use crate::health::testing::*;

#[test]
fn a_spec_only_when_checks_are_on() {
    let addr = SocketAddr::new(V4, 8080);
    let mut health = config::Health {
        kind: HealthKind::None,
        inter: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 3,
        port: Some(9),
    };
    assert_eq!(CheckSpec::new(&health, addr), None);
    health.kind = HealthKind::Tcp;
    assert_eq!(CheckSpec::new(&health, addr), Some(tcp_spec(addr)));
}

#[test]
fn jitter_is_below_inter() {
    for i in 0..100 {
        let j = jitter(&key("a"), i, Duration::from_millis(50));
        assert!(j < Duration::from_millis(50));
    }
    assert_eq!(jitter(&key("a"), 1, Duration::ZERO), Duration::ZERO);
}

#[tokio::test]
async fn fall_then_rise_with_exactly_one_transition_each() {
    let (sock, addr) = closed_port(V4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let k = key("s1");
    hc.set(k.clone(), tcp_spec(addr), Health::Up);
    assert_eq!(hc.status(&k).unwrap().health, Health::Up);

    let t = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(t.key, k);
    assert_eq!(t.to, Health::Down);
    assert_eq!(t.reason, "connect refused, 3/3 failed");
    let st = hc.status(&k).unwrap();
    assert_eq!(st.health, Health::Down);
    assert_eq!(st.consecutive_failed, 3);
    assert_eq!(st.last_failure.as_deref(), Some("connect refused"));
    assert_eq!(st.haproxy_health(), 0);

    // More failures, no more transitions.
    wait_until(Duration::from_secs(2), || {
        hc.status(&k).unwrap().consecutive_failed > 3
    })
    .await;
    assert!(rx.try_recv().is_err());

    // The server comes up on that port.
    let srv = serve_on(sock.listen(64).unwrap(), Behaviour::Close).await;
    let t = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(t.to, Health::Up);
    assert!(t.reason.starts_with("TCP connect in "), "{}", t.reason);
    assert!(t.reason.ends_with(", 2/2 succeeded"), "{}", t.reason);
    assert!(srv.accepted.load(Ordering::SeqCst) >= 2);
    let st = hc.status(&k).unwrap();
    assert_eq!(
        (st.health, st.consecutive_ok, st.consecutive_failed),
        (Health::Up, 2, 0)
    );
    assert_eq!(st.haproxy_health(), 4);

    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rx.try_recv().is_err());
    hc.shutdown().await;
}

#[tokio::test]
async fn http_rise_reason_and_counter_reset() {
    let srv = serve(V4, Behaviour::Status(200)).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let k = key("web");
    hc.set(k.clone(), http_spec(srv.addr, None), Health::Down);
    let t = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(t.to, Health::Up);
    assert!(t.reason.starts_with("HTTP 200 in "), "{}", t.reason);
    assert!(t.reason.ends_with(", 2/2 succeeded"), "{}", t.reason);
    hc.shutdown().await;
}

#[tokio::test]
async fn same_spec_is_noop_changed_spec_restarts_keeping_state() {
    let (_held, dead) = closed_port(V4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let k = key("s");
    let mut spec = tcp_spec(dead);
    spec.fall = 1;
    hc.set(k.clone(), spec.clone(), Health::Up);
    let t = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(
        (t.to, t.reason.as_str()),
        (Health::Down, "connect refused, 1/1 failed")
    );

    // Same spec again (a reload that changes nothing): the task and counters go on.
    wait_until(Duration::from_secs(2), || {
        hc.status(&k).unwrap().consecutive_failed >= 3
    })
    .await;
    hc.set(k.clone(), spec.clone(), Health::Up);
    assert!(hc.status(&k).unwrap().consecutive_failed >= 3);
    assert_eq!(hc.status(&k).unwrap().health, Health::Down);

    // A new address: restart, state kept Down although the caller says Up.
    let srv = serve(V4, Behaviour::Close).await;
    let mut spec2 = tcp_spec(srv.addr);
    spec2.rise = 3;
    hc.set(k.clone(), spec2.clone(), Health::Up);
    let st = hc.status(&k).unwrap();
    assert_eq!((st.health, st.consecutive_failed, st.rise), (Health::Down, 0, 3));
    assert_eq!(hc.spec(&k), Some(&spec2));
    let t = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(t.to, Health::Up);
    assert!(t.reason.ends_with("3/3 succeeded"), "{}", t.reason);
    hc.shutdown().await;
}

#[tokio::test]
async fn remove_stops_the_task() {
    let srv = serve(V4, Behaviour::Status(200)).await;
    let other = serve(V4, Behaviour::Status(200)).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let mut spec = http_spec(srv.addr, None);
    spec.inter = Duration::from_millis(20);
    let mut spec_other = http_spec(other.addr, None);
    spec_other.inter = Duration::from_millis(20);
    hc.set(key("gone"), spec, Health::Up);
    hc.set(key("stays"), spec_other, Health::Up);
    wait_until(Duration::from_secs(2), || {
        srv.accepted.load(Ordering::SeqCst) >= 3
    })
    .await;

    hc.remove(&key("gone"));
    assert!(hc.status(&key("gone")).is_none());
    assert_eq!(hc.keys(), vec![key("stays")]);
    // Let connections already in the accept queue drain, then nothing more may arrive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = srv.accepted.load(Ordering::SeqCst);
    let other_seen = other.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(srv.accepted.load(Ordering::SeqCst), seen);
    // The other target is untouched.
    assert!(other.accepted.load(Ordering::SeqCst) > other_seen);
    assert!(rx.try_recv().is_err());

    let view = hc.view();
    hc.shutdown().await;
    assert!(view.all().is_empty());
    let other_seen = other.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(other.accepted.load(Ordering::SeqCst), other_seen);
}

#[tokio::test]
async fn shutdown_stops_all_tasks_and_waits() {
    let srv = serve(V4, Behaviour::Status(200)).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    for i in 0..5 {
        let mut spec = http_spec(srv.addr, None);
        spec.inter = Duration::from_millis(20);
        hc.set(key(&format!("s{i}")), spec, Health::Up);
    }
    let view = hc.view();
    wait_until(Duration::from_secs(2), || {
        view.all().iter().all(|(_, s)| s.checks >= 2)
    })
    .await;
    assert_eq!(view.all().len(), 5);
    timeout(Duration::from_secs(1), hc.shutdown())
        .await
        .expect("shutdown must be prompt");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = srv.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(srv.accepted.load(Ordering::SeqCst), seen);
    // The checker (and its sender) is gone: the channel ends without a transition.
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn shutdown_cancels_an_in_flight_check() {
    let srv = serve(V4, Behaviour::Silent).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let mut spec = http_spec(srv.addr, None);
    spec.inter = Duration::from_millis(1);
    spec.timeout = Duration::from_secs(30);
    hc.set(key("slow"), spec, Health::Up);
    wait_until(Duration::from_secs(2), || {
        srv.accepted.load(Ordering::SeqCst) >= 1
    })
    .await;
    timeout(Duration::from_millis(500), hc.shutdown())
        .await
        .expect("an in-flight check must not delay shutdown");
}

#[tokio::test]
async fn ipv6_loopback_through_the_checker() {
    require_v6().await;
    let bad = serve(V6, Behaviour::Status(503)).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    hc.set(key("v6"), http_spec(bad.addr, None), Health::Up);
    let t = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(t.to, Health::Down);
    assert_eq!(t.reason, "HTTP status 503, expected 200, 3/3 failed");
    hc.shutdown().await;
}

// --- passive health: a suspicion per `on_error` ------------------------------------------------

/// A spec that would not check again for a minute on its own: what happens sooner is the
/// suspicion's doing.
fn slow_spec(addr: SocketAddr) -> CheckSpec {
    CheckSpec {
        inter: Duration::from_secs(60),
        ..tcp_spec(addr)
    }
}

const PASSIVE: &str =
    "passive: 12 new SYNs, 14 SYN retransmits, 0 handshakes (SYNs in 800 ms, handshakes in 900 ms)";

#[tokio::test]
async fn fastinter_checks_at_once_and_every_fastinter_until_the_checks_confirm_down() {
    let (_sock, addr) = closed_port(V4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let k = key("s1");
    hc.set(k.clone(), slow_spec(addr), Health::Up);
    assert!(hc.suspect(&k, config::OnError::FastInter, PASSIVE.into()));
    assert!(
        !hc.suspect(&k, config::OnError::FastInter, PASSIVE.into()),
        "a suspected target is not suspected again"
    );
    let t = next(&mut rx, Duration::from_secs(10)).await;
    assert_eq!(t.to, Health::Down);
    assert_eq!(
        t.reason,
        format!("{PASSIVE}; confirmed by check: connect refused, 3/3 failed")
    );
    let st = hc.status(&k).unwrap();
    assert_eq!((st.suspicion, st.last_down), (None, Some(t.reason)));
    assert!(
        !hc.suspect(&k, config::OnError::MarkDown, PASSIVE.into()),
        "a Down target is left to its checks"
    );
    hc.shutdown().await;
}

#[tokio::test]
async fn a_check_that_succeeds_clears_the_suspicion() {
    let srv = serve(V4, Behaviour::Close).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let k = key("s1");
    hc.set(k.clone(), slow_spec(srv.addr), Health::Up);
    assert!(hc.suspect(&k, config::OnError::FastInter, PASSIVE.into()));
    assert_eq!(hc.status(&k).unwrap().suspicion.as_deref(), Some(PASSIVE));
    wait_until(Duration::from_secs(10), || hc.status(&k).unwrap().checks >= 1).await;
    let st = hc.status(&k).unwrap();
    assert_eq!((st.health, st.suspicion), (Health::Up, None));
    assert!(rx.try_recv().is_err(), "no transition");
    hc.shutdown().await;
}

#[tokio::test]
async fn sudden_death_leaves_one_check_to_fail_and_fail_check_counts_one() {
    let (_sock, addr) = closed_port(V4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let (k1, k2) = (key("s1"), key("s2"));
    hc.set(k1.clone(), slow_spec(addr), Health::Up);
    assert!(hc.suspect(&k1, config::OnError::SuddenDeath, PASSIVE.into()));
    let t = next(&mut rx, Duration::from_secs(10)).await;
    assert_eq!((t.key.clone(), t.to), (k1.clone(), Health::Down));
    assert_eq!(hc.status(&k1).unwrap().checks, 1, "one failed check was enough");
    assert!(
        t.reason.starts_with(&format!("{PASSIVE}; confirmed by check: ")),
        "{}",
        t.reason
    );
    // fall 1: the one counted failure is the last.
    hc.set(
        k2.clone(),
        CheckSpec {
            fall: 1,
            ..slow_spec(addr)
        },
        Health::Up,
    );
    assert!(hc.suspect(&k2, config::OnError::FailCheck, PASSIVE.into()));
    let t = rx.try_recv().expect("Down at once");
    assert_eq!((t.key, t.to), (k2.clone(), Health::Down));
    assert_eq!(
        t.reason,
        format!("{PASSIVE}; counted as a failed check, 1/1 failed")
    );
    hc.shutdown().await;
}

#[tokio::test]
async fn a_suspected_targets_check_is_bounded_by_fastinter() {
    // An HTTP server that accepts and never answers: each check runs into its bound.
    let srv = serve(V4, Behaviour::Silent).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let k = key("s1");
    let spec = CheckSpec {
        inter: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
        fastinter: Duration::from_millis(100),
        ..http_spec(srv.addr, None)
    };
    hc.set(k.clone(), spec, Health::Up);
    assert!(hc.suspect(&k, config::OnError::SuddenDeath, PASSIVE.into()));
    let t = next(&mut rx, Duration::from_secs(4)).await;
    assert_eq!(t.to, Health::Down);
    assert_eq!(
        t.reason,
        format!("{PASSIVE}; confirmed by check: timeout after 100ms waiting for the status line, 3/3 failed")
    );
    // Down: its checks are bounded by `timeout` again (the suspicion is over).
    assert_eq!(hc.status(&k).unwrap().suspicion, None);
    hc.shutdown().await;
}

#[tokio::test]
async fn mark_down_is_at_once_and_the_checks_bring_it_back_every_downinter() {
    let srv = serve(V4, Behaviour::Close).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hc = checker(tx);
    let k = key("s1");
    hc.set(k.clone(), slow_spec(srv.addr), Health::Up);
    assert!(hc.suspect(&k, config::OnError::MarkDown, PASSIVE.into()));
    let t = rx.try_recv().expect("Down at once");
    assert_eq!(t.to, Health::Down);
    assert_eq!(
        t.reason,
        format!("{PASSIVE}; marked DOWN (on_error = \"mark-down\")")
    );
    // inter is a minute; downinter (50 ms) brings it back after rise (2) checks.
    let t = next(&mut rx, Duration::from_secs(61)).await;
    assert_eq!(t.to, Health::Up);
    assert_eq!(
        hc.status(&k).unwrap().last_down.as_deref(),
        Some(&*format!("{PASSIVE}; marked DOWN (on_error = \"mark-down\")"))
    );
    hc.shutdown().await;
}
