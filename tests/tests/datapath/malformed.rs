//! Malformed input, IPv6 extension headers, no usable backend, and random and mutated frames
//! checked against a reference parser.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use harness::fixture::*;
use harness::packet::*;
use lb_common::{BACKEND_DOWN, gstat};

use crate::{from_client, t4, t6, udp4_datagram, udp6_datagram};

// --- malformed input -------------------------------------------------------------------------

#[test]
fn malformed_input_is_passed_counted_and_never_forwarded() {
    let mut lb = Lb::new(Svc::default());
    let good = t4(client4(16), 40000, TCP_ACK);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated Ethernet (VLAN tag cut short)",
            eth(LB_MAC, CLIENT_MAC, None, 0x8100, &[0, 7]),
        ),
        ("truncated IPv4 header", good[..14 + 12].to_vec()),
        ("truncated TCP header", good[..14 + 20 + 10].to_vec()),
    ];
    let mut ihl4 = good.clone();
    ihl4[14] = 0x44;
    cases.push(("IHL < 5", ihl4));
    let mut long = good.clone();
    long[16..18].copy_from_slice(&2000u16.to_be_bytes());
    cases.push(("IPv4 total length beyond the frame", long));
    let mut doff = good.clone();
    doff[14 + 20 + 12] = 0x20;
    cases.push(("TCP data offset < 5", doff));
    let mut chain = Vec::new();
    for _ in 0..5 {
        chain.extend(v6_ext(60));
    }
    // Fix the last next-header to TCP after five extension headers.
    let last = chain.len() - 8;
    chain[last] = 6;
    chain.extend(tcp(40000, 80, TCP_ACK, b"x"));
    let mut chained = eth(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IPV6,
        &ipv6(client6(16), VIP6, 0, &chain),
    );
    // First header is hop-by-hop (0); then destination options (60) x4.
    chained[14 + 6] = 0;
    cases.push((
        "IPv6 extension header chain longer than the parser's bound",
        chained,
    ));
    let mut v6len = t6(client6(16), 40000, TCP_ACK);
    v6len[18..20].copy_from_slice(&3000u16.to_be_bytes());
    cases.push(("IPv6 payload length beyond the frame", v6len));
    let n = cases.len() as u64;
    for (what, f) in &cases {
        lb.passed_untouched(f, what);
    }
    assert_eq!(lb.gstat(gstat::Counter::ParseError), n);
    assert!(lb.entries().is_empty());
    // Zero-length and tiny frames: the kernel refuses frames shorter than an Ethernet header
    // in BPF_PROG_TEST_RUN (EINVAL); anything it does accept must not be forwarded.
    for len in [0usize, 1, 13] {
        if let Ok(r) = lb.dp.test_run("xlb", &good[..len], 1) {
            assert_eq!(r.verdict, XDP_PASS, "{len}-byte frame");
        }
    }
    assert_eq!(lb.gstat(gstat::Derived::Tx), 0);
}

#[test]
fn ipv6_with_allowed_extension_headers_is_balanced() {
    let mut lb = Lb::new(Svc::default());
    let c = client6(17);
    let b = lb.forwarded_to(&t6(c, 40000, TCP_ACK));
    let mut p = v6_ext(60);
    p.extend(v6_ext(6));
    p.extend(tcp(40001, 80, TCP_ACK, b"x"));
    assert_eq!(
        lb.forwarded_to(&eth(LB_MAC, CLIENT_MAC, None, ETH_P_IPV6, &ipv6(c, VIP6, 0, &p))),
        b
    );
}

#[test]
fn no_usable_backend_drops_and_counts() {
    let mut lb = Lb::new(Svc::default());
    for b in 0..4 {
        lb.set_state(b, BACKEND_DOWN);
    }
    let (v, _) = lb.run(&t4(client4(18), 40000, TCP_ACK));
    assert_eq!(v, XDP_DROP);
    assert_eq!(lb.gstat(gstat::Derived::NoBackend), 1);
}

// --- randomised -----------------------------------------------------------------------------

/// xorshift: deterministic, so a failure is reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One IP datagram as a receiver's reassembly names it: source, destination, identification,
/// protocol (the family is the addresses').
type Datagram = (IpAddr, IpAddr, u32, u8);

/// A frame as a reference parser, written independently of the data path, sees it.
#[derive(Debug)]
enum Reference {
    /// Not well-formed VIP traffic: passed untouched.
    NotVip,
    /// Well-formed VIP traffic with its L4 header: forwarded. A first fragment names its
    /// datagram.
    Vip(Option<Datagram>),
    /// A TCP/UDP fragment after the first (no L4 header): forwarded where its datagram's first
    /// fragment went; passed untouched when that first fragment was never forwarded.
    Later(Datagram),
}

fn reference(f: &[u8]) -> Reference {
    use Reference::*;
    if f.len() < 14 {
        return NotVip;
    }
    if f[..6] != LB_MAC {
        return NotVip; // only frames sent to our MAC are ever forwarded
    }
    let (et, mut off) = match u16::from_be_bytes([f[12], f[13]]) {
        0x8100 if f.len() >= 18 => (u16::from_be_bytes([f[16], f[17]]), 18),
        et => (et, 14),
    };
    let (src, dst, proto, l4, fragment, later_frag, id) = match et {
        0x0800 => {
            if f.len() < off + 20 || f[off] >> 4 != 4 || (f[off] & 15) < 5 {
                return NotVip;
            }
            let ihl = (f[off] & 15) as usize * 4;
            let tot = u16::from_be_bytes([f[off + 2], f[off + 3]]) as usize;
            if tot < ihl || off + tot > f.len() {
                return NotVip;
            }
            let frag = u16::from_be_bytes([f[off + 6], f[off + 7]]);
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]));
            (
                ip(off + 12),
                ip(off + 16),
                f[off + 9],
                off + ihl,
                frag & 0x3fff != 0,
                frag & 0x1fff != 0,
                u16::from_be_bytes([f[off + 4], f[off + 5]]) as u32,
            )
        }
        0x86dd => {
            if f.len() < off + 40 || f[off] >> 4 != 6 {
                return NotVip;
            }
            let plen = u16::from_be_bytes([f[off + 4], f[off + 5]]) as usize;
            if off + 40 + plen > f.len() {
                return NotVip;
            }
            let ip = |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&f[at..at + 16]).unwrap()));
            let (s, d) = (ip(off + 8), ip(off + 24));
            let mut nh = f[off + 6];
            off += 40;
            let (mut fragment, mut later, mut id) = (false, false, 0);
            let mut n = 0;
            while matches!(nh, 0 | 43 | 44 | 60) {
                if n == 4 || f.len() < off + 8 {
                    return NotVip;
                }
                n += 1;
                if nh == 44 {
                    fragment = true;
                    later = u16::from_be_bytes([f[off + 2], f[off + 3]]) >> 3 != 0;
                    id = u32::from_be_bytes([f[off + 4], f[off + 5], f[off + 6], f[off + 7]]);
                    nh = f[off];
                    off += 8;
                } else {
                    let len = (f[off + 1] as usize + 1) * 8;
                    nh = f[off];
                    off += len;
                }
            }
            (s, d, nh, off, fragment, later, id)
        }
        _ => return NotVip,
    };
    if proto != 6 && proto != 17 {
        return NotVip; // ICMP errors are checked by their own fixture
    }
    let datagram = (src, dst, id, proto);
    if later_frag {
        return Later(datagram);
    }
    let vip4 = IpAddr::V4(Ipv4Addr::from(VIP4));
    let vip6 = IpAddr::V6(Ipv6Addr::from(VIP6));
    if dst != vip4 && dst != vip6 {
        return NotVip;
    }
    let need = if proto == 6 { 20 } else { 8 };
    if f.len() < l4 + need {
        return NotVip;
    }
    if proto == 6 && f[l4 + 12] >> 4 < 5 {
        return NotVip;
    }
    let dport = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
    if (proto == 6 && dport == 80) || (proto == 17 && (dport == 53 || dport == UDP_PORT_2)) {
        Vip(fragment.then_some(datagram))
    } else {
        NotVip
    }
}

#[test]
fn random_and_mutated_frames_are_never_forwarded_unless_well_formed_vip() {
    let mut lb = Lb::new(Svc::default());
    let seed = 0x5eed_1234_abcd_0001u64;
    let mut rng = Rng(seed);
    let mut valid = vec![
        t4(client4(20), 40000, TCP_ACK),
        t6(client6(20), 40000, TCP_ACK),
        from_client(Frame::udp(client4(21), 5000, VIP4, 53)),
        from_client(Frame::udp(client6(21), 5000, VIP6, 53)),
        eth(
            LB_MAC,
            CLIENT_MAC,
            Some(7),
            ETH_P_IP,
            &ipv4(client4(22), VIP4, 6, &tcp(1, 80, TCP_ACK, b"")),
        ),
    ];
    // Fragmented datagrams to both services of each VIP address, each fragment on its own: a
    // later fragment may come before its first, a mutated one may name another datagram.
    valid.extend(udp4_datagram(client4(23), 5000, 53, 0x0203));
    valid.extend(udp4_datagram(client4(23), 5000, UDP_PORT_2, 0x0204));
    valid.extend(udp6_datagram(client6(23), 5000, 53, 0x0203));
    valid.extend(udp6_datagram(client6(23), 5000, UDP_PORT_2, 0x0204));
    // The model's record of first fragments: datagram -> destination MAC it was forwarded to.
    let mut first_went_to: std::collections::HashMap<Datagram, Vec<u8>> = Default::default();
    let (mut forwarded, mut followed, mut unrecorded, mut total) = (0, 0, 0, 0);
    for i in 0..6000u32 {
        let frame: Vec<u8> = if i % 3 == 0 {
            let len = 14 + (rng.next() % 120) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut f = valid[(rng.next() % valid.len() as u64) as usize].clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % f.len() as u64) as usize;
                f[at] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(4) {
                let cut = 14 + (rng.next() % (f.len() as u64 - 13)) as usize;
                f.truncate(cut);
            }
            if rng.next().is_multiple_of(8) {
                // Broadcast, multicast or another host's MAC: never ours to forward.
                let dst: [u8; 6] = match rng.next() % 3 {
                    0 => [0xff; 6],
                    1 => [0x01, 0x00, 0x5e, 0, 0, rng.next() as u8],
                    _ => [0x02, 0, 0, 0, 0, 0xab],
                };
                f[..6].copy_from_slice(&dst);
            }
            f
        };
        let r = lb.dp.test_run("xlb", &frame, 1).unwrap();
        total += 1;
        let model = reference(&frame);
        let expect_to = match &model {
            Reference::NotVip => None,
            Reference::Vip(_) => Some(None),
            Reference::Later(d) => first_went_to.get(d).map(Some),
        };
        match (r.verdict, expect_to) {
            (XDP_TX, Some(to)) => {
                forwarded += 1;
                assert_eq!(
                    r.data[12..],
                    frame[12..],
                    "case {i}: forwarded frame changed beyond the MACs"
                );
                if let Some(to) = to {
                    followed += 1;
                    assert_eq!(
                        r.data[..6],
                        to[..],
                        "seed {seed:#x} case {i}: a later fragment must go where its first went: {frame:02x?}"
                    );
                }
                if let Reference::Vip(Some(d)) = model {
                    first_went_to.insert(d, r.data[..6].to_vec());
                }
            }
            (XDP_PASS, None) => {
                assert_eq!(r.data, frame, "case {i}: passed frame modified");
                unrecorded += matches!(model, Reference::Later(_)) as u32;
            }
            (XDP_TX, None) => panic!(
                "seed {seed:#x} case {i}: forwarded a frame that is not well-formed VIP traffic ({model:?}): {frame:02x?}"
            ),
            (XDP_PASS, Some(_)) => {
                panic!("seed {seed:#x} case {i}: well-formed VIP frame passed ({model:?}): {frame:02x?}")
            }
            (v, _) => panic!("case {i}: unexpected verdict {v}"),
        }
    }
    assert!(
        forwarded > 100,
        "the mutations must leave some frames valid ({forwarded}/{total})"
    );
    assert!(
        followed > 50 && unrecorded > 10,
        "the run must see later fragments both with and without a record ({followed} followed, {unrecorded} passed)"
    );
    assert_eq!(
        lb.gstat(gstat::Counter::FragmentNoRecord),
        unrecorded as u64,
        "every later fragment without a record is counted"
    );
}
