//! Crafted frames for BPF_PROG_TEST_RUN fixtures, fuzzing and benchmarks: Ethernet (optional
//! 802.1Q tag), IPv4 (options, fragments), IPv6 (extension headers), TCP, UDP, ICMP errors.
//! Checksums are filled in (the data path ignores them, but a capture of these frames is valid).

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Ethernet header (+ one VLAN tag when `vlan` is set) followed by `payload`.
pub fn eth(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn csum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 header with `options` (a multiple of 4 bytes), `frag` = flags|offset field
/// (identification 0x1234).
pub fn ipv4_opts(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    ipv4_full(src, dst, proto, 0x1234, frag, options, payload)
}

/// IPv4 header with identification `id`, `frag` = flags|offset field, `options` (a multiple
/// of 4 bytes).
pub fn ipv4_full(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + options.len() / 4;
    let tot = ihl * 4 + payload.len();
    let mut h = vec![
        0x40 | ihl as u8,
        0,
        (tot >> 8) as u8,
        tot as u8,
        (id >> 8) as u8,
        id as u8,
        (frag >> 8) as u8,
        frag as u8,
        64,
        proto,
        0,
        0,
    ];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    let c = csum(&h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_opts(src, dst, proto, 0, &[], payload)
}

/// IPv6 header; `next` is the first next-header value of `payload` (which may begin with
/// extension headers).
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.push(next);
    h.push(64);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// An IPv6 extension header of 8 bytes (hop-by-hop, routing or destination options kind).
pub fn v6_ext(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// IPv6 fragment header (identification 0x4242).
pub fn v6_frag(next: u8, offset_units: u16, more: bool) -> Vec<u8> {
    v6_frag_id(next, offset_units, more, 0x4242)
}

/// IPv6 fragment header with the datagram's identification `id`.
pub fn v6_frag_id(next: u8, offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let field = (offset_units << 3) | more as u16;
    let mut h = vec![next, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// `datagram` (an L4 header and its payload) split into IPv4 fragments of at most `chunk`
/// bytes (a multiple of 8) each, all with identification `id`, in order: the first carries
/// the L4 header.
pub fn ipv4_fragments(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    datagram: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    assert!(
        chunk > 0 && chunk.is_multiple_of(8),
        "fragment size must be a multiple of 8"
    );
    let parts: Vec<&[u8]> = datagram.chunks(chunk).collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let more = if i + 1 < parts.len() { 0x2000 } else { 0 };
            ipv4_full(src, dst, proto, id, more | (i * chunk / 8) as u16, &[], part)
        })
        .collect()
}

/// `datagram` split into IPv6 fragments (a fragment header with identification `id` each) of
/// at most `chunk` bytes (a multiple of 8), in order: the first carries the L4 header.
pub fn ipv6_fragments(
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    id: u32,
    datagram: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    assert!(
        chunk > 0 && chunk.is_multiple_of(8),
        "fragment size must be a multiple of 8"
    );
    let parts: Vec<&[u8]> = datagram.chunks(chunk).collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let mut p = v6_frag_id(proto, (i * chunk / 8) as u16, i + 1 < parts.len(), id);
            p.extend_from_slice(part);
            ipv6(src, dst, 44, &p)
        })
        .collect()
}

pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(20 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes());
    h.extend_from_slice(&(if flags & TCP_ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
    h.push(5 << 4);
    h.push(flags);
    h.extend_from_slice(&64240u16.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h.extend_from_slice(payload);
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// ICMP type 3 code 4 ("fragmentation needed", next-hop MTU 1400) quoting `inner` (an IPv4
/// packet; the first 28 bytes are quoted).
pub fn icmp4_frag_needed(inner: &[u8]) -> Vec<u8> {
    let mut h = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    h.extend_from_slice(&inner[..inner.len().min(28)]);
    let c = csum(&h, 0);
    h[2..4].copy_from_slice(&c.to_be_bytes());
    h
}

/// ICMPv6 type 2 ("packet too big", MTU 1280) quoting `inner` (an IPv6 packet, 48 bytes).
pub fn icmp6_too_big(inner: &[u8]) -> Vec<u8> {
    let mut h = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    h.extend_from_slice(&inner[..inner.len().min(48)]);
    h
}

/// Convenience: a whole TCP/IPv4 frame.
pub fn tcp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    eth(
        dst_mac,
        src_mac,
        None,
        ETH_P_IP,
        &ipv4(src, dst, 6, &tcp(sport, dport, flags, b"GET /")),
    )
}

/// Convenience: a whole UDP/IPv4 frame.
pub fn udp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
) -> Vec<u8> {
    eth(
        dst_mac,
        src_mac,
        None,
        ETH_P_IP,
        &ipv4(src, dst, 17, &udp(sport, dport, b"ping")),
    )
}

/// Convenience: a whole TCP/IPv6 frame.
pub fn tcp6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    eth(
        dst_mac,
        src_mac,
        None,
        ETH_P_IPV6,
        &ipv6(src, dst, 6, &tcp(sport, dport, flags, b"GET /")),
    )
}

/// Convenience: a whole UDP/IPv6 frame.
pub fn udp6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
) -> Vec<u8> {
    eth(
        dst_mac,
        src_mac,
        None,
        ETH_P_IPV6,
        &ipv6(src, dst, 17, &udp(sport, dport, b"ping")),
    )
}
