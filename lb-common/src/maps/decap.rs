//! The decapsulator for backend hosts (`xlb decap`): programs `xlb_decap` (XDP) and
//! `xlb_decap_tc` (tc ingress), built as an object of their own (`lb-ebpf/src/decap`), so a
//! backend host creates none of the balancer's maps. Its maps' names, keys, values and counters
//! (one set, whichever hook runs).
//!
//! What it strips (the wire formats the balancer's `ipip` and `gue` modes send):
//! - IPIP: an outer IPv4 header (protocol 4 = IPv4 inside, 41 = IPv6 inside) or an outer IPv6
//!   header without extension headers (next header 4 or 41);
//! - GUE: an outer IPv4 or IPv6 header, UDP to the configured port, then a GUE header of
//!   version 0 (RFC draft-ietf-intarea-gue): byte 0 = version (2 bits, 0), C (1 bit, 0 for
//!   data), Hlen (5 bits: 32-bit words of optional fields that follow the 4-byte header);
//!   byte 1 = the inner protocol (4 or 41); bytes 2..4 flags. The inner packet follows the
//!   optional fields.

/// The program at XDP.
pub const PROG_DECAP: &str = "xlb_decap";
/// The same at tc ingress (`xlb decap attach --hook tc`).
pub const PROG_DECAP_TC: &str = "xlb_decap_tc";

/// The VIPs this host serves: key `DecapVip`, value `u8` (1). Written by `xlb decap attach`;
/// read per encapsulated packet. Only a packet whose inner destination is here is stripped.
pub const MAP_DECAP_VIPS: &str = "XLB_DECAP_VIPS";
/// Settings, index 0: a `DecapConfig`. Written by `xlb decap attach`; read per UDP packet.
pub const MAP_DECAP_CONFIG: &str = "XLB_DECAP_CONFIG";
/// Per-CPU counters (`u64`), index: `decap_stat`. Written per packet; read by `xlb decap show`.
pub const MAP_DECAP_STATS: &str = "XLB_DECAP_STATS";
/// Every map of the object (`xlb decap` pins all of them).
pub const DECAP_MAPS: [&str; 3] = [MAP_DECAP_VIPS, MAP_DECAP_CONFIG, MAP_DECAP_STATS];
/// VIPs one decapsulator holds.
pub const MAX_DECAP_VIPS: u32 = 1024;

/// Key of `MAP_DECAP_VIPS`: an address (IPv4 in the first 4 bytes, the rest zero) and its
/// family (`FAMILY_V4`, `FAMILY_V6`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct DecapVip {
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}
map_type!(DecapVip, 20);

/// Value of `MAP_DECAP_CONFIG`, index 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DecapConfig {
    /// The GUE UDP port, network byte order as in the packet; 0: GUE is not stripped.
    pub gue_port: u16,
    pub _pad: [u8; 2],
}
map_type!(DecapConfig, 4);

/// What became of each packet the decapsulator saw: the indices of `MAP_DECAP_STATS`. Every
/// packet is passed to the stack; each is counted under exactly one of these.
pub mod decap_stat {
    /// An encapsulated packet to one of our VIPs: the outer headers were stripped.
    pub const DECAPSULATED: u32 = 0;
    /// Not IPIP and not UDP to the GUE port (ARP, plain traffic, GUE off): untouched.
    pub const NOT_ENCAPSULATED: u32 = 1;
    /// Encapsulated, but not for us: the inner destination is not one of our VIPs, or a GUE
    /// header of another version, a control message, or another inner protocol. Untouched.
    pub const FOREIGN: u32 = 2;
    /// An IP header (outer, UDP/GUE, or inner) cut short or invalid. Untouched (the stack
    /// drops it).
    pub const MALFORMED: u32 = 3;
    /// An encapsulated packet whose outer header is a fragment: XDP sees fragments one at a
    /// time and cannot strip them. Untouched. (The balancer's MTU handling should make this 0.)
    pub const FRAGMENTED: u32 = 4;
    pub const COUNT: u32 = 5;
    /// Their names, as `xlb decap show` prints them (index: counter).
    pub const NAMES: [&str; COUNT as usize] = [
        "decapsulated",
        "not_encapsulated",
        "foreign",
        "malformed",
        "fragmented",
    ];
}
