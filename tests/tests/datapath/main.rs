//! The real XDP program and its real maps through BPF_PROG_TEST_RUN: packet fixtures in,
//! verdict, output bytes and stick-table change out. Needs root (CAP_BPF); fails loudly without.

mod affinity;
mod backends;
mod forwarding;
mod fragments;
mod malformed;
mod pins;
mod stickiness;

use harness::fixture::*;
use harness::packet::*;

fn t4(src: [u8; 4], sport: u16, flags: u8) -> Vec<u8> {
    tcp4(CLIENT_MAC, LB_MAC, src, sport, VIP4, 80, flags)
}

fn t6(src: [u8; 16], sport: u16, flags: u8) -> Vec<u8> {
    tcp6(CLIENT_MAC, LB_MAC, src, sport, VIP6, 80, flags)
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
