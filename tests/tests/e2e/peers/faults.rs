//! Peers that misbehave: no key, a stalled reader, malformed or over-budget updates.

use std::{net::IpAddr, time::Duration};

use harness::lbenv::Opts;

use super::{peer_accept, peer_column, peer_send, read_peer_line, replicas, update_lines};
use crate::pin_all;

#[test]
fn s15_peers_updates_without_the_key_change_nothing() {
    let opts = Opts::sources(40, 0);
    let r = replicas("peerkey", opts, &[]);
    let e = &r.e;
    let pins = pin_all(e, &e.sources4);
    let mut before = e.table("be_app").unwrap();
    before.sort();
    assert_eq!(before.len(), pins.len(), "{before:?}");
    // Well-formed lines: every pinned client moved to another server, and new clients.
    let mut lines = String::new();
    for (s, b) in &pins {
        let other = if b == "app1" { "app2" } else { "app1" };
        lines.push_str(&update_lines("be_app", std::iter::once(*s), other));
    }
    lines.push_str(&update_lines(
        "be_app",
        (1..=50u8).map(|i| IpAddr::from([10, 99, 0, i])),
        "app3",
    ));
    // From the second balancer's own address, but not its agent, and without the key: the
    // old plain protocol; the new one with a wrong key; the new hello and then plain lines.
    let (src, to): (IpAddr, std::net::SocketAddr) = (
        e.topo.host(r.lb2).ipv4.into(),
        (e.topo.host(e.lb).ipv4, 7000).into(),
    );
    let attempts = e
        .topo
        .worker(r.lb2)
        .unwrap()
        .run(move || -> anyhow::Result<Vec<String>> {
            use std::io::Write as _;
            use xlb::control::peers::wire as peer_wire;
            let connect = || -> anyhow::Result<std::net::TcpStream> {
                let s = harness::client::connect_from(src, to, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                Ok(s)
            };
            let finish = |mut s: std::net::TcpStream| {
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut s, &mut sink);
            };
            let mut seen = Vec::new();
            // 1. The old protocol (no key at all).
            let mut s = connect()?;
            s.write_all(format!("xlb-peers 1\n{lines}").as_bytes())?;
            finish(s);
            // 2. A wrong key: the agent's proof does not check out for us, and ours not for
            //    it; frames sealed with the wrong key follow anyway.
            let wrong = b"not the key of this peer group";
            let mut s = connect()?;
            let mine = peer_wire::random_nonce()?;
            s.write_all(peer_wire::hello(&mine).as_bytes())?;
            let challenge = read_peer_line(&mut s)?;
            seen.push(format!(
                "{:?}",
                peer_wire::check_challenge(wrong, &mine, &challenge)
            ));
            let theirs = peer_wire::random_nonce()?;
            s.write_all(peer_wire::response(wrong, &mine, &theirs).as_bytes())?;
            let mut w = peer_wire::FrameWriter::new(wrong, &mine, &theirs);
            for p in peer_wire::split_frames(&lines) {
                if s.write_all(&w.seal(p)).is_err() {
                    break;
                }
            }
            finish(s);
            // 3. The new hello, then plain lines where the proof belongs.
            let mut s = connect()?;
            s.write_all(peer_wire::hello(&peer_wire::random_nonce()?).as_bytes())?;
            let _ = read_peer_line(&mut s)?;
            let _ = s.write_all(lines.as_bytes());
            finish(s);
            Ok(seen)
        })
        .unwrap();
    assert_eq!(attempts, ["Err(BadProof)"]);
    // Connections that never authenticate hold nothing for long: at most 4 from one address
    // wait at once (more are refused at once), and each is closed after 5 s.
    let (closed, refused_at_once) = e
        .topo
        .worker(r.lb2)
        .unwrap()
        .run(move || -> anyhow::Result<(usize, bool)> {
            use std::io::Read as _;
            let mut idle = Vec::new();
            for _ in 0..4 {
                let s = harness::client::connect_from(src, to, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                idle.push(s);
            }
            std::thread::sleep(Duration::from_millis(300));
            let mut fifth = harness::client::connect_from(src, to, Duration::from_secs(2))?;
            fifth.set_read_timeout(Some(Duration::from_secs(2)))?;
            let refused_at_once = matches!(fifth.read(&mut [0u8; 1]), Ok(0));
            let t0 = std::time::Instant::now();
            let mut closed = 0;
            for s in &mut idle {
                if matches!(s.read(&mut [0u8; 1]), Ok(0)) && t0.elapsed() < Duration::from_secs(8) {
                    closed += 1;
                }
            }
            Ok((closed, refused_at_once))
        })
        .unwrap();
    assert!(
        refused_at_once,
        "a fifth unauthenticated connection was not closed at once"
    );
    assert_eq!(closed, 4, "unauthenticated connections were not closed");
    let busy = e.api("show peers").unwrap();
    assert!(
        busy.contains("refused (too many unauthenticated from one peer's address): 1"),
        "{busy}"
    );
    // Two sweeps: anything applied would show.
    std::thread::sleep(Duration::from_secs(3));
    let mut after = e.table("be_app").unwrap();
    after.sort();
    let peers = e.api("show peers").unwrap();
    assert_eq!(after, before, "lb1's table changed:\n{peers}");
    // The three attempts with the wrong key or none, and the four that said nothing. (Not
    // `applied`: it also counts what the real lb2 sends, which may come during the wait; the
    // table above is the proof that no forged line was applied, each moving a client or adding
    // one.)
    assert_eq!(peer_column(&peers, "lb2", "bad_auth"), 7, "{peers}");
    // The real peer is still connected and authenticated.
    assert!(
        r.api2("show peers")
            .lines()
            .any(|l| l.starts_with("lb1 ") && l.contains(" CONNECTED ")),
        "{}",
        r.api2("show peers")
    );
}

#[test]
fn s16_peers_a_peer_that_stops_reading_does_not_stall_the_agent() {
    let opts = Opts {
        stick_size: 20_000,
        ..Opts::sources(40, 0)
    };
    let r = replicas("peerstall", opts, &["lb3"]);
    let e = &r.e;
    let lb3 = r.extra[0];
    let (ip1, ip3) = (e.topo.host(e.lb).ipv4, e.topo.host(lb3).ipv4);
    // lb3 is played by the test. First, as lb3's sender, teach lb1 5000 entries: the table
    // lb1 sends lb3 whole on every connection is then far larger than lb3's socket buffers.
    let lines = update_lines(
        "be_app",
        (0..5000u32).map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a63_0000 + i))),
        "app2",
    );
    let key = r.key.clone();
    e.topo
        .worker(lb3)
        .unwrap()
        .run(move || -> anyhow::Result<()> {
            let mut s =
                harness::client::connect_from(ip3.into(), (ip1, 7000).into(), Duration::from_secs(2))?;
            peer_send(&mut s, &key, &lines)
        })
        .unwrap();
    assert!(
        e.wait_until(Duration::from_secs(10), || e.table("be_app").unwrap().len()
            >= 5000),
        "lb1 did not take the entries:\n{}",
        e.api("show peers").unwrap()
    );
    // Now lb3 listens (with a small receive buffer), accepts and authenticates lb1's
    // connections, and never reads.
    let listener = e
        .topo
        .worker(lb3)
        .unwrap()
        .run(move || -> anyhow::Result<std::net::TcpListener> {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.set_recv_buffer_size(4096)?;
            s.bind(&std::net::SocketAddr::from((ip3, 7000)).into())?;
            s.listen(8)?;
            Ok(s.into())
        })
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stalled = {
        let (stop, accepted, key) = (stop.clone(), accepted.clone(), r.key.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let t0 = std::time::Instant::now();
            // Bounded: at most 16 connections and 90 s.
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && held.len() < 16
                && t0.elapsed() < Duration::from_secs(90)
            {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        if peer_accept(&mut s, &key).is_ok() {
                            held.push(s);
                            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let accepted_n = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        e.wait_until(Duration::from_secs(10), || accepted_n() >= 1),
        "lb1 never authenticated to lb3:\n{}",
        e.agent_log()
    );
    // lb1 now blocks writing its table to lb3. It answers, and keeps updating the good peer:
    // new clients pinned on lb1 reach lb2.
    std::thread::sleep(Duration::from_millis(500));
    assert!(e.api("show info").unwrap().starts_with("Name: xlb"));
    let pins = pin_all(e, &e.sources4);
    let learned = || {
        let t = r.api2("show table be_app");
        pins.iter().all(|(s, b)| {
            t.lines()
                .find(|l| l.contains(&format!("key={s} ")))
                .is_some_and(|l| l.ends_with(&format!("server_key={b}")))
        })
    };
    assert!(
        e.wait_until(Duration::from_secs(10), learned),
        "lb2 did not learn lb1's new clients while lb3 stalled:\n{}",
        e.api("show peers").unwrap()
    );
    // The stalled connection is dropped after the write timeout and made again (and stalls
    // again: lb3 still does not read).
    assert!(
        e.wait_until(Duration::from_secs(15), || {
            peer_column(&e.api("show peers").unwrap(), "lb3", "timeouts") >= 1 && accepted_n() >= 2
        }),
        "the stalled peer was not dropped:\n{}\n{}",
        e.api("show peers").unwrap(),
        e.agent_log()
    );
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM ends the agent at once, though a write to lb3 is pending.
    let t0 = std::time::Instant::now();
    let status = e.stop_agent();
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stalled.join().unwrap();
    eprintln!("SIGTERM with a write to a stalled peer pending: exited in {took:?}");
    assert!(
        status.is_some_and(|s| s.success()) && took < Duration::from_millis(1500),
        "SIGTERM: {status:?} after {took:?}\n{}",
        e.agent_log()
    );
}

#[test]
fn s17_peers_entries_with_unknown_names_malformed_or_over_budget_are_dropped_and_counted() {
    let opts = Opts {
        stick_size: 100,
        ..Opts::sources(10, 0)
    };
    let r = replicas("peercount", opts, &["lb3"]);
    let e = &r.e;
    let lb3 = r.extra[0];
    let (ip1, ip3) = (e.topo.host(e.lb).ipv4, e.topo.host(lb3).ipv4);
    // The test plays lb3's sender, with the key.
    let send = |lines: String| {
        let key = r.key.clone();
        e.topo
            .worker(lb3)
            .unwrap()
            .run(move || -> anyhow::Result<()> {
                let mut s =
                    harness::client::connect_from(ip3.into(), (ip1, 7000).into(), Duration::from_secs(2))?;
                peer_send(&mut s, &key, &lines)
            })
            .unwrap()
    };
    let count = |column: &str| peer_column(&e.api("show peers").unwrap(), "lb3", column);
    let in_table = |prefix: &str| {
        e.table("be_app")
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .count()
    };
    // Names this instance does not have, an address of the other family, malformed lines,
    // and 300 new clients of a service whose table holds 100: one frame, one second.
    let mut lines = String::from(
        "be_app 10.98.0.1 0 nosuch 0\nnosvc 10.98.0.2 0 app1 0\nbe_app fd77::98 0 app1 0\n\
         be_app 10.98.0.3 0\nnot an update\n",
    );
    lines.push_str(&update_lines(
        "be_app",
        (0..300u32).map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a61_0000 + i))),
        "app1",
    ));
    send(lines);
    assert!(
        e.wait_until(Duration::from_secs(5), || count("received") == 305),
        "{}",
        e.api("show peers").unwrap()
    );
    let peers = e.api("show peers").unwrap();
    assert_eq!(peer_column(&peers, "lb3", "unknown"), 3, "{peers}");
    assert_eq!(peer_column(&peers, "lb3", "malformed"), 2, "{peers}");
    assert_eq!(peer_column(&peers, "lb3", "applied"), 100, "{peers}");
    assert_eq!(peer_column(&peers, "lb3", "refused"), 200, "{peers}");
    assert_eq!(in_table("10.97."), 100);
    assert_eq!(in_table("10.98."), 0);

    // Names are checked against the running config: after a reload without app4, an entry
    // for app4 is dropped.
    let mut without = std::fs::read_to_string(&e.config).unwrap();
    while let Some(i) = without.find("[[service.server]]\nname = \"app4\"\n") {
        // The block ends with its address line.
        let addr = i + without[i..].find("address = ").unwrap();
        let end = addr + without[addr..].find('\n').unwrap() + 1;
        without.replace_range(i..end, "");
    }
    assert!(!without.contains("app4") && without.contains("app3"), "{without}");
    e.write_config(&without).unwrap();
    e.signal_agent(libc::SIGHUP);
    assert!(
        e.wait_until(Duration::from_secs(5), || e
            .agent_log()
            .contains("configuration reloaded")),
        "{}",
        e.agent_log()
    );
    std::thread::sleep(Duration::from_millis(1100));
    send("be_app 10.96.0.1 0 app4 0\nbe_app 10.96.0.2 0 app3 0\n".into());
    assert!(
        e.wait_until(Duration::from_secs(5), || count("received") == 307),
        "{}",
        e.api("show peers").unwrap()
    );
    let peers = e.api("show peers").unwrap();
    assert_eq!(peer_column(&peers, "lb3", "unknown"), 4, "{peers}");
    assert_eq!(peer_column(&peers, "lb3", "applied"), 101, "{peers}");
    let t = e.table("be_app").unwrap();
    assert!(!t.iter().any(|(k, _)| k == "10.96.0.1"), "{t:?}");
    assert!(t.contains(&("10.96.0.2".into(), "app3".into())), "{t:?}");
}
