//! IPv4 and IPv6 fragments, and ICMP errors quoting a flow.

use harness::fixture::*;
use harness::packet::*;
use lb_common::{STICK_NONE, STICK_SRC_PORT, gstat};

use crate::{from_client, t4, t6, udp4_datagram, udp6_datagram};

// --- fragments ----------------------------------------------------------------------------------

#[test]
fn fragments_of_one_client_go_to_one_backend() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(13);
    let pinned = lb.forwarded_to(&from_client(Frame::udp(c, 5000, VIP4, 53)));
    // From `src`: a first fragment (MF set, offset 0) with the UDP header, and a later one
    // (offset 5 x 8 bytes) with no L4 header at all.
    let first_and_later = |src: [u8; 4]| {
        let frame = |ip: Vec<u8>| eth(LB_MAC, CLIENT_MAC, None, ETH_P_IP, &ip);
        (
            frame(ipv4_opts(src, VIP4, 17, 0x2000, &[], &udp(5000, 53, &[0u8; 32]))),
            frame(ipv4_opts(src, VIP4, 17, 5, &[], &[0xeeu8; 24])),
        )
    };
    let (first, later) = first_and_later(c);
    assert_eq!(lb.forwarded_to(&first), pinned);
    assert_eq!(lb.forwarded_to(&later), pinned);
    // A client never seen before: the later fragment follows the first.
    let (f1, f2) = first_and_later(client4(14));
    assert_eq!(lb.forwarded_to(&f1), lb.forwarded_to(&f2));
    assert_eq!(lb.gstat(gstat::Counter::Fragment), 4);
    // IPv6: fragment header, first and later fragment.
    let c6 = client6(13);
    let pinned6 = lb.forwarded_to(&from_client(Frame::udp(c6, 5000, VIP6, 53)));
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
    let own = Frame::udp(client4(44), 5000, [10, 0, 0, 1], 53)
        .payload(&[1; 40])
        .macs(CLIENT_MAC, LB_MAC)
        .fragments(7, 16);
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
            let whole4 = lb.forwarded_to(&from_client(Frame::udp(c4, sport, VIP4, 53)));
            let whole6 = lb.forwarded_to(&from_client(Frame::udp(c6, sport, VIP6, 53)));
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
