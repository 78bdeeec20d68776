//! Deleting stick entries: the batched delete and the sweep against real kernel maps, with
//! entries evicted, refreshed or re-pinned between the walk and the deletions.

use harness::fixture::*;
use lb_common::{FAMILY_V4, StickEntry, StickKey};
use xlb::datapath::coarse_now_ns;

/// A stick key of service `service` for client number `i` (an IPv4 address).
fn numbered_key(service: u16, i: u32) -> StickKey {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&i.to_be_bytes());
    StickKey::new(addr, service, 0, FAMILY_V4)
}

/// A second handle on the same kernel map, as another walker (or the data path) has one.
fn other_handle(map: &xlb::datapath::stick_maps::StickMap) -> xlb::datapath::stick_maps::StickMap {
    use aya::maps::IterableMap as _;
    let id = map.map().info().unwrap().id();
    let data = aya::maps::MapData::from_id(id).unwrap();
    aya::maps::Map::LruHashMap(data).try_into().unwrap()
}

/// `BPF_MAP_DELETE_BATCH` stops at the first key the map does not hold and reports how many it
/// deleted before it; `batch::delete_all` goes on after that key, so keys evicted or deleted
/// since a walk read them (missing at the start, the end, alone or in a row) cost nothing and
/// every key still there is deleted. Only the listed keys go.
#[test]
fn batch_delete_skips_keys_the_map_no_longer_holds_and_deletes_the_rest() {
    let mut lb = Lb::with_capacity(Svc::default(), 1000);
    for i in 0..100u32 {
        let entry = StickEntry {
            last_seen_ns: i as u64,
            backend: i % 4,
            syn_at: 0,
        };
        lb.dp.stick_insert(numbered_key(0, i), entry).unwrap();
    }
    let table = lb.dp.stick_map_mut(0).unwrap();

    // The kernel's side of the contract: it stops at the missing key and says so.
    use {aya::maps::IterableMap as _, std::os::fd::AsFd as _};
    let absent = numbered_key(0, 1000);
    let n = xlb::datapath::sys::delete_batch(
        table.map().fd().as_fd(),
        &[numbered_key(0, 0), absent, numbered_key(0, 1)],
    )
    .unwrap();
    assert_eq!(n, 1, "deleted the key before the missing one, then stopped");
    assert!(table.get(&numbered_key(0, 0), 0).is_err(), "key 0 deleted");
    assert!(
        table.get(&numbered_key(0, 1), 0).is_ok(),
        "key 1, after the missing one, kept"
    );

    // Ours: missing keys first, alone, three in a row, and last.
    let mut keys = vec![numbered_key(0, 0), numbered_key(0, 1001)];
    let mut listed_present = Vec::new();
    for i in 1..60u32 {
        keys.push(numbered_key(0, i));
        listed_present.push(i);
        if i == 10 {
            keys.push(numbered_key(0, 1002));
        }
        if i == 30 {
            keys.extend([1003, 1004, 1005].map(|a| numbered_key(0, a)));
        }
    }
    keys.push(numbered_key(0, 1006));
    let deleted = xlb::datapath::batch::delete_all(table, &keys).unwrap();
    assert_eq!(
        deleted,
        listed_present.len(),
        "every listed key still held, and no other"
    );
    let mut left: Vec<u32> = xlb::datapath::batch::read_all(table, 4096)
        .unwrap()
        .into_iter()
        .map(|(k, _)| u32::from_be_bytes(k.addr[..4].try_into().unwrap()))
        .collect();
    left.sort();
    assert_eq!(left, (60..100).collect::<Vec<_>>());
}

/// A sweep deletes the entries idle past expire and those naming a server their service does
/// not own, in batches, and keeps the rest: an entry refreshed after the walk read it (its
/// client came back) lives on and is counted; one the data path evicted meanwhile is neither
/// deleted nor counted, and the deletion goes on past it. When an apply ran during the walk,
/// the stale entries stay (the policy may not describe the new configuration).
#[test]
fn sweep_deletes_expired_and_stale_entries_keeps_those_that_came_back_and_skips_evicted_ones() {
    use xlb::balancer::{SweepPolicy, stick};
    let mut lb = Lb::with_capacity(Svc::default(), 20_000);
    let now = coarse_now_ns();
    let entry = |last_seen_ns: u64, backend: u32| StickEntry {
        last_seen_ns,
        backend,
        syn_at: 0,
    };
    // 0..1000 live, 1000..4000 expired, 4000..5500 stale (backend 99 serves no service).
    for i in 0..5500u32 {
        let e = match i {
            0..1000 => entry(now, i % 4),
            1000..4000 => entry(1, i % 4),
            _ => entry(now, 99),
        };
        lb.dp.stick_insert(numbered_key(0, i), e).unwrap();
    }
    let policy = SweepPolicy {
        expire: [(0u16, 60_000_000_000u64)].into(),
        owner: (0..4).map(|b| (b, 0u16)).collect(),
        ..Default::default()
    };
    let mut other = other_handle(lb.dp.stick_map_mut(0).unwrap());

    // First an apply "ran during the walk": stale entries stay.
    let swept = stick::sweep(lb.dp.stick_tables_mut(), &policy, None, 1000, || {}, || false).unwrap();
    assert!(!swept.purged);
    assert_eq!((swept.seen, swept.deleted, swept.stale), (5500, 3000, 0));
    // Counted per (service, backend): the stats page shows each server's share.
    let of_service_0 = |used: &std::collections::HashMap<(u16, u32), usize>| {
        let mut by: Vec<(u32, usize)> = used
            .iter()
            .filter(|((svc, _), _)| *svc == 0)
            .map(|((_, b), n)| (*b, *n))
            .collect();
        by.sort();
        by
    };
    assert_eq!(
        of_service_0(&swept.used),
        [(0, 250), (1, 250), (2, 250), (3, 250), (99, 1500)],
        "live and stale entries"
    );
    for i in 1000..4000u32 {
        lb.dp.stick_insert(numbered_key(0, i), entry(1, i % 4)).unwrap();
    }

    // Between the walk and the deletions: clients 1000..1100 come back, the data path
    // evicts 2000..2300 (in the middle of delete batches), and a stale one comes back too
    // (its entry now names a server of the service: re-pinned).
    let mut calls = 0;
    let swept = stick::sweep(
        lb.dp.stick_tables_mut(),
        &policy,
        None,
        1000,
        || calls += 1,
        || {
            for i in 1000..1100u32 {
                other
                    .insert(numbered_key(0, i), entry(coarse_now_ns(), i % 4), 0)
                    .unwrap();
            }
            for i in 2000..2300u32 {
                other.remove(&numbered_key(0, i)).unwrap();
            }
            other
                .insert(numbered_key(0, 4000), entry(coarse_now_ns() + 1, 1), 0)
                .unwrap();
            true
        },
    )
    .unwrap();
    assert!(swept.purged);
    assert_eq!(swept.seen, 5500);
    assert_eq!(swept.stale, 1499, "every stale entry but the re-pinned one");
    assert_eq!(
        swept.deleted,
        1499 + (3000 - 100 - 300),
        "expired, less came back and evicted"
    );
    assert_eq!(
        of_service_0(&swept.used),
        [(0, 250 + 25), (1, 250 + 25 + 1), (2, 250 + 25), (3, 250 + 25)],
        "live, came back, re-pinned (to backend 1)"
    );
    assert!(
        calls >= 5500 / 1000,
        "between_batches every 1000 entries ({calls} calls)"
    );
    let mut left: Vec<u32> = lb
        .dp
        .stick_entries_of(0)
        .unwrap()
        .into_iter()
        .map(|(k, _)| u32::from_be_bytes(k.addr[..4].try_into().unwrap()))
        .collect();
    left.sort();
    let want: Vec<u32> = (0..1100).chain([4000]).collect();
    assert_eq!(left, want);
}

/// Deleting an entry that is already gone (expired, evicted) is not an error: aya reports the
/// kernel's ENOENT as a system-call error, not as `KeyNotFound`.
#[test]
fn deleting_a_stick_entry_that_is_already_gone_is_not_an_error() {
    let mut lb = Lb::new(Svc::default());
    assert!(!lb.dp.stick_delete(&numbered_key(0, 7)).unwrap());
    lb.dp
        .stick_insert(
            numbered_key(0, 7),
            StickEntry {
                last_seen_ns: 1,
                backend: 0,
                syn_at: 0,
            },
        )
        .unwrap();
    assert!(lb.dp.stick_delete(&numbered_key(0, 7)).unwrap());
    assert!(!lb.dp.stick_delete(&numbered_key(0, 7)).unwrap());
}
