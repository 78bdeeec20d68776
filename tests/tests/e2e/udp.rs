//! UDP services: stickiness and failover, fragmented datagrams on a shared VIP.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use harness::lbenv::{LbEnv, Opts, env};

use crate::{backend_index, split, wait_state};

#[test]
fn s09_udp_stickiness_and_failover() {
    let mut e = env("udp", Opts::sources(50, 0));
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
    let e = LbEnv::new("frag", Opts::sources(20, 0))
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
