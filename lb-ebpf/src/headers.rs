//! Where things sit in the headers the data path reads and writes: byte offsets, lengths, field
//! masks and protocol numbers (what `network-types` does not name). Offsets are from the start
//! of their own header; all of these are wire formats (IEEE 802.3/802.1Q, RFC 791, 8200, 793,
//! 792, 4443), none is ours to choose.

// --- Ethernet and 802.1Q ---------------------------------------------------------------------

/// A MAC address's length; an Ethernet header starts with the destination MAC, then the source.
pub const MAC_LEN: usize = 6;
/// Both MACs: where the source MAC ends.
pub const MACS_LEN: usize = 2 * MAC_LEN;
/// Where the ethertype sits in an Ethernet header (after the two MACs).
pub const ETH_TYPE_AT: usize = MACS_LEN;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
/// An 802.1Q tag: tag control (2 bytes), then the inner ethertype.
pub const VLAN_HLEN: usize = 4;
/// Where the inner ethertype sits in an 802.1Q tag (after the tag control field).
pub const VLAN_INNER_TYPE_AT: usize = 2;

// --- IPv4 and IPv6 ---------------------------------------------------------------------------

/// The IP version is the high nibble of an IP header's first byte (IPv4 `vihl`, IPv6 `vcf[0]`).
pub const IP_VERSION_SHIFT: u8 = 4;
pub const IPV4_VERSION: u8 = 4;
pub const IPV6_VERSION: u8 = 6;
pub const IPV4_ADDR_LEN: usize = 4;
pub const IPV6_ADDR_LEN: usize = 16;
/// The IPv4 header length field (low nibble of `vihl`) counts 32-bit words.
pub const IPV4_IHL_MASK: u8 = 0x0f;
pub const IPV4_IHL_MIN_WORDS: u8 = 5;
/// Bytes per 32-bit word (the unit of IPv4's IHL and TCP's data offset).
pub const WORD_LEN: usize = 4;
/// Where the source and destination addresses sit in an IPv4 header.
pub const IPV4_SRC_AT: usize = 12;
pub const IPV4_DST_AT: usize = 16;
/// Where the source address sits in an IPv6 header.
pub const IPV6_SRC_AT: usize = 8;
/// Where the next header's type sits in an IPv6 header.
pub const IPV6_NEXT_HDR_AT: usize = 6;
/// IPv4 `frags` field (host order): the More Fragments flag and the fragment offset.
pub const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
pub const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// IPv6 extension headers the parser walks (next-header values).
pub const IPV6_HOPOPTS: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_DSTOPTS: u8 = 60;
/// Every IPv6 extension header starts with the next header's type.
pub const IPV6_EXT_NEXT_HDR_AT: usize = 0;
/// Hop-by-hop, routing and destination options headers give their length (byte 1) in 8-byte
/// units, not counting the first 8 bytes.
pub const IPV6_EXT_LEN_AT: usize = 1;
pub const IPV6_EXT_LEN_UNIT: usize = 8;
/// The IPv6 fragment header: 8 bytes; its offset field (bytes 2..4) holds the offset above 3
/// flag bits; the datagram's identification is bytes 4..8.
pub const IPV6_FRAG_HDR_LEN: usize = 8;
pub const IPV6_FRAG_OFFSET_AT: usize = 2;
pub const IPV6_FRAG_OFFSET_SHIFT: u16 = 3;
pub const IPV6_FRAG_ID_AT: usize = 4;

// --- TCP, UDP, ICMP --------------------------------------------------------------------------

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
/// TCP and UDP alike start with the source port, then the destination port.
pub const L4_SPORT_AT: usize = 0;
pub const L4_DPORT_AT: usize = 2;
/// Both ports: what an ICMP error must quote of the L4 header at least.
pub const L4_PORTS_LEN: usize = 4;
/// Where the data offset (high nibble, 32-bit words), the flags and the sequence number sit in a
/// TCP header.
pub const TCP_DATA_OFFSET_AT: usize = 12;
/// The TCP sequence number (4 bytes, after the two ports).
pub const TCP_SEQ_AT: usize = 4;
pub const TCP_DATA_OFFSET_SHIFT: u8 = 4;
pub const TCP_DATA_OFFSET_MIN_WORDS: u8 = 5;
pub const TCP_FLAGS_AT: usize = 13;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_ACK: u8 = 0x10;
/// ICMP and ICMPv6 headers (type, code, checksum, 4 more bytes) before the quoted packet.
pub const ICMP_HDR_LEN: usize = 8;
pub const ICMP_TYPE_AT: usize = 0;
pub const ICMP_CODE_AT: usize = 1;
/// ICMP "destination unreachable", code "fragmentation needed"; ICMPv6 "packet too big".
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMPV6_PKT_TOOBIG: u8 = 2;

// --- Encapsulation (RFC 2003, 2473, 768, draft-ietf-intarea-gue) -------------------------------

/// An untagged Ethernet header: what the data path writes in front of an outer IP header.
pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
/// A GUE header of version 0 without extension fields: version/C/Hlen, protocol, flags.
pub const GUE_HLEN: usize = 4;
/// IP protocol numbers of an encapsulated packet: IPv4 (IP in IP) and IPv6.
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
/// IPv4 `frags` field (host order): Don't Fragment.
pub const IPV4_DONT_FRAGMENT: u16 = 0x4000;
/// Where the total length and the TOS sit in an IPv4 header; the payload length in IPv6.
pub const IPV4_TOS_AT: usize = 1;
pub const IPV4_TOT_LEN_AT: usize = 2;
pub const IPV6_PAYLOAD_LEN_AT: usize = 4;
/// Where an ICMP error's "next-hop MTU" sits in its 8-byte header (ICMP: the low 16 bits of the
/// last word, RFC 1191; ICMPv6: the whole last word).
pub const ICMP_MTU_AT: usize = 6;
pub const ICMPV6_MTU_AT: usize = 4;
/// Where the checksum sits in an ICMP/ICMPv6 header and in an IPv4 header.
pub const ICMP_CSUM_AT: usize = 2;
pub const IPV4_CSUM_AT: usize = 10;
