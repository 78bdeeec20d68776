//! End to end: the real agent, the real XDP program on the LB host's veth, real backends and
//! real TCP/UDP from many client addresses, in network namespaces. Each test is a scenario of
//! the seed article (HAProxy sticky sessions), asserting exact outcomes. Needs root.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use harness::lbenv::{LbEnv, Opts};

fn env(name: &str, opts: Opts) -> LbEnv {
    let e = LbEnv::new(name, opts).unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    e
}

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

#[test]
fn s01_stickiness_v4_v6_and_spread() {
    let e = env(
        "stick",
        Opts {
            v4_sources: 1000,
            ..Default::default()
        },
    );
    // 200 IPv4 sources x 10 fresh connections each: one backend per source.
    let first = pin_all(&e, &e.sources4[..200]);
    for round in 1..10 {
        for s in &e.sources4[..200] {
            let b = e
                .get_vip(*s)
                .unwrap_or_else(|err| panic!("round {round}, {s}: {err:#}"));
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
        let b = if let Some(b) = first.get(s) {
            b.clone()
        } else {
            e.get_vip(*s).unwrap()
        };
        *count.entry(b).or_default() += 1;
    }
    assert_eq!(count.len(), 4, "{count:?}");
    for (b, n) in &count {
        assert!(
            (200..=300).contains(n),
            "backend {b} got {n} of 1000 sources: {count:?}"
        );
    }
    // The table tells the truth: one entry per source that connected.
    assert_eq!(e.table("be_app").unwrap().len(), 1000);
    assert_eq!(e.table("be_app6").unwrap().len(), 50);
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

#[test]
fn s02_failover_with_redispatch() {
    let mut e = env(
        "failover",
        Opts {
            v4_sources: 120,
            v6_sources: 0,
            ..Default::default()
        },
    );
    let pins = pin_all(&e, &e.sources4);
    let victim = pins[&e.sources4[0]].clone();
    let (moved, stayed) = split(&pins, &victim);
    e.http[backend_index(&victim)].stop();
    // fall (3) x inter (200 ms) plus one interval, plus the check timeout (500 ms) of the last one.
    let took = wait_state(&e, "be_app", &victim, "DOWN", Duration::from_secs(5));
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
    wait_state(&e, "be_app", &victim, "UP", Duration::from_secs(5));
    for s in &moved {
        assert_eq!(
            e.get_vip(*s).unwrap(),
            new_home[s],
            "{s} must stay on its new backend"
        );
    }
    let log = e.agent_log();
    assert!(
        log.contains(&format!("be_app/{victim} DOWN")) && log.contains("3/3 failed"),
        "{log}"
    );
}

#[test]
fn s03_without_redispatch_pinned_clients_fail_until_expiry() {
    let mut e = env(
        "noredisp",
        Opts {
            v4_sources: 60,
            v6_sources: 0,
            redispatch: false,
            expire: "4s".into(),
            ..Default::default()
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
    let e = env(
        "drain",
        Opts {
            v4_sources: 500,
            v6_sources: 0,
            ..Default::default()
        },
    );
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

#[test]
fn s05_expiry_removes_idle_entries() {
    let e = env(
        "expiry",
        Opts {
            v4_sources: 4,
            v6_sources: 0,
            expire: "5s".into(),
            ..Default::default()
        },
    );
    let s = e.sources4[0];
    e.get_vip(s).unwrap();
    let key = s.to_string();
    assert!(e.table("be_app").unwrap().iter().any(|(k, _)| *k == key));
    let t0 = std::time::Instant::now();
    let gone = e.wait_until(Duration::from_secs(12), || {
        !e.table("be_app").unwrap().iter().any(|(k, _)| *k == key)
    });
    let took = t0.elapsed();
    assert!(gone, "idle entry for {s} still in the table after {took:?}");
    assert!(
        took >= Duration::from_secs(4),
        "entry vanished after {took:?}, before its 5 s expiry"
    );
    eprintln!("entry of {s} expired from show table after {took:?} (expire 5 s, sweep 1 s)");
    e.get_vip(s).unwrap();
    assert!(
        e.table("be_app").unwrap().iter().any(|(k, _)| *k == key),
        "the next connection creates a new entry"
    );
}

#[test]
fn s06_backend_added_with_sighup() {
    let e = env(
        "sighup",
        Opts {
            v4_sources: 1200,
            v6_sources: 0,
            spare_backends: 1,
            ..Default::default()
        },
    );
    let pins = pin_all(&e, &e.sources4[..200]);
    e.write_config(&e.config_text(5)).unwrap();
    e.signal_agent(libc::SIGHUP);
    wait_state(&e, "be_app", "app5", "UP", Duration::from_secs(10));
    for (s, b) in &pins {
        assert_eq!(
            &e.get_vip(*s).unwrap(),
            b,
            "pinned client {s} moved after the reload"
        );
    }
    let n5 = e.sources4[200..1200]
        .iter()
        .filter(|s| e.get_vip(**s).unwrap() == "app5")
        .count();
    assert!(
        (120..=280).contains(&n5),
        "{n5} of 1000 new sources reached the new backend (want 12%..28%)"
    );
    eprintln!("new backend took {n5} of 1000 never-seen sources");
    assert!(e.agent_log().contains("configuration reloaded"));
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

fn restart_under_load(name: &str, kill: bool) {
    let e = env(
        name,
        Opts {
            v4_sources: 100,
            v6_sources: 0,
            ..Default::default()
        },
    );
    pin_all(&e, &e.sources4);
    let before = e.table("be_app").unwrap();
    let prog_before = e.topo.exec(e.lb, &["ip", "-d", "link", "show", "eth0"]).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let sources = e.sources4.clone();
    let (ok, failed) = std::thread::scope(|sc| {
        let h = sc.spawn(|| load(&e, &sources, &stop));
        std::thread::sleep(Duration::from_millis(500));
        if kill {
            e.kill_agent();
        } else {
            e.stop_agent().expect("agent exited");
        }
        std::thread::sleep(Duration::from_millis(500));
        e.start_agent().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap()
    });
    assert!(
        failed.is_empty(),
        "{} of {} connections failed during the restart: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 50, "the load ran ({ok} connections)");
    let after = e.table("be_app").unwrap();
    assert_eq!(
        before, after,
        "the stick table must survive the restart unchanged"
    );
    let prog_after = e.topo.exec(e.lb, &["ip", "-d", "link", "show", "eth0"]).unwrap();
    let id = |s: &str| {
        s.split("prog/xdp id ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    };
    assert_ne!(
        id(&prog_before),
        id(&prog_after),
        "a freshly loaded program replaced the old one"
    );
    assert!(e.agent_log().contains("replaced atomically"), "{}", e.agent_log());
    eprintln!(
        "{ok} connections, 0 failed, across the {} restart",
        if kill { "kill -9" } else { "graceful" }
    );
}

#[test]
fn s07_agent_kill_9_and_restart_under_load() {
    restart_under_load("kill9", true);
}

#[test]
fn s08_program_upgrade_under_load() {
    restart_under_load("upgrade", false);
}

#[test]
fn s09_udp_stickiness_and_failover() {
    let mut e = env(
        "udp",
        Opts {
            v4_sources: 50,
            v6_sources: 0,
            ..Default::default()
        },
    );
    let mut pins = HashMap::new();
    for s in &e.sources4 {
        let b = e.udp(*s).unwrap_or_else(|err| panic!("udp from {s}: {err:#}"));
        for _ in 0..4 {
            assert_eq!(e.udp(*s).unwrap(), b, "datagrams from {s} must reach one backend");
        }
        pins.insert(*s, b);
    }
    let victim = pins[&e.sources4[0]].clone();
    let (moved, stayed) = split(&pins, &victim);
    // dns is health-checked over TCP port 80: stop that and the UDP server of the victim.
    let i = backend_index(&victim);
    e.http[i].stop();
    e.udp[i].stop();
    wait_state(&e, "dns", &victim, "DOWN", Duration::from_secs(5));
    for s in &moved {
        let b = e
            .udp(*s)
            .unwrap_or_else(|err| panic!("{s} after failover: {err:#}"));
        assert_ne!(b, victim);
        assert_eq!(e.udp(*s).unwrap(), b, "and stays");
    }
    for s in &stayed {
        assert_eq!(e.udp(*s).unwrap(), pins[s]);
    }
}

/// A spoofed SYN flood whose sources exist: the backends' SYN-ACKs reach a kernel that owns the
/// spoofed addresses, and it answers each with an RST through the balancer (issue 9, item 2:
/// those RSTs used to create one entry each). Neither the SYNs nor the RSTs may touch the table.
#[test]
fn s10_spoofed_syn_flood_evicts_no_established_client() {
    let mut e = env(
        "synflood",
        Opts {
            v4_sources: 100,
            v6_sources: 0,
            stick_size: 300,
            ..Default::default()
        },
    );
    let pins = pin_all(&e, &e.sources4);
    let before = e.table("be_app").unwrap();
    assert_eq!(before.len(), 100);
    let header = e.api("show table be_app").unwrap();
    assert!(
        header.starts_with("# table: be_app, type: ip, size:300, used:100\n"),
        "be_app's own table: {header}"
    );
    let capacity = 300u32;
    let n = 10 * capacity;
    let sent = e.syn_flood(n, harness::lbenv::VIP4_HTTP).unwrap();
    assert_eq!(sent, n);
    let counter = |name: &str| -> u64 {
        e.api("show info")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("Xdp_{name}: ")))
            .unwrap_or_else(|| panic!("show info has no Xdp_{name}"))
            .trim()
            .parse()
            .unwrap()
    };
    // The SYNs share the path with the backends' SYN-ACKs and the RSTs: some are still on the
    // way when the last one is sent.
    let mut syns = 0;
    e.wait_until(Duration::from_secs(10), || {
        syns = counter("syn_no_insert");
        syns >= n as u64
    });
    assert!(
        syns >= n as u64,
        "the data path saw the flood ({syns} bare SYNs of {n})"
    );
    // The RSTs of the spoofed sources' owner: one per SYN-ACK, each from a client the table
    // does not know.
    let mut rsts = 0;
    e.wait_until(Duration::from_secs(10), || {
        rsts = counter("no_handshake_no_insert");
        rsts >= n as u64 / 2
    });
    assert!(
        rsts >= n as u64 / 2,
        "the owner of the spoofed sources answered the backends' SYN-ACKs with RSTs \
         through the balancer ({rsts} seen for {n} SYNs)"
    );
    let after = e.table("be_app").unwrap();
    assert_eq!(
        before, after,
        "the flood of {n} spoofed sources (10 x be_app's size {capacity}) and their {rsts} RSTs \
         must not touch the table"
    );
    for (s, b) in &pins {
        assert_eq!(&e.get_vip(*s).unwrap(), b);
    }
    eprintln!("{syns} spoofed SYNs and {rsts} RSTs of their owner passed; the table is unchanged");
}

#[test]
fn s11_bad_input_is_refused_and_nothing_running_is_disturbed() {
    let e = env(
        "badinput",
        Opts {
            v4_sources: 20,
            v6_sources: 0,
            ..Default::default()
        },
    );
    let pins = pin_all(&e, &e.sources4);
    let good = std::fs::read_to_string(&e.config).unwrap();
    let bin = harness::lbenv::xlb_bin();
    let cases: Vec<(String, &str)> = vec![
        (
            good.replacen("protocol = \"tcp\"", "protocol = \"sctp\"", 1),
            "field \"protocol\": \"sctp\" is not a protocol",
        ),
        (
            good.replacen("size = 10000", "size = 0", 1),
            "field \"stick.size\": must be at least 1 (got 0)",
        ),
        (
            good.replacen("name = \"app2\"", "name = \"app1\"", 1),
            "field \"name\": another server of this service has this name",
        ),
        (
            good.replacen("interface = \"eth0\"", "interface = \"eth0\"\nbogus = 1", 1),
            "unknown field `bogus`",
        ),
        (
            good.replacen("name = \"be_app6\"", "name = \"be_app\"", 1),
            "another service has this name",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = e.dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(&bin)
            .arg("check")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "xlb check on case {i} must fail");
        assert!(err.contains(want), "case {i}: expected {want:?} in {err:?}");
        // `xlb run` with it exits non-zero before touching anything.
        let out = std::process::Command::new(&bin)
            .args(["run", "-c"])
            .arg(&path)
            .args(["--netns", &e.topo.host(e.lb).ns])
            .output()
            .unwrap();
        assert_ne!(
            out.status.code(),
            Some(0),
            "xlb run with bad config {i} must fail"
        );
    }
    let out = std::process::Command::new(&bin)
        .arg("check")
        .arg("-c")
        .arg(&e.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A second agent on the same pins refuses to fight the first.
    let out = std::process::Command::new(&bin)
        .args(["run", "-c"])
        .arg(&e.config)
        .args(["--netns", &e.topo.host(e.lb).ns])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("already runs the data path"), "{err}");
    // One with other pins on the same interface refuses too.
    let other = e.dir.join("other.toml");
    std::fs::write(
        &other,
        good.replace(
            &e.bpffs.display().to_string(),
            &format!("{}-other", e.bpffs.display()),
        )
        .replace("admin.sock", "admin2.sock"),
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .args(["run", "-c"])
        .arg(&other)
        .args(["--netns", &e.topo.host(e.lb).ns])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = xlb::datapath::remove_pins(std::path::Path::new(&format!("{}-other", e.bpffs.display())));
    let _ = std::fs::remove_file(xlb::agent::lock_path(std::path::Path::new(&format!(
        "{}-other",
        e.bpffs.display()
    ))));
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("already has an XDP program"), "{err}");
    // A bad config sent by SIGHUP is refused; the running state is kept.
    e.write_config(&cases[0].0).unwrap();
    e.signal_agent(libc::SIGHUP);
    assert!(
        e.wait_until(Duration::from_secs(5), || e
            .agent_log()
            .contains("reload refused")),
        "{}",
        e.agent_log()
    );
    // Through all of it, the running instance kept forwarding, pins intact.
    for (s, b) in &pins {
        assert_eq!(&e.get_vip(*s).unwrap(), b);
    }
    assert!(e.agent_pid().is_some());
}

#[test]
fn s12_the_seeds_verification_with_socat() {
    let e = env(
        "seed",
        Opts {
            v4_sources: 10,
            v6_sources: 0,
            ..Default::default()
        },
    );
    let pins = pin_all(&e, &e.sources4);
    let sock = e.socket.display().to_string();
    let socat = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("echo \"{cmd}\" | socat {sock} -"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "socat: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = socat("show table be_app");
    assert!(
        table.starts_with("# table: be_app, type: ip, size:10000, used:10\n"),
        "{table}"
    );
    for (s, b) in &pins {
        let line = table
            .lines()
            .find(|l| l.contains(&format!("key={s} ")))
            .unwrap_or_else(|| panic!("{s} not in {table}"));
        assert!(line.ends_with(&format!("server_key={b}")), "{line}");
        assert!(
            line.starts_with("0x") && line.contains(" use=0 exp=") && line.contains(" server_id="),
            "{line}"
        );
    }
    let state = socat("show servers state");
    assert!(
        state.starts_with("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state"),
        "{state}"
    );
    for i in 1..=4 {
        assert!(
            state
                .lines()
                .any(|l| l.starts_with("1 be_app ") && l.contains(&format!(" app{i} 10.77.0."))),
            "{state}"
        );
    }
}

/// `Xdp_<name>` from `show info`.
fn xdp_counter(e: &LbEnv, name: &str) -> u64 {
    let info = e.api("show info").unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("Xdp_{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Xdp_{name} in show info:\n{info}"))
}

#[test]
fn s13_backend_on_another_interface_goes_out_by_xdp_redirect() {
    let opts = Opts {
        backends: 2,
        ..Default::default()
    };
    let mut e = LbEnv::new("redirect", opts).unwrap_or_else(|err| panic!("building the harness: {err:#}"));
    // app3 is not on the bridge: it sits behind the LB host's second interface, eth1.
    let far = e.topo.add_linked_host("be3", e.lb, "eth1").unwrap();
    let h = e.topo.host(far).clone();
    e.topo.add_vip_on_lo(far, harness::topology::VIP4.into()).unwrap();
    e.topo.add_vip_on_lo(far, harness::topology::VIP6.into()).unwrap();
    // veth takes redirected frames only when its peer runs an XDP program (as for XDP_TX).
    harness::netns::run_in(&h.ns, || xlb::datapath::attach_pass_program("eth0"))
        .unwrap()
        .unwrap();
    let _app3 = harness::BackendServer::start(&e.topo, far, "app3", 80, Some("/healthz")).unwrap();
    let server = |addr: IpAddr| {
        format!("[[service.server]]\nname = \"app3\"\naddress = \"{addr}\"\ninterface = \"eth1\"\n")
    };
    let with_app3 = |iface: &str| {
        e.config_text(2)
            .replacen(
                "\n[[service]]\nname = \"be_app6\"",
                &format!("{}\n[[service]]\nname = \"be_app6\"", server(h.ipv4.into())),
                1,
            )
            .replacen(
                "\n[[service]]\nname = \"dns\"",
                &format!("{}\n[[service]]\nname = \"dns\"", server(h.ipv6.into())),
                1,
            )
            .replace("interface = \"eth1\"", &format!("interface = \"{iface}\""))
    };
    let text = with_app3("eth1");
    assert_eq!(text.matches("name = \"app3\"").count(), 2, "{text}");
    e.write_config(&text).unwrap();
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    for svc in ["be_app", "be_app6"] {
        wait_state(&e, svc, "app3", "UP", Duration::from_secs(10));
    }

    let redirected_before = xdp_counter(&e, "redirect");
    let mut pins = pin_all(&e, &e.sources4);
    pins.extend(pin_all(&e, &e.sources6));
    let on = |b: &str, v6: bool| pins.iter().filter(|(s, n)| *n == b && s.is_ipv6() == v6).count();
    // 200 IPv4 sources over 3 servers: about 67 each (a share under 10% would be a broken
    // hash); 50 IPv6 sources: every server gets some.
    for b in ["app1", "app2", "app3"] {
        assert!(
            on(b, false) >= 20,
            "{b}: {} of 200 IPv4 sources: {pins:?}",
            on(b, false)
        );
        assert!(on(b, true) >= 1, "{b}: no IPv6 source");
    }
    let app3_conns = (on("app3", false) + on("app3", true)) as u64;
    let redirected = xdp_counter(&e, "redirect") - redirected_before;
    // Each connection sends at least SYN, ACK, request and FIN through the balancer.
    assert!(
        redirected >= 4 * app3_conns,
        "{redirected} frames redirected for {app3_conns} connections to app3"
    );
    // Sticky across the interfaces: every source again lands where it did.
    for (s, b) in &pins {
        assert_eq!(&e.get_vip(*s).unwrap(), b, "{s} moved");
    }
    let table = e.table("be_app").unwrap();
    assert!(table.iter().any(|(_, srv)| srv == "app3"), "{table:?}");

    // A reload naming an interface that does not exist is refused; nothing moves.
    e.write_config(&with_app3("eth9")).unwrap();
    e.signal_agent(libc::SIGHUP);
    assert!(
        e.wait_until(Duration::from_secs(5), || e.agent_log().contains(
            "service \"be_app\", server \"app3\", field \"interface\": \"eth9\" does not exist"
        )),
        "{}",
        e.agent_log()
    );
    for (s, b) in pins.iter().take(60) {
        assert_eq!(&e.get_vip(*s).unwrap(), b, "{s} moved after a refused reload");
    }
}

/// Removes a second agent's pins and lock file (also on panic).
struct PinsGuard(std::path::PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        let _ = xlb::datapath::remove_pins(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(xlb::agent::lock_path(&self.0));
    }
}

/// Two balancers on one bridge, each the other's peer: the environment's agent (lb1) and a
/// second agent (lb2) with its own pins, socket and config, both holding the same peer key.
/// `extra_peers` names more peers of lb1: hosts on the bridge that the test plays itself.
struct Replicas {
    e: LbEnv,
    lb2: harness::HostId,
    /// Hosts of the extra peers, in the order named.
    extra: Vec<harness::HostId>,
    key: Vec<u8>,
    socket2: std::path::PathBuf,
    config2: std::path::PathBuf,
    log2: std::path::PathBuf,
    agent2: Option<harness::ChildGuard>,
    _pins2: PinsGuard,
}

fn replicas(name: &str, opts: Opts, extra_peers: &[&str]) -> Replicas {
    let mut e = LbEnv::new(name, opts).unwrap_or_else(|err| panic!("building the harness: {err:#}"));
    let lb2 = e.topo.add_host("lb2").unwrap();
    let extra: Vec<harness::HostId> = extra_peers.iter().map(|r| e.topo.add_host(r).unwrap()).collect();
    let port = e.topo.host(lb2).port.clone();
    harness::netns::run_in(e.topo.switch_ns(), move || {
        xlb::datapath::attach_pass_program(&port)
    })
    .unwrap()
    .unwrap();
    let (ip1, ip2) = (e.topo.host(e.lb).ipv4, e.topo.host(lb2).ipv4);
    // One key for the group, in a file only root may read.
    let key: Vec<u8> = xlb::control::peers::wire::random_nonce()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes();
    let key_file = e.dir.join("peer.key");
    std::fs::write(&key_file, &key).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let socket2 = e.dir.join("admin2.sock");
    let bpffs2 = std::path::PathBuf::from(format!("{}-lb2", e.bpffs.display()));
    let pins2 = PinsGuard(bpffs2.clone());
    let base = e.config_text(4);
    let with_peers = |listen: std::net::Ipv4Addr, peers: &[(&str, std::net::Ipv4Addr)]| {
        let mut t = base.replacen(
            "[global]\n",
            &format!(
                "[global]\npeer_listen = \"{listen}:7000\"\npeer_key_file = \"{}\"\n",
                key_file.display()
            ),
            1,
        );
        for (name, addr) in peers {
            t.push_str(&format!(
                "\n[[peer]]\nname = \"{name}\"\naddress = \"{addr}:7000\"\n"
            ));
        }
        t
    };
    let mut peers1 = vec![("lb2", ip2)];
    for (role, h) in extra_peers.iter().zip(&extra) {
        peers1.push((role, e.topo.host(*h).ipv4));
    }
    e.write_config(&with_peers(ip1, &peers1)).unwrap();
    let config2 = e.dir.join("xlb2.toml");
    std::fs::write(
        &config2,
        with_peers(ip2, &[("lb1", ip1)])
            .replace(&e.socket.display().to_string(), &socket2.display().to_string())
            .replace(&e.bpffs.display().to_string(), &bpffs2.display().to_string()),
    )
    .unwrap();
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    let mut r = Replicas {
        e,
        lb2,
        extra,
        key,
        socket2,
        config2,
        log2: std::path::PathBuf::new(),
        agent2: None,
        _pins2: pins2,
    };
    r.log2 = r.e.dir.join("agent-lb2.log");
    r.start2();
    assert!(
        r.e.wait_until(Duration::from_secs(20), || r.api2("show peers").contains("lb1 ")
            && r.api2("show peers").contains(" CONNECTED ")
            && r.e
                .api("show peers")
                .unwrap()
                .lines()
                .any(|l| l.starts_with("lb2 ") && l.contains(" CONNECTED "))),
        "peers did not connect:\n{}\n{}\n{}",
        r.api2("show peers"),
        r.e.agent_log(),
        r.log2()
    );
    r
}

impl Replicas {
    /// (Re)start the second agent (kill -9 the running one first).
    fn start2(&mut self) {
        if let Some(a) = self.agent2.take() {
            a.kill();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log2)
            .unwrap();
        let mut cmd = std::process::Command::new(harness::lbenv::xlb_bin());
        cmd.args(["run", "-c"])
            .arg(&self.config2)
            .args(["--netns", &self.e.topo.host(self.lb2).ns])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        self.agent2 = Some(self.e.topo.spawn_here(cmd).unwrap());
    }

    fn api2(&self, cmd: &str) -> String {
        harness::lbenv::api_at(&self.socket2, cmd).unwrap_or_default()
    }

    fn log2(&self) -> String {
        std::fs::read_to_string(&self.log2).unwrap_or_default()
    }
}

/// A column of `peer`'s row in `show peers`, by the header's name for it.
fn peer_column(show_peers: &str, peer: &str, column: &str) -> u64 {
    let header: Vec<&str> = show_peers
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split_whitespace()
        .collect();
    let i = header
        .iter()
        .position(|h| *h == column)
        .unwrap_or_else(|| panic!("no column {column}: {show_peers}"));
    show_peers
        .lines()
        .find(|l| l.starts_with(&format!("{peer} ")))
        .and_then(|l| l.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {column} for {peer}: {show_peers}"))
}

/// Update lines (the frames' payload) pinning `clients` of `service` to `server`.
fn update_lines(service: &str, clients: impl Iterator<Item = IpAddr>, server: &str) -> String {
    clients.map(|c| format!("{service} {c} 0 {server} 0\n")).collect()
}

/// One line from a peer connection (at most 128 bytes), without its newline.
fn read_peer_line(s: &mut std::net::TcpStream) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 128 {
        if s.read(&mut b)? == 0 {
            anyhow::bail!("closed after {line:?}");
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8(line)?);
        }
        line.push(b[0]);
    }
    anyhow::bail!("line too long")
}

/// Play a peer's sender on `s`: authenticate with `key`, send `lines` in frames, close, and
/// wait for the other side to close.
fn peer_send(s: &mut std::net::TcpStream, key: &[u8], lines: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use xlb::control::peers::wire as peer_wire;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mine = peer_wire::random_nonce()?;
    s.write_all(peer_wire::hello(&mine).as_bytes())?;
    let theirs = peer_wire::check_challenge(key, &mine, &read_peer_line(s)?)?;
    s.write_all(peer_wire::response(key, &mine, &theirs).as_bytes())?;
    let mut w = peer_wire::FrameWriter::new(key, &mine, &theirs);
    for p in peer_wire::split_frames(lines) {
        s.write_all(&w.seal(p))?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(s, &mut sink);
    Ok(())
}

/// Play a peer's receiver on `s`: authenticate the connecting agent with `key`.
fn peer_accept(s: &mut std::net::TcpStream, key: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use xlb::control::peers::wire as peer_wire;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let theirs = peer_wire::parse_hello(&read_peer_line(s)?)?;
    let mine = peer_wire::random_nonce()?;
    s.write_all(peer_wire::challenge(key, &theirs, &mine).as_bytes())?;
    peer_wire::check_response(key, &theirs, &mine, &read_peer_line(s)?)?;
    Ok(())
}

#[test]
fn s14_peers_share_the_stick_table_so_clients_keep_their_backend_on_another_balancer() {
    let opts = Opts {
        v6_sources: 0,
        metrics: Some("127.0.0.1:9100".into()),
        ..Default::default()
    };
    let mut r = replicas("peers", opts, &[]);
    let e = &r.e;
    let lb2 = r.lb2;
    let ip1 = e.topo.host(e.lb).ipv4;

    // Only peers may send: a connection from the client host is refused and counted.
    let (src, to): (IpAddr, std::net::SocketAddr) = (e.topo.host(e.client).ipv4.into(), (ip1, 7000).into());
    let _ = e
        .topo
        .worker(e.client)
        .unwrap()
        .run(move || harness::client::connect_from(src, to, Duration::from_secs(2)));
    assert!(
        e.wait_until(Duration::from_secs(5), || e
            .api("show peers")
            .unwrap()
            .contains("refused (not from a peer's address): 1")),
        "{}",
        e.api("show peers").unwrap()
    );

    // On the first balancer only, app1 takes no new clients while they arrive: about a quarter
    // of them, whom Maglev gives app1, are pinned elsewhere there. Then app1 is back.
    assert_eq!(e.api("set server be_app/app1 state drain").unwrap().trim(), "");
    let pins = pin_all(e, &e.sources4);
    assert!(pins.values().all(|b| b != "app1"));
    assert_eq!(e.api("set server be_app/app1 state ready").unwrap().trim(), "");

    // The second balancer learns every entry from its peer.
    let learned = |want: &HashMap<IpAddr, String>| {
        let t = r.api2("show table be_app");
        want.iter().all(|(s, b)| {
            t.lines()
                .find(|l| l.contains(&format!("key={s} ")))
                .is_some_and(|l| l.ends_with(&format!("server_key={b}")))
        })
    };
    assert!(
        e.wait_until(Duration::from_secs(10), || learned(&pins)),
        "lb2 did not learn the table:\n{}\n{}",
        r.api2("show peers"),
        r.api2("show table be_app")
    );
    // The first balancer's metrics show the peer's families, and promtool accepts them.
    let answer = harness::metrics::scrape(e, "127.0.0.1:9100");
    let text = harness::metrics::checked_text(&answer);
    assert_eq!(
        harness::metrics::sample(text, "xlb_peer_connected{peer=\"lb2\"} "),
        1.0
    );
    assert!(
        harness::metrics::sample(text, "xlb_peer_updates_sent_total{peer=\"lb2\"} ") >= pins.len() as f64,
        "{text}"
    );
    assert_eq!(
        harness::metrics::sample(text, "xlb_peer_connections_refused_total "),
        1.0
    );
    for m in [
        "xlb_peer_updates_received_total{peer=\"lb2\"} ",
        "xlb_peer_auth_failures_total{peer=\"lb2\"} ",
        "xlb_peer_write_timeouts_total{peer=\"lb2\"} ",
        "xlb_peer_connections_refused_busy_total ",
    ] {
        harness::metrics::sample(text, m);
    }

    // The clients move to the second balancer (as after a VRRP failover or an ECMP change):
    // every one keeps its backend.
    e.topo
        .route_vip_via(e.client, harness::topology::VIP4.into(), lb2)
        .unwrap();
    for (s, b) in &pins {
        assert_eq!(
            &e.get_vip(*s).unwrap(),
            b,
            "{s} changed backend on the second balancer"
        );
    }
    let peers2 = r.api2("show peers");
    assert!(
        peer_column(&peers2, "lb1", "applied") >= pins.len() as u64,
        "{peers2}"
    );
    assert_eq!(peer_column(&peers2, "lb1", "bad_auth"), 0, "{peers2}");

    // Without the learned entries the test would have seen moves: cleared, the second
    // balancer sends Maglev's app1 share there.
    assert_eq!(r.api2("clear table be_app").trim(), "");
    let fresh = pin_all(e, &e.sources4);
    let moved = pins.iter().filter(|(s, b)| &fresh[*s] != *b).count();
    assert!(
        moved >= 10,
        "only {moved} of {} clients would have moved",
        pins.len()
    );
    assert!(fresh.values().any(|b| b == "app1"));

    // A peer that restarts is taught the whole table again when the connection comes back.
    let n = pins.len() as u64;
    r.start2();
    assert!(
        r.e.wait_until(Duration::from_secs(15), || {
            let p = r.api2("show peers");
            p.contains("lb1 ") && peer_column(&p, "lb1", "received") >= n
        }),
        "the restarted peer was not taught the table:\n{}\n{}",
        r.api2("show peers"),
        r.log2()
    );
}

/// A balancer with a spare host (app5) and 200 IPv4 sources, each pinned by one connection,
/// then reloaded with `servers` (see `LbEnv::config_text_with`). Returns the pins, the sources
/// pinned to app4 and the others.
fn reload_after_pinning_app4s_clients(
    name: &str,
    servers: impl Fn(&str) -> Vec<usize>,
) -> (LbEnv, HashMap<IpAddr, String>, Vec<IpAddr>, Vec<IpAddr>) {
    let e = env(
        name,
        Opts {
            v4_sources: 200,
            v6_sources: 0,
            spare_backends: 1,
            ..Default::default()
        },
    );
    let pins = pin_all(&e, &e.sources4);
    let (orphans, others) = split(&pins, "app4");
    assert!(orphans.len() >= 20, "{} of 200 sources on app4", orphans.len());
    e.write_config(&e.config_text_with(servers)).unwrap();
    e.signal_agent(libc::SIGHUP);
    (e, pins, orphans, others)
}

/// Issue 9, item 1: a reload that removes a server of one service and adds one to another
/// used to hand the freed backend id to the new server while the removed server's stick
/// entries survived, so the removed server's clients were sent to the other service's server.
#[test]
fn removed_server_id_reused_by_another_service_never_receives_its_clients() {
    // One reload: be_app loses app4; dns (another service) gains app5 (the spare host).
    let (e, pins, orphans, others) = reload_after_pinning_app4s_clients("idreuse", |svc| match svc {
        "be_app" => vec![0, 1, 2],
        "dns" => vec![0, 1, 2, 3, 4],
        _ => vec![0, 1, 2, 3],
    });
    wait_state(&e, "dns", "app5", "UP", Duration::from_secs(10));
    // Requests prove it: app4's clients land on be_app's remaining servers, never on app5.
    for s in &orphans {
        let b = e
            .get_vip(*s)
            .unwrap_or_else(|err| panic!("{s} (pinned to the removed app4) failed: {err:#}"));
        assert!(
            ["app1", "app2", "app3"].contains(&b.as_str()),
            "{s} of be_app was pinned to the removed app4 and went to {b} after the reload"
        );
    }
    for s in &others {
        assert_eq!(
            e.get_vip(*s).unwrap(),
            pins[s],
            "{s} moved although its server stayed"
        );
    }
    // The table never names a server of another service, and the removed server's entries
    // are purged (every entry names one of be_app's servers).
    let purged = e.wait_until(Duration::from_secs(5), || {
        e.table("be_app").is_ok_and(|t| {
            t.len() == 200
                && t.iter()
                    .all(|(_, srv)| ["app1", "app2", "app3"].contains(&srv.as_str()))
        })
    });
    assert!(purged, "show table be_app: {:?}", e.table("be_app"));
    assert!(
        e.agent_log().contains("of removed services or servers"),
        "{}",
        e.agent_log()
    );
}

/// A reload that renames a server (be_app: app4 out, app5 in) handed the removed server's id to
/// the new one in that same apply: app4's stick entries then named app5, were never purged (the
/// id had an owner again), and would send app4's clients to app5 once it came up.
#[test]
fn server_renamed_by_a_reload_inherits_none_of_the_old_ones_clients() {
    let (e, pins, orphans, others) = reload_after_pinning_app4s_clients("rename", |svc| match svc {
        "be_app" => vec![0, 1, 2, 4],
        _ => vec![0, 1, 2, 3],
    });
    wait_state(&e, "be_app", "app5", "UP", Duration::from_secs(10));
    // app4's entries are purged; none came to name app5, which no client has reached yet.
    let purged = e.wait_until(Duration::from_secs(5), || {
        e.table("be_app").is_ok_and(|t| {
            t.len() == others.len()
                && t.iter()
                    .all(|(_, srv)| ["app1", "app2", "app3"].contains(&srv.as_str()))
        })
    });
    assert!(purged, "show table be_app: {:?}", e.table("be_app"));
    for s in &others {
        assert_eq!(
            e.get_vip(*s).unwrap(),
            pins[s],
            "{s} moved although its server stayed"
        );
    }
    for s in &orphans {
        e.get_vip(*s)
            .unwrap_or_else(|err| panic!("{s} (pinned to the removed app4) failed: {err:#}"));
    }
}

/// Issue 9, item 5: pins of an older layout (format 1: xlb up to c887b59, no XLB_META) are
/// migrated, not misread: every name keeps its id, every stick entry its server, and a
/// server's runtime admin state survives the upgrade.
#[test]
fn format1_pins_are_migrated_keeping_ids_entries_and_admin_states() {
    use harness::raw_pins::{self, ARRAY, DEVMAP, LRU_HASH, PERCPU_ARRAY};
    use lb_common::{MAX_SERVICES, StickEntry, StickKey};
    let e = LbEnv::new(
        "format1",
        Opts {
            v4_sources: 50,
            v6_sources: 0,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    let maps = e.bpffs.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    let mut fds = std::collections::HashMap::new();
    for (name, t, k, v, max) in [
        ("XLB_VIPS", ARRAY, 4, 32, 2048),
        ("XLB_VIP_ACTIVE", ARRAY, 4, 4, 1),
        ("XLB_SERVICES", ARRAY, 4, 40, 32),
        ("XLB_ACTIVE", ARRAY, 4, 4, 32),
        ("XLB_MAGLEV", ARRAY, 4, 4, 32 * 2 * 65537),
        ("XLB_BACKENDS", ARRAY, 4, 20, 4096),
        ("XLB_STICK", LRU_HASH, 24, 16, 10_000),
        ("XLB_TX_PORTS", DEVMAP, 4, 8, 64),
        ("XLB_GSTATS", PERCPU_ARRAY, 4, 8, 17),
        ("XLB_SSTATS", PERCPU_ARRAY, 4, 72, 32),
        ("XLB_BSTATS", PERCPU_ARRAY, 4, 16, 4096),
        ("XLB_NAMES", ARRAY, 4, 64, 32 + 4096),
        ("XLB_LIMITS", ARRAY, 4, 8, 1),
        ("XLB_NEW_ENTRIES", PERCPU_ARRAY, 4, 16, 1),
    ] {
        let fd = raw_pins::create(t, k, v, max).unwrap();
        raw_pins::pin(&fd, &maps.join(name)).unwrap();
        fds.insert(name, fd);
    }
    let name_slot = |s: &str| {
        let mut v = [0u8; 64];
        v[..s.len()].copy_from_slice(s.as_bytes());
        v
    };
    // Ids an agent of format 1 gave: services 0..3, be_app's servers at 10..13 (not what a
    // fresh start would give them).
    for (i, s) in ["be_app", "be_app6", "dns"].iter().enumerate() {
        raw_pins::update(&fds["XLB_NAMES"], &(i as u32).to_ne_bytes(), &name_slot(s)).unwrap();
    }
    for n in 1..=4u32 {
        let id = 9 + n;
        let slot = MAX_SERVICES + id;
        raw_pins::update(
            &fds["XLB_NAMES"],
            &slot.to_ne_bytes(),
            &name_slot(&format!("be_app/app{n}")),
        )
        .unwrap();
        // Format 1's Backend: mac, src_mac, tx_port, state, 3 bytes of padding. app2 drained
        // at run time (its config says ready); MACs unknown (the agent resolves them).
        let mut b = [0u8; 20];
        b[16] = if n == 2 {
            lb_common::BACKEND_DRAIN
        } else {
            lb_common::BACKEND_UP
        };
        raw_pins::update(&fds["XLB_BACKENDS"], &id.to_ne_bytes(), &b).unwrap();
    }
    // Every source pinned to app3 (id 12): Maglev alone would spread them over four servers.
    let now = xlb::datapath::coarse_now_ns();
    for s in &e.sources4 {
        let IpAddr::V4(a) = s else { unreachable!() };
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&a.octets());
        let k = StickKey::new(addr, 0, 0, lb_common::FAMILY_V4);
        let v = StickEntry {
            last_seen_ns: now,
            backend: 12,
            _pad: 0,
        };
        raw_pins::update(&fds["XLB_STICK"], bytemuck::bytes_of(&k), bytemuck::bytes_of(&v)).unwrap();
    }
    drop(fds);
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent on format-1 pins: {err:#}"));
    assert!(e.agent_log().contains("are format 1"), "{}", e.agent_log());
    assert!(!e.bpffs.join("maps_format1").exists(), "the old pins are removed");
    assert!(e.bpffs.join("maps/XLB_META").exists());
    let table = e.table("be_app").unwrap();
    assert_eq!(table.len(), 50, "{table:?}");
    assert!(table.iter().all(|(_, s)| s == "app3"), "{table:?}");
    assert_eq!(e.server_state("be_app", "app2").unwrap(), "DRAIN");
    for s in &e.sources4 {
        assert_eq!(e.get_vip(*s).unwrap(), "app3", "{s} lost its migrated entry");
    }
    // A second start adopts the new pins as they are.
    e.stop_agent().expect("agent exited");
    e.start_agent().unwrap();
    assert_eq!(e.table("be_app").unwrap(), table);
    assert_eq!(e.server_state("be_app", "app2").unwrap(), "DRAIN");
    // An agent that stopped after the new program ran but before it removed the old pins: the
    // next start keeps the new maps (the migration was complete) and removes what is left.
    e.stop_agent().expect("agent exited");
    let left = e.bpffs.join("maps_format1");
    std::fs::create_dir_all(&left).unwrap();
    let stale = raw_pins::create(ARRAY, 4, 4, 1).unwrap();
    raw_pins::pin(&stale, &left.join("XLB_VIP_ACTIVE")).unwrap();
    drop(stale);
    e.start_agent().unwrap();
    assert!(!left.exists(), "the finished migration's old pins are removed");
    assert_eq!(e.table("be_app").unwrap(), table);
}

/// Issue 9, item 5: after the LB's interface went away and came back (its namespace deleted
/// and made again), a restarted agent exited with "bpf_link_update failed: Link has been
/// severed (os error 67)". It attaches afresh with one warning and keeps the maps.
#[test]
fn severed_link_after_the_interface_was_recreated_is_replaced_keeping_the_maps() {
    let mut e = env(
        "severed",
        Opts {
            v4_sources: 50,
            v6_sources: 0,
            ..Default::default()
        },
    );
    let pins = pin_all(&e, &e.sources4);
    e.stop_agent().expect("agent exited");
    e.replug_lb().unwrap();
    e.start_agent()
        .unwrap_or_else(|err| panic!("restart over a severed link: {err:#}"));
    let log = e.agent_log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("is severed"),
        "one warning line:\n{log}"
    );
    assert_eq!(e.table("be_app").unwrap().len(), 50, "the stick table was kept");
    for s in &e.sources4 {
        assert_eq!(e.get_vip(*s).unwrap(), pins[s], "{s} moved across the re-attach");
    }
}

/// Issue 9, item 5: a changed `interface` was silently ignored at restart (the pinned link
/// stayed where it was). A reload refuses it by name; a restart moves the program.
#[test]
fn changed_interface_is_refused_by_reload_and_moves_the_link_at_restart() {
    let mut e = LbEnv::new(
        "ifmove",
        Opts {
            v4_sources: 10,
            v6_sources: 0,
            ..Default::default()
        },
    )
    .unwrap_or_else(|err| panic!("building the harness: {err:#}"));
    let far = e.topo.add_linked_host("far", e.lb, "eth1").unwrap();
    let _ = far;
    e.start_agent().unwrap();
    let xdp_on = |ifname: &str| {
        e.topo
            .exec(e.lb, &["ip", "-d", "link", "show", ifname])
            .unwrap()
            .contains("prog/xdp")
    };
    assert!(xdp_on("eth0") && !xdp_on("eth1"));
    let moved = e
        .config_text(4)
        .replace("interface = \"eth0\"", "interface = \"eth1\"");
    e.write_config(&moved).unwrap();
    e.signal_agent(libc::SIGHUP);
    let refused = e.wait_until(Duration::from_secs(5), || {
        e.agent_log().contains("reload refused") && e.agent_log().contains("interface")
    });
    assert!(refused, "{}", e.agent_log());
    assert!(
        xdp_on("eth0") && !xdp_on("eth1"),
        "a refused reload changes nothing"
    );
    e.stop_agent().expect("agent exited");
    e.start_agent().unwrap();
    assert!(xdp_on("eth1"), "the program runs on the configured interface");
    assert!(!xdp_on("eth0"), "and no longer on the old one");
    assert!(
        e.agent_log().contains("the config names eth1"),
        "{}",
        e.agent_log()
    );
}

#[test]
fn s15_peers_updates_without_the_key_change_nothing() {
    let opts = Opts {
        v6_sources: 0,
        v4_sources: 40,
        ..Default::default()
    };
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
    // The three attempts with the wrong key or none, and the four that said nothing.
    assert_eq!(peer_column(&peers, "lb2", "bad_auth"), 7, "{peers}");
    assert_eq!(peer_column(&peers, "lb2", "applied"), 0, "{peers}");
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
        v6_sources: 0,
        v4_sources: 40,
        stick_size: 20_000,
        ..Default::default()
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
        v6_sources: 0,
        v4_sources: 10,
        stick_size: 100,
        ..Default::default()
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

/// Issue 9, item 4: a backend's MAC was resolved once and never refreshed. After a NIC swap or
/// a VM move, health checks passed (they use the kernel's neighbour table) while every frame the
/// data path forwarded went to the old MAC. Here a backend changes its MAC and announces it as a
/// host does (gratuitous ARP, unsolicited neighbour advertisement); once the LB's kernel has the
/// new MAC, the clients pinned to that backend are served by it again within a second, and no
/// client changes backend.
#[test]
fn backend_mac_change_is_followed_without_moving_clients() {
    let e = env(
        "macmove",
        Opts {
            backends: 2,
            v4_sources: 40,
            v6_sources: 10,
            ..Default::default()
        },
    );
    let mut pins = pin_all(&e, &e.sources4);
    pins.extend(pin_all(&e, &e.sources6));
    let victim = pins[&e.sources4[0]].clone();
    let host = e.backends[backend_index(&victim)];
    let h = e.topo.host(host).clone();
    let pinned_to_victim: Vec<IpAddr> = pins
        .iter()
        .filter(|(_, b)| **b == victim)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        pinned_to_victim.iter().any(|s| s.is_ipv4()) && pinned_to_victim.iter().any(|s| s.is_ipv6()),
        "the test needs clients of both families on {victim}: {pins:?}"
    );

    // The new NIC: another MAC, announced when it changes.
    let new_mac = format!("02:77:00:00:0a:{:02x}", h.n);
    e.topo
        .sysctl(
            host,
            &[
                ("net.ipv4.conf.eth0.arp_notify", "1"),
                ("net.ipv6.conf.eth0.ndisc_notify", "1"),
            ],
        )
        .unwrap();
    e.topo
        .exec(host, &["ip", "link", "set", "dev", "eth0", "address", &new_mac])
        .unwrap();

    // The LB's kernel learns it (from the announcement; its health checks would too, later).
    let has_new_mac = |a: IpAddr| {
        e.topo
            .exec(e.lb, &["ip", "neigh", "show", &a.to_string(), "dev", "eth0"])
            .is_ok_and(|o| o.contains(&new_mac))
    };
    let t0 = std::time::Instant::now();
    while !(has_new_mac(h.ipv4.into()) && has_new_mac(h.ipv6.into())) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the LB's neighbour table did not learn {new_mac} for {victim}:\n{}",
            e.topo.exec(e.lb, &["ip", "neigh", "show"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let learned = std::time::Instant::now();

    // Within a second of that, every client pinned to the victim is served by it again.
    for s in &pinned_to_victim {
        let served = loop {
            match e
                .topo
                .http_get(e.client, *s, vip_of(*s), Duration::from_millis(200))
            {
                Ok(b) => break b,
                Err(err) => assert!(
                    learned.elapsed() < Duration::from_secs(1),
                    "{s} (pinned to {victim}) still not served 1 s after the LB's kernel learned \
                     {new_mac}: {err:#}\nshow servers state:\n{}",
                    e.api("show servers state be_app").unwrap_or_default()
                ),
            }
        };
        assert_eq!(served, victim, "{s} changed backend");
    }
    eprintln!(
        "{} clients pinned to {victim} served again {:?} after the LB learned its new MAC",
        pinned_to_victim.len(),
        learned.elapsed()
    );
    // And nobody moved.
    for (s, b) in &pins {
        assert_eq!(&e.get_vip(*s).unwrap(), b, "{s} changed backend");
    }
    assert!(
        e.agent_log()
            .contains(&format!("changed from 02:77:00:00:00:{:02x} to {new_mac}", h.n)),
        "{}",
        e.agent_log()
    );
}

fn vip_of(src: IpAddr) -> std::net::SocketAddr {
    if src.is_ipv4() {
        harness::lbenv::VIP4_HTTP
    } else {
        harness::lbenv::VIP6_HTTP
    }
}

/// Every service has a table of its own `stick.size`: a reload that changes one service's size
/// keeps its entries (a smaller table keeps the most recently seen), touches no other service,
/// and a restarted agent adopts the tables as they are.
#[test]
fn s18_stick_size_change_on_reload_keeps_the_entries_and_survives_a_restart() {
    let e = env(
        "sticksize",
        Opts {
            v4_sources: 100,
            v6_sources: 10,
            stick_size: 1000,
            ..Default::default()
        },
    );
    let pins = pin_all(&e, &e.sources4);
    pin_all(&e, &e.sources6);
    let header = |svc: &str| {
        e.api(&format!("show table {svc}"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    let before = e.table("be_app").unwrap();
    let before6 = e.table("be_app6").unwrap();
    assert_eq!(before.len(), 100);
    assert_eq!(header("be_app"), "# table: be_app, type: ip, size:1000, used:100");
    let resize = |size: u32| {
        // be_app is the first service of the config.
        let text = e
            .config_text(e.opts.backends)
            .replacen("size = 1000,", &format!("size = {size},"), 1);
        e.write_config(&text).unwrap();
        e.signal_agent(libc::SIGHUP);
        let want = format!("size:{size},");
        assert!(
            e.wait_until(Duration::from_secs(10), || header("be_app").contains(&want)),
            "be_app's table did not become {size} entries: {}\n{}",
            header("be_app"),
            e.agent_log()
        );
    };
    resize(4000);
    assert_eq!(
        e.table("be_app").unwrap(),
        before,
        "a bigger table keeps every entry"
    );
    assert_eq!(
        e.table("be_app6").unwrap(),
        before6,
        "another service is untouched"
    );
    assert!(header("be_app6").contains("size:1000,"), "{}", header("be_app6"));
    for (s, b) in &pins {
        assert_eq!(&e.get_vip(*s).unwrap(), b, "{s} stays on its server");
    }
    assert!(
        e.agent_log()
            .contains("stick table resized from 1000 to 4000 entries (100 entries copied)")
    );

    resize(60);
    let small = e.table("be_app").unwrap();
    assert!(
        (1..=60).contains(&small.len()),
        "a table of 60 holds {} entries",
        small.len()
    );
    for entry in &small {
        assert!(before.contains(entry), "{entry:?} was not in the table before");
    }

    e.kill_agent();
    e.start_agent().unwrap();
    assert!(header("be_app").contains("size:60,"), "{}", header("be_app"));
    assert_eq!(
        e.table("be_app").unwrap(),
        small,
        "the restarted agent adopts the table"
    );
    assert_eq!(e.table("be_app6").unwrap(), before6);
}

/// One datagram of `size` bytes from `src` to `dst` (the client's kernel fragments it: the MTU
/// is 1500); the name of the server that answered, within 2 s.
fn big_udp_query(e: &LbEnv, src: IpAddr, dst: std::net::SocketAddr, size: usize) -> Result<String, String> {
    let r = e.topo.run_in(e.client, move || -> std::io::Result<String> {
        let s = std::net::UdpSocket::bind((src, 0))?;
        s.connect(dst)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send(&vec![b'q'; size])?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    });
    match r {
        Ok(Ok(name)) => Ok(name),
        Ok(Err(err)) => Err(format!("{src} -> {dst}: {err}")),
        Err(err) => Err(format!("{src} -> {dst}: {err:#}")),
    }
}

/// Two UDP services on one VIP address, on disjoint servers (dns: app1, app2 on port 53;
/// dns2: app3, app4 on port 5353). Datagrams too big for the MTU reach the LB as fragments;
/// each must be reassembled and answered by a server of its own service, the one its client is
/// pinned to. (Later fragments once went to the first service on the address: no answer.)
#[test]
fn s19_fragmented_datagrams_reach_their_own_services_server_on_a_shared_vip() {
    let e = LbEnv::new(
        "frag",
        Opts {
            v4_sources: 20,
            v6_sources: 0,
            ..Default::default()
        },
    )
    .unwrap_or_else(|err| panic!("building the harness (needs root): {err:#}"));
    let vip2 = std::net::SocketAddr::new(harness::lbenv::VIP4_UDP.ip(), 5353);
    let _udp2: Vec<harness::BackendServer> = (2..4)
        .map(|i| {
            harness::BackendServer::start(&e.topo, e.backends[i], &format!("app{}", i + 1), 5353, None)
                .unwrap_or_else(|err| panic!("UDP server on app{}: {err:#}", i + 1))
        })
        .collect();
    let mut config = e.config_text(2);
    config.push_str(&format!(
        "\n[[service]]\nname = \"dns2\"\nvip = \"{vip2}\"\nprotocol = \"udp\"\nstick = {{ on = \"src\", size = 10000, expire = \"30m\" }}\n\
         health = {{ type = \"tcp\", port = 80, inter = \"200ms\", timeout = \"500ms\", rise = 2, fall = 3 }}\n"
    ));
    for i in 2..4 {
        let addr = e.topo.host(e.backends[i]).ipv4;
        config.push_str(&format!(
            "[[service.server]]\nname = \"app{}\"\naddress = \"{addr}\"\n",
            i + 1
        ));
    }
    e.write_config(&config).unwrap();
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    for (svc, srv) in [
        ("dns", "app1"),
        ("dns", "app2"),
        ("dns2", "app3"),
        ("dns2", "app4"),
    ] {
        wait_state(&e, svc, srv, "UP", Duration::from_secs(5));
    }
    for s in &e.sources4 {
        // A whole datagram first: it pins the client in each service.
        let small = big_udp_query(&e, *s, vip2, 16).unwrap_or_else(|err| panic!("small datagram: {err}"));
        for (dst, servers) in [
            (harness::lbenv::VIP4_UDP, ["app1", "app2"]),
            (vip2, ["app3", "app4"]),
        ] {
            let name = big_udp_query(&e, *s, dst, 3000)
                .unwrap_or_else(|err| panic!("a fragmented datagram got no answer: {err}"));
            assert!(
                servers.contains(&name.as_str()),
                "{s} -> {dst}: answered by {name}, not by a server of the service"
            );
            if dst == vip2 {
                assert_eq!(
                    name, small,
                    "{s}: a fragmented datagram goes to the client's server"
                );
            }
        }
    }
    let info = e.api("show info").unwrap();
    let counter = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("Xdp_{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Xdp_{name} in show info:\n{info}"))
    };
    assert!(
        counter("fragment") >= 3 * 2 * e.sources4.len() as u64,
        "the datagrams must have crossed the LB as fragments:\n{info}"
    );
    assert_eq!(
        counter("fragment_no_record"),
        0,
        "no fragment overtook its first:\n{info}"
    );
}

/// A reload that changes a service's affinity (here its IPv4 prefix) changes what its stick
/// keys mean: that service's table is dropped, entries and all, and it starts afresh keyed the
/// new way; another service's table is untouched.
#[test]
fn affinity_change_on_reload_drops_only_that_services_entries() {
    let e = env(
        "rekey",
        Opts {
            v4_sources: 40,
            v6_sources: 10,
            ..Default::default()
        },
    );
    pin_all(&e, &e.sources4);
    pin_all(&e, &e.sources6);
    assert_eq!(e.table("be_app").unwrap().len(), 40);
    let before6 = e.table("be_app6").unwrap();
    assert_eq!(before6.len(), 10);
    let old = "name = \"be_app\"\nvip = \"10.77.200.1:80\"\nprotocol = \"tcp\"\nstick = { on = \"src\",";
    let text = e.config_text(4);
    assert!(text.contains(old), "{text}");
    let new = text.replacen(old, &format!("{old} ipv4_prefix = 24,"), 1);
    e.write_config(&new).unwrap();
    e.signal_agent(libc::SIGHUP);
    assert!(
        e.wait_until(Duration::from_secs(5), || e
            .agent_log()
            .contains("service be_app: affinity changed")),
        "{}",
        e.agent_log()
    );
    assert_eq!(e.table("be_app").unwrap(), Vec::new(), "be_app starts afresh");
    assert_eq!(e.table("be_app6").unwrap(), before6, "be_app6 is untouched");
    // Keyed by /24 now: the 40 sources (one /24 here) share one entry.
    pin_all(&e, &e.sources4);
    let t = e.table("be_app").unwrap();
    let nets: std::collections::HashSet<_> = e
        .sources4
        .iter()
        .map(|s| match s {
            IpAddr::V4(a) => [a.octets()[0], a.octets()[1], a.octets()[2]],
            IpAddr::V6(_) => unreachable!(),
        })
        .collect();
    assert_eq!(t.len(), nets.len(), "one entry per /24: {t:?}");
    assert!(t.iter().all(|(k, _)| k.ends_with(".0")), "{t:?}");
}
