//! What is forwarded and how: non-VIP traffic passed untouched, only frames to our MAC, the
//! Maglev slot of the flow hash, VLAN tags, XDP_REDIRECT to another interface.

use harness::fixture::*;
use harness::packet::*;
use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, STICK_NONE, VipKey, gstat};

use crate::{from_client, t4, t6};

// --- passed untouched -------------------------------------------------------------------------

#[test]
fn non_vip_arp_and_unconfigured_port_pass_untouched() {
    let mut lb = Lb::new(Svc::default());
    lb.passed_untouched(
        &from_client(Frame::tcp(client4(1), 40000, [10, 0, 0, 11], 80, TCP_ACK)),
        "non-VIP address",
    );
    lb.passed_untouched(
        &from_client(Frame::tcp(client4(1), 40000, VIP4, 443, TCP_ACK)),
        "VIP on an unconfigured port",
    );
    lb.passed_untouched(
        &from_client(Frame::udp(client4(1), 40000, VIP4, 80)),
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
        &from_client(Frame::tcp(client6(1), 40000, client6(2), 80, TCP_ACK)),
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
        lb.forwarded_to(&from_client(Frame::tcp(
            client4(1),
            40000,
            [10, 0, 0, 20],
            port,
            TCP_ACK,
        )));
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
        lb.passed_untouched(
            &Frame::tcp(c, 40000, VIP4, 80, TCP_ACK)
                .macs(CLIENT_MAC, dst)
                .bytes(),
            what,
        );
        lb.passed_untouched(
            &Frame::tcp(client6(40), 40000, VIP6, 80, TCP_ACK)
                .macs(CLIENT_MAC, dst)
                .bytes(),
            what,
        );
        let tagged = Frame::udp(c, 5000, VIP4, 53)
            .payload(b"q")
            .vlan(100)
            .macs(CLIENT_MAC, dst)
            .bytes();
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
    let tagged = from_client(Frame::tcp(c, 40001, VIP4, 80, TCP_ACK).payload(b"x").vlan(100));
    let (v, out) = lb.run(&tagged);
    assert_eq!(v, XDP_TX);
    assert_eq!(out[..6], be_mac(plain));
    assert_eq!(out[12..16], [0x81, 0x00, 0x00, 100], "the tag stays");
    // Two tags (QinQ inside 802.1Q) are not ours: passed.
    let qinq = eth(LB_MAC, CLIENT_MAC, Some(100), 0x8100, &[0, 200, 0x08, 0x00]);
    lb.passed_untouched(&qinq, "double tag");
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
    let tagged = from_client(Frame::tcp(c, 40002, VIP4, 80, TCP_ACK).payload(b"").vlan(100));
    let (v, out) = lb.run(&tagged);
    assert_eq!(v, 4, "XDP_REDIRECT");
    assert_eq!(
        out[12..],
        tagged[12..],
        "the tag and everything after it unchanged"
    );
}
