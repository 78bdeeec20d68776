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
    let capacity: u32 = e
        .api("show info")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("StickTableCapacity: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let n = (10 * capacity).min(16382);
    let sent = e.syn_flood(n, harness::lbenv::VIP4_HTTP).unwrap();
    assert_eq!(sent, n);
    let info = e.api("show info").unwrap();
    let syns: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Xdp_syn_no_insert: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        syns >= n as u64,
        "the data path saw the flood ({syns} bare SYNs of {n})"
    );
    let after = e.table("be_app").unwrap();
    assert_eq!(
        before, after,
        "the flood of {n} spoofed sources (10 x capacity {capacity}) must not touch the table"
    );
    for (s, b) in &pins {
        assert_eq!(&e.get_vip(*s).unwrap(), b);
    }
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

#[test]
fn s14_peers_share_the_stick_table_so_clients_keep_their_backend_on_another_balancer() {
    let opts = Opts {
        v6_sources: 0,
        ..Default::default()
    };
    let mut e = LbEnv::new("peers", opts).unwrap_or_else(|err| panic!("building the harness: {err:#}"));
    // A second balancer on the same bridge, with its own pins, socket and config.
    let lb2 = e.topo.add_host("lb2").unwrap();
    let port = e.topo.host(lb2).port.clone();
    harness::netns::run_in(e.topo.switch_ns(), move || {
        xlb::datapath::attach_pass_program(&port)
    })
    .unwrap()
    .unwrap();
    let (ip1, ip2) = (e.topo.host(e.lb).ipv4, e.topo.host(lb2).ipv4);
    let socket2 = e.dir.join("admin2.sock");
    let bpffs2 = std::path::PathBuf::from(format!("{}-lb2", e.bpffs.display()));
    let _pins2 = PinsGuard(bpffs2.clone());
    let base = e.config_text(4);
    let with_peer = |listen: std::net::Ipv4Addr, name: &str, other: std::net::Ipv4Addr| {
        format!(
            "{}\n[[peer]]\nname = \"{name}\"\naddress = \"{other}:7000\"\n",
            base.replacen(
                "[global]\n",
                &format!("[global]\npeer_listen = \"{listen}:7000\"\n"),
                1
            )
        )
    };
    e.write_config(&with_peer(ip1, "lb2", ip2)).unwrap();
    let config2 = e.dir.join("xlb2.toml");
    std::fs::write(
        &config2,
        with_peer(ip2, "lb1", ip1)
            .replace(&e.socket.display().to_string(), &socket2.display().to_string())
            .replace(&e.bpffs.display().to_string(), &bpffs2.display().to_string()),
    )
    .unwrap();
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    let log2 = e.dir.join("agent-lb2.log");
    let spawn2 = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log2)
            .unwrap();
        let mut cmd = std::process::Command::new(harness::lbenv::xlb_bin());
        cmd.args(["run", "-c"])
            .arg(&config2)
            .args(["--netns", &e.topo.host(lb2).ns])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        e.topo.spawn_here(cmd).unwrap()
    };
    let agent2 = spawn2();
    let api2 = |cmd: &str| harness::lbenv::api_at(&socket2, cmd).unwrap_or_default();
    let log_of_2 = || std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(
        e.wait_until(Duration::from_secs(20), || api2("show peers").contains("lb1 ")
            && api2("show peers").contains(" CONNECTED ")
            && e.api("show peers").unwrap().contains(" CONNECTED ")),
        "peers did not connect:\n{}\n{}\n{}",
        api2("show peers"),
        e.agent_log(),
        log_of_2()
    );

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
    let pins = pin_all(&e, &e.sources4);
    assert!(pins.values().all(|b| b != "app1"));
    assert_eq!(e.api("set server be_app/app1 state ready").unwrap().trim(), "");

    // The second balancer learns every entry from its peer.
    let learned = |want: &HashMap<IpAddr, String>| {
        let t = api2("show table be_app");
        want.iter().all(|(s, b)| {
            t.lines()
                .find(|l| l.contains(&format!("key={s} ")))
                .is_some_and(|l| l.ends_with(&format!("server_key={b}")))
        })
    };
    assert!(
        e.wait_until(Duration::from_secs(10), || learned(&pins)),
        "lb2 did not learn the table:\n{}\n{}",
        api2("show peers"),
        api2("show table be_app")
    );

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
    let peers2 = api2("show peers");
    let applied: u64 = peers2
        .lines()
        .find(|l| l.starts_with("lb1 "))
        .and_then(|l| l.split_whitespace().nth(6))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(applied >= pins.len() as u64, "{peers2}");

    // Without the learned entries the test would have seen moves: cleared, the second
    // balancer sends Maglev's app1 share there.
    assert_eq!(api2("clear table be_app").trim(), "");
    let fresh = pin_all(&e, &e.sources4);
    let moved = pins.iter().filter(|(s, b)| &fresh[*s] != *b).count();
    assert!(
        moved >= 10,
        "only {moved} of {} clients would have moved",
        pins.len()
    );
    assert!(fresh.values().any(|b| b == "app1"));

    // A peer that restarts is taught the whole table again when the connection comes back.
    agent2.kill();
    let _agent2 = spawn2();
    let received = |peers: &str| -> u64 {
        peers
            .lines()
            .find(|l| l.starts_with("lb1 "))
            .and_then(|l| l.split_whitespace().nth(5))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        e.wait_until(Duration::from_secs(15), || received(&api2("show peers"))
            >= pins.len() as u64),
        "the restarted peer was not taught the table:\n{}\n{}",
        api2("show peers"),
        log_of_2()
    );
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
fn s15_fragmented_datagrams_reach_their_own_services_server_on_a_shared_vip() {
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
