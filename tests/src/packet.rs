//! Crafted frames for BPF_PROG_TEST_RUN fixtures, fuzzing, benchmarks and the SYN flood of the
//! end-to-end tests. [`Frame`] builds a whole TCP or UDP frame (IPv4 or IPv6, optional 802.1Q
//! tag, any payload, whole or as fragments) with every checksum filled in. The pieces below it
//! (Ethernet, IPv4 with options and fragment fields, IPv6 with extension headers, TCP, UDP, ICMP
//! errors) build the odd shapes the malformed-input tests need; those leave the TCP and UDP
//! checksums zero (the data path ignores them).

use std::net::IpAddr;

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

/// The transport of a [`Frame`].
#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp { flags: u8 },
    Udp,
}

/// One TCP or UDP frame to build: Ethernet (optional 802.1Q tag), IPv4 or IPv6 (the family of
/// its addresses), the L4 header and a payload; every checksum is filled in.
///
/// ```
/// use harness::packet::{Frame, TCP_ACK};
/// let ack = Frame::tcp([10, 0, 0, 1], 40000, [10, 0, 0, 10], 80, TCP_ACK)
///     .macs([2, 0, 0, 0, 0, 0xcc], [2, 0, 0, 0, 0, 0xaa])
///     .vlan(100)
///     .bytes();
/// assert_eq!(ack.len(), 18 + 20 + 20 + 5);
/// ```
#[derive(Clone, Debug)]
pub struct Frame {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<u16>,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    transport: Transport,
    payload: Vec<u8>,
    /// The TCP sequence number (1 unless [`Frame::seq`] says otherwise).
    seq: Option<u32>,
}

impl Frame {
    /// A TCP segment from `src:sport` to `dst:dport` with `flags`, carrying `GET /`; MACs zero
    /// until [`Frame::macs`]. Panics when the addresses are of different families.
    pub fn tcp(src: impl Into<IpAddr>, sport: u16, dst: impl Into<IpAddr>, dport: u16, flags: u8) -> Frame {
        Frame::new(
            src.into(),
            sport,
            dst.into(),
            dport,
            Transport::Tcp { flags },
            b"GET /",
        )
    }

    /// A UDP datagram from `src:sport` to `dst:dport` carrying `ping`; MACs zero until
    /// [`Frame::macs`]. Panics when the addresses are of different families.
    pub fn udp(src: impl Into<IpAddr>, sport: u16, dst: impl Into<IpAddr>, dport: u16) -> Frame {
        Frame::new(src.into(), sport, dst.into(), dport, Transport::Udp, b"ping")
    }

    fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, transport: Transport, payload: &[u8]) -> Frame {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "a frame's addresses are of one family: {src} -> {dst}"
        );
        Frame {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            vlan: None,
            src,
            dst,
            sport,
            dport,
            transport,
            payload: payload.to_vec(),
            seq: None,
        }
    }

    /// The Ethernet source and destination.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Frame {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// One 802.1Q tag with `tci`.
    pub fn vlan(mut self, tci: u16) -> Frame {
        self.vlan = Some(tci);
        self
    }

    /// The TCP sequence number instead of 1.
    pub fn seq(mut self, seq: u32) -> Frame {
        self.seq = Some(seq);
        self
    }

    /// The L4 payload instead of the default one.
    pub fn payload(mut self, payload: &[u8]) -> Frame {
        self.payload = payload.to_vec();
        self
    }

    /// The whole Ethernet frame.
    pub fn bytes(&self) -> Vec<u8> {
        self.eth(&self.packet())
    }

    /// The IP packet (no Ethernet header), as a raw socket sends it.
    pub fn packet(&self) -> Vec<u8> {
        let segment = self.segment();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(s.octets(), d.octets(), self.proto(), &segment),
            (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s.octets(), d.octets(), self.proto(), &segment),
            _ => unreachable!("one family, checked by Frame::new"),
        }
    }

    /// The frame's datagram as IP fragments of at most `chunk` bytes of L4 header and payload
    /// each (a multiple of 8), all with identification `id` (16 bits for IPv4; IPv6 carries it
    /// in a fragment header), in order, each in its Ethernet frame: the first carries the L4
    /// header.
    pub fn fragments(&self, id: u32, chunk: usize) -> Vec<Vec<u8>> {
        assert!(
            chunk > 0 && chunk.is_multiple_of(8),
            "fragment size must be a multiple of 8"
        );
        let segment = self.segment();
        let parts: Vec<&[u8]> = segment.chunks(chunk).collect();
        let proto = self.proto();
        parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let offset_units = (i * chunk / 8) as u16;
                let more = i + 1 < parts.len();
                let packet = match (self.src, self.dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        let id = u16::try_from(id).expect("an IPv4 identification has 16 bits");
                        let flags_offset = (if more { 0x2000 } else { 0 }) | offset_units;
                        ipv4_full(s.octets(), d.octets(), proto, id, flags_offset, &[], part)
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        let mut p = v6_frag_id(proto, offset_units, more, id);
                        p.extend_from_slice(part);
                        ipv6(s.octets(), d.octets(), 44, &p)
                    }
                    _ => unreachable!("one family, checked by Frame::new"),
                };
                self.eth(&packet)
            })
            .collect()
    }

    fn proto(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => 6,
            Transport::Udp => 17,
        }
    }

    fn eth(&self, packet: &[u8]) -> Vec<u8> {
        let ether_type = if self.src.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 };
        eth(self.dst_mac, self.src_mac, self.vlan, ether_type, packet)
    }

    /// The L4 header and payload, with the checksum over the pseudo-header filled in.
    fn segment(&self) -> Vec<u8> {
        let (mut segment, at) = match self.transport {
            Transport::Tcp { flags } => (tcp(self.sport, self.dport, flags, &self.payload), 16),
            Transport::Udp => (udp(self.sport, self.dport, &self.payload), 6),
        };
        if let (Transport::Tcp { .. }, Some(seq)) = (&self.transport, self.seq) {
            segment[4..8].copy_from_slice(&seq.to_be_bytes());
        }
        let mut pseudo = Vec::with_capacity(40);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, self.proto()]);
                pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, self.proto()]);
            }
            _ => unreachable!("one family, checked by Frame::new"),
        }
        pseudo.extend_from_slice(&segment);
        let sum = match csum(&pseudo, 0) {
            // A zero UDP checksum means "none" (and is invalid over IPv6): send all ones.
            0 if matches!(self.transport, Transport::Udp) => 0xffff,
            sum => sum,
        };
        segment[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        segment
    }
}
