//! The ring of new stick entries (`XLB_INSERTS`): every entry the data path writes is reported
//! once, with its key and backend; a hit reports nothing; a full ring is counted.

use harness::fixture::*;
use harness::packet::*;
use lb_common::{FAMILY_V4, InsertRecord, StickKey, gstat};

use crate::{from_client, t4};

fn drain(inserts: &mut xlb::datapath::Inserts) -> Vec<InsertRecord> {
    let mut out = Vec::new();
    inserts.drain(&mut out, usize::MAX);
    out
}

#[test]
fn an_insert_reports_one_record_and_a_hit_none() {
    let mut lb = Lb::new(Svc::default());
    let mut inserts = lb.dp.take_inserts().unwrap();
    let c = client4(41);
    lb.run(&t4(c, 40000, TCP_SYN));
    assert!(
        drain(&mut inserts).is_empty(),
        "a bare SYN creates no entry, so no record"
    );
    let backend = lb.forwarded_to(&t4(c, 40000, TCP_ACK));
    let records = drain(&mut inserts);
    let key = StickKey::new(v4(c), 0, 0, FAMILY_V4);
    let entry = lb
        .entry(0, v4(c), FAMILY_V4, 0)
        .expect("the ACK created the entry");
    assert_eq!(
        records,
        vec![InsertRecord { key, entry }],
        "exactly the entry written"
    );
    assert_eq!(records[0].entry.backend, backend);
    for sport in 40001..40010 {
        assert_eq!(lb.forwarded_to(&t4(c, sport, TCP_ACK | TCP_PSH)), backend);
    }
    assert_eq!(lb.gstat(gstat::Derived::StickHit), 9);
    assert!(drain(&mut inserts).is_empty(), "hits report nothing");
    // Another service's client: its own service id in the key.
    let u = client4(42);
    let b = lb.forwarded_to(&from_client(Frame::udp(u, 5000, VIP4, 53)));
    let records = drain(&mut inserts);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, StickKey::new(v4(u), 1, 0, FAMILY_V4));
    assert_eq!(records[0].entry.backend, b);
    assert_eq!(lb.gstat(gstat::Counter::InsertRingFull), 0);
}

/// Nobody reads the ring: once it is full, each further entry is still written to the table
/// and counted as not reported; every entry is either in the ring or counted, and once the
/// ring is read it takes records again.
#[test]
fn a_full_ring_counts_what_it_could_not_take() {
    const CLIENTS: u32 = 30_000;
    // Every backend with the LB's own MAC, so each repetition's output is again addressed to
    // us, and a fresh client address on every repetition (see `harness::bench`).
    let mut lb = harness::bench::bench_lb(Svc::default(), [2 * CLIENTS; SERVICES as usize]).unwrap();
    let mut inserts = lb.dp.take_inserts().unwrap();
    let r = lb
        .dp
        .test_run("xlb_bench_fresh", &t4(client4(1), 40000, TCP_ACK), CLIENTS)
        .unwrap();
    assert_eq!(r.verdict, XDP_TX);
    let inserted = lb.gstat(gstat::Derived::StickInsert);
    assert_eq!(inserted, CLIENTS as u64, "every fresh client got an entry");
    let full = lb.gstat(gstat::Counter::InsertRingFull);
    let records = drain(&mut inserts);
    assert!(
        full > 0,
        "{CLIENTS} records fit in the ring ({} taken)",
        records.len()
    );
    assert_eq!(
        records.len() as u64 + full,
        inserted,
        "each entry reported or counted"
    );
    let table = lb.entries();
    for r in &records {
        assert!(
            table.contains(&(r.key, r.entry)),
            "a record of an entry not in the table"
        );
    }
    // Read: room again.
    lb.run(&t4(client4(43), 40000, TCP_ACK));
    assert_eq!(drain(&mut inserts).len(), 1);
    assert_eq!(lb.gstat(gstat::Counter::InsertRingFull), full);
}
