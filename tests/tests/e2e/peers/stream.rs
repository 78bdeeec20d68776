//! Streaming replication: a new client's entry reaches the peer as it is made, not at the next
//! sweep; and each balancer knows when its peer has taught it its whole table.

use std::time::{Duration, Instant};

use harness::lbenv::Opts;

use super::{peer_column, replicas};

/// Much longer than the test: the sweep (which would also replicate the entries) does not run
/// while the test does, so only the stream can deliver them.
const SWEEP_S: u64 = 600;

#[test]
fn s20_a_new_clients_entry_is_streamed_to_the_peer_before_any_sweep() {
    let opts = Opts {
        v6_sources: 0,
        sweep: format!("{SWEEP_S}s"),
        ..Default::default()
    };
    let r = replicas("stream", opts, &[]);
    let e = &r.e;
    let started = Instant::now();

    // Each side's full teach ended with its marker: both know the other has taught them.
    let taught = |p: &str, peer: &str| {
        p.lines()
            .find(|l| l.starts_with(&format!("{peer} ")))
            .is_some_and(|l| l.ends_with(" yes"))
    };
    assert!(
        e.wait_until(Duration::from_secs(20), || taught(&r.api2("show peers"), "lb1")
            && taught(&e.api("show peers").unwrap(), "lb2")),
        "no teach completed:\n{}\n{}",
        r.api2("show peers"),
        e.api("show peers").unwrap()
    );

    // New clients through the first balancer: each one's entry appears on the second.
    let mut latencies = Vec::new();
    for s in e.sources4.iter().take(20) {
        let backend = e
            .get_vip(*s)
            .unwrap_or_else(|err| panic!("connection from {s} failed: {err:#}"));
        let made = Instant::now();
        let want = format!("server_key={backend}");
        let query = format!("show table be_app key {s}");
        let mut seen = None;
        while made.elapsed() < Duration::from_secs(20) {
            if r.api2(&query)
                .lines()
                .any(|l| l.contains(&format!("key={s} ")) && l.ends_with(&want))
            {
                seen = Some(made.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let Some(latency) = seen else {
            panic!(
                "{s}'s entry (on {backend}) never reached lb2:\n{}\n{}\n{}",
                e.api(&query).unwrap(),
                r.api2("show peers"),
                r.log2()
            );
        };
        latencies.push(latency);
    }
    latencies.sort();
    println!(
        "s20: new entry on lb1 -> on lb2 (as `show table` polled every 2 ms sees it, from the \
         end of the client's request): median {:?}, max {:?} of {}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    // The sweep did not run meanwhile: the entries came by the stream.
    assert!(
        started.elapsed() < Duration::from_secs(SWEEP_S),
        "the test outlasted the sweep interval"
    );
    let p1 = e.api("show peers").unwrap();
    assert!(peer_column(&p1, "lb2", "sent") >= latencies.len() as u64, "{p1}");
    assert_eq!(peer_column(&p1, "lb2", "dropped"), 0, "{p1}");
}

/// What the stream delivered, the sweep does not send again: lb1's new clients reach lb2 once
/// each (lb1's `sent` grows by one per client, lb2's `older` not at all), however many sweeps
/// (every 100 ms here) pass after.
#[test]
fn a_streamed_entry_is_not_sent_again_by_the_sweeps_after_it() {
    let opts = Opts {
        v6_sources: 0,
        sweep: "100ms".into(),
        ..Default::default()
    };
    let r = replicas("nodup", opts, &[]);
    let e = &r.e;
    let taught = |p: &str, peer: &str| {
        p.lines()
            .find(|l| l.starts_with(&format!("{peer} ")))
            .is_some_and(|l| l.ends_with(" yes"))
    };
    assert!(
        e.wait_until(Duration::from_secs(20), || taught(&r.api2("show peers"), "lb1")),
        "lb1 never taught lb2:\n{}",
        r.api2("show peers")
    );
    let before1 = e.api("show peers").unwrap();
    let before2 = r.api2("show peers");
    let clients: Vec<_> = e.sources4.iter().take(10).copied().collect();
    for s in &clients {
        e.get_vip(*s)
            .unwrap_or_else(|err| panic!("connection from {s} failed: {err:#}"));
    }
    let on_lb2 = |s: &std::net::IpAddr| {
        r.api2(&format!("show table be_app key {s}"))
            .lines()
            .any(|l| l.contains(&format!("key={s} ")))
    };
    assert!(
        e.wait_until(Duration::from_secs(20), || clients.iter().all(on_lb2)),
        "not every new client reached lb2:\n{}",
        r.api2("show peers")
    );
    // Twenty sweeps' time on each side.
    std::thread::sleep(Duration::from_secs(2));
    let after1 = e.api("show peers").unwrap();
    let after2 = r.api2("show peers");
    let grew = |before: &str, after: &str, peer: &str, column: &str| {
        peer_column(after, peer, column) - peer_column(before, peer, column)
    };
    assert_eq!(
        grew(&before1, &after1, "lb2", "sent"),
        clients.len() as u64,
        "lb1 sent lb2 more lines than new clients:\n{before1}\n{after1}"
    );
    assert_eq!(
        grew(&before2, &after2, "lb1", "applied"),
        clients.len() as u64,
        "{before2}\n{after2}"
    );
    assert_eq!(grew(&before2, &after2, "lb1", "older"), 0, "{before2}\n{after2}");
}

/// The announcements' warm-up ends when every peer has taught this balancer its table, not
/// only when `warmup` has passed: lb2, restarted with a warm-up of an hour, announces its VIPs
/// (routes of proto 250 in table 200) as soon as lb1's teach is complete.
#[test]
fn a_restarted_balancer_announces_once_its_peer_has_taught_it_not_after_the_whole_warm_up() {
    let mut r = replicas("taughtwarm", Opts::sources(8, 0), &[]);
    let routes = |r: &super::Replicas| {
        r.e.topo
            .exec(r.lb2, &["ip", "-4", "route", "show", "table", "200"])
            .unwrap_or_default()
    };
    // Some clients first: lb1's teach then carries entries.
    for s in r.e.sources4.iter().take(4) {
        r.e.get_vip(*s).unwrap();
    }
    let config = std::fs::read_to_string(&r.config2).unwrap();
    std::fs::write(
        &r.config2,
        config + "\n[announce]\ntable = 200\nwarmup = \"1h\"\n",
    )
    .unwrap();
    r.start2();
    let started = Instant::now();
    let announced = r.e.wait_until(Duration::from_secs(30), || {
        routes(&r)
            .lines()
            .any(|l| l.starts_with(&format!("{} dev eth0 proto 250 ", harness::topology::VIP4)))
    });
    assert!(
        announced,
        "lb2 did not announce (warm-up 1h, its peer lb1 connected):\n{}\n{}\n{}",
        routes(&r),
        r.api2("show frontends"),
        r.log2()
    );
    println!(
        "lb2 announced {:?} after its restart (warm-up 1h)",
        started.elapsed()
    );
    let peers = r.api2("show peers");
    assert!(
        peers
            .lines()
            .any(|l| l.starts_with("lb1 ") && l.ends_with(" yes")),
        "lb1 taught lb2:\n{peers}"
    );
    let frontends = r.api2("show frontends");
    assert!(
        frontends
            .lines()
            .any(|l| l.starts_with("be_app ") && l.contains(" yes")),
        "{frontends}"
    );
}
