//! Backends a route away (issue 13): `xlb decap` on backends behind a router, first with
//! packets the test encapsulates itself (no balancer), then through the balancer's IPIP and GUE
//! modes: stickiness for 200 sources, failover with redispatch, a service mixing an L2 server
//! with two routed ones, and the decapsulator at tc (`--hook tc`) with bulk uploads.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use harness::{
    lbenv::{Forward, LbEnv, Opts, env, http_vip},
    routed_backends::{Encap, GUE_PORT, InnerChecksum, encapsulated_query},
    topology::{HOST_IF, VIP4, VIP6},
};
use lb_common::decap_stat;
use xlb::datapath::decap::Hook;

use crate::pin_all;

/// The decapsulator on backend `i`, read from its pins.
fn decap_status(e: &LbEnv, i: usize) -> xlb::datapath::decap::Attachment {
    let ns = &e.topo.host(e.backends[i]).ns;
    let base = xlb::datapath::decap::base_dir(Some(ns));
    xlb::datapath::decap::status(HOST_IF, &base)
        .unwrap_or_else(|err| panic!("xlb decap status of backend {i}: {err:#}"))
}

/// The decapsulator's counters on backend `i`.
fn decap_counters(e: &LbEnv, i: usize) -> xlb::datapath::decap::DecapCounters {
    decap_status(e, i).counters
}

#[test]
fn decap_on_routed_backends_delivers_ipip_and_gue_from_a_raw_socket() {
    let e = LbEnv::new(
        "decap_raw",
        Opts {
            backends: 2,
            routed: 2,
            forward: vec![Forward::Ipip, Forward::Gue],
            ..Opts::sources(2, 2)
        },
    )
    .unwrap_or_else(|err| panic!("building the harness (needs root): {err:#}"));
    let timeout = Duration::from_secs(2);
    for (i, b) in e.backends.iter().enumerate() {
        let host = e.topo.host(*b).clone();
        let mut sent = 0;
        for (src, vip) in [
            (e.sources4[0], IpAddr::V4(VIP4)),
            (e.sources6[0], IpAddr::V6(VIP6)),
        ] {
            for how in [Encap::Ipip, Encap::Gue(GUE_PORT)] {
                let backend = host.addr_like(src);
                let answer = e
                    .topo
                    .run_in(e.client, move || {
                        encapsulated_query(
                            src,
                            backend,
                            SocketAddr::new(vip, 53),
                            how,
                            InnerChecksum::Right,
                            timeout,
                        )
                    })
                    .unwrap()
                    .unwrap_or_else(|err| panic!("{how:?} from {src} to {}: {err:#}", host.role));
                assert_eq!(answer, format!("app{}", i + 1), "{how:?} from {src}");
                sent += 1;
            }
        }
        let c = decap_counters(&e, i);
        assert_eq!(c.get(decap_stat::DECAPSULATED), sent, "backend {i}: {c:?}");
        assert_eq!(c.get(decap_stat::MALFORMED), 0, "backend {i}: {c:?}");
    }

    // Encapsulated, but to an address that is not a VIP here (the router's): left alone,
    // counted as foreign, and never answered.
    let host = e.topo.host(e.backends[0]).clone();
    let router = e.topo.by_role("router").expect("a router");
    let (src, other) = (e.sources4[1], IpAddr::V4(e.topo.host(router).ipv4));
    let before = decap_counters(&e, 0).get(decap_stat::FOREIGN);
    let answer = e
        .topo
        .run_in(e.client, move || {
            encapsulated_query(
                src,
                host.addr_like(src),
                SocketAddr::new(other, 53),
                Encap::Ipip,
                InnerChecksum::Right,
                Duration::from_millis(300),
            )
        })
        .unwrap();
    assert!(answer.is_err(), "a packet to a non-VIP was answered: {answer:?}");
    assert_eq!(decap_counters(&e, 0).get(decap_stat::FOREIGN), before + 1);
}

/// `xlb --netns NS decap ARGS`: (success, stdout, stderr).
fn decap_cli(ns: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(harness::lbenv::xlb_bin())
        .args(["--netns", ns, "decap"])
        .args(args)
        .output()
        .expect("run xlb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn decap_cli_attaches_shows_detaches_and_refuses_what_is_wrong() {
    let mut topo = harness::Topology::new("decap_cli").expect("topology (needs root)");
    let be = topo.add_host("be").unwrap();
    let other = topo.add_host("busy").unwrap();
    let ns = topo.host(be).ns.clone();
    let base = xlb::datapath::decap::base_dir(Some(&ns));
    // Whatever happens below, nothing stays pinned.
    struct Unpin(std::path::PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = xlb::datapath::decap::detach(HOST_IF, &self.0);
        }
    }
    let _unpin = Unpin(base.clone());
    let vip4 = VIP4.to_string();
    let vip6 = VIP6.to_string();

    let refusals: [(&[&str], &str); 5] = [
        (
            &["attach", "-i", "nope0", "--vip", &vip4],
            "interface \"nope0\" does not exist",
        ),
        (
            &["attach", "-i", HOST_IF, "--vip", "0.0.0.0"],
            "not a unicast address",
        ),
        (
            &["attach", "-i", HOST_IF, "--vip", "::ffff:10.77.200.1"],
            "give the IPv4 address itself",
        ),
        (&["detach", "-i", HOST_IF], "not attached to eth0"),
        (
            &["attach", "-i", HOST_IF, "--vip", &vip4, "--hook", "nic"],
            "invalid value 'nic' for '--hook <HOOK>'",
        ),
    ];
    for (args, says) in refusals {
        let (ok, _, err) = decap_cli(&ns, args);
        assert!(
            !ok && err.contains(says),
            "xlb decap {args:?}: expected a refusal saying {says:?}, got: {err}"
        );
    }
    assert!(!base.exists(), "a refused attach leaves no pins");

    let (ok, out, err) = decap_cli(
        &ns,
        &[
            "attach",
            "-i",
            HOST_IF,
            "--vip",
            &vip4,
            "--vip",
            &vip6,
            "--gue-port",
            "6080",
        ],
    );
    assert!(ok, "attach: {err}");
    assert!(
        out.contains("decapsulating on eth0") && out.contains("UDP port 6080"),
        "{out}"
    );
    let (ok, _, err) = decap_cli(&ns, &["attach", "-i", HOST_IF, "--vip", &vip4]);
    assert!(
        !ok && err.contains("already attached to eth0"),
        "second attach: {err}"
    );
    let (ok, out, _) = decap_cli(&ns, &["show"]);
    assert!(
        ok && out.contains("hook: xdp")
            && out.contains(&format!("vips: {vip4} {vip6}"))
            && out.contains("decapsulated: 0"),
        "{out}"
    );

    let (ok, _, err) = decap_cli(&ns, &["detach", "-i", HOST_IF]);
    assert!(ok, "detach: {err}");
    assert!(!base.exists(), "detach removes the pins");
    let (ok, out, _) = decap_cli(&ns, &["show"]);
    assert!(ok && out.contains("not attached anywhere"), "{out}");

    // At tc: attached, shown, refused a second time (at either hook), detached.
    let (ok, out, err) = decap_cli(&ns, &["attach", "-i", HOST_IF, "--vip", &vip4, "--hook", "tc"]);
    assert!(ok && out.contains("(tc ingress)"), "attach --hook tc: {out}{err}");
    let (ok, out, _) = decap_cli(&ns, &["show", "-i", HOST_IF]);
    assert!(
        ok && out.contains("hook: tc") && out.contains(&format!("vips: {vip4}\n")),
        "{out}"
    );
    for hook in ["tc", "xdp"] {
        let (ok, _, err) = decap_cli(&ns, &["attach", "-i", HOST_IF, "--vip", &vip4, "--hook", hook]);
        assert!(
            !ok && err.contains("already attached to eth0"),
            "attach --hook {hook} over tc: {err}"
        );
    }
    let (ok, _, err) = decap_cli(&ns, &["detach", "-i", HOST_IF]);
    assert!(ok, "detach from tc: {err}");
    assert!(!base.exists(), "detach removes the tc link's pins");

    // An interface that runs another XDP program (here the harness's pass program).
    topo.run_in(other, || xlb::datapath::attach_pass_program(HOST_IF))
        .unwrap()
        .unwrap();
    let busy_ns = topo.host(other).ns.clone();
    let _unpin_busy = Unpin(xlb::datapath::decap::base_dir(Some(&busy_ns)));
    let (ok, _, err) = decap_cli(&busy_ns, &["attach", "-i", HOST_IF, "--vip", &vip4]);
    assert!(
        !ok && err.contains("already has an XDP program"),
        "attach over another program: {err}"
    );
    assert!(
        !xlb::datapath::decap::base_dir(Some(&busy_ns))
            .join(HOST_IF)
            .exists()
    );
    // tc ingress is another hook: the decapsulator goes there beside the XDP program.
    let (ok, out, err) = decap_cli(
        &busy_ns,
        &["attach", "-i", HOST_IF, "--vip", &vip4, "--hook", "tc"],
    );
    assert!(
        ok && out.contains("(tc ingress)"),
        "attach --hook tc beside XDP: {out}{err}"
    );
    let (ok, _, err) = decap_cli(&busy_ns, &["detach", "-i", HOST_IF]);
    assert!(ok, "detach: {err}");
    topo.cleanup().unwrap();
}

/// Two backends behind the router, be1 reached by IPIP and be2 by GUE.
fn routed_opts(v4: usize, v6: usize) -> Opts {
    Opts {
        backends: 2,
        routed: 2,
        forward: vec![Forward::Ipip, Forward::Gue],
        ..Opts::sources(v4, v6)
    }
}

fn routed_env(test_name: &str, v4: usize, v6: usize) -> LbEnv {
    env(test_name, routed_opts(v4, v6))
}

/// Every backend `i` whose server encapsulates decapsulated traffic, and nothing was malformed
/// or fragmented on the way.
fn assert_decapsulated(e: &LbEnv, routed: &[usize]) {
    for i in 0..e.backends.len() {
        let c = decap_counters(e, i);
        let got = c.get(decap_stat::DECAPSULATED);
        if routed.contains(&i) {
            assert!(
                got > 0,
                "backend {i} is reached encapsulated, yet decapsulated nothing: {c:?}"
            );
        } else {
            assert_eq!(got, 0, "backend {i} is reached by L2: {c:?}");
        }
        assert_eq!(c.get(decap_stat::MALFORMED), 0, "backend {i}: {c:?}");
        assert_eq!(c.get(decap_stat::FRAGMENTED), 0, "backend {i}: {c:?}");
    }
}

#[test]
fn encap_stickiness_for_200_sources_through_ipip_and_gue_v4_v6() {
    let e = routed_env("encap_stick", 200, 200);
    for (family, sources) in [("IPv4", &e.sources4), ("IPv6", &e.sources6)] {
        let first = pin_all(&e, sources);
        let used: std::collections::HashSet<&String> = first.values().collect();
        assert_eq!(used.len(), 2, "{family}: both routed backends serve: {used:?}");
        for round in 1..3 {
            for s in sources.iter() {
                let b = e
                    .get_vip(*s)
                    .unwrap_or_else(|err| panic!("{family} round {round}, {s}: {err:#}"));
                assert_eq!(
                    b, first[s],
                    "{family} round {round}: {s} moved from {} to {b}",
                    first[s]
                );
            }
        }
    }
    assert_eq!(e.table("be_app").unwrap().len(), 200);
    assert_eq!(e.table("be_app6").unwrap().len(), 200);
    assert_decapsulated(&e, &[0, 1]);
}

#[test]
fn encap_failover_with_redispatch() {
    let mut e = routed_env("encap_failover", 60, 0);
    let sources = e.sources4.clone();
    crate::failover::fail_over_and_back(&mut e, &sources);
    assert_decapsulated(&e, &[0, 1]);
}

#[test]
fn mixed_service_with_one_l2_server_and_two_routed_ones() {
    let e = env(
        "encap_mixed",
        Opts {
            backends: 3,
            routed: 2,
            forward: vec![Forward::Ipip, Forward::Gue, Forward::L2],
            ..Opts::sources(200, 0)
        },
    );
    let first = pin_all(&e, &e.sources4);
    let mut count = std::collections::HashMap::<&String, usize>::new();
    for b in first.values() {
        *count.entry(b).or_default() += 1;
    }
    assert_eq!(count.len(), 3, "all three servers serve: {count:?}");
    for s in &e.sources4 {
        assert_eq!(e.get_vip(*s).unwrap(), first[s], "{s} moved");
    }
    assert_decapsulated(&e, &[0, 1]);
}

/// The data path encapsulates only through a next hop the kernel has a neighbour entry for,
/// and nothing in it makes the kernel resolve one. Here the LB's entry for the router is gone,
/// the router has a permanent entry for the LB (so it never asks the LB, which would teach the
/// LB its address), the VIP is blackholed on the LB (as README advises: what the data path
/// passes is not routed on) and the health checks are a day apart (their first one falls at
/// random within the first interval, and a check would resolve the router too): only the
/// agent's probe after the FIB misses resolves the router again. Without it no client gets
/// through.
#[test]
fn a_lost_next_hop_is_resolved_again_after_fib_misses() {
    let e = env(
        "encap_rehop",
        Opts {
            inter: "24h".into(),
            rise: 1,
            ..routed_opts(4, 0)
        },
    );
    let s = e.sources4[0];
    e.get_vip(s).expect("served before the next hop is lost");
    let router = e.topo.by_role("router").expect("a router");
    let (lb, r) = (e.topo.host(e.lb), e.topo.host(router));
    let lb_mac = xlb::net::neigh::format_mac(&lb.mac);
    let (lb_addr, r_addr) = (lb.ipv4.to_string(), r.ipv4.to_string());
    e.topo
        .exec(
            router,
            &[
                "ip",
                "neigh",
                "replace",
                &lb_addr,
                "lladdr",
                &lb_mac,
                "nud",
                "permanent",
                "dev",
                &r.ifname,
            ],
        )
        .unwrap();
    e.topo
        .exec(e.lb, &["ip", "route", "add", "blackhole", &format!("{VIP4}/32")])
        .unwrap();
    e.topo
        .exec(e.lb, &["ip", "neigh", "del", &r_addr, "dev", HOST_IF])
        .unwrap();
    // The data path's next-hop cache holds a FIB answer for a second.
    std::thread::sleep(Duration::from_millis(1500));
    let misses_before = crate::interfaces::xdp_counter(&e, "encap_fib_miss");
    let t0 = std::time::Instant::now();
    let served = loop {
        // An attempt's SYNs are FIB misses until the probe's answer is in.
        if let Ok(b) = e.get_vip(s) {
            break b;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no answer 10 s after the LB's entry for the router went; LB neighbours:\n{}",
            e.topo.exec(e.lb, &["ip", "neigh", "show"]).unwrap_or_default()
        );
    };
    let misses = crate::interfaces::xdp_counter(&e, "encap_fib_miss") - misses_before;
    assert!(
        misses > 0,
        "the first SYN after the loss must have missed the FIB (else nothing was tested)"
    );
    eprintln!(
        "served by {served} {:?} after the next hop was lost, {misses} FIB misses",
        t0.elapsed()
    );
}

/// The decapsulator at tc ingress (`--hook tc`, for veth backends such as containers): the same
/// stickiness through IPIP and GUE, v4 and v6, and 1 MiB uploads through the VIP, whose full-size
/// segments the balancer first answers with "fragmentation needed" / "packet too big" (they
/// would not fit the link once encapsulated), and which then reach the backend's tc hook
/// GRO'd by the router and the backend's veth, many segments in one packet (IPIP: 26 to 28
/// decapsulations per upload when written), or one by one (GUE, whose port the kernel does not
/// know: about 770).
#[test]
fn tc_decap_keeps_stickiness_and_carries_bulk_uploads() {
    let e = env(
        "encap_tc",
        Opts {
            decap_hook: Hook::Tc,
            ..routed_opts(40, 40)
        },
    );
    for i in 0..e.backends.len() {
        assert_eq!(decap_status(&e, i).hook, Hook::Tc, "backend {i}");
    }
    // As from a real switch: the client's segments reach the balancer one by one.
    e.topo.set_port_gro(e.client, false).unwrap();
    let body = vec![b'x'; 1 << 20];
    for (family, sources) in [("IPv4", &e.sources4), ("IPv6", &e.sources6)] {
        let first = pin_all(&e, sources);
        let used: std::collections::HashSet<&String> = first.values().collect();
        assert_eq!(used.len(), 2, "{family}: both routed backends serve: {used:?}");
        for s in sources.iter() {
            let b = e
                .get_vip(*s)
                .unwrap_or_else(|err| panic!("{family} again, {s}: {err:#}"));
            assert_eq!(b, first[s], "{family}: {s} moved from {} to {b}", first[s]);
        }
        // One upload to each backend (by IPIP and by GUE).
        let too_big = crate::interfaces::xdp_counter(&e, "encap_too_big");
        for server in used {
            let s = *first.iter().find(|(_, b)| *b == server).unwrap().0;
            let body = body.clone();
            let r = e
                .topo
                .run_in(e.client, move || {
                    harness::client::http_post(s, http_vip(s), &body, Duration::from_secs(20))
                })
                .unwrap()
                .unwrap_or_else(|err| {
                    panic!(
                        "{family}: 1 MiB upload from {s}: {err:#}\nshow info:\n{}\nclient's route: {}\ndecap: {:?} {:?}",
                        e.api("show info").unwrap_or_default(),
                        e.topo.exec(e.client, &["ip", "route", "get", &http_vip(s).ip().to_string()]).unwrap_or_default(),
                        decap_counters(&e, 0),
                        decap_counters(&e, 1),
                    )
                });
            assert_eq!(r.status, 200, "{family}: upload from {s}");
            assert_eq!(&r.served_by, server, "{family}: upload from {s}");
        }
        assert!(
            crate::interfaces::xdp_counter(&e, "encap_too_big") > too_big,
            "{family}: the uploads' full-size segments were first answered with ICMP too big"
        );
    }
    assert_decapsulated(&e, &[0, 1]);
}

/// A packet whose inner checksum is wrong is stripped, then dropped by the backend's stack (no
/// answer), at both hooks, for IPIP and, at tc, for GUE. Not at XDP for GUE: there the skb's
/// "checksum verified" mark, set for the outer UDP header (by the NIC, or here by GRO at the
/// bridge port, which takes a zero UDP checksum as verified), stays on the inner packet, whose
/// own checksum the stack then never checks (README says so; the tc hook resets that mark).
#[test]
fn a_wrong_inner_checksum_is_dropped_after_decapsulation() {
    for hook in Hook::ALL {
        let e = env(
            "encap_badsum",
            Opts {
                decap_hook: hook,
                ..routed_opts(1, 1)
            },
        );
        for (i, b) in e.backends.iter().enumerate() {
            let host = e.topo.host(*b).clone();
            for (src, vip) in [
                (e.sources4[0], IpAddr::V4(VIP4)),
                (e.sources6[0], IpAddr::V6(VIP6)),
            ] {
                for how in [Encap::Ipip, Encap::Gue(GUE_PORT)] {
                    if hook == Hook::Xdp && matches!(how, Encap::Gue(_)) {
                        continue;
                    }
                    let backend = host.addr_like(src);
                    let vip = SocketAddr::new(vip, 53);
                    let what = format!("{hook}, backend {i}, {how:?} from {src}");
                    let ask = |checksum, timeout| {
                        e.topo
                            .run_in(e.client, move || {
                                encapsulated_query(src, backend, vip, how, checksum, timeout)
                            })
                            .unwrap()
                    };
                    let before = decap_counters(&e, i).get(decap_stat::DECAPSULATED);
                    let bad = ask(InnerChecksum::Wrong, Duration::from_millis(300));
                    assert!(
                        bad.is_err(),
                        "{what}: a wrong inner checksum was answered: {bad:?}"
                    );
                    assert_eq!(
                        decap_counters(&e, i).get(decap_stat::DECAPSULATED),
                        before + 1,
                        "{what}: the packet was stripped (the stack dropped it)"
                    );
                    let good = ask(InnerChecksum::Right, Duration::from_secs(2))
                        .unwrap_or_else(|err| panic!("{what}: the same query, whole: {err:#}"));
                    assert_eq!(good, format!("app{}", i + 1), "{what}");
                }
            }
        }
    }
}
