//! Restarts and upgrades under load: kill -9, graceful upgrade, pins of an older format.

use std::{net::IpAddr, time::Duration};

use harness::lbenv::{LbEnv, Opts, env};

use crate::{load, pin_all};

fn restart_under_load(name: &str, kill: bool) {
    let e = env(name, Opts::sources(100, 0));
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

/// Issue 9, item 5: pins of an older layout (format 1: xlb up to c887b59, no XLB_META) are
/// migrated, not misread: every name keeps its id, every stick entry its server, and a
/// server's runtime admin state survives the upgrade.
#[test]
fn format1_pins_are_migrated_keeping_ids_entries_and_admin_states() {
    use harness::raw_pins::{self, ARRAY, DEVMAP, LRU_HASH, PERCPU_ARRAY};
    use lb_common::{MAX_SERVICES, StickEntry, StickKey};
    let e = LbEnv::new("format1", Opts::sources(50, 0))
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
            syn_at: 0,
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
