//! The backend hosts' decapsulator (its own object) through BPF_PROG_TEST_RUN, at both hooks
//! (`xlb_decap` at XDP, `xlb_decap_tc` at tc): IPIP and GUE to a VIP come out as the inner
//! packet exactly; truncated, foreign and other frames pass untouched, each counted under what
//! it is.

use std::net::IpAddr;

use harness::encap::*;
use harness::fixture::*;
use harness::packet::*;
use lb_common::decap_stat;
use xlb::datapath::decap::{Decap, Hook};

const GUE_PORT: u16 = 6080;
const BALANCER4: [u8; 4] = [10, 1, 0, 2];
const BACKEND4: [u8; 4] = [10, 2, 0, 5];
const BALANCER6: [u8; 16] = [0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const BACKEND6: [u8; 16] = [0xfd, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 5];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 1];

fn decap(gue_port: Option<u16>) -> Decap {
    let mut d = Decap::load(None)
        .unwrap_or_else(|e| panic!("loading the decapsulator needs root and BPF (run as root): {e}"));
    d.add_vips(&[IpAddr::from(VIP4), IpAddr::from(VIP6)]).unwrap();
    d.set_gue_port(gue_port).unwrap();
    d
}

fn out4() -> (IpAddr, IpAddr) {
    (BALANCER4.into(), BACKEND4.into())
}

fn out6() -> (IpAddr, IpAddr) {
    (BALANCER6.into(), BACKEND6.into())
}

/// A client's packets to the VIPs, as the balancer received them.
fn inner4() -> Vec<u8> {
    Frame::tcp(client4(1), 40000, VIP4, 80, TCP_ACK).packet()
}

fn inner6() -> Vec<u8> {
    Frame::udp(client6(1), 40000, VIP6, 53).packet()
}

/// An IP packet in a frame from the router to the backend.
fn framed(packet: &[u8]) -> Vec<u8> {
    let ether_type = if packet[0] >> 4 == 4 { ETH_P_IP } else { ETH_P_IPV6 };
    eth(BACKEND_MAC, ROUTER_MAC, None, ether_type, packet)
}

fn run(d: &mut Decap, hook: Hook, frame: &[u8]) -> Vec<u8> {
    let (verdict, out) = d.test_run(hook, frame).unwrap();
    assert_eq!(
        verdict,
        hook.pass_verdict(),
        "{hook}: the decapsulator passes every frame"
    );
    out
}

#[test]
fn ipip_and_gue_to_a_vip_come_out_as_the_inner_packet() {
    for hook in Hook::ALL {
        let mut d = decap(Some(GUE_PORT));
        let ((s4, d4), (s6, d6)) = (out4(), out6());
        let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            ("IPIP v4 in v4", ipip(s4, d4, &inner4()), inner4()),
            ("IPIP v6 in v6", ipip(s6, d6, &inner6()), inner6()),
            ("IPIP v4 in v6", ipip(s6, d6, &inner4()), inner4()),
            ("IPIP v6 in v4", ipip(s4, d4, &inner6()), inner6()),
            ("GUE v4", gue(s4, d4, GUE_PORT, &inner4()), inner4()),
            ("GUE v6", gue(s6, d6, GUE_PORT, &inner6()), inner6()),
            (
                "GUE v4 with two words of optional fields",
                gue_with(s4, d4, GUE_PORT, &gue_header(0, false, 2, PROTO_IPIP), &inner4()),
                inner4(),
            ),
        ];
        for (n, (what, outer, inner)) in cases.iter().enumerate() {
            let out = run(&mut d, hook, &framed(outer));
            let want = eth(BACKEND_MAC, ROUTER_MAC, None, inner_ether_type(inner), inner);
            assert_eq!(
                out, want,
                "{hook}: {what}: the inner packet, in a frame with the same MACs"
            );
            let c = d.counters().unwrap();
            assert_eq!(
                c.get(decap_stat::DECAPSULATED),
                n as u64 + 1,
                "{hook}: {what}: counted"
            );
        }
        let c = d.counters().unwrap();
        assert_eq!(
            c.0.iter().sum::<u64>(),
            cases.len() as u64,
            "{hook}: nothing else counted: {c:?}"
        );
    }
}

/// Whether the kernel refuses `frame` as a tc program's test input: BPF_PROG_TEST_RUN builds an
/// skb only when the frame holds a whole minimal IP header of its ethertype.
fn test_run_refuses_at_tc(frame: &[u8]) -> bool {
    let min = match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IP => 20,
        ETH_P_IPV6 => 40,
        _ => 0,
    };
    frame.len() < 14 + min
}

/// Every frame of `cases` is passed untouched and counted once under `stat` (at tc, but for
/// those BPF_PROG_TEST_RUN refuses: they must be refused, and are not counted).
fn untouched_and_counted(d: &mut Decap, hook: Hook, stat: u32, cases: &[(&str, Vec<u8>)]) {
    let before = d.counters().unwrap();
    let mut ran = 0;
    for (what, frame) in cases {
        if hook == Hook::Tc && test_run_refuses_at_tc(frame) {
            assert!(
                d.test_run(hook, frame).is_err(),
                "{hook}: {what}: the kernel was expected to refuse this test input"
            );
            continue;
        }
        assert_eq!(&run(d, hook, frame), frame, "{hook}: {what}: must pass untouched");
        ran += 1;
    }
    let after = d.counters().unwrap();
    for (i, name) in decap_stat::NAMES.iter().enumerate() {
        let want = if i as u32 == stat { ran } else { 0 };
        assert_eq!(
            after.0[i] - before.0[i],
            want,
            "{hook}: counter {name} after {cases:?}"
        );
    }
}

#[test]
fn truncated_or_invalid_encapsulation_is_passed_untouched_as_malformed() {
    for hook in Hook::ALL {
        let mut d = decap(Some(GUE_PORT));
        let ((s4, d4), (s6, d6)) = (out4(), out6());
        let whole = framed(&ipip(s4, d4, &inner4()));
        let mut outer_too_long = whole.clone();
        outer_too_long[16..18].copy_from_slice(&2000u16.to_be_bytes());
        let mut inner_too_long = whole.clone();
        inner_too_long[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&2000u16.to_be_bytes());
        let mut inner_not_v4 = whole.clone();
        inner_not_v4[14 + 20] = 0x65;
        let cases = vec![
            ("outer IPv4 header cut short", whole[..14 + 12].to_vec()),
            (
                "outer IPv6 header cut short",
                framed(&ipip(s6, d6, &inner6()))[..14 + 30].to_vec(),
            ),
            ("outer IPv4 total length beyond the frame", outer_too_long),
            (
                "inner IPv4 header cut short",
                framed(&ipip(s4, d4, &inner4()[..12])),
            ),
            (
                "inner IPv6 header cut short",
                framed(&ipip(s6, d6, &inner6()[..30])),
            ),
            ("inner IPv4 total length beyond the frame", inner_too_long),
            (
                "inner header of another version than its protocol says",
                inner_not_v4,
            ),
            (
                "GUE header cut short",
                framed(&outer(s4, d4, PROTO_UDP, &udp(GUE_SPORT, GUE_PORT, &[0, 4]))),
            ),
            (
                "GUE optional fields beyond the UDP payload",
                framed(&gue_with(s4, d4, GUE_PORT, &[31, PROTO_IPIP, 0, 0], &inner4())),
            ),
        ];
        untouched_and_counted(&mut d, hook, decap_stat::MALFORMED, &cases);
    }
}

#[test]
fn foreign_encapsulated_frames_pass_untouched_and_are_counted() {
    for hook in Hook::ALL {
        let mut d = decap(Some(GUE_PORT));
        let ((s4, d4), (s6, d6)) = (out4(), out6());
        let not_vip4 = Frame::tcp(client4(1), 40000, [10, 0, 0, 99], 80, TCP_ACK).packet();
        let not_vip6 = Frame::udp(client6(1), 40000, client6(9), 53).packet();
        // VIP4's address as an IPv6 address: the family is part of a VIP.
        let mut vip4_as_v6 = [0u8; 16];
        vip4_as_v6[..4].copy_from_slice(&VIP4);
        let vip4_bytes_v6 = Frame::udp(client6(1), 40000, vip4_as_v6, 53).packet();
        let foreign = vec![
            (
                "IPIP v4, inner destination not a VIP",
                framed(&ipip(s4, d4, &not_vip4)),
            ),
            (
                "IPIP v6, inner destination not a VIP",
                framed(&ipip(s6, d6, &not_vip6)),
            ),
            (
                "IPIP v6, VIP4's bytes as an IPv6 address",
                framed(&ipip(s6, d6, &vip4_bytes_v6)),
            ),
            (
                "GUE v4, inner destination not a VIP",
                framed(&gue(s4, d4, GUE_PORT, &not_vip4)),
            ),
            (
                "GUE version 1",
                framed(&gue_with(
                    s4,
                    d4,
                    GUE_PORT,
                    &gue_header(1, false, 0, PROTO_IPIP),
                    &inner4(),
                )),
            ),
            (
                "GUE control message",
                framed(&gue_with(
                    s6,
                    d6,
                    GUE_PORT,
                    &gue_header(0, true, 0, PROTO_IPV6),
                    &inner6(),
                )),
            ),
            (
                "GUE of another inner protocol (GRE)",
                framed(&gue_with(
                    s4,
                    d4,
                    GUE_PORT,
                    &gue_header(0, false, 0, 47),
                    &inner4(),
                )),
            ),
        ];
        untouched_and_counted(&mut d, hook, decap_stat::FOREIGN, &foreign);

        let not_encapsulated = vec![
            (
                "GUE to another UDP port",
                framed(&gue(s4, d4, GUE_PORT + 1, &inner4())),
            ),
            ("plain TCP to the VIP", framed(&inner4())),
            ("plain UDP to the VIP", framed(&inner6())),
            ("ARP", eth(BACKEND_MAC, ROUTER_MAC, None, ETH_P_ARP, &[0; 28])),
            (
                "802.1Q tagged IPIP (tags are not looked through)",
                eth(
                    BACKEND_MAC,
                    ROUTER_MAC,
                    Some(7),
                    ETH_P_IP,
                    &ipip(s4, d4, &inner4()),
                ),
            ),
        ];
        untouched_and_counted(&mut d, hook, decap_stat::NOT_ENCAPSULATED, &not_encapsulated);

        let fragments = vec![
            (
                "IPIP in an outer IPv4 first fragment",
                framed(&ipv4_opts(
                    BALANCER4,
                    BACKEND4,
                    PROTO_IPIP,
                    0x2000,
                    &[],
                    &inner4(),
                )),
            ),
            (
                "IPIP in an outer IPv4 later fragment",
                framed(&ipv4_opts(
                    BALANCER4,
                    BACKEND4,
                    PROTO_IPIP,
                    0x0003,
                    &[],
                    &inner4(),
                )),
            ),
            (
                "GUE in an outer IPv6 first fragment",
                framed(&ipv6(BALANCER6, BACKEND6, 44, &{
                    let mut p = v6_frag(PROTO_UDP, 0, true);
                    p.extend(udp(GUE_SPORT, GUE_PORT, &gue_header(0, false, 0, PROTO_IPV6)));
                    p
                })),
            ),
        ];
        untouched_and_counted(&mut d, hook, decap_stat::FRAGMENTED, &fragments);
    }
}

#[test]
fn without_a_gue_port_only_ipip_is_decapsulated() {
    for hook in Hook::ALL {
        let mut d = decap(None);
        let (s4, d4) = out4();
        let gue4 = framed(&gue(s4, d4, GUE_PORT, &inner4()));
        untouched_and_counted(
            &mut d,
            hook,
            decap_stat::NOT_ENCAPSULATED,
            &[("GUE with GUE off", gue4)],
        );
        let out = run(&mut d, hook, &framed(&ipip(s4, d4, &inner4())));
        assert_eq!(out, eth(BACKEND_MAC, ROUTER_MAC, None, ETH_P_IP, &inner4()));
    }
}
