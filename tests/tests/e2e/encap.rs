//! Backends a route away (issue 13): `xlb decap` on backends behind a router, first with
//! packets the test encapsulates itself (no balancer), then through the balancer's IPIP and GUE
//! modes: stickiness for 200 sources, failover with redispatch, and a service mixing an L2
//! server with two routed ones.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use harness::{
    lbenv::{Forward, LbEnv, Opts},
    routed::{Encap, GUE_PORT, encapsulated_query},
    topology::{HOST_IF, VIP4, VIP6},
};
use lb_common::decap_stat;

/// The decapsulator's counters on backend `i`, read from its pins.
fn decap_counters(e: &LbEnv, i: usize) -> xlb::datapath::decap::DecapCounters {
    let ns = &e.topo.host(e.backends[i]).ns;
    let base = xlb::datapath::decap::base_dir(Some(ns));
    xlb::datapath::decap::status(HOST_IF, &base)
        .unwrap_or_else(|err| panic!("xlb decap status of backend {i}: {err:#}"))
        .counters
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
                        encapsulated_query(src, backend, SocketAddr::new(vip, 53), how, timeout)
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
                Duration::from_millis(300),
            )
        })
        .unwrap();
    assert!(answer.is_err(), "a packet to a non-VIP was answered: {answer:?}");
    assert_eq!(decap_counters(&e, 0).get(decap_stat::FOREIGN), before + 1);
}
