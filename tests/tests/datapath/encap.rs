//! Backends on other networks: the exact outer headers of IPIP and GUE for both families, the
//! next hop and egress from the kernel's FIB, FIB misses passed and counted, and the ICMP "too
//! big" answered in XDP. Each test runs the program inside a namespace of its own whose routes
//! and neighbours it made (`harness::routed`): BPF_PROG_TEST_RUN looks routes up in the
//! caller's namespace.

use std::net::IpAddr;

use harness::{fixture::*, netns, packet::*, routed::*};
use lb_common::{encap_entropy, flow_label, gstat::Counter, gue_source_port};
use xlb::config::{EncapSource, Forward};

use crate::from_client;

const SOURCE4: [u8; 4] = [192, 0, 2, 1];
const SOURCE6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const GUE_PORT: u16 = 6080;

fn source(addr: impl Into<IpAddr>, prefix: u8) -> EncapSource {
    EncapSource {
        addr: addr.into(),
        prefix,
    }
}

fn ipip(addr: impl Into<IpAddr>) -> Forward {
    let a = addr.into();
    Forward::Ipip {
        source: if a.is_ipv4() {
            source(SOURCE4, 32)
        } else {
            source(SOURCE6, 128)
        },
    }
}

fn gue(addr: impl Into<IpAddr>) -> Forward {
    let Forward::Ipip { source } = ipip(addr) else {
        unreachable!()
    };
    Forward::Gue {
        source,
        port: GUE_PORT,
    }
}

/// Runs `f` with a fresh fixture on a thread inside a fresh routed namespace.
fn in_routed_ns<T: Send>(name: &str, f: impl FnOnce(&mut Lb, &RoutedNs) -> T + Send) -> T {
    let r = RoutedNs::new(name).unwrap_or_else(|e| panic!("routed namespace (needs root): {e:#}"));
    netns::run_in(r.ns(), || {
        let mut lb = Lb::new(Svc::default());
        f(&mut lb, &r)
    })
    .unwrap()
}

/// Every backend of service `sid` at host 10+i of `addr(i)`, reached by `forward(addr)`.
fn route_all<A: Into<IpAddr> + Copy>(
    lb: &mut Lb,
    sid: u32,
    addr: impl Fn(u8) -> A,
    forward: fn(A) -> Forward,
) {
    for i in 0..4u32 {
        let a = addr(10 + i as u8);
        lb.set_forward(4 * sid + i, a.into(), forward(a));
    }
}

/// The Internet checksum of `b` (0 when `b` holds a valid checksum).
fn csum(b: &[u8], seed: u32) -> u16 {
    let mut sum = seed;
    for w in b.chunks(2) {
        sum += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The Ethernet header every encapsulated frame leaves with: to the next hop, from the wire.
fn assert_eth(out: &[u8], ether_type: u16) {
    assert_eq!(&out[..6], &NEXT_HOP_MAC, "destination: the next hop's MAC (FIB)");
    assert_eq!(&out[6..12], &WIRE_MAC, "source: the egress interface's MAC (FIB)");
    assert_eq!(be16(out, 12), ether_type);
}

/// The outer IPv4 header at 14: returns (source, destination).
fn assert_outer4(out: &[u8], proto: u8, tos: u8) -> ([u8; 4], [u8; 4]) {
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45, "version 4, IHL 5");
    assert_eq!(ip[1], tos, "TOS copied from the inner packet");
    assert_eq!(be16(ip, 2) as usize, out.len() - 14, "total length");
    assert_eq!(be16(ip, 4), 0, "identification");
    assert_eq!(be16(ip, 6), 0x4000, "Don't Fragment, offset 0");
    assert_eq!(ip[8], 64, "TTL");
    assert_eq!(ip[9], proto);
    assert_eq!(csum(ip, 0), 0, "outer header checksum valid");
    (ip[12..16].try_into().unwrap(), ip[16..20].try_into().unwrap())
}

/// The outer IPv6 header at 14: returns (source, destination).
fn assert_outer6(out: &[u8], next: u8, tc: u8, label: u32) -> ([u8; 16], [u8; 16]) {
    let ip = &out[14..54];
    let word = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
    assert_eq!(word >> 28, 6, "version 6");
    assert_eq!(
        (word >> 20) as u8,
        tc,
        "traffic class copied from the inner packet"
    );
    assert_eq!(word & 0xfffff, label, "flow label from the entropy hash");
    assert_eq!(be16(ip, 4) as usize, out.len() - 54, "payload length");
    assert_eq!((ip[6], ip[7]), (next, 64), "next header, hop limit");
    (ip[8..24].try_into().unwrap(), ip[24..40].try_into().unwrap())
}

/// The backend of service `sid` whose address is `dst` among `addr(10..14)`.
fn backend_at(sid: u32, dst: IpAddr, addr: impl Fn(u8) -> IpAddr) -> u32 {
    let i = (0..4u8)
        .find(|i| addr(10 + i) == dst)
        .unwrap_or_else(|| panic!("outer destination {dst} is no backend of service {sid}"));
    4 * sid + i as u32
}

#[test]
fn ipv4_in_ipv4_leaves_for_the_fib_next_hop_with_exact_outer_headers() {
    in_routed_ns("encap_ipip4", |lb, r| {
        route_all(lb, 0, |n| host4(ROUTED4, n), ipip);
        let mut frame = from_client(Frame::tcp(client4(1), 40000, VIP4, 80, TCP_ACK));
        frame[15] = 0xb8; // DSCP EF: copied to the outer header
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX, "egress is the receiving interface: XDP_TX");
        assert_eq!(out.len(), frame.len() + 20);
        assert_eth(&out, ETH_P_IP);
        let (src, dst) = assert_outer4(&out, 4, 0xb8);
        assert_eq!(src, SOURCE4, "outer source: encap_source");
        let id = backend_at(0, dst.into(), |n| host4(ROUTED4, n).into());
        let entry = lb
            .entry(0, v4(client4(1)), lb_common::FAMILY_V4, 0)
            .expect("stick entry");
        assert_eq!(entry.backend, id, "the outer destination is the chosen backend");
        assert_eq!(&out[34..], &frame[14..], "the inner packet, byte for byte");
        assert_eq!(lb.gstat(Counter::Redirect), 0);
    });
}

#[test]
fn gue_over_ipv4_carries_the_flow_hash_in_source_address_and_port() {
    in_routed_ns("encap_gue4", |lb, r| {
        // A prefix source: its 16 host bits carry the entropy hash.
        for i in 0..4u32 {
            let a = host4(ROUTED4, 10 + i as u8);
            let f = Forward::Gue {
                source: source([172, 16, 0, 0], 16),
                port: GUE_PORT,
            };
            lb.set_forward(i, a.into(), f);
        }
        let frame = from_client(Frame::tcp(client4(2), 40001, VIP4, 80, TCP_ACK));
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out.len(), frame.len() + 20 + 8 + 4);
        assert_eth(&out, ETH_P_IP);
        let (src, dst) = assert_outer4(&out, 17, 0);
        backend_at(0, dst.into(), |n| host4(ROUTED4, n).into());
        let hash = encap_entropy(&v4(client4(2)), 40001u16.to_be());
        assert_eq!(src[..2], [172, 16]);
        assert_eq!(
            u16::from_be_bytes([src[2], src[3]]),
            hash as u16,
            "host bits: the hash"
        );
        let udp = &out[34..42];
        assert_eq!(
            be16(udp, 0),
            gue_source_port(hash),
            "UDP source port from the hash"
        );
        assert!(be16(udp, 0) >= 49152);
        assert_eq!(be16(udp, 2), GUE_PORT);
        assert_eq!(be16(udp, 4) as usize, out.len() - 34, "UDP length");
        assert_eq!(be16(udp, 6), 0, "UDP checksum 0 over IPv4");
        assert_eq!(
            &out[42..46],
            &[0, 4, 0, 0],
            "GUE version 0, protocol 4 (IPv4), no flags"
        );
        assert_eq!(&out[46..], &frame[14..]);
        // Another connection of another client: another source and port; the same again: same.
        let other = from_client(Frame::tcp(client4(3), 40002, VIP4, 80, TCP_ACK));
        let (_, out2) = lb.run_on(&other, r.wire_ifindex);
        assert_ne!((&out2[26..30], be16(&out2, 34)), (&out[26..30], be16(&out, 34)));
        let (_, again) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(again, out);
    });
}

#[test]
fn ipv6_in_ipv6_and_gue_over_ipv6_have_exact_outer_headers() {
    in_routed_ns("encap_v6", |lb, r| {
        // Service 2 (VIP6:80/tcp) by IPIP, service 3 (VIP6:53/udp) by GUE.
        route_all(lb, 2, |n| host6(0x201, n), ipip);
        route_all(lb, 3, |n| host6(0x201, n), gue);
        let mut frame = from_client(Frame::tcp(client6(1), 40000, VIP6, 80, TCP_ACK));
        frame[14] = 0x6b; // traffic class 0xb8: version 6, then the class's high nibble
        frame[15] = 0x80;
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out.len(), frame.len() + 40);
        assert_eth(&out, ETH_P_IPV6);
        let hash = encap_entropy(&client6(1), 40000u16.to_be());
        let (src, dst) = assert_outer6(&out, 41, 0xb8, flow_label(hash));
        assert_eq!(src, SOURCE6);
        backend_at(2, dst.into(), |n| host6(0x201, n).into());
        assert_eq!(&out[54..], &frame[14..]);

        let frame = from_client(Frame::udp(client6(2), 5000, VIP6, 53));
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out.len(), frame.len() + 40 + 8 + 4);
        let hash = encap_entropy(&client6(2), 5000u16.to_be());
        let (src, dst) = assert_outer6(&out, 17, 0, flow_label(hash));
        assert_eq!(src, SOURCE6);
        backend_at(3, dst.into(), |n| host6(0x201, n).into());
        let udp = &out[54..62];
        assert_eq!((be16(udp, 0), be16(udp, 2)), (gue_source_port(hash), GUE_PORT));
        assert_eq!(be16(udp, 4) as usize, out.len() - 54);
        assert_eq!(be16(udp, 6), 0, "zero UDP checksum over IPv6 (RFC 6935 tunnels)");
        assert_eq!(&out[62..66], &[0, 41, 0, 0], "GUE version 0, protocol 41 (IPv6)");
        assert_eq!(&out[66..], &frame[14..]);
    });
}

/// The outer headers are built once per backend and next hop and cached per CPU: a changed
/// encapsulation (source, mode, GUE port) must still apply from the very next packet.
#[test]
fn a_changed_encapsulation_applies_from_the_next_packet() {
    in_routed_ns("encap_change", |lb, r| {
        let frame = from_client(Frame::tcp(client4(6), 40000, VIP4, 80, TCP_ACK));
        let hash = encap_entropy(&v4(client4(6)), 40000u16.to_be());
        let set_all = |lb: &mut Lb, f: Forward| {
            for i in 0..4u32 {
                lb.set_forward(i, host4(ROUTED4, 10 + i as u8).into(), f);
            }
        };
        route_all(lb, 0, |n| host4(ROUTED4, n), ipip);
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(assert_outer4(&out, 4, 0).0, SOURCE4);
        // The same mode from another source address.
        let other = source([192, 0, 2, 77], 32);
        set_all(lb, Forward::Ipip { source: other });
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!((verdict, out.len()), (XDP_TX, frame.len() + 20));
        assert_eq!(assert_outer4(&out, 4, 0).0, [192, 0, 2, 77]);
        assert_eq!(&out[34..], &frame[14..]);
        // GUE from a /16 whose host bits carry the hash.
        let prefix = source([172, 16, 0, 0], 16);
        set_all(
            lb,
            Forward::Gue {
                source: prefix,
                port: 7000,
            },
        );
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!((verdict, out.len()), (XDP_TX, frame.len() + 20 + 8 + 4));
        let (src, _) = assert_outer4(&out, 17, 0);
        assert_eq!(src, [172, 16, (hash >> 8) as u8, hash as u8]);
        assert_eq!((be16(&out, 34), be16(&out, 36)), (gue_source_port(hash), 7000));
        // The same again but for the port.
        set_all(
            lb,
            Forward::Gue {
                source: prefix,
                port: 7001,
            },
        );
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(be16(&out, 36), 7001);
    });
}

#[test]
fn an_ipv6_prefix_source_carries_the_hash_in_its_last_bits() {
    in_routed_ns("encap_prefix6", |lb, r| {
        let mut base = SOURCE6;
        base[15] = 0;
        for i in 0..4u32 {
            let a = host6(0x201, 10 + i as u8);
            let f = Forward::Gue {
                source: source(base, 104),
                port: GUE_PORT,
            };
            lb.set_forward(4 * 2 + i, a.into(), f);
        }
        let frame = from_client(Frame::tcp(client6(3), 40000, VIP6, 80, TCP_ACK));
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX);
        let hash = encap_entropy(&client6(3), 40000u16.to_be());
        let (src, _) = assert_outer6(&out, 17, 0, flow_label(hash));
        let mut expected = base;
        expected[13..].copy_from_slice(&hash.to_be_bytes()[1..]);
        assert_eq!(src, expected, "the prefix, then the hash's low 24 bits");
        assert_eq!(be16(&out, 54), gue_source_port(hash));
    });
}

#[test]
fn a_vlan_tag_is_dropped_with_the_clients_ethernet_header() {
    in_routed_ns("encap_vlan", |lb, r| {
        route_all(lb, 0, |n| host4(ROUTED4, n), ipip);
        let frame = Frame::tcp(client4(4), 40000, VIP4, 80, TCP_ACK)
            .macs(CLIENT_MAC, LB_MAC)
            .vlan(100)
            .bytes();
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out.len(), frame.len() - 4 + 20);
        assert_eth(&out, ETH_P_IP);
        assert_outer4(&out, 4, 0);
        assert_eq!(&out[34..], &frame[18..]);
    });
}

#[test]
fn another_egress_interface_is_reached_by_redirect() {
    in_routed_ns("encap_redirect", |lb, _r| {
        route_all(lb, 0, |n| host4(ROUTED4, n), ipip);
        // Received on the loopback (BPF_PROG_TEST_RUN's default), routed out of the wire.
        let (verdict, out) = lb.run(&from_client(Frame::tcp(client4(5), 40000, VIP4, 80, TCP_ACK)));
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eth(&out, ETH_P_IP);
        assert_eq!(lb.gstat(Counter::Redirect), 1);
    });
}

#[test]
fn fib_misses_are_passed_untouched_and_counted() {
    in_routed_ns("encap_fib_miss", |lb, r| {
        // No route at all, and a route whose next hop has no neighbour entry.
        for i in 0..2u32 {
            lb.set_forward(i, host4(UNROUTED4, 10).into(), ipip(host4(UNROUTED4, 10)));
            lb.set_forward(2 + i, host4(NO_NEIGH4, 10).into(), gue(host4(NO_NEIGH4, 10)));
        }
        route_all(lb, 2, |n| host6(0x203, n), ipip);
        let mut misses = 0;
        for n in 1..=8 {
            let frame = from_client(Frame::tcp(client4(n), 40000, VIP4, 80, TCP_ACK));
            let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
            assert_eq!(verdict, XDP_PASS, "client {n}");
            assert_eq!(out, frame, "a passed frame is untouched");
            misses += 1;
        }
        let frame = from_client(Frame::tcp(client6(1), 40000, VIP6, 80, TCP_ACK));
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!((verdict, out), (XDP_PASS, frame));
        assert_eq!(lb.gstat(Counter::EncapFibMiss), misses + 1);
        assert_eq!(lb.gstat(lb_common::gstat::Derived::Tx), 0);
        // A miss is not cached: once the route and the neighbour exist, the next packet
        // takes them.
        let hop = harness::topology::mac_str(&NEXT_HOP_MAC);
        netns::ip_batch(
            r.ns(),
            &[
                "route add 10.203.0.0/24 via 10.200.0.2".into(),
                format!("neigh add 10.200.0.4 lladdr {hop} dev {WIRE} nud permanent"),
            ],
        )
        .unwrap();
        let frame = from_client(Frame::tcp(client4(1), 40000, VIP4, 80, TCP_ACK));
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX, "routed now");
        let dst: [u8; 4] = out[30..34].try_into().unwrap();
        assert!(
            dst == host4(UNROUTED4, 10) || dst == host4(NO_NEIGH4, 10),
            "{dst:?}"
        );
    });
}

#[test]
fn too_big_once_encapsulated_gets_icmp_fragmentation_needed() {
    in_routed_ns("encap_too_big4", |lb, r| {
        route_all(lb, 0, |n| host4(SMALL_MTU4, n), ipip);
        // 1280 bytes of IP packet + 20 of IPIP = 1300: fits exactly.
        let fits = from_client(Frame::tcp(client4(1), 40000, VIP4, 80, TCP_ACK).payload(&[7; 1280 - 40]));
        let (verdict, out) = lb.run_on(&fits, r.wire_ifindex);
        assert_eq!((verdict, out.len()), (XDP_TX, fits.len() + 20));
        // One byte more: answered, not forwarded.
        let big = from_client(Frame::tcp(client4(1), 40000, VIP4, 80, TCP_ACK).payload(&[7; 1281 - 40]));
        let (verdict, out) = lb.run_on(&big, r.wire_ifindex);
        assert_eq!(
            verdict, XDP_TX,
            "the error goes back out of the receiving interface"
        );
        assert_eq!(out.len(), 14 + 20 + 8 + 64);
        assert_eq!(
            (&out[..6], &out[6..12]),
            (&CLIENT_MAC[..], &LB_MAC[..]),
            "MACs swapped"
        );
        assert_eq!(be16(&out, 12), ETH_P_IP);
        let ip = &out[14..34];
        assert_eq!((ip[0], ip[1]), (0x45, 0));
        assert_eq!(be16(ip, 2), 20 + 8 + 64);
        assert_eq!((ip[8], ip[9]), (64, 1), "TTL 64, ICMP");
        assert_eq!(csum(ip, 0), 0, "IP checksum valid");
        assert_eq!(
            (&ip[12..16], &ip[16..20]),
            (&VIP4[..], &client4(1)[..]),
            "from the VIP to the client"
        );
        let icmp = &out[34..];
        assert_eq!(
            (icmp[0], icmp[1]),
            (3, 4),
            "destination unreachable, fragmentation needed"
        );
        assert_eq!(
            be16(icmp, 6) as usize,
            MTU4 - 20,
            "next-hop MTU: the route's less IPIP"
        );
        assert_eq!(csum(icmp, 0), 0, "ICMP checksum valid");
        assert_eq!(&icmp[8..], &big[14..14 + 64], "quotes the client's packet");
        assert_eq!(lb.gstat(Counter::EncapTooBig), 1);
    });
}

#[test]
fn too_big_over_ipv6_gets_icmpv6_packet_too_big() {
    in_routed_ns("encap_too_big6", |lb, r| {
        route_all(lb, 3, |n| host6(0x202, n), gue);
        let overhead = 40 + 8 + 4;
        let payload = MTU6 - overhead - 40 - 8 + 1;
        let big = from_client(Frame::udp(client6(9), 5000, VIP6, 53).payload(&vec![7; payload]));
        let (verdict, out) = lb.run_on(&big, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out.len(), 14 + 40 + 8 + 128);
        assert_eq!((&out[..6], &out[6..12]), (&CLIENT_MAC[..], &LB_MAC[..]));
        let ip = &out[14..54];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!((be16(ip, 4), ip[6], ip[7]), (8 + 128, 58, 64));
        assert_eq!((&ip[8..24], &ip[24..40]), (&VIP6[..], &client6(9)[..]));
        let icmp = &out[54..];
        assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
        let mtu = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]) as usize;
        assert_eq!(mtu, MTU6 - overhead, "the route's MTU less GUE over IPv6");
        // The checksum covers the pseudo-header: addresses, length, next header.
        let pseudo: u32 =
            ip[8..40].chunks(2).map(|w| be16(w, 0) as u32).sum::<u32>() + icmp.len() as u32 + 58;
        assert_eq!(csum(icmp, pseudo), 0, "ICMPv6 checksum valid");
        assert_eq!(&icmp[8..], &big[14..14 + 128]);
        assert_eq!(lb.gstat(Counter::EncapTooBig), 1);
    });
}

#[test]
fn without_the_encapsulation_stage_frames_are_passed_untouched_and_counted() {
    in_routed_ns("encap_no_stage", |lb, r| {
        route_all(lb, 0, |n| host4(ROUTED4, n), ipip);
        let frame = from_client(Frame::tcp(client4(1), 40000, VIP4, 80, TCP_ACK));
        let (verdict, _) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(verdict, XDP_TX, "the load filled the stage: encapsulated");
        assert_eq!(lb.gstat(Counter::EncapStageMissing), 0);
        // As before an agent fills it: the main program's tail call fails.
        lb.dp.clear_encap_stage().unwrap();
        let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
        assert_eq!(
            (verdict, out),
            (XDP_PASS, frame.clone()),
            "passed untouched, not dropped"
        );
        assert_eq!(lb.gstat(Counter::EncapStageMissing), 1);
        assert_eq!(
            lb.gstat(lb_common::gstat::Derived::Tx),
            1,
            "only the first was sent"
        );
        // L2 backends never reach the stage.
        let l2 = from_client(Frame::udp(client4(2), 40000, VIP4, 53));
        assert_eq!(lb.run(&l2).0, XDP_TX);
        assert_eq!(lb.gstat(Counter::EncapStageMissing), 1);
    });
}

#[test]
fn a_first_fragment_carries_the_same_flow_hash_as_the_flows_whole_packets() {
    // A whole packet's hash is read straight from its header; a fragment (as IPv4 options,
    // IPv6 extension headers and ICMP errors) is parsed again in full: the same hash.
    in_routed_ns("encap_frag_hash", |lb, r| {
        route_all(lb, 1, |n| host4(ROUTED4, n), gue);
        route_all(lb, 3, |n| host6(0x201, n), gue);
        for (client, vip) in [
            (IpAddr::from(client4(5)), IpAddr::from(VIP4)),
            (IpAddr::from(client6(5)), IpAddr::from(VIP6)),
        ] {
            let flow = Frame::udp(client, 40005, vip, 53)
                .payload(&[7; 64])
                .macs(CLIENT_MAC, LB_MAC);
            let whole = flow.bytes();
            let first = flow.fragments(77, 32).remove(0);
            let (udp_at, hash) = match client {
                IpAddr::V4(c) => (34, encap_entropy(&v4(c.octets()), 40005u16.to_be())),
                IpAddr::V6(c) => (54, encap_entropy(&c.octets(), 40005u16.to_be())),
            };
            for frame in [whole, first] {
                let (verdict, out) = lb.run_on(&frame, r.wire_ifindex);
                assert_eq!(verdict, XDP_TX, "{client}");
                assert_eq!(be16(&out, udp_at), gue_source_port(hash), "{client}");
            }
        }
    });
}
