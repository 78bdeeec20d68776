//! The real XDP program and its real maps through BPF_PROG_TEST_RUN: packet fixtures in,
//! verdict, output bytes and stick-table change out. Needs root (CAP_BPF); fails loudly without.

mod affinity;
mod backends;
mod decap;
mod encap;
mod forwarding;
mod fragments;
mod inserts;
mod malformed;
mod passive;
mod pins;
mod stick_deletion;
mod stickiness;

use harness::fixture::*;
use harness::packet::*;

/// `f` as the client sends it: from its MAC to the LB's.
fn from_client(f: Frame) -> Vec<u8> {
    f.macs(CLIENT_MAC, LB_MAC).bytes()
}

fn t4(src: [u8; 4], sport: u16, flags: u8) -> Vec<u8> {
    from_client(Frame::tcp(src, sport, VIP4, 80, flags))
}

fn t6(src: [u8; 16], sport: u16, flags: u8) -> Vec<u8> {
    from_client(Frame::tcp(src, sport, VIP6, 80, flags))
}

/// A UDP datagram from `src`:`sport` to VIP4:`dport` with IP identification `id`, as three
/// IPv4 fragments in order (the first carries the UDP header).
fn udp4_datagram(src: [u8; 4], sport: u16, dport: u16, id: u16) -> Vec<Vec<u8>> {
    Frame::udp(src, sport, VIP4, dport)
        .payload(&[0x5a; 40])
        .macs(CLIENT_MAC, LB_MAC)
        .fragments(id.into(), 16)
}

/// The same over IPv6 to VIP6 (fragment header identification `id`).
fn udp6_datagram(src: [u8; 16], sport: u16, dport: u16, id: u32) -> Vec<Vec<u8>> {
    Frame::udp(src, sport, VIP6, dport)
        .payload(&[0x5a; 40])
        .macs(CLIENT_MAC, LB_MAC)
        .fragments(id, 16)
}
