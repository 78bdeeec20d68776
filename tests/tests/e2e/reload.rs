//! Reloads (SIGHUP): added servers, bad input refused, freed ids, stick sizes, affinity changes.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use harness::lbenv::{LbEnv, Opts, env};

use crate::{pin_all, split, wait_state};

#[test]
fn s06_backend_added_with_sighup() {
    let e = env(
        "sighup",
        Opts {
            spare_backends: 1,
            ..Opts::sources(1200, 0)
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

#[test]
fn s11_bad_input_is_refused_and_nothing_running_is_disturbed() {
    let e = env("badinput", Opts::sources(20, 0));
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
            spare_backends: 1,
            ..Opts::sources(200, 0)
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

/// Every service has a table of its own `stick.size`: a reload that changes one service's size
/// keeps its entries (a smaller table keeps the most recently seen), touches no other service,
/// and a restarted agent adopts the tables as they are.
#[test]
fn s18_stick_size_change_on_reload_keeps_the_entries_and_survives_a_restart() {
    let e = env(
        "sticksize",
        Opts {
            stick_size: 1000,
            ..Opts::sources(100, 10)
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

/// A reload that changes a service's affinity (here its IPv4 prefix) changes what its stick
/// keys mean: that service's table is dropped, entries and all, and it starts afresh keyed the
/// new way; another service's table is untouched.
#[test]
fn affinity_change_on_reload_drops_only_that_services_entries() {
    let e = env("rekey", Opts::sources(40, 10));
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
