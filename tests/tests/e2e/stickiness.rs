//! Stickiness: every source keeps its backend (IPv4, IPv6), entries expire when idle, a
//! spoofed SYN flood evicts no established client, and the seed article's socat check.

use std::{collections::HashMap, time::Duration};

use harness::lbenv::{Opts, env};

use crate::pin_all;

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

#[test]
fn s05_expiry_removes_idle_entries() {
    let e = env(
        "expiry",
        Opts {
            expire: "5s".into(),
            ..Opts::sources(4, 0)
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

/// A spoofed SYN flood whose sources exist: the backends' SYN-ACKs reach a kernel that owns the
/// spoofed addresses, and it answers each with an RST through the balancer (issue 9, item 2:
/// those RSTs used to create one entry each). Neither the SYNs nor the RSTs may touch the table.
#[test]
fn s10_spoofed_syn_flood_evicts_no_established_client() {
    let mut e = env(
        "synflood",
        Opts {
            stick_size: 300,
            ..Opts::sources(100, 0)
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
fn s12_the_seeds_verification_with_socat() {
    let e = env("seed", Opts::sources(10, 0));
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
