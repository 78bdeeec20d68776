//! Encapsulated packets as the balancer's `ipip` and `gue` modes send them (the wire formats
//! are described in `lb_common::maps::decap`), for the decapsulator's fixtures and for the live
//! test that sends them from a raw socket. An inner packet is a whole IP packet
//! ([`crate::packet::Frame::packet`]); its family is read from its first nibble.

use std::net::IpAddr;

use crate::packet::{ETH_P_IP, ETH_P_IPV6, ipv4, ipv6, udp};

/// IP protocol numbers: IPv4 inside (IPIP), IPv6 inside, UDP.
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_UDP: u8 = 17;
/// The UDP source port of the GUE packets built here (the balancer puts a flow hash there).
pub const GUE_SPORT: u16 = 40123;

/// The protocol number that says what `inner` is (4 or 41), from its version nibble.
pub fn inner_proto(inner: &[u8]) -> u8 {
    match inner[0] >> 4 {
        4 => PROTO_IPIP,
        6 => PROTO_IPV6,
        v => panic!("inner packet of IP version {v}"),
    }
}

/// The ethertype of `inner` once it is the frame's only IP packet.
pub fn inner_ether_type(inner: &[u8]) -> u16 {
    if inner_proto(inner) == PROTO_IPIP {
        ETH_P_IP
    } else {
        ETH_P_IPV6
    }
}

/// An outer IP header from `src` to `dst` carrying `proto` and `payload`.
pub fn outer(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(s.octets(), d.octets(), proto, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s.octets(), d.octets(), proto, payload),
        _ => panic!("outer addresses of two families: {src} -> {dst}"),
    }
}

/// IPIP: `inner` inside an outer header from `src` to `dst`.
pub fn ipip(src: IpAddr, dst: IpAddr, inner: &[u8]) -> Vec<u8> {
    outer(src, dst, inner_proto(inner), inner)
}

/// A GUE header: `version` (2 bits), control flag, `hlen` words of optional fields (zeroes,
/// appended), inner protocol.
pub fn gue_header(version: u8, control: bool, hlen: u8, proto: u8) -> Vec<u8> {
    let mut h = vec![version << 6 | u8::from(control) << 5 | hlen, proto, 0, 0];
    h.resize(4 + 4 * hlen as usize, 0);
    h
}

/// GUE: `inner` behind a version 0 data header, in UDP to `port`, in an outer header from
/// `src` to `dst`.
pub fn gue(src: IpAddr, dst: IpAddr, port: u16, inner: &[u8]) -> Vec<u8> {
    gue_with(
        src,
        dst,
        port,
        &gue_header(0, false, 0, inner_proto(inner)),
        inner,
    )
}

/// GUE with the header `header` as given (for malformed and foreign shapes).
pub fn gue_with(src: IpAddr, dst: IpAddr, port: u16, header: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut payload = header.to_vec();
    payload.extend_from_slice(inner);
    outer(src, dst, PROTO_UDP, &udp(GUE_SPORT, port, &payload))
}
