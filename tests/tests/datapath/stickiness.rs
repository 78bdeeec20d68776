//! Stick-table entries: new and returning clients, SYN handling, what proves a handshake, one
//! table per service, expiry, the per-CPU new-entry cap, batched reads.

use harness::fixture::*;
use harness::packet::*;
use lb_common::{FAMILY_V4, FAMILY_V6, StickEntry, StickKey, gstat};
use xlb::datapath::coarse_now_ns;

use crate::{from_client, t4, t6};

// --- new client, same client again: IPv4/IPv6 x TCP/UDP ---------------------------------------

#[test]
fn new_client_then_same_client_v4_tcp() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(1);
    assert!(lb.entry(0, v4(c), FAMILY_V4, 0).is_none());
    let b1 = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    let e = lb
        .entry(0, v4(c), FAMILY_V4, 0)
        .expect("the first non-SYN packet creates the entry");
    assert_eq!(e.backend, b1);
    assert!(b1 < 4);
    let b2 = lb.forwarded_to(&t4(c, 40001, TCP_ACK | TCP_PSH));
    assert_eq!(b1, b2, "the same client goes to the same backend");
    assert_eq!(lb.entries().len(), 1);
    assert_eq!(lb.gstat(gstat::Derived::StickHit), 1);
    assert_eq!(lb.gstat(gstat::Derived::StickInsert), 1);
}

#[test]
fn new_client_then_same_client_v4_udp() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(2);
    let f = from_client(Frame::udp(c, 5000, VIP4, 53));
    let b1 = lb.forwarded_to(&f);
    assert!((4..8).contains(&b1), "service 1 owns backends 4..8, got {b1}");
    assert_eq!(lb.entry(1, v4(c), FAMILY_V4, 0).map(|e| e.backend), Some(b1));
    let b2 = lb.forwarded_to(&from_client(Frame::udp(c, 5001, VIP4, 53)));
    assert_eq!(b1, b2);
    assert_eq!(lb.entries().len(), 1);
}

#[test]
fn new_client_then_same_client_v6_tcp() {
    let mut lb = Lb::new(Svc::default());
    let c = client6(3);
    let b1 = lb.forwarded_to(&t6(c, 40000, TCP_ACK));
    assert!((8..12).contains(&b1));
    assert_eq!(lb.entry(2, c, FAMILY_V6, 0).map(|e| e.backend), Some(b1));
    assert_eq!(lb.forwarded_to(&t6(c, 40001, TCP_ACK)), b1);
    assert_eq!(lb.entries().len(), 1);
}

#[test]
fn new_client_then_same_client_v6_udp() {
    let mut lb = Lb::new(Svc::default());
    let c = client6(4);
    let b1 = lb.forwarded_to(&from_client(Frame::udp(c, 5000, VIP6, 53)));
    assert!((12..16).contains(&b1));
    assert_eq!(lb.entry(3, c, FAMILY_V6, 0).map(|e| e.backend), Some(b1));
    assert_eq!(lb.forwarded_to(&from_client(Frame::udp(c, 6000, VIP6, 53))), b1);
}

// --- SYN handling -------------------------------------------------------------------------------

#[test]
fn bare_syn_creates_no_entry_and_the_ack_does() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(5);
    let b_syn = lb.forwarded_to(&t4(c, 40000, TCP_SYN));
    assert!(lb.entries().is_empty(), "a bare SYN must not create an entry");
    assert_eq!(lb.gstat(gstat::Counter::SynNoInsert), 1);
    let b_ack = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    assert_eq!(b_syn, b_ack, "the SYN goes by hash, which the ACK then pins");
    assert_eq!(lb.entry(0, v4(c), FAMILY_V4, 0).map(|e| e.backend), Some(b_ack));
    // A SYN of a pinned client uses the entry.
    assert_eq!(lb.forwarded_to(&t4(c, 40002, TCP_SYN)), b_ack);
    assert_eq!(lb.entries().len(), 1);
}

#[test]
fn syn_flood_of_distinct_sources_inserts_nothing() {
    let mut lb = Lb::new(Svc::default());
    for n in 0..200u8 {
        lb.forwarded_to(&t4([10, 77, 9, n], 1000 + n as u16, TCP_SYN));
    }
    assert!(lb.entries().is_empty());
    assert_eq!(lb.gstat(gstat::Counter::SynNoInsert), 200);
}

// --- only a packet that proves a handshake pins (issue 9, item 2) --------------------------------

/// TCP shapes that prove no handshake: what spoofed sources' real owners send back (an RST for
/// a SYN-ACK they never asked for), and what anyone can send from any address.
const NO_HANDSHAKE: [(&str, u8); 7] = [
    ("RST", TCP_RST),
    ("RST+ACK", TCP_RST | TCP_ACK),
    ("SYN+ACK", TCP_SYN | TCP_ACK),
    ("SYN+RST", TCP_SYN | TCP_RST),
    ("FIN", TCP_FIN),
    ("FIN+RST+ACK", TCP_FIN | TCP_RST | TCP_ACK),
    ("no flags", 0),
];

#[test]
fn rst_from_spoofed_sources_creates_no_stick_entry() {
    let mut lb = Lb::new(Svc::default());
    for (i, (what, flags)) in NO_HANDSHAKE.iter().enumerate() {
        let c = [10, 77, 20, i as u8];
        let by_hash = lb.forwarded_to(&t4(c, 40000, *flags));
        assert!(
            lb.entries().is_empty(),
            "{what} from a new client must not create an entry: {:?}",
            lb.entries()
        );
        // It went by hash: to the backend the client's ACK then pins.
        let pinned = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
        assert_eq!(by_hash, pinned, "{what}");
        assert_eq!(
            lb.entry(0, v4(c), FAMILY_V4, 0).map(|e| e.backend),
            Some(pinned),
            "{what}"
        );
        assert!(
            lb.dp
                .stick_delete(&StickKey::new(v4(c), 0, 0, FAMILY_V4))
                .unwrap()
        );
    }
    // And over IPv6.
    let c = client6(20);
    lb.forwarded_to(&t6(c, 40000, TCP_RST));
    assert!(lb.entries().is_empty(), "an IPv6 RST must not create an entry");
    assert_eq!(
        lb.gstat(gstat::Counter::NoHandshakeNoInsert),
        NO_HANDSHAKE.len() as u64 + 1,
        "each counted as forwarded without an entry"
    );
    assert_eq!(
        lb.gstat(gstat::Counter::SynNoInsert),
        0,
        "none of them is a bare SYN"
    );
    assert_eq!(
        lb.gstat(gstat::Derived::StickInsert),
        NO_HANDSHAKE.len() as u64,
        "only the ACKs inserted"
    );
}

/// Only a packet that may create an entry refreshes one: an RST or SYN+ACK with a pinned
/// client's address (spoofed or not) leaves its last-seen time alone, so it still expires.
#[test]
fn rst_and_syn_ack_of_a_pinned_client_refresh_no_stick_entry() {
    let mut lb = Lb::new(Svc::default());
    let c = client4(21);
    let b = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    let key = StickKey::new(v4(c), 0, 0, FAMILY_V4);
    let old = coarse_now_ns() - 5_000_000_000;
    lb.dp
        .stick_insert(
            key,
            StickEntry {
                last_seen_ns: old,
                backend: b,
                syn_at: 0,
            },
        )
        .unwrap();
    for (what, flags) in NO_HANDSHAKE {
        assert_eq!(
            lb.forwarded_to(&t4(c, 40001, flags)),
            b,
            "{what}: the pinned backend"
        );
        assert_eq!(
            lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().last_seen_ns,
            old,
            "{what} refreshed it"
        );
    }
    lb.forwarded_to(&t4(c, 40001, TCP_ACK));
    assert!(
        lb.entry(0, v4(c), FAMILY_V4, 0).unwrap().last_seen_ns > old,
        "an ACK refreshes it"
    );
}

// --- every service its own table (issue 9, item 2) ----------------------------------------------

/// A flood of valid new clients (ACKs, 10 x the table's size) at service 0 (VIP4:80/tcp) fills
/// service 0's own table only: every client of service 1 (VIP4:53/udp) keeps its entry.
#[test]
fn flood_of_one_service_evicts_no_entry_of_another() {
    const SIZE: u32 = 1000;
    let mut lb = Lb::with_capacity(Svc::default(), SIZE);
    let of = |lb: &Lb, service: u16| -> Vec<(StickKey, StickEntry)> {
        let mut v: Vec<_> = lb
            .entries()
            .into_iter()
            .filter(|(k, _)| k.service == service)
            .collect();
        v.sort_by_key(|(k, _)| k.addr);
        v
    };
    for n in 0..500u32 {
        let c = [10, 78, (n >> 8) as u8, n as u8];
        lb.forwarded_to(&from_client(Frame::udp(c, 5000, VIP4, 53)));
    }
    let b_before = of(&lb, 1);
    assert_eq!(b_before.len(), 500);
    for n in 0..10 * SIZE {
        let c = [10, 90, (n >> 8) as u8, n as u8];
        lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    }
    let b_after = of(&lb, 1);
    assert_eq!(
        b_after.len(),
        b_before.len(),
        "a flood of {} new clients at service 0 evicted {} of service 1's {} entries",
        10 * SIZE,
        b_before.len() - b_after.len(),
        b_before.len()
    );
    assert_eq!(b_after, b_before, "service 1's entries are untouched");
    let a = of(&lb, 0).len();
    assert_eq!(lb.dp.stick_capacity_of(0), Some(SIZE), "service 0's own table");
    assert!(
        a <= SIZE as usize && a >= SIZE as usize * 3 / 4,
        "service 0's table is full at its own size: {a} of {SIZE}"
    );
    // The flood's newest clients are the ones it keeps (LRU within the service).
    let last = [10, 90, ((10 * SIZE - 1) >> 8) as u8, (10 * SIZE - 1) as u8];
    assert!(lb.entry(0, v4(last), FAMILY_V4, 0).is_some());
}

// --- expiry -------------------------------------------------------------------------------------

#[test]
fn entry_older_than_expire_is_replaced() {
    let mut lb = Lb::new(Svc {
        expire_s: 5,
        ..Default::default()
    });
    let c = client4(6);
    let natural = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    // An old entry pointing elsewhere, idle for 6 s > 5 s.
    let other = (natural + 1) % 4;
    let key = StickKey::new(v4(c), 0, 0, FAMILY_V4);
    lb.dp
        .stick_insert(
            key,
            StickEntry {
                last_seen_ns: coarse_now_ns() - 6_000_000_000,
                backend: other,
                syn_at: 0,
            },
        )
        .unwrap();
    let b = lb.forwarded_to(&t4(c, 40001, TCP_ACK));
    assert_eq!(b, natural, "an expired entry is a miss: Maglev decides again");
    let e = lb.entry(0, v4(c), FAMILY_V4, 0).unwrap();
    assert_eq!(e.backend, natural, "and the entry is overwritten");
    assert!(
        coarse_now_ns() - e.last_seen_ns < 2_000_000_000,
        "with a fresh time"
    );
    assert_eq!(lb.gstat(gstat::Derived::StickExpired), 1);

    // A fresh entry pointing elsewhere is honoured (stickiness beats the hash).
    lb.dp
        .stick_insert(
            key,
            StickEntry {
                last_seen_ns: coarse_now_ns(),
                backend: other,
                syn_at: 0,
            },
        )
        .unwrap();
    assert_eq!(lb.forwarded_to(&t4(c, 40002, TCP_ACK)), other);
}

#[test]
fn new_entry_cap_per_cpu_bounds_table_churn() {
    let mut lb = Lb::new(Svc::default());
    lb.dp.set_new_entry_cap(5).unwrap();
    // 20 new clients (spoofed-ACK style): all forwarded, only 5 entries created this second.
    for n in 0..20u8 {
        lb.forwarded_to(&t4([10, 77, 8, n], 40000, TCP_ACK));
    }
    assert_eq!(lb.entries().len(), 5);
    assert_eq!(lb.gstat(gstat::Counter::InsertCapped), 15);
    // A pinned client is unaffected.
    let first = lb.entries()[0].0;
    let a = [first.addr[0], first.addr[1], first.addr[2], first.addr[3]];
    let b = lb.entries()[0].1.backend;
    assert_eq!(lb.forwarded_to(&t4(a, 40001, TCP_ACK)), b);
    // No cap: everything inserts.
    lb.dp.set_new_entry_cap(0).unwrap();
    lb.forwarded_to(&t4([10, 77, 9, 1], 40000, TCP_ACK));
    assert_eq!(lb.entries().len(), 6);
}

/// The batched table read (BPF_MAP_LOOKUP_BATCH) returns exactly what a per-entry walk does,
/// across many batches and with a buffer smaller than some buckets.
#[test]
fn batched_table_read_matches_an_entry_by_entry_walk() {
    let mut lb = Lb::with_capacity(Svc::default(), 20_000);
    for i in 0..10_000u32 {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&i.to_be_bytes());
        let key = StickKey::new(addr, 0, 0, FAMILY_V4);
        let entry = StickEntry {
            last_seen_ns: i as u64,
            backend: i % 4,
            syn_at: 0,
        };
        lb.dp.stick_insert(key, entry).unwrap();
    }
    let table = lb.dp.stick_map_mut(0).unwrap();
    let mut walked: Vec<(StickKey, StickEntry)> = table.iter().map(|r| r.unwrap()).collect();
    for chunk in [1, 7, 4096, 100_000] {
        let mut batched = xlb::datapath::batch::read_all(table, chunk).unwrap();
        assert_eq!(batched.len(), 10_000, "chunk {chunk}");
        batched.sort_by_key(|(k, _)| (k.addr, k.service));
        walked.sort_by_key(|(k, _)| (k.addr, k.service));
        assert_eq!(batched, walked, "chunk {chunk}");
    }
}
