//! Passive health signals: SYNs, retransmitted SYNs and finished handshakes counted per backend
//! (`XLB_PASSIVE`), with the attempts in flight in `XLB_SYNS`.

use harness::fixture::*;
use harness::packet::*;
use lb_common::{FAMILY_V4, PassiveStats, StickKey, SynKey};

use crate::from_client;

/// A TCP segment from `src`:`sport` to VIP4:80 with `flags` and sequence number `seq`.
fn seg4(src: [u8; 4], sport: u16, flags: u8, seq: u32) -> Vec<u8> {
    from_client(Frame::tcp(src, sport, VIP4, 80, flags).seq(seq))
}

/// The same to VIP6:80.
fn seg6(src: [u8; 16], sport: u16, flags: u8, seq: u32) -> Vec<u8> {
    from_client(Frame::tcp(src, sport, VIP6, 80, flags).seq(seq))
}

/// A handshake's first ACK: no data.
fn ack4(src: [u8; 4], sport: u16, seq: u32) -> Vec<u8> {
    from_client(Frame::tcp(src, sport, VIP4, 80, TCP_ACK).seq(seq).payload(&[]))
}

fn passive(lb: &Lb, backend: u32) -> PassiveStats {
    lb.dp.passive_stats(backend).unwrap()
}

/// The signals of every backend of every service, summed.
fn all_signals(lb: &Lb) -> PassiveStats {
    let mut t = PassiveStats::default();
    for id in 0..4 * SERVICES {
        t.add(&passive(lb, id));
    }
    t
}

fn stats(syn_sent: u64, syn_retransmits: u64, handshakes: u64) -> PassiveStats {
    PassiveStats {
        syn_sent,
        syn_retransmits,
        handshakes,
    }
}

#[test]
fn a_syn_counts_once_the_same_syn_again_is_a_retransmit_a_new_isn_a_new_attempt() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(1);
    let b = lb.forwarded_to(&seg4(c, 40000, TCP_SYN, 1000));
    assert_eq!(passive(&lb, b), stats(1, 0, 0), "a new SYN is one attempt");
    for n in 1..=3 {
        assert_eq!(lb.forwarded_to(&seg4(c, 40000, TCP_SYN, 1000)), b);
        assert_eq!(
            passive(&lb, b),
            stats(1, n, 0),
            "the same SYN again (same tuple and ISN) is retransmission {n}"
        );
    }
    assert_eq!(lb.forwarded_to(&seg4(c, 40000, TCP_SYN, 777_000)), b);
    assert_eq!(
        passive(&lb, b),
        stats(2, 3, 0),
        "another ISN on the same tuple is a new attempt"
    );
    // Another port of the same client is another attempt (a bare SYN goes by its client's hash).
    assert_eq!(lb.forwarded_to(&seg4(c, 40001, TCP_SYN, 1000)), b);
    assert_eq!(passive(&lb, b), stats(3, 3, 0));
    assert_eq!(
        all_signals(&lb),
        stats(3, 3, 0),
        "no other backend counted anything"
    );
}

#[test]
fn the_first_ack_counts_a_handshake_once_for_a_new_client_and_a_pinned_one() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(2);
    // A new client: its first ACK is a stick miss, and creates its entry.
    let b = lb.forwarded_to(&seg4(c, 40000, TCP_SYN, 5000));
    assert_eq!(lb.forwarded_to(&ack4(c, 40000, 5001)), b);
    assert_eq!(passive(&lb, b), stats(1, 0, 1), "SYN, then its first ACK");
    assert!(
        lb.entry(0, v4(c), FAMILY_V4, 0).is_some(),
        "the ACK pinned the client"
    );
    // The rest of the connection counts nothing more.
    assert_eq!(lb.forwarded_to(&seg4(c, 40000, TCP_ACK, 5001)), b);
    assert_eq!(lb.forwarded_to(&ack4(c, 40000, 5006)), b);
    assert_eq!(passive(&lb, b), stats(1, 0, 1));
    // A new connection of the pinned client: SYN and first ACK are stick hits.
    assert_eq!(lb.forwarded_to(&seg4(c, 40001, TCP_SYN, 9)), b);
    assert_eq!(lb.forwarded_to(&ack4(c, 40001, 10)), b);
    assert_eq!(passive(&lb, b), stats(2, 0, 2));
    // An ACK that does not follow its SYN's ISN finishes nothing, and ends the record.
    assert_eq!(lb.forwarded_to(&seg4(c, 40002, TCP_SYN, 100)), b);
    assert_eq!(lb.forwarded_to(&ack4(c, 40002, 500)), b);
    assert_eq!(lb.forwarded_to(&ack4(c, 40002, 101)), b);
    assert_eq!(passive(&lb, b), stats(3, 0, 2));
    // IPv6 alike.
    let c6 = client6(2);
    let b6 = {
        let (verdict, out) = lb.run(&seg6(c6, 40000, TCP_SYN, 70));
        assert_eq!(verdict, XDP_TX);
        out[5] as u32
    };
    lb.run(&seg6(c6, 40000, TCP_ACK, 71));
    assert_eq!(passive(&lb, b6), stats(1, 0, 1), "IPv6 backend {b6}");
}

/// The stick-hit path reads its entry's `syn_at` and looks for no SYN record when the client
/// sent no SYN lately: an entry rewritten by the agent (`syn_at` 0) hides the attempt.
#[test]
fn a_stick_hit_looks_for_no_syn_record_without_a_recent_syn_of_its_client() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(3);
    let b = lb.forwarded_to(&seg4(c, 40000, TCP_SYN, 1));
    lb.forwarded_to(&ack4(c, 40000, 2));
    assert_eq!(passive(&lb, b), stats(1, 0, 1));
    let key = StickKey::new(v4(c), 0, 0, FAMILY_V4);
    lb.forwarded_to(&seg4(c, 40001, TCP_SYN, 50));
    let mut e = lb.entry(0, v4(c), FAMILY_V4, 0).expect("pinned");
    assert_ne!(e.syn_at, 0, "a SYN that hits the entry stamps it");
    e.syn_at = 0;
    lb.dp.stick_insert(key, e).unwrap();
    lb.forwarded_to(&ack4(c, 40001, 51));
    assert_eq!(
        passive(&lb, b),
        stats(2, 0, 1),
        "without a recent SYN on its entry the hit must not look the flow up"
    );
}

#[test]
fn non_vip_malformed_udp_and_later_segments_count_nothing() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(4);
    let other = from_client(Frame::tcp(c, 40000, [10, 0, 0, 99], 80, TCP_SYN).seq(7));
    lb.passed_untouched(&other, "a SYN to an address that is no VIP");
    let syn = seg4(c, 40000, TCP_SYN, 7);
    let (verdict, _) = lb.run(&syn[..14 + 20 + 10]);
    assert_eq!(verdict, XDP_PASS, "a SYN cut inside its TCP header is malformed");
    lb.forwarded_to(&from_client(Frame::udp(c, 40000, VIP4, 53)));
    lb.forwarded_to(&seg4(c, 40000, TCP_RST, 7));
    lb.forwarded_to(&seg4(c, 40000, TCP_SYN | TCP_ACK, 7));
    assert_eq!(all_signals(&lb), stats(0, 0, 0));
}

/// Attempts share `XLB_SYNS` slots by hash (`SynKey::slot`): a new attempt takes its slot from
/// the attempt that held it, whose first ACK then counts nothing and whose SYN sent again
/// counts as a new attempt.
#[test]
fn a_new_attempt_takes_its_slot_from_the_attempt_that_held_it() {
    let mut lb = Lb::new(Svc::default());
    // As the data path builds it: ports as they sit in the packet, service 0.
    let key = |c: [u8; 4], port: u16| SynKey::new(v4(c), port.to_be(), 80u16.to_be(), 0, FAMILY_V4);
    let (a, port_a) = (client4(5), 40000);
    let (b, port_b) = (6..=250u8)
        .flat_map(|n| (1024..=u16::MAX).map(move |p| (client4(n), p)))
        .find(|&(c, p)| key(c, p).slot() == key(a, port_a).slot())
        .expect("an attempt that hashes to the same slot");
    lb.forwarded_to(&seg4(a, port_a, TCP_SYN, 100));
    lb.forwarded_to(&seg4(b, port_b, TCP_SYN, 200));
    assert_eq!(all_signals(&lb), stats(2, 0, 0));
    lb.forwarded_to(&seg4(a, port_a, TCP_SYN, 100));
    assert_eq!(
        all_signals(&lb),
        stats(3, 0, 0),
        "its record was taken: the same SYN again is a new attempt, not a retransmission"
    );
    lb.forwarded_to(&ack4(b, port_b, 201));
    assert_eq!(
        all_signals(&lb),
        stats(3, 0, 0),
        "b's record is gone: no handshake"
    );
    lb.forwarded_to(&ack4(a, port_a, 101));
    assert_eq!(all_signals(&lb), stats(3, 0, 1));
}
