//! Affinity modes: prefix masks, source address and port, none.

use harness::fixture::*;
use harness::packet::*;
use lb_common::{FAMILY_V4, STICK_NONE, STICK_SRC_PORT};

use crate::{t4, t6};

// --- prefix masks and affinity modes -----------------------------------------------------------

#[test]
fn prefix_24_sends_one_subnet_to_one_backend() {
    let mut lb = Lb::new(Svc {
        v4_prefix: 24,
        v6_prefix: 64,
        ..Default::default()
    });
    let b = lb.forwarded_to(&t4([10, 77, 5, 1], 40000, TCP_ACK));
    for n in 2..=254u8 {
        assert_eq!(lb.forwarded_to(&t4([10, 77, 5, n], 40000, TCP_ACK)), b);
    }
    assert_eq!(lb.entries().len(), 1, "one entry for the whole /24");
    assert_eq!(lb.entries()[0].0.addr[..4], [10, 77, 5, 0]);
    // IPv6 /64: privacy addresses of one host stay together.
    let mut a = client6(1);
    let b6 = lb.forwarded_to(&t6(a, 40000, TCP_ACK));
    a[8] = 0xab;
    a[15] = 0x99;
    assert_eq!(lb.forwarded_to(&t6(a, 40000, TCP_ACK)), b6);
}

#[test]
fn src_port_affinity_keys_on_address_and_port() {
    let mut lb = Lb::new(Svc {
        stick: STICK_SRC_PORT,
        ..Default::default()
    });
    let c = client4(10);
    let mut backends = std::collections::HashSet::new();
    for p in 0..32u16 {
        let b = lb.forwarded_to(&t4(c, 30000 + p, TCP_ACK));
        assert_eq!(
            lb.entry(0, v4(c), FAMILY_V4, (30000 + p).to_be())
                .map(|e| e.backend),
            Some(b)
        );
        backends.insert(b);
    }
    assert!(backends.len() > 1, "different source ports spread over backends");
    assert_eq!(lb.entries().len(), 32);
}

#[test]
fn none_affinity_uses_no_table() {
    let mut lb = Lb::new(Svc {
        stick: STICK_NONE,
        ..Default::default()
    });
    let f = t4(client4(11), 40000, TCP_ACK);
    let b = lb.forwarded_to(&f);
    assert_eq!(lb.forwarded_to(&f), b, "a 5-tuple always hashes the same");
    assert!(lb.entries().is_empty());
}
