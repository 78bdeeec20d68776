//! Interfaces and neighbours: XDP_REDIRECT to another interface, a severed or moved link,
//! a backend's MAC change.

use std::{net::IpAddr, time::Duration};

use harness::lbenv::{LbEnv, Opts, env};

use crate::{backend_index, pin_all, wait_state};

/// `Xdp_<name>` from `show info`.
pub(crate) fn xdp_counter(e: &LbEnv, name: &str) -> u64 {
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

/// Issue 9, item 5: after the LB's interface went away and came back (its namespace deleted
/// and made again), a restarted agent exited with "bpf_link_update failed: Link has been
/// severed (os error 67)". It attaches afresh with one warning and keeps the maps.
#[test]
fn severed_link_after_the_interface_was_recreated_is_replaced_keeping_the_maps() {
    let mut e = env("severed", Opts::sources(50, 0));
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
    let mut e = LbEnv::new("ifmove", Opts::sources(10, 0))
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
    // The servers stay on eth0's segment: each names it (an "l2" server must be on a network
    // of the interface it is reached by, which the agent checks at start).
    let moved = e
        .config_text(4)
        .replace("interface = \"eth0\"", "interface = \"eth1\"")
        .replace(
            "[[service.server]]\n",
            "[[service.server]]\ninterface = \"eth0\"\n",
        );
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
            ..Opts::sources(40, 10)
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
            match e.topo.http_get(
                e.client,
                *s,
                harness::lbenv::http_vip(*s),
                Duration::from_millis(200),
            ) {
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
