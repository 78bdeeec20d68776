//! The real XDP program and its real maps through BPF_PROG_TEST_RUN: packet fixtures in,
//! verdict, output bytes and stick-table change out. Needs root (CAP_BPF); fails loudly without.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use harness::fixture::*;
use harness::packet::*;
use lb_common::{
    BACKEND_DOWN, BACKEND_DRAIN, BACKEND_MAINT, BACKEND_UP, FAMILY_V4, FAMILY_V6, PROTO_TCP, STICK_NONE,
    STICK_SRC_PORT, StickEntry, StickKey, VipKey, gstat,
};
use xlb::datapath::coarse_now_ns;

fn t4(src: [u8; 4], sport: u16, flags: u8) -> Vec<u8> {
    tcp4(CLIENT_MAC, LB_MAC, src, sport, VIP4, 80, flags)
}

fn t6(src: [u8; 16], sport: u16, flags: u8) -> Vec<u8> {
    tcp6(CLIENT_MAC, LB_MAC, src, sport, VIP6, 80, flags)
}

// --- new client, same client again: IPv4/IPv6 x TCP/UDP ---------------------------------------

#[test]
fn new_client_then_same_client_v4_tcp() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(1);
    assert!(lb.entry(0, v4(c), FAMILY_V4, 0).is_none());
    let b1 = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    let e = lb
        .entry(0, v4(c), FAMILY_V4, 0)
        .expect("the first non-SYN packet creates the entry");
    assert_eq!(e.backend, b1);
    assert!(b1 < 4);
    let b2 = lb.forwarded_to(&t4(c, 40001, TCP_ACK | TCP_PSH));
    assert_eq!(b1, b2, "the same client goes to the same backend");
    assert_eq!(lb.entries().len(), 1);
    assert_eq!(lb.gstat(gstat::Derived::StickHit), 1);
    assert_eq!(lb.gstat(gstat::Derived::StickInsert), 1);
}

#[test]
fn new_client_then_same_client_v4_udp() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(2);
    let f = udp4(CLIENT_MAC, LB_MAC, c, 5000, VIP4, 53);
    let b1 = lb.forwarded_to(&f);
    assert!((4..8).contains(&b1), "service 1 owns backends 4..8, got {b1}");
    assert_eq!(lb.entry(1, v4(c), FAMILY_V4, 0).map(|e| e.backend), Some(b1));
    let b2 = lb.forwarded_to(&udp4(CLIENT_MAC, LB_MAC, c, 5001, VIP4, 53));
    assert_eq!(b1, b2);
    assert_eq!(lb.entries().len(), 1);
}

#[test]
fn new_client_then_same_client_v6_tcp() {
    let mut lb = Lb::new(Svc::default());
    let c = client6(3);
    let b1 = lb.forwarded_to(&t6(c, 40000, TCP_ACK));
    assert!((8..12).contains(&b1));
    assert_eq!(lb.entry(2, c, FAMILY_V6, 0).map(|e| e.backend), Some(b1));
    assert_eq!(lb.forwarded_to(&t6(c, 40001, TCP_ACK)), b1);
    assert_eq!(lb.entries().len(), 1);
}

#[test]
fn new_client_then_same_client_v6_udp() {
    let mut lb = Lb::new(Svc::default());
    let c = client6(4);
    let b1 = lb.forwarded_to(&udp6(CLIENT_MAC, LB_MAC, c, 5000, VIP6, 53));
    assert!((12..16).contains(&b1));
    assert_eq!(lb.entry(3, c, FAMILY_V6, 0).map(|e| e.backend), Some(b1));
    assert_eq!(lb.forwarded_to(&udp6(CLIENT_MAC, LB_MAC, c, 6000, VIP6, 53)), b1);
}

// --- SYN handling -------------------------------------------------------------------------------

#[test]
fn bare_syn_creates_no_entry_and_the_ack_does() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(5);
    let b_syn = lb.forwarded_to(&t4(c, 40000, TCP_SYN));
    assert!(lb.entries().is_empty(), "a bare SYN must not create an entry");
    assert_eq!(lb.gstat(gstat::Counter::SynNoInsert), 1);
    let b_ack = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    assert_eq!(b_syn, b_ack, "the SYN goes by hash, which the ACK then pins");
    assert_eq!(lb.entry(0, v4(c), FAMILY_V4, 0).map(|e| e.backend), Some(b_ack));
    // A SYN of a pinned client uses the entry.
    assert_eq!(lb.forwarded_to(&t4(c, 40002, TCP_SYN)), b_ack);
    assert_eq!(lb.entries().len(), 1);
}

#[test]
fn syn_flood_of_distinct_sources_inserts_nothing() {
    let mut lb = Lb::new(Svc::default());
    for n in 0..200u8 {
        lb.forwarded_to(&t4([10, 77, 9, n], 1000 + n as u16, TCP_SYN));
    }
    assert!(lb.entries().is_empty());
    assert_eq!(lb.gstat(gstat::Counter::SynNoInsert), 200);
}

// --- only a packet that proves a handshake pins (issue 9, item 2) --------------------------------

/// TCP shapes that prove no handshake: what spoofed sources' real owners send back (an RST for
/// a SYN-ACK they never asked for), and what anyone can send from any address.
const NO_HANDSHAKE: [(&str, u8); 7] = [
    ("RST", TCP_RST),
    ("RST+ACK", TCP_RST | TCP_ACK),
    ("SYN+ACK", TCP_SYN | TCP_ACK),
    ("SYN+RST", TCP_SYN | TCP_RST),
    ("FIN", TCP_FIN),
    ("FIN+RST+ACK", TCP_FIN | TCP_RST | TCP_ACK),
    ("no flags", 0),
];

#[test]
fn rst_from_spoofed_sources_creates_no_stick_entry() {
    let mut lb = Lb::new(Svc::default());
    for (i, (what, flags)) in NO_HANDSHAKE.iter().enumerate() {
        let c = [10, 77, 20, i as u8];
        let by_hash = lb.forwarded_to(&t4(c, 40000, *flags));
        assert!(
            lb.entries().is_empty(),
            "{what} from a new client must not create an entry: {:?}",
            lb.entries()
        );
        // It went by hash: to the backend the client's ACK then pins.
        let pinned = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
        assert_eq!(by_hash, pinned, "{what}");
        assert_eq!(
            lb.entry(0, v4(c), FAMILY_V4, 0).map(|e| e.backend),
            Some(pinned),
            "{what}"
        );
        assert!(
            lb.dp
                .stick_delete(&StickKey::new(v4(c), 0, 0, FAMILY_V4))
                .unwrap()
        );
    }
    // And over IPv6.
    let c = client6(20);
    lb.forwarded_to(&t6(c, 40000, TCP_RST));
    assert!(lb.entries().is_empty(), "an IPv6 RST must not create an entry");
    assert_eq!(
        lb.gstat(gstat::Counter::NoHandshakeNoInsert),
        NO_HANDSHAKE.len() as u64 + 1,
        "each counted as forwarded without an entry"
    );
    assert_eq!(
        lb.gstat(gstat::Counter::SynNoInsert),
        0,
        "none of them is a bare SYN"
    );
    assert_eq!(
        lb.gstat(gstat::Derived::StickInsert),
        NO_HANDSHAKE.len() as u64,
        "only the ACKs inserted"
    );
}

/// Only a packet that may create an entry refreshes one: an RST or SYN+ACK with a pinned
/// client's address (spoofed or not) leaves its last-seen time alone, so it still expires.
#[test]
fn rst_and_syn_ack_of_a_pinned_client_refresh_no_stick_entry() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(21);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    let key = StickKey::new(v4(c), 0, 0, FAMILY_V4);
    let old = coarse_now_ns() - 5_000_000_000;
    lb.dp
        .stick_insert(
            key,
            StickEntry {
                last_seen_ns: old,
                backend: b,
                _pad: 0,
            },
        )
        .unwrap();
    for (what, flags) in NO_HANDSHAKE {
        assert_eq!(
            lb.forwarded_to(&t4(c, 40001, flags)),
            b,
            "{what}: the pinned backend"
        );
        assert_eq!(
            lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().last_seen_ns,
            old,
            "{what} refreshed it"
        );
    }
    lb.forwarded_to(&t4(c, 40001, TCP_ACK));
    assert!(
        lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().last_seen_ns > old,
        "an ACK refreshes it"
    );
}

// --- every service its own table (issue 9, item 2) ----------------------------------------------

/// A flood of valid new clients (ACKs, 10 x the table's size) at service 0 (VIP4:80/tcp) fills
/// service 0's own table only: every client of service 1 (VIP4:53/udp) keeps its entry.
#[test]
fn flood_of_one_service_evicts_no_entry_of_another() {
    const SIZE: u32 = 1000;
    let mut lb = Lb::with_capacity(Svc::default(), SIZE);
    let of = |lb: &Lb, service: u16| -> Vec<(StickKey, StickEntry)> {
        let mut v: Vec<_> = lb
            .entries()
            .into_iter()
            .filter(|(k, _)| k.service == service)
            .collect();
        v.sort_by_key(|(k, _)| k.addr);
        v
    };
    for n in 0..500u32 {
        let c = [10, 78, (n >> 8) as u8, n as u8];
        lb.forwarded_to(&udp4(CLIENT_MAC, LB_MAC, c, 5000, VIP4, 53));
    }
    let b_before = of(&lb, 1);
    assert_eq!(b_before.len(), 500);
    for n in 0..10 * SIZE {
        let c = [10, 90, (n >> 8) as u8, n as u8];
        lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    }
    let b_after = of(&lb, 1);
    assert_eq!(
        b_after.len(),
        b_before.len(),
        "a flood of {} new clients at service 0 evicted {} of service 1's {} entries",
        10 * SIZE,
        b_before.len() - b_after.len(),
        b_before.len()
    );
    assert_eq!(b_after, b_before, "service 1's entries are untouched");
    let a = of(&lb, 0).len();
    assert_eq!(lb.dp.stick_capacity_of(0), Some(SIZE), "service 0's own table");
    assert!(
        a <= SIZE as usize && a >= SIZE as usize * 3 / 4,
        "service 0's table is full at its own size: {a} of {SIZE}"
    );
    // The flood's newest clients are the ones it keeps (LRU within the service).
    let last = [10, 90, ((10 * SIZE - 1) >> 8) as u8, (10 * SIZE - 1) as u8];
    assert!(lb.entry(0, v4(last), FAMILY_V4, 0).is_some());
}

// --- expiry -------------------------------------------------------------------------------------

#[test]
fn entry_older_than_expire_is_replaced() {
    let mut lb = Lb::new(Svc {
        expire_s: 5,
        ..Default::default()
    });
    let c = client4(6);
    let natural = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    // An old entry pointing elsewhere, idle for 6 s > 5 s.
    let other = (natural + 1) % 4;
    let key = StickKey::new(v4(c), 0, 0, FAMILY_V4);
    lb.dp
        .stick_insert(
            key,
            StickEntry {
                last_seen_ns: coarse_now_ns() - 6_000_000_000,
                backend: other,
                _pad: 0,
            },
        )
        .unwrap();
    let b = lb.forwarded_to(&t4(c, 40001, TCP_ACK));
    assert_eq!(b, natural, "an expired entry is a miss: Maglev decides again");
    let e = lb.entry(0, v4(c), FAMILY_V4, 0).unwrap();
    assert_eq!(e.backend, natural, "and the entry is overwritten");
    assert!(
        coarse_now_ns() - e.last_seen_ns < 2_000_000_000,
        "with a fresh time"
    );
    assert_eq!(lb.gstat(gstat::Derived::StickExpired), 1);

    // A fresh entry pointing elsewhere is honoured (stickiness beats the hash).
    lb.dp
        .stick_insert(
            key,
            StickEntry {
                last_seen_ns: coarse_now_ns(),
                backend: other,
                _pad: 0,
            },
        )
        .unwrap();
    assert_eq!(lb.forwarded_to(&t4(c, 40002, TCP_ACK)), other);
}

// --- backend down: redispatch on / off ----------------------------------------------------------

#[test]
fn backend_down_with_redispatch_repicks_and_overwrites() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(7);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    lb.set_state(b, BACKEND_DOWN);
    let b2 = lb.forwarded_to(&t4(c, 40001, TCP_ACK));
    assert_ne!(b2, b, "redispatched away from the dead backend");
    assert_eq!(
        lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().backend,
        b2,
        "entry overwritten"
    );
    assert_eq!(lb.gstat(gstat::Derived::Redispatch), 1);
    // The backend returns: the client stays on its new backend.
    lb.set_state(b, BACKEND_UP);
    assert_eq!(lb.forwarded_to(&t4(c, 40002, TCP_ACK)), b2);
}

#[test]
fn backend_down_without_redispatch_stays_pinned_and_counts() {
    let mut lb = Lb::new(Svc {
        redispatch: false,
        ..Default::default()
    });
    let c = client4(8);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    lb.set_state(b, BACKEND_DOWN);
    let seen_before = lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().last_seen_ns;
    assert_eq!(
        lb.forwarded_to(&t4(c, 40001, TCP_ACK)),
        b,
        "HAProxy without redispatch: still pinned"
    );
    assert_eq!(lb.gstat(gstat::Derived::PinnedDown), 1);
    assert_eq!(
        lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().last_seen_ns,
        seen_before,
        "not refreshed, so it can expire"
    );
    // A maintenance backend is treated as down.
    lb.set_state(b, BACKEND_MAINT);
    assert_eq!(lb.forwarded_to(&t4(c, 40002, TCP_ACK)), b);
    assert_eq!(lb.gstat(gstat::Derived::PinnedDown), 2);
}

/// Issue 9, item 1: a stick entry's backend id was trusted by itself; after a reload handed a
/// removed server's id to another service's server, the entry sent its client there.
#[test]
fn stick_entry_naming_another_services_backend_is_a_miss() {
    let mut lb = Lb::new(Svc {
        redispatch: false,
        ..Default::default()
    });
    let c = client4(9);
    // Service 0's client, pinned (as a stale entry would be) to backend 5, which serves service 1.
    let key = StickKey::new(v4(c), 0, 0, FAMILY_V4);
    let stale = StickEntry {
        last_seen_ns: coarse_now_ns(),
        backend: 5,
        _pad: 0,
    };
    lb.dp.stick_insert(key, stale).unwrap();
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    assert!(
        b < 4,
        "service 0's client went to backend {b}, a server of another service"
    );
    assert_eq!(
        lb.entry(0, v4(c), FAMILY_V4, 0).map(|e| e.backend),
        Some(b),
        "re-pinned"
    );
    assert_eq!(lb.gstat(gstat::Counter::StickStale), 1);
    assert_eq!(lb.gstat(gstat::Derived::PinnedDown), 0);
    assert_eq!(lb.forwarded_to(&t4(c, 40001, TCP_ACK)), b, "and then a plain hit");
    assert_eq!(lb.gstat(gstat::Derived::StickHit), 1);
}

/// Issue 9, item 1: an entry naming a removed server (its slot zeroed) sent frames to MAC
/// 00:00:00:00:00:00 when redispatch was off; it is a miss instead.
#[test]
fn stick_entry_naming_a_removed_server_is_a_miss_not_a_zero_mac() {
    let mut lb = Lb::new(Svc {
        redispatch: false,
        ..Default::default()
    });
    let c = client4(10);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    // The agent removes server b: its slot is zeroed and its table slots go to the others.
    lb.states[b as usize] = 0;
    lb.dp.set_backend(b, lb_common::Backend::default()).unwrap();
    lb.rebuild(0);
    let now = lb.forwarded_to(&t4(c, 40001, TCP_ACK));
    assert!(now < 4 && now != b, "went to {now} after backend {b} was removed");
    assert_eq!(lb.gstat(gstat::Counter::StickStale), 1);
    assert_eq!(lb.gstat(gstat::Derived::PinnedDown), 0);
}

#[test]
fn maint_with_redispatch_moves_the_client() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(9);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    lb.set_state(b, BACKEND_MAINT);
    assert_ne!(lb.forwarded_to(&t4(c, 40001, TCP_ACK)), b);
}

// --- drain ----------------------------------------------------------------------------------------

#[test]
fn drain_keeps_pinned_clients_and_takes_no_new_ones() {
    let mut lb = Lb::new(Svc::default());
    // Pin 64 clients, find one backend's clients.
    let mut pinned = Vec::new();
    for n in 0..64u8 {
        pinned.push((n, lb.forwarded_to(&t4(client4(n), 40000, TCP_ACK))));
    }
    let drained = pinned[0].1;
    lb.set_state(drained, BACKEND_DRAIN);
    for (n, b) in &pinned {
        assert_eq!(
            lb.forwarded_to(&t4(client4(*n), 40001, TCP_ACK)),
            *b,
            "pinned client {n} keeps its backend"
        );
    }
    for n in 0..200u8 {
        let b = lb.forwarded_to(&t4([10, 77, 3, n], 40000, TCP_ACK));
        assert_ne!(b, drained, "a new client must never land on a draining backend");
    }
    assert_eq!(lb.gstat(gstat::Derived::Redispatch), 0);
}

// --- prefix masks and affinity modes -----------------------------------------------------------

#[test]
fn prefix_24_sends_one_subnet_to_one_backend() {
    let mut lb = Lb::new(Svc {
        v4_prefix: 24,
        v6_prefix: 64,
        ..Default::default()
    });
    let b = lb.forwarded_to(&t4([10, 77, 5, 1], 40000, TCP_ACK));
    for n in 2..=254u8 {
        assert_eq!(lb.forwarded_to(&t4([10, 77, 5, n], 40000, TCP_ACK)), b);
    }
    assert_eq!(lb.entries().len(), 1, "one entry for the whole /24");
    assert_eq!(lb.entries()[0].0.addr[..4], [10, 77, 5, 0]);
    // IPv6 /64: privacy addresses of one host stay together.
    let mut a = client6(1);
    let b6 = lb.forwarded_to(&t6(a, 40000, TCP_ACK));
    a[8] = 0xab;
    a[15] = 0x99;
    assert_eq!(lb.forwarded_to(&t6(a, 40000, TCP_ACK)), b6);
}

#[test]
fn src_port_affinity_keys_on_address_and_port() {
    let mut lb = Lb::new(Svc {
        stick: STICK_SRC_PORT,
        ..Default::default()
    });
    let c = client4(10);
    let mut backends = std::collections::HashSet::new();
    for p in 0..32u16 {
        let b = lb.forwarded_to(&t4(c, 30000 + p, TCP_ACK));
        assert_eq!(
            lb.entry(0, v4(c), FAMILY_V4, (30000 + p).to_be())
                .map(|e| e.backend),
            Some(b)
        );
        backends.insert(b);
    }
    assert!(backends.len() > 1, "different source ports spread over backends");
    assert_eq!(lb.entries().len(), 32);
}

#[test]
fn none_affinity_uses_no_table() {
    let mut lb = Lb::new(Svc {
        stick: STICK_NONE,
        ..Default::default()
    });
    let f = t4(client4(11), 40000, TCP_ACK);
    let b = lb.forwarded_to(&f);
    assert_eq!(lb.forwarded_to(&f), b, "a 5-tuple always hashes the same");
    assert!(lb.entries().is_empty());
}

// --- passed untouched -------------------------------------------------------------------------

#[test]
fn non_vip_arp_and_unconfigured_port_pass_untouched() {
    let mut lb = Lb::new(Svc::default());
    lb.passed_untouched(
        &tcp4(CLIENT_MAC, LB_MAC, client4(1), 40000, [10, 0, 0, 11], 80, TCP_ACK),
        "non-VIP address",
    );
    lb.passed_untouched(
        &tcp4(CLIENT_MAC, LB_MAC, client4(1), 40000, VIP4, 443, TCP_ACK),
        "VIP on an unconfigured port",
    );
    lb.passed_untouched(
        &udp4(CLIENT_MAC, LB_MAC, client4(1), 40000, VIP4, 80),
        "VIP port of another protocol",
    );
    lb.passed_untouched(&eth([0xff; 6], CLIENT_MAC, None, ETH_P_ARP, &[0u8; 28]), "ARP");
    lb.passed_untouched(
        &eth(
            LB_MAC,
            CLIENT_MAC,
            None,
            ETH_P_IP,
            &ipv4(client4(1), VIP4, 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
        ),
        "ICMP echo to the VIP",
    );
    lb.passed_untouched(
        &tcp6(CLIENT_MAC, LB_MAC, client6(1), 40000, client6(2), 80, TCP_ACK),
        "non-VIP IPv6",
    );
    assert!(lb.entries().is_empty());
    assert_eq!(lb.gstat(gstat::Counter::PassNotVip), 6);
    assert_eq!(lb.gstat(gstat::Counter::ParseError), 0);
}

#[test]
fn port_zero_service_takes_any_port() {
    let mut lb = Lb::new(Svc::default());
    let key = VipKey {
        addr: v4([10, 0, 0, 20]),
        port: 0,
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    let mut vips = lb.dp.vips().unwrap();
    vips.push((key, 0));
    lb.dp.install_vips(&vips).unwrap();
    for port in [22u16, 80, 8443] {
        lb.forwarded_to(&tcp4(
            CLIENT_MAC,
            LB_MAC,
            client4(1),
            40000,
            [10, 0, 0, 20],
            port,
            TCP_ACK,
        ));
    }
}

// --- only frames to our own MAC ----------------------------------------------------------------

#[test]
fn vip_frames_not_addressed_to_our_mac_are_passed_never_forwarded() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(40);
    let foreign = [
        ([0xff; 6], "broadcast"),
        ([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01], "IPv4 multicast"),
        ([0x33, 0x33, 0x00, 0x00, 0x00, 0x01], "IPv6 multicast"),
        ([0x02, 0, 0, 0, 0, 0xbb], "another host's unicast"),
        ([0x02, 0, 0, 0, 0, 0xab], "our MAC but its last byte"),
        ([0x03, 0, 0, 0, 0, 0xaa], "our MAC but its first byte"),
    ];
    for (dst, what) in foreign {
        lb.passed_untouched(&tcp4(CLIENT_MAC, dst, c, 40000, VIP4, 80, TCP_ACK), what);
        lb.passed_untouched(
            &tcp6(CLIENT_MAC, dst, client6(40), 40000, VIP6, 80, TCP_ACK),
            what,
        );
        let tagged = eth(
            dst,
            CLIENT_MAC,
            Some(100),
            ETH_P_IP,
            &ipv4(c, VIP4, 17, &udp(5000, 53, b"q")),
        );
        lb.passed_untouched(&tagged, what);
    }
    assert_eq!(lb.gstat(gstat::Counter::PassNotOurMac), 3 * foreign.len() as u64);
    assert!(lb.entries().is_empty(), "a passed frame creates no entry");
    assert_eq!(lb.gstat(gstat::Derived::Tx), 0);
    assert_eq!(
        lb.dp.service_stats(0).unwrap().packets,
        0,
        "not counted as balanced"
    );
    // The same client, addressed to us, is balanced.
    lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    assert_eq!(lb.gstat(gstat::Derived::Rx), 3 * foreign.len() as u64 + 1);
}

#[test]
fn data_path_picks_the_maglev_slot_of_the_flow_hash() {
    use lb_common::hash::{affinity_hash, five_tuple_hash};
    let mut lb = Lb::new(Svc::default());
    let table = lb.maglev_table(0);
    // The golden value pinned in lb-common's hash test: client 10.77.0.3.
    let golden = [10, 77, 0, 3];
    assert_eq!(affinity_hash(&v4(golden), 0, FAMILY_V4), 0x6fd7_060d);
    assert_eq!(
        lb.forwarded_to(&t4(golden, 40000, TCP_ACK)),
        table[(0x6fd7_060d % M) as usize]
    );
    for n in 1..=50 {
        let c = client4(n);
        let h = affinity_hash(&v4(c), 0, FAMILY_V4);
        assert_eq!(
            lb.forwarded_to(&t4(c, 40000, TCP_ACK)),
            table[(h % M) as usize],
            "client {c:?}"
        );
    }
    let table6 = lb.maglev_table(2);
    for n in 1..=20 {
        let c = client6(n);
        let h = affinity_hash(&c, 0, FAMILY_V6);
        assert_eq!(
            lb.forwarded_to(&t6(c, 40000, TCP_ACK)),
            table6[(h % M) as usize],
            "client {c:?}"
        );
    }
    // stick.on = "none": the 5-tuple hash.
    let mut lb = Lb::new(Svc {
        stick: STICK_NONE,
        ..Default::default()
    });
    let table = lb.maglev_table(0);
    for n in 1..=20 {
        let c = client4(n);
        let sport = 40000 + n as u16;
        let h = five_tuple_hash(&v4(c), &v4(VIP4), sport.to_be(), 80u16.to_be(), PROTO_TCP);
        assert_eq!(
            lb.forwarded_to(&t4(c, sport, TCP_ACK)),
            table[(h % M) as usize],
            "client {c:?}"
        );
    }
}

// --- VLAN -------------------------------------------------------------------------------------

#[test]
fn vlan_tagged_packet_is_balanced_and_keeps_its_tag() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(12);
    let plain = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    let tagged = eth(
        LB_MAC,
        CLIENT_MAC,
        Some(100),
        ETH_P_IP,
        &ipv4(c, VIP4, 6, &tcp(40001, 80, TCP_ACK, b"x")),
    );
    let (v, out) = lb.run(&tagged);
    assert_eq!(v, XDP_TX);
    assert_eq!(out[..6], be_mac(plain));
    assert_eq!(out[12..16], [0x81, 0x00, 0x00, 100], "the tag stays");
    // Two tags (QinQ inside 802.1Q) are not ours: passed.
    let qinq = eth(LB_MAC, CLIENT_MAC, Some(100), 0x8100, &[0, 200, 0x08, 0x00]);
    lb.passed_untouched(&qinq, "double tag");
}

// --- fragments ----------------------------------------------------------------------------------

#[test]
fn fragments_of_one_client_go_to_one_backend() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(13);
    let pinned = lb.forwarded_to(&udp4(CLIENT_MAC, LB_MAC, c, 5000, VIP4, 53));
    // First fragment (MF set, offset 0): has the UDP header.
    let first = eth(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &ipv4_opts(c, VIP4, 17, 0x2000, &[], &udp(5000, 53, &[0u8; 32])),
    );
    // A later fragment (offset 5 x 8 bytes): no L4 header at all.
    let later = eth(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &ipv4_opts(c, VIP4, 17, 5, &[], &[0xeeu8; 24]),
    );
    assert_eq!(lb.forwarded_to(&first), pinned);
    assert_eq!(lb.forwarded_to(&later), pinned);
    // A client never seen before: the later fragment follows the first.
    let n = client4(14);
    let f1 = eth(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &ipv4_opts(n, VIP4, 17, 0x2000, &[], &udp(5000, 53, &[0u8; 32])),
    );
    let f2 = eth(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &ipv4_opts(n, VIP4, 17, 5, &[], &[0xeeu8; 24]),
    );
    assert_eq!(lb.forwarded_to(&f1), lb.forwarded_to(&f2));
    assert_eq!(lb.gstat(gstat::Counter::Fragment), 4);
    // IPv6: fragment header, first and later fragment.
    let c6 = client6(13);
    let pinned6 = lb.forwarded_to(&udp6(CLIENT_MAC, LB_MAC, c6, 5000, VIP6, 53));
    let mut p1 = v6_frag(17, 0, true);
    p1.extend(udp(5000, 53, &[0u8; 32]));
    let mut p2 = v6_frag(17, 5, false);
    p2.extend([0xeeu8; 24]);
    assert_eq!(
        lb.forwarded_to(&eth(
            LB_MAC,
            CLIENT_MAC,
            None,
            ETH_P_IPV6,
            &ipv6(c6, VIP6, 44, &p1)
        )),
        pinned6
    );
    assert_eq!(
        lb.forwarded_to(&eth(
            LB_MAC,
            CLIENT_MAC,
            None,
            ETH_P_IPV6,
            &ipv6(c6, VIP6, 44, &p2)
        )),
        pinned6
    );
}

/// A UDP datagram from `src`:`sport` to VIP4:`dport` with IP identification `id`, as three
/// IPv4 fragments in order (the first carries the UDP header).
fn udp4_datagram(src: [u8; 4], sport: u16, dport: u16, id: u16) -> Vec<Vec<u8>> {
    ipv4_fragments(src, VIP4, 17, id, &udp(sport, dport, &[0x5a; 40]), 16)
        .iter()
        .map(|p| eth(LB_MAC, CLIENT_MAC, None, ETH_P_IP, p))
        .collect()
}

/// The same over IPv6 to VIP6 (fragment header identification `id`).
fn udp6_datagram(src: [u8; 16], sport: u16, dport: u16, id: u32) -> Vec<Vec<u8>> {
    ipv6_fragments(src, VIP6, 17, id, &udp(sport, dport, &[0x5a; 40]), 16)
        .iter()
        .map(|p| eth(LB_MAC, CLIENT_MAC, None, ETH_P_IPV6, p))
        .collect()
}

/// Defect: later fragments (no ports) were looked up by address only, which named the first
/// service on that address and protocol, so with UDP 53 and UDP 5353 on one VIP the later
/// fragments of a 5353 datagram went to the servers of 53.
#[test]
fn later_fragments_follow_their_datagrams_service_not_the_first_service_on_the_vip() {
    let mut lb = Lb::new(Svc::default());
    let cases = [
        (
            "IPv4",
            1,
            4,
            udp4_datagram(client4(40), 5000, 53, 0x0101),
            udp4_datagram(client4(40), 5001, UDP_PORT_2, 0x0102),
        ),
        (
            "IPv6",
            3,
            5,
            udp6_datagram(client6(40), 5000, 53, 0x1_0101),
            udp6_datagram(client6(40), 5001, UDP_PORT_2, 0x1_0102),
        ),
    ];
    for (family, sa, sb, a, b) in cases {
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 3);
        // Interleaved: both first fragments, then the later ones of each in turn.
        let first_a = lb.forwarded_to(&a[0]);
        let first_b = lb.forwarded_to(&b[0]);
        assert_eq!(
            first_a / 4,
            sa,
            "{family}: the first fragment to port 53 goes to a server of its service"
        );
        assert_eq!(
            first_b / 4,
            sb,
            "{family}: the first fragment to port {UDP_PORT_2} goes to a server of its service"
        );
        for k in 1..3 {
            for (port, first, frames) in [(53, first_a, &a), (UDP_PORT_2, first_b, &b)] {
                let to = lb.forwarded_to(&frames[k]);
                assert_eq!(
                    to,
                    first,
                    "{family}: fragment {k} of the datagram to port {port} went to backend {to} (service {}), \
                     its first fragment to backend {first} (service {})",
                    to / 4,
                    first / 4
                );
            }
        }
        for s in [sa, sb] {
            assert_eq!(
                lb.dp.service_stats(s).unwrap().packets,
                3,
                "{family}: service {s} counts its three fragments"
            );
        }
    }
}

#[test]
fn later_fragment_before_its_first_is_passed_and_counted_then_the_rest_follow_the_first() {
    let mut lb = Lb::new(Svc::default());
    let mut no_record = 0;
    let cases = [
        ("IPv4", 1, udp4_datagram(client4(42), 5000, 53, 0x0301)),
        ("IPv4", 4, udp4_datagram(client4(42), 5000, UDP_PORT_2, 0x0302)),
        ("IPv6", 3, udp6_datagram(client6(42), 5000, 53, 0x0301)),
        ("IPv6", 5, udp6_datagram(client6(42), 5000, UDP_PORT_2, 0x0302)),
    ];
    for (family, service, frames) in cases {
        // The last fragment overtakes the others: nothing says where its datagram goes yet.
        lb.passed_untouched(
            &frames[2],
            &format!("{family} service {service}: last fragment first"),
        );
        no_record += 1;
        assert_eq!(lb.gstat(gstat::Counter::FragmentNoRecord), no_record);
        assert_eq!(lb.dp.service_stats(service).unwrap().packets, 0);
        let first = lb.forwarded_to(&frames[0]);
        assert_eq!(
            first / 4,
            service,
            "{family}: the first fragment goes to its service"
        );
        assert_eq!(
            lb.forwarded_to(&frames[1]),
            first,
            "{family} service {service}: the middle fragment follows the first"
        );
        assert_eq!(lb.dp.service_stats(service).unwrap().packets, 2);
    }
    assert_eq!(lb.gstat(gstat::Counter::FragmentNoRecord), no_record);
    assert_eq!(lb.gstat(gstat::Counter::Fragment), 8);
    // A datagram to a port of the VIP that no service has: its first fragment is not ours, so
    // its later ones have no record either (they once went to the first service on the VIP).
    let stray = udp4_datagram(client4(43), 5000, 54, 0x0303);
    lb.passed_untouched(&stray[0], "first fragment to an unconfigured port");
    lb.passed_untouched(&stray[1], "later fragment to an unconfigured port");
    // The LB host's own fragmented traffic (to no VIP) is the kernel's, as before.
    let own: Vec<Vec<u8>> = ipv4_fragments(client4(44), [10, 0, 0, 1], 17, 7, &udp(5000, 53, &[1; 40]), 16)
        .iter()
        .map(|p| eth(LB_MAC, CLIENT_MAC, None, ETH_P_IP, p))
        .collect();
    for (k, f) in own.iter().enumerate() {
        lb.passed_untouched(f, &format!("fragment {k} of the host's own datagram"));
    }
    assert_eq!(lb.gstat(gstat::Counter::FragmentNoRecord), no_record + 3);
    assert_eq!(
        lb.gstat(gstat::Derived::Rx),
        lb.gstat(gstat::Counter::PassNotVip) + lb.gstat(gstat::Counter::FragmentNoRecord) + 8,
        "every frame is counted once"
    );
}

/// Defect: a src-port service sent every fragment by the address-only hash, and a service
/// without affinity hashed fragments without ports: a flow's fragmented datagrams went to
/// another server than its whole packets.
#[test]
fn fragments_of_a_src_port_or_no_affinity_flow_go_where_its_whole_packets_go() {
    for (mode, stick) in [("src-port", STICK_SRC_PORT), ("none", STICK_NONE)] {
        let mut lb = Lb::new(Svc {
            stick,
            ..Default::default()
        });
        for p in 0..16u16 {
            let (c4, c6, sport) = (client4(41), client6(41), 7000 + p);
            let whole4 = lb.forwarded_to(&udp4(CLIENT_MAC, LB_MAC, c4, sport, VIP4, 53));
            let whole6 = lb.forwarded_to(&udp6(CLIENT_MAC, LB_MAC, c6, sport, VIP6, 53));
            for (family, whole, frames) in [
                ("IPv4", whole4, udp4_datagram(c4, sport, 53, p)),
                ("IPv6", whole6, udp6_datagram(c6, sport, 53, p as u32)),
            ] {
                for (k, f) in frames.iter().enumerate() {
                    assert_eq!(
                        lb.forwarded_to(f),
                        whole,
                        "{mode} {family} source port {sport}: fragment {k} must go where the flow's whole packets go"
                    );
                }
            }
        }
    }
}

// --- ICMP too big -------------------------------------------------------------------------------

#[test]
fn icmp_frag_needed_and_packet_too_big_go_to_the_flows_backend() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(15);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    // The backend's reply VIP:80 -> client:40000 was too big for a router on the way.
    let reply = ipv4(VIP4, c, 6, &tcp(80, 40000, TCP_ACK, &[0u8; 16]));
    let router = [10, 77, 0, 254];
    let err = eth(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &ipv4(router, VIP4, 1, &icmp4_frag_needed(&reply)),
    );
    assert_eq!(lb.forwarded_to(&err), b);
    assert_eq!(lb.gstat(gstat::Counter::IcmpTooBig), 1);

    let c6 = client6(15);
    let b6 = lb.forwarded_to(&t6(c6, 40000, TCP_ACK));
    let reply6 = ipv6(VIP6, c6, 6, &tcp(80, 40000, TCP_ACK, &[0u8; 16]));
    let mut r6 = client6(254);
    r6[1] = 0x78;
    let err6 = eth(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IPV6,
        &ipv6(r6, VIP6, 58, &icmp6_too_big(&reply6)),
    );
    assert_eq!(lb.forwarded_to(&err6), b6);
    assert_eq!(lb.entries().len(), 2, "ICMP errors create no entries");
}

// --- malformed input -------------------------------------------------------------------------

#[test]
fn malformed_input_is_passed_counted_and_never_forwarded() {
    let mut lb = Lb::new(Svc::default());
    let good = t4(client4(16), 40000, TCP_ACK);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated Ethernet (VLAN tag cut short)",
            eth(LB_MAC, CLIENT_MAC, None, 0x8100, &[0, 7]),
        ),
        ("truncated IPv4 header", good[..14 + 12].to_vec()),
        ("truncated TCP header", good[..14 + 20 + 10].to_vec()),
    ];
    let mut ihl4 = good.clone();
    ihl4[14] = 0x44;
    cases.push(("IHL < 5", ihl4));
    let mut long = good.clone();
    long[16..18].copy_from_slice(&2000u16.to_be_bytes());
    cases.push(("IPv4 total length beyond the frame", long));
    let mut doff = good.clone();
    doff[14 + 20 + 12] = 0x20;
    cases.push(("TCP data offset < 5", doff));
    let mut chain = Vec::new();
    for _ in 0..5 {
        chain.extend(v6_ext(60));
    }
    // Fix the last next-header to TCP after five extension headers.
    let last = chain.len() - 8;
    chain[last] = 6;
    chain.extend(tcp(40000, 80, TCP_ACK, b"x"));
    let mut chained = eth(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IPV6,
        &ipv6(client6(16), VIP6, 0, &chain),
    );
    // First header is hop-by-hop (0); then destination options (60) x4.
    chained[14 + 6] = 0;
    cases.push((
        "IPv6 extension header chain longer than the parser's bound",
        chained,
    ));
    let mut v6len = t6(client6(16), 40000, TCP_ACK);
    v6len[18..20].copy_from_slice(&3000u16.to_be_bytes());
    cases.push(("IPv6 payload length beyond the frame", v6len));
    let n = cases.len() as u64;
    for (what, f) in &cases {
        lb.passed_untouched(f, what);
    }
    assert_eq!(lb.gstat(gstat::Counter::ParseError), n);
    assert!(lb.entries().is_empty());
    // Zero-length and tiny frames: the kernel refuses frames shorter than an Ethernet header
    // in BPF_PROG_TEST_RUN (EINVAL); anything it does accept must not be forwarded.
    for len in [0usize, 1, 13] {
        if let Ok(r) = lb.dp.test_run("xlb", &good[..len], 1) {
            assert_eq!(r.verdict, XDP_PASS, "{len}-byte frame");
        }
    }
    assert_eq!(lb.gstat(gstat::Derived::Tx), 0);
}

#[test]
fn ipv6_with_allowed_extension_headers_is_balanced() {
    let mut lb = Lb::new(Svc::default());
    let c = client6(17);
    let b = lb.forwarded_to(&t6(c, 40000, TCP_ACK));
    let mut p = v6_ext(60);
    p.extend(v6_ext(6));
    p.extend(tcp(40001, 80, TCP_ACK, b"x"));
    assert_eq!(
        lb.forwarded_to(&eth(LB_MAC, CLIENT_MAC, None, ETH_P_IPV6, &ipv6(c, VIP6, 0, &p))),
        b
    );
}

#[test]
fn no_usable_backend_drops_and_counts() {
    let mut lb = Lb::new(Svc::default());
    for b in 0..4 {
        lb.set_state(b, BACKEND_DOWN);
    }
    let (v, _) = lb.run(&t4(client4(18), 40000, TCP_ACK));
    assert_eq!(v, XDP_DROP);
    assert_eq!(lb.gstat(gstat::Derived::NoBackend), 1);
}

// --- randomised -----------------------------------------------------------------------------

/// xorshift: deterministic, so a failure is reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One IP datagram as a receiver's reassembly names it: source, destination, identification,
/// protocol (the family is the addresses').
type Datagram = (IpAddr, IpAddr, u32, u8);

/// A frame as a reference parser, written independently of the data path, sees it.
#[derive(Debug)]
enum Reference {
    /// Not well-formed VIP traffic: passed untouched.
    NotVip,
    /// Well-formed VIP traffic with its L4 header: forwarded. A first fragment names its
    /// datagram.
    Vip(Option<Datagram>),
    /// A TCP/UDP fragment after the first (no L4 header): forwarded where its datagram's first
    /// fragment went; passed untouched when that first fragment was never forwarded.
    Later(Datagram),
}

fn reference(f: &[u8]) -> Reference {
    use Reference::*;
    if f.len() < 14 {
        return NotVip;
    }
    if f[..6] != LB_MAC {
        return NotVip; // only frames sent to our MAC are ever forwarded
    }
    let (et, mut off) = match u16::from_be_bytes([f[12], f[13]]) {
        0x8100 if f.len() >= 18 => (u16::from_be_bytes([f[16], f[17]]), 18),
        et => (et, 14),
    };
    let (src, dst, proto, l4, fragment, later_frag, id) = match et {
        0x0800 => {
            if f.len() < off + 20 || f[off] >> 4 != 4 || (f[off] & 15) < 5 {
                return NotVip;
            }
            let ihl = (f[off] & 15) as usize * 4;
            let tot = u16::from_be_bytes([f[off + 2], f[off + 3]]) as usize;
            if tot < ihl || off + tot > f.len() {
                return NotVip;
            }
            let frag = u16::from_be_bytes([f[off + 6], f[off + 7]]);
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]));
            (
                ip(off + 12),
                ip(off + 16),
                f[off + 9],
                off + ihl,
                frag & 0x3fff != 0,
                frag & 0x1fff != 0,
                u16::from_be_bytes([f[off + 4], f[off + 5]]) as u32,
            )
        }
        0x86dd => {
            if f.len() < off + 40 || f[off] >> 4 != 6 {
                return NotVip;
            }
            let plen = u16::from_be_bytes([f[off + 4], f[off + 5]]) as usize;
            if off + 40 + plen > f.len() {
                return NotVip;
            }
            let ip = |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&f[at..at + 16]).unwrap()));
            let (s, d) = (ip(off + 8), ip(off + 24));
            let mut nh = f[off + 6];
            off += 40;
            let (mut fragment, mut later, mut id) = (false, false, 0);
            let mut n = 0;
            while matches!(nh, 0 | 43 | 44 | 60) {
                if n == 4 || f.len() < off + 8 {
                    return NotVip;
                }
                n += 1;
                if nh == 44 {
                    fragment = true;
                    later = u16::from_be_bytes([f[off + 2], f[off + 3]]) >> 3 != 0;
                    id = u32::from_be_bytes([f[off + 4], f[off + 5], f[off + 6], f[off + 7]]);
                    nh = f[off];
                    off += 8;
                } else {
                    let len = (f[off + 1] as usize + 1) * 8;
                    nh = f[off];
                    off += len;
                }
            }
            (s, d, nh, off, fragment, later, id)
        }
        _ => return NotVip,
    };
    if proto != 6 && proto != 17 {
        return NotVip; // ICMP errors are checked by their own fixture
    }
    let datagram = (src, dst, id, proto);
    if later_frag {
        return Later(datagram);
    }
    let vip4 = IpAddr::V4(Ipv4Addr::from(VIP4));
    let vip6 = IpAddr::V6(Ipv6Addr::from(VIP6));
    if dst != vip4 && dst != vip6 {
        return NotVip;
    }
    let need = if proto == 6 { 20 } else { 8 };
    if f.len() < l4 + need {
        return NotVip;
    }
    if proto == 6 && f[l4 + 12] >> 4 < 5 {
        return NotVip;
    }
    let dport = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
    if (proto == 6 && dport == 80) || (proto == 17 && (dport == 53 || dport == UDP_PORT_2)) {
        Vip(fragment.then_some(datagram))
    } else {
        NotVip
    }
}

#[test]
fn random_and_mutated_frames_are_never_forwarded_unless_well_formed_vip() {
    let mut lb = Lb::new(Svc::default());
    let seed = 0x5eed_1234_abcd_0001u64;
    let mut rng = Rng(seed);
    let mut valid = vec![
        t4(client4(20), 40000, TCP_ACK),
        t6(client6(20), 40000, TCP_ACK),
        udp4(CLIENT_MAC, LB_MAC, client4(21), 5000, VIP4, 53),
        udp6(CLIENT_MAC, LB_MAC, client6(21), 5000, VIP6, 53),
        eth(
            LB_MAC,
            CLIENT_MAC,
            Some(7),
            ETH_P_IP,
            &ipv4(client4(22), VIP4, 6, &tcp(1, 80, TCP_ACK, b"")),
        ),
    ];
    // Fragmented datagrams to both services of each VIP address, each fragment on its own: a
    // later fragment may come before its first, a mutated one may name another datagram.
    valid.extend(udp4_datagram(client4(23), 5000, 53, 0x0203));
    valid.extend(udp4_datagram(client4(23), 5000, UDP_PORT_2, 0x0204));
    valid.extend(udp6_datagram(client6(23), 5000, 53, 0x0203));
    valid.extend(udp6_datagram(client6(23), 5000, UDP_PORT_2, 0x0204));
    // The model's record of first fragments: datagram -> destination MAC it was forwarded to.
    let mut first_went_to: std::collections::HashMap<Datagram, Vec<u8>> = Default::default();
    let (mut forwarded, mut followed, mut unrecorded, mut total) = (0, 0, 0, 0);
    for i in 0..6000u32 {
        let frame: Vec<u8> = if i % 3 == 0 {
            let len = 14 + (rng.next() % 120) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut f = valid[(rng.next() % valid.len() as u64) as usize].clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % f.len() as u64) as usize;
                f[at] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(4) {
                let cut = 14 + (rng.next() % (f.len() as u64 - 13)) as usize;
                f.truncate(cut);
            }
            if rng.next().is_multiple_of(8) {
                // Broadcast, multicast or another host's MAC: never ours to forward.
                let dst: [u8; 6] = match rng.next() % 3 {
                    0 => [0xff; 6],
                    1 => [0x01, 0x00, 0x5e, 0, 0, rng.next() as u8],
                    _ => [0x02, 0, 0, 0, 0, 0xab],
                };
                f[..6].copy_from_slice(&dst);
            }
            f
        };
        let r = lb.dp.test_run("xlb", &frame, 1).unwrap();
        total += 1;
        let model = reference(&frame);
        let expect_to = match &model {
            Reference::NotVip => None,
            Reference::Vip(_) => Some(None),
            Reference::Later(d) => first_went_to.get(d).map(Some),
        };
        match (r.verdict, expect_to) {
            (XDP_TX, Some(to)) => {
                forwarded += 1;
                assert_eq!(
                    r.data[12..],
                    frame[12..],
                    "case {i}: forwarded frame changed beyond the MACs"
                );
                if let Some(to) = to {
                    followed += 1;
                    assert_eq!(
                        r.data[..6],
                        to[..],
                        "seed {seed:#x} case {i}: a later fragment must go where its first went: {frame:02x?}"
                    );
                }
                if let Reference::Vip(Some(d)) = model {
                    first_went_to.insert(d, r.data[..6].to_vec());
                }
            }
            (XDP_PASS, None) => {
                assert_eq!(r.data, frame, "case {i}: passed frame modified");
                unrecorded += matches!(model, Reference::Later(_)) as u32;
            }
            (XDP_TX, None) => panic!(
                "seed {seed:#x} case {i}: forwarded a frame that is not well-formed VIP traffic ({model:?}): {frame:02x?}"
            ),
            (XDP_PASS, Some(_)) => {
                panic!("seed {seed:#x} case {i}: well-formed VIP frame passed ({model:?}): {frame:02x?}")
            }
            (v, _) => panic!("case {i}: unexpected verdict {v}"),
        }
    }
    assert!(
        forwarded > 100,
        "the mutations must leave some frames valid ({forwarded}/{total})"
    );
    assert!(
        followed > 50 && unrecorded > 10,
        "the run must see later fragments both with and without a record ({followed} followed, {unrecorded} passed)"
    );
    assert_eq!(
        lb.gstat(gstat::Counter::FragmentNoRecord),
        unrecorded as u64,
        "every later fragment without a record is counted"
    );
}

#[test]
fn backend_on_another_interface_goes_out_by_xdp_redirect() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(30);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    // Put that backend behind port 1 of the devmap, pointing at `lo` (ifindex 1), with its own
    // source MAC for that interface.
    lb.dp.set_tx_port(1, 1).unwrap();
    let mut be = lb.dp.backend(b).unwrap();
    be.tx_port = 1;
    be.src_mac = [0x02, 0, 0, 0, 0, 0xbb];
    lb.dp.set_backend(b, be).unwrap();
    let f = t4(c, 40001, TCP_ACK);
    let (v, out) = lb.run(&f);
    assert_eq!(v, 4, "XDP_REDIRECT");
    assert_eq!(out[..6], be_mac(b));
    assert_eq!(out[6..12], [0x02, 0, 0, 0, 0, 0xbb], "the egress interface's MAC");
    assert_eq!(out[12..], f[12..]);
    assert_eq!(lb.gstat(gstat::Counter::Redirect), 1);
    assert_eq!(lb.gstat(gstat::Derived::Tx), 1, "the first packet went by XDP_TX");
    // A tagged frame keeps its tag on XDP_REDIRECT too (documented in forward.rs).
    let tagged = eth(
        LB_MAC,
        CLIENT_MAC,
        Some(100),
        ETH_P_IP,
        &ipv4(c, VIP4, 6, &tcp(40002, 80, TCP_ACK, b"")),
    );
    let (v, out) = lb.run(&tagged);
    assert_eq!(v, 4, "XDP_REDIRECT");
    assert_eq!(
        out[12..],
        tagged[12..],
        "the tag and everything after it unchanged"
    );
}

#[test]
fn new_entry_cap_per_cpu_bounds_table_churn() {
    let mut lb = Lb::new(Svc::default());
    lb.dp.set_new_entry_cap(5).unwrap();
    // 20 new clients (spoofed-ACK style): all forwarded, only 5 entries created this second.
    for n in 0..20u8 {
        lb.forwarded_to(&t4([10, 77, 8, n], 40000, TCP_ACK));
    }
    assert_eq!(lb.entries().len(), 5);
    assert_eq!(lb.gstat(gstat::Counter::InsertCapped), 15);
    // A pinned client is unaffected.
    let first = lb.entries()[0].0;
    let a = [first.addr[0], first.addr[1], first.addr[2], first.addr[3]];
    let b = lb.entries()[0].1.backend;
    assert_eq!(lb.forwarded_to(&t4(a, 40001, TCP_ACK)), b);
    // No cap: everything inserts.
    lb.dp.set_new_entry_cap(0).unwrap();
    lb.forwarded_to(&t4([10, 77, 9, 1], 40000, TCP_ACK));
    assert_eq!(lb.entries().len(), 6);
}

/// The batched table read (BPF_MAP_LOOKUP_BATCH) returns exactly what a per-entry walk does,
/// across many batches and with a buffer smaller than some buckets.
#[test]
fn batched_table_read_matches_an_entry_by_entry_walk() {
    let mut lb = Lb::with_capacity(Svc::default(), 20_000);
    for i in 0..10_000u32 {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&i.to_be_bytes());
        let key = StickKey::new(addr, 0, 0, FAMILY_V4);
        let entry = StickEntry {
            last_seen_ns: i as u64,
            backend: i % 4,
            _pad: 0,
        };
        lb.dp.stick_insert(key, entry).unwrap();
    }
    let table = lb.dp.stick_map_mut(0).unwrap();
    let mut walked: Vec<(StickKey, StickEntry)> = table.iter().map(|r| r.unwrap()).collect();
    for chunk in [1, 7, 4096, 100_000] {
        let mut batched = xlb::datapath::batch::read_all(table, chunk).unwrap();
        assert_eq!(batched.len(), 10_000, "chunk {chunk}");
        batched.sort_by_key(|(k, _)| (k.addr, k.service));
        walked.sort_by_key(|(k, _)| (k.addr, k.service));
        assert_eq!(batched, walked, "chunk {chunk}");
    }
}

/// Issue 9, item 5: pin adoption compared only key and value sizes, one map at a time. Pins
/// that claim the current format but differ from it are refused with every difference listed.
#[test]
fn pins_that_differ_from_their_format_are_refused_with_every_difference() {
    use harness::raw_pins::{self, ARRAY, LRU_HASH};
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = xlb::datapath::remove_pins(&self.0);
        }
    }
    xlb::datapath::ensure_bpffs().expect("bpffs");
    let dir = std::path::PathBuf::from("/sys/fs/bpf").join(harness::names::new_stem("mismatch"));
    let _guard = Remove(dir.clone());
    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    let meta = raw_pins::create(ARRAY, 4, 8, lb_common::meta::COUNT).unwrap();
    raw_pins::update(&meta, &0u32.to_ne_bytes(), &lb_common::PIN_FORMAT.to_ne_bytes()).unwrap();
    raw_pins::pin(&meta, &maps.join(lb_common::MAP_META)).unwrap();
    let backends = raw_pins::create(ARRAY, 4, 24, 4096).unwrap();
    raw_pins::pin(&backends, &maps.join(lb_common::MAP_BACKENDS)).unwrap();
    // An LRU hash where the array of per-service tables belongs.
    let sticks = raw_pins::create(LRU_HASH, 24, 16, 1000).unwrap();
    raw_pins::pin(&sticks, &maps.join(lb_common::MAP_STICK_TABLES)).unwrap();
    let err = match xlb::datapath::Datapath::load(&xlb::datapath::LoadOptions {
        pin_dir: Some(dir.clone()),
    }) {
        Ok(_) => panic!("pins that differ from their format were adopted"),
        Err(e) => e.to_string(),
    };
    for want in [
        "XLB_BACKENDS: value size 24 changed to 20",
        "XLB_STICKS: map type 9 changed to 12",
        "XLB_STICKS: key size 24 changed to 4",
        "XLB_VIPS: missing",
        "xlb detach",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    // Nothing was touched: the pins are as they were.
    assert!(maps.join(lb_common::MAP_BACKENDS).exists() && !maps.join(lb_common::MAP_VIPS).exists());
}

/// Format 3 split the global counters the data path counts from those the agent derives, so
/// `XLB_GSTATS` shrank from 21 entries to 12. Pins of format 2 (everything else the same) are
/// migrated in place: the names, the servers' states and every service's stick table with its
/// entries are adopted as they are; only the global counters start again.
#[test]
fn format2_pins_are_migrated_keeping_names_backends_and_stick_tables() {
    use aya::maps::{Array, Map, MapData, MapInfo};
    use harness::raw_pins::{self, PERCPU_ARRAY};
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = xlb::datapath::remove_pins(&self.0);
        }
    }
    xlb::datapath::ensure_bpffs().expect("bpffs");
    let dir = std::path::PathBuf::from("/sys/fs/bpf").join(harness::names::new_stem("format2"));
    let _guard = Remove(dir.clone());
    let maps = dir.join("maps");
    let opts = xlb::datapath::LoadOptions {
        pin_dir: Some(dir.clone()),
    };
    let key = StickKey::new(v4([10, 2, 0, 7]), 3, 0, FAMILY_V4);
    let entry = StickEntry {
        last_seen_ns: 12345,
        backend: 77,
        _pad: 0,
    };
    let server = lb_common::Backend {
        mac: [2, 0, 0, 0, 0, 77],
        state: BACKEND_MAINT,
        service: 3,
        ..Default::default()
    };
    {
        let mut dp = xlb::datapath::Datapath::load(&opts).unwrap();
        dp.set_name(lb_common::name_slot_service(3), Some("web")).unwrap();
        dp.set_name(lb_common::name_slot_backend(77), Some("web/a"))
            .unwrap();
        dp.set_backend(77, server).unwrap();
        dp.set_stick_table(3, 5000).unwrap();
        dp.stick_insert(key, entry).unwrap();
    }
    // Make the pins what a format-2 xlb left: its format in XLB_META, its XLB_GSTATS.
    let meta: Array<MapData, u64> = Map::Array(MapData::from_pin(maps.join(lb_common::MAP_META)).unwrap())
        .try_into()
        .unwrap();
    let mut meta = meta;
    meta.set(lb_common::meta::FORMAT, 2, 0).unwrap();
    let gstats = maps.join(lb_common::MAP_GLOBAL_STATS);
    std::fs::remove_file(&gstats).unwrap();
    let old = raw_pins::create(PERCPU_ARRAY, 4, 8, 21).unwrap();
    raw_pins::pin(&old, &gstats).unwrap();

    let dp = match xlb::datapath::Datapath::load(&opts) {
        Ok(dp) => dp,
        Err(e) => panic!("format-2 pins were not migrated: {e}"),
    };
    assert!(dp.adopted());
    assert_eq!(
        dp.name(lb_common::name_slot_service(3)).unwrap().as_deref(),
        Some("web")
    );
    assert_eq!(
        dp.name(lb_common::name_slot_backend(77)).unwrap().as_deref(),
        Some("web/a")
    );
    assert_eq!(dp.backend(77).unwrap(), server);
    assert_eq!(dp.stick_capacity_of(3), Some(5000));
    assert_eq!(dp.stick_get(&key).unwrap(), Some(entry));
    assert_eq!(
        MapInfo::from_pin(&gstats).unwrap().max_entries(),
        gstat::Counter::COUNT,
        "a fresh XLB_GSTATS of format 3 is pinned"
    );
    assert_eq!(dp.global_stats().unwrap(), Default::default());
    assert_eq!(
        meta.get(&lb_common::meta::FORMAT, 0).unwrap(),
        lb_common::PIN_FORMAT
    );
    drop(dp);
    // Adopted again as format 3.
    assert!(xlb::datapath::Datapath::load(&opts).unwrap().adopted());
    // A migration stopped after it unpinned the old counters, before the load pinned new ones.
    meta.set(lb_common::meta::FORMAT, 2, 0).unwrap();
    std::fs::remove_file(&gstats).unwrap();
    let dp = xlb::datapath::Datapath::load(&opts).unwrap();
    assert_eq!(dp.stick_get(&key).unwrap(), Some(entry));
    assert_eq!(
        MapInfo::from_pin(&gstats).unwrap().max_entries(),
        gstat::Counter::COUNT
    );
}

// --- per-service stick tables: resize, pins -----------------------------------------------------

/// A new size for a service's table: a new table of that size holding every entry, and the
/// data path uses it from then on (what it creates afterwards lands there).
#[test]
fn stick_table_resize_keeps_every_entry_and_the_data_path_uses_the_new_table() {
    let mut lb = Lb::with_capacity(Svc::default(), 1000);
    let mut pins = Vec::new();
    for n in 0..50u8 {
        let c = [10, 77, 30, n];
        pins.push((c, lb.forwarded_to(&t4(c, 40000, TCP_ACK))));
    }
    let before = lb.dp.stick_entries_of(0).unwrap();
    assert_eq!(before.len(), 50);
    let change = lb.dp.set_stick_table(0, 3000).unwrap();
    assert_eq!(
        change,
        xlb::datapath::stick_maps::TableChange::Resized {
            from: 1000,
            copied: 50
        }
    );
    assert_eq!(lb.dp.stick_capacity_of(0), Some(3000));
    let mut after = lb.dp.stick_entries_of(0).unwrap();
    let mut want = before.clone();
    after.sort_by_key(|(k, _)| k.addr);
    want.sort_by_key(|(k, _)| k.addr);
    assert_eq!(after, want, "every entry moved over unchanged");
    for (c, b) in &pins {
        assert_eq!(lb.forwarded_to(&t4(*c, 40001, TCP_ACK)), *b, "still pinned");
    }
    lb.forwarded_to(&t4([10, 77, 31, 1], 40000, TCP_ACK));
    assert_eq!(
        lb.dp.stick_entries_of(0).unwrap().len(),
        51,
        "new entries go to the new table"
    );
    assert_eq!(
        lb.dp.set_stick_table(0, 3000).unwrap(),
        xlb::datapath::stick_maps::TableChange::Kept
    );
    // Removing a table empties the service's slot: its packets go by hash, nothing is kept.
    assert!(lb.dp.remove_stick_table(0).unwrap());
    let c = pins[0].0;
    lb.forwarded_to(&t4(c, 40002, TCP_ACK));
    assert!(lb.dp.stick_entries_of(0).unwrap().is_empty());
    assert_eq!(lb.dp.stick_capacity_of(0), None);
}

/// A pin directory under /sys/fs/bpf of this test's own, removed on drop (panics included).
struct PinDir(std::path::PathBuf);

impl PinDir {
    fn new(test: &str) -> PinDir {
        xlb::datapath::ensure_bpffs().expect("bpffs at /sys/fs/bpf");
        PinDir(std::path::Path::new("/sys/fs/bpf").join(harness::names::new_stem(test)))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = xlb::datapath::remove_pins(&self.0);
    }
}

/// What one agent pinned, the next one adopts: every service's table with its size and entries.
#[test]
fn stick_tables_pinned_by_one_load_are_adopted_by_the_next() {
    use xlb::datapath::{Datapath, LoadOptions};
    let dir = PinDir::new("stickpins");
    let opts = LoadOptions {
        pin_dir: Some(dir.0.clone()),
    };
    let entry = |i: u32| StickEntry {
        last_seen_ns: i as u64,
        backend: i % 4,
        _pad: 0,
    };
    let key = |service: u16, i: u32| {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&i.to_be_bytes());
        StickKey::new(addr, service, 0, FAMILY_V4)
    };
    {
        let mut dp = Datapath::load(&opts).unwrap();
        assert!(!dp.adopted());
        dp.set_stick_table(0, 1000).unwrap();
        dp.set_stick_table(3, 2000).unwrap();
        for i in 0..100 {
            dp.stick_insert(key(0, i), entry(i)).unwrap();
            dp.stick_insert(key(3, i), entry(i)).unwrap();
        }
    }
    let mut dp = Datapath::load(&opts).unwrap();
    assert!(dp.adopted());
    assert_eq!(dp.stick_services(), vec![0, 3]);
    assert_eq!(dp.stick_capacity_of(0), Some(1000));
    assert_eq!(dp.stick_capacity_of(3), Some(2000));
    for s in [0u16, 3] {
        let mut got = dp.stick_entries_of(s as u32).unwrap();
        got.sort_by_key(|(k, _)| k.addr);
        let want: Vec<_> = (0..100).map(|i| (key(s, i), entry(i))).collect();
        assert_eq!(got, want, "service {s}");
    }
    assert_eq!(
        dp.set_stick_table(0, 1000).unwrap(),
        xlb::datapath::stick_maps::TableChange::Kept,
        "an adopted table of the configured size is kept as it is"
    );
}

/// A stray single stick table (`XLB_STICK`, as format 1 had) without the rest of format 1's
/// maps and without `XLB_META`: no set this xlb knows, so it is refused with an error that says
/// what it found and what to do, before anything is loaded. (A complete set of format-1 pins is
/// migrated: e2e `format1_pins_are_migrated_keeping_ids_entries_and_admin_states`.)
#[test]
fn an_incomplete_set_of_old_pins_is_refused_with_a_clear_error() {
    use aya::maps::{Array, MapData};
    use xlb::datapath::{Datapath, DatapathError, LoadOptions};
    let dir = PinDir::new("oldstick");
    std::fs::create_dir_all(dir.0.join("maps")).unwrap();
    let old = Array::<MapData, u32>::create(1, 0).unwrap();
    old.pin(dir.0.join("maps").join(lb_common::MAP_STICK_SINGLE))
        .unwrap();
    let e = Datapath::load(&LoadOptions {
        pin_dir: Some(dir.0.clone()),
    })
    .err()
    .expect("loading over old pins must fail");
    assert!(matches!(e, DatapathError::Format { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("XLB_STICK") && msg.contains("xlb detach"), "{msg}");
}

/// A stick key of service `service` for client number `i` (an IPv4 address).
fn numbered_key(service: u16, i: u32) -> StickKey {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&i.to_be_bytes());
    StickKey::new(addr, service, 0, FAMILY_V4)
}

/// A second handle on the same kernel map, as another walker (or the data path) has one.
fn other_handle(map: &xlb::datapath::stick_maps::StickMap) -> xlb::datapath::stick_maps::StickMap {
    use aya::maps::IterableMap as _;
    let id = map.map().info().unwrap().id();
    let data = aya::maps::MapData::from_id(id).unwrap();
    aya::maps::Map::LruHashMap(data).try_into().unwrap()
}

/// `BPF_MAP_DELETE_BATCH` stops at the first key the map does not hold and reports how many it
/// deleted before it; `batch::delete_all` goes on after that key, so keys evicted or deleted
/// since a walk read them (missing at the start, the end, alone or in a row) cost nothing and
/// every key still there is deleted. Only the listed keys go.
#[test]
fn batch_delete_skips_keys_the_map_no_longer_holds_and_deletes_the_rest() {
    let mut lb = Lb::with_capacity(Svc::default(), 1000);
    for i in 0..100u32 {
        let entry = StickEntry {
            last_seen_ns: i as u64,
            backend: i % 4,
            _pad: 0,
        };
        lb.dp.stick_insert(numbered_key(0, i), entry).unwrap();
    }
    let table = lb.dp.stick_map_mut(0).unwrap();

    // The kernel's side of the contract: it stops at the missing key and says so.
    use {aya::maps::IterableMap as _, std::os::fd::AsFd as _};
    let absent = numbered_key(0, 1000);
    let n = xlb::datapath::sys::delete_batch(
        table.map().fd().as_fd(),
        &[numbered_key(0, 0), absent, numbered_key(0, 1)],
    )
    .unwrap();
    assert_eq!(n, 1, "deleted the key before the missing one, then stopped");
    assert!(table.get(&numbered_key(0, 0), 0).is_err(), "key 0 deleted");
    assert!(
        table.get(&numbered_key(0, 1), 0).is_ok(),
        "key 1, after the missing one, kept"
    );

    // Ours: missing keys first, alone, three in a row, and last.
    let mut keys = vec![numbered_key(0, 0), numbered_key(0, 1001)];
    let mut listed_present = Vec::new();
    for i in 1..60u32 {
        keys.push(numbered_key(0, i));
        listed_present.push(i);
        if i == 10 {
            keys.push(numbered_key(0, 1002));
        }
        if i == 30 {
            keys.extend([1003, 1004, 1005].map(|a| numbered_key(0, a)));
        }
    }
    keys.push(numbered_key(0, 1006));
    let deleted = xlb::datapath::batch::delete_all(table, &keys).unwrap();
    assert_eq!(
        deleted,
        listed_present.len(),
        "every listed key still held, and no other"
    );
    let mut left: Vec<u32> = xlb::datapath::batch::read_all(table, 4096)
        .unwrap()
        .into_iter()
        .map(|(k, _)| u32::from_be_bytes(k.addr[..4].try_into().unwrap()))
        .collect();
    left.sort();
    assert_eq!(left, (60..100).collect::<Vec<_>>());
}

/// A sweep deletes the entries idle past expire and those naming a server their service does
/// not own, in batches, and keeps the rest: an entry refreshed after the walk read it (its
/// client came back) lives on and is counted; one the data path evicted meanwhile is neither
/// deleted nor counted, and the deletion goes on past it. When an apply ran during the walk,
/// the stale entries stay (the policy may not describe the new configuration).
#[test]
fn sweep_deletes_expired_and_stale_entries_keeps_those_that_came_back_and_skips_evicted_ones() {
    use xlb::balancer::{SweepPolicy, stick};
    let mut lb = Lb::with_capacity(Svc::default(), 20_000);
    let now = coarse_now_ns();
    let entry = |last_seen_ns: u64, backend: u32| StickEntry {
        last_seen_ns,
        backend,
        _pad: 0,
    };
    // 0..1000 live, 1000..4000 expired, 4000..5500 stale (backend 99 serves no service).
    for i in 0..5500u32 {
        let e = match i {
            0..1000 => entry(now, i % 4),
            1000..4000 => entry(1, i % 4),
            _ => entry(now, 99),
        };
        lb.dp.stick_insert(numbered_key(0, i), e).unwrap();
    }
    let policy = SweepPolicy {
        expire: [(0u16, 60_000_000_000u64)].into(),
        owner: (0..4).map(|b| (b, 0u16)).collect(),
        ..Default::default()
    };
    let mut other = other_handle(lb.dp.stick_map_mut(0).unwrap());

    // First an apply "ran during the walk": stale entries stay.
    let swept = stick::sweep(lb.dp.stick_tables_mut(), &policy, None, 1000, || {}, || false).unwrap();
    assert!(!swept.purged);
    assert_eq!((swept.seen, swept.deleted, swept.stale), (5500, 3000, 0));
    assert_eq!(swept.used.get(&0), Some(&2500), "live and stale entries");
    for i in 1000..4000u32 {
        lb.dp.stick_insert(numbered_key(0, i), entry(1, i % 4)).unwrap();
    }

    // Between the walk and the deletions: clients 1000..1100 come back, the data path
    // evicts 2000..2300 (in the middle of delete batches), and a stale one comes back too
    // (its entry now names a server of the service: re-pinned).
    let mut calls = 0;
    let swept = stick::sweep(
        lb.dp.stick_tables_mut(),
        &policy,
        None,
        1000,
        || calls += 1,
        || {
            for i in 1000..1100u32 {
                other
                    .insert(numbered_key(0, i), entry(coarse_now_ns(), i % 4), 0)
                    .unwrap();
            }
            for i in 2000..2300u32 {
                other.remove(&numbered_key(0, i)).unwrap();
            }
            other
                .insert(numbered_key(0, 4000), entry(coarse_now_ns() + 1, 1), 0)
                .unwrap();
            true
        },
    )
    .unwrap();
    assert!(swept.purged);
    assert_eq!(swept.seen, 5500);
    assert_eq!(swept.stale, 1499, "every stale entry but the re-pinned one");
    assert_eq!(
        swept.deleted,
        1499 + (3000 - 100 - 300),
        "expired, less came back and evicted"
    );
    assert_eq!(
        swept.used.get(&0),
        Some(&(1000 + 100 + 1)),
        "live, came back, re-pinned"
    );
    assert!(
        calls >= 5500 / 1000,
        "between_batches every 1000 entries ({calls} calls)"
    );
    let mut left: Vec<u32> = lb
        .dp
        .stick_entries_of(0)
        .unwrap()
        .into_iter()
        .map(|(k, _)| u32::from_be_bytes(k.addr[..4].try_into().unwrap()))
        .collect();
    left.sort();
    let want: Vec<u32> = (0..1100).chain([4000]).collect();
    assert_eq!(left, want);
}

/// Deleting an entry that is already gone (expired, evicted) is not an error: aya reports the
/// kernel's ENOENT as a system-call error, not as `KeyNotFound`.
#[test]
fn deleting_a_stick_entry_that_is_already_gone_is_not_an_error() {
    let mut lb = Lb::new(Svc::default());
    assert!(!lb.dp.stick_delete(&numbered_key(0, 7)).unwrap());
    lb.dp
        .stick_insert(
            numbered_key(0, 7),
            StickEntry {
                last_seen_ns: 1,
                backend: 0,
                _pad: 0,
            },
        )
        .unwrap();
    assert!(lb.dp.stick_delete(&numbered_key(0, 7)).unwrap());
    assert!(!lb.dp.stick_delete(&numbered_key(0, 7)).unwrap());
}
