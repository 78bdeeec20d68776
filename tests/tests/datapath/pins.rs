//! Pinned maps: format checks, migration from formats 2 and 3, stick-table resize and adoption.

use harness::fixture::*;
use harness::packet::*;
use lb_common::{BACKEND_MAINT, FAMILY_V4, StickEntry, StickKey, gstat};

use crate::t4;

/// Issue 9, item 5: pin adoption compared only key and value sizes, one map at a time. Pins
/// that claim the current format but differ from it are refused with every difference listed.
#[test]
fn pins_that_differ_from_their_format_are_refused_with_every_difference() {
    use harness::raw_pins::{self, ARRAY, LRU_HASH};
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = xlb::datapath::remove_pins(&self.0);
        }
    }
    xlb::datapath::ensure_bpffs().expect("bpffs");
    let dir = std::path::PathBuf::from("/sys/fs/bpf").join(harness::names::new_stem("mismatch"));
    let _guard = Remove(dir.clone());
    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    let meta = raw_pins::create(ARRAY, 4, 8, lb_common::meta::COUNT).unwrap();
    raw_pins::update(&meta, &0u32.to_ne_bytes(), &lb_common::PIN_FORMAT.to_ne_bytes()).unwrap();
    raw_pins::pin(&meta, &maps.join(lb_common::MAP_META)).unwrap();
    let backends = raw_pins::create(ARRAY, 4, 24, 4096).unwrap();
    raw_pins::pin(&backends, &maps.join(lb_common::MAP_BACKENDS)).unwrap();
    // An LRU hash where the array of per-service tables belongs.
    let sticks = raw_pins::create(LRU_HASH, 24, 16, 1000).unwrap();
    raw_pins::pin(&sticks, &maps.join(lb_common::MAP_STICK_TABLES)).unwrap();
    let err = match xlb::datapath::Datapath::load(&xlb::datapath::LoadOptions {
        pin_dir: Some(dir.clone()),
        ..Default::default()
    }) {
        Ok(_) => panic!("pins that differ from their format were adopted"),
        Err(e) => e.to_string(),
    };
    for want in [
        "XLB_BACKENDS: value size 24 changed to 20",
        "XLB_STICKS: map type 9 changed to 12",
        "XLB_STICKS: key size 24 changed to 4",
        "XLB_VIPS: missing",
        "xlb detach",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    // Nothing was touched: the pins are as they were.
    assert!(maps.join(lb_common::MAP_BACKENDS).exists() && !maps.join(lb_common::MAP_VIPS).exists());
}

/// Format 3 split the global counters the data path counts from those the agent derives, so
/// `XLB_GSTATS` shrank from 21 entries to 12; format 4 added one (`insert_ring_full`), format 5
/// three (`encap_*`) and the map `XLB_ENCAP`. Pins of format 2, 3 or 4 (everything else the
/// same) are migrated in place: the names, the servers' states and every service's stick table
/// with its entries are adopted as they are; only the global counters start again, and an
/// empty `XLB_ENCAP` is pinned.
#[test]
fn format2_pins_are_migrated_keeping_names_backends_and_stick_tables() {
    older_pins_are_migrated(2, 21);
}

#[test]
fn format3_pins_are_migrated_keeping_names_backends_and_stick_tables() {
    older_pins_are_migrated(3, 12);
}

#[test]
fn format4_pins_are_migrated_keeping_names_backends_and_stick_tables() {
    older_pins_are_migrated(4, 13);
}

fn older_pins_are_migrated(format: u64, gstats_entries: u32) {
    use aya::maps::{Array, Map, MapData, MapInfo};
    use harness::raw_pins::{self, PERCPU_ARRAY};
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = xlb::datapath::remove_pins(&self.0);
        }
    }
    xlb::datapath::ensure_bpffs().expect("bpffs");
    let dir =
        std::path::PathBuf::from("/sys/fs/bpf").join(harness::names::new_stem(&format!("format{format}")));
    let _guard = Remove(dir.clone());
    let maps = dir.join("maps");
    let opts = xlb::datapath::LoadOptions {
        pin_dir: Some(dir.clone()),
        ..Default::default()
    };
    let key = StickKey::new(v4([10, 2, 0, 7]), 3, 0, FAMILY_V4);
    let entry = StickEntry {
        last_seen_ns: 12345,
        backend: 77,
        syn_at: 0,
    };
    let server = lb_common::Backend {
        mac: [2, 0, 0, 0, 0, 77],
        state: BACKEND_MAINT,
        service: 3,
        ..Default::default()
    };
    {
        let mut dp = xlb::datapath::Datapath::load(&opts).unwrap();
        dp.set_name(lb_common::name_slot_service(3), Some("web")).unwrap();
        dp.set_name(lb_common::name_slot_backend(77), Some("web/a"))
            .unwrap();
        dp.set_backend(77, server).unwrap();
        dp.set_stick_table(3, 5000).unwrap();
        dp.stick_insert(key, entry).unwrap();
    }
    // Make the pins what an older xlb left: its format in XLB_META, its XLB_GSTATS, no XLB_ENCAP.
    let meta: Array<MapData, u64> = Map::Array(MapData::from_pin(maps.join(lb_common::MAP_META)).unwrap())
        .try_into()
        .unwrap();
    let mut meta = meta;
    meta.set(lb_common::meta::FORMAT, format, 0).unwrap();
    let gstats = maps.join(lb_common::MAP_GLOBAL_STATS);
    std::fs::remove_file(&gstats).unwrap();
    let old = raw_pins::create(PERCPU_ARRAY, 4, 8, gstats_entries).unwrap();
    raw_pins::pin(&old, &gstats).unwrap();
    let encap = maps.join(lb_common::MAP_ENCAP);
    std::fs::remove_file(&encap).unwrap();

    let dp = match xlb::datapath::Datapath::load(&opts) {
        Ok(dp) => dp,
        Err(e) => panic!("format-{format} pins were not migrated: {e}"),
    };
    assert!(dp.adopted());
    assert_eq!(
        dp.name(lb_common::name_slot_service(3)).unwrap().as_deref(),
        Some("web")
    );
    assert_eq!(
        dp.name(lb_common::name_slot_backend(77)).unwrap().as_deref(),
        Some("web/a")
    );
    assert_eq!(dp.backend(77).unwrap(), server);
    assert_eq!(dp.stick_capacity_of(3), Some(5000));
    assert_eq!(dp.stick_get(&key).unwrap(), Some(entry));
    assert_eq!(
        MapInfo::from_pin(&gstats).unwrap().max_entries(),
        gstat::Counter::COUNT,
        "a fresh XLB_GSTATS of this format is pinned"
    );
    assert_eq!(dp.global_stats().unwrap(), Default::default());
    assert!(encap.exists(), "an empty XLB_ENCAP is pinned");
    assert_eq!(
        meta.get(&lb_common::meta::FORMAT, 0).unwrap(),
        lb_common::PIN_FORMAT
    );
    drop(dp);
    // Adopted again as this format.
    assert!(xlb::datapath::Datapath::load(&opts).unwrap().adopted());
    // A migration stopped after it unpinned the old counters, before the load pinned new ones.
    meta.set(lb_common::meta::FORMAT, format, 0).unwrap();
    std::fs::remove_file(&gstats).unwrap();
    let dp = xlb::datapath::Datapath::load(&opts).unwrap();
    assert_eq!(dp.stick_get(&key).unwrap(), Some(entry));
    assert_eq!(
        MapInfo::from_pin(&gstats).unwrap().max_entries(),
        gstat::Counter::COUNT
    );
}

// --- per-service stick tables: resize, pins -----------------------------------------------------

/// A new size for a service's table: a new table of that size holding every entry, and the
/// data path uses it from then on (what it creates afterwards lands there).
#[test]
fn stick_table_resize_keeps_every_entry_and_the_data_path_uses_the_new_table() {
    let mut lb = Lb::with_capacity(Svc::default(), 1000);
    let mut pins = Vec::new();
    for n in 0..50u8 {
        let c = [10, 77, 30, n];
        pins.push((c, lb.forwarded_to(&t4(c, 40000, TCP_ACK))));
    }
    let before = lb.dp.stick_entries_of(0).unwrap();
    assert_eq!(before.len(), 50);
    let change = lb.dp.set_stick_table(0, 3000).unwrap();
    assert_eq!(
        change,
        xlb::datapath::stick_maps::TableChange::Resized {
            from: 1000,
            copied: 50
        }
    );
    assert_eq!(lb.dp.stick_capacity_of(0), Some(3000));
    let mut after = lb.dp.stick_entries_of(0).unwrap();
    let mut want = before.clone();
    after.sort_by_key(|(k, _)| k.addr);
    want.sort_by_key(|(k, _)| k.addr);
    assert_eq!(after, want, "every entry moved over unchanged");
    for (c, b) in &pins {
        assert_eq!(lb.forwarded_to(&t4(*c, 40001, TCP_ACK)), *b, "still pinned");
    }
    lb.forwarded_to(&t4([10, 77, 31, 1], 40000, TCP_ACK));
    assert_eq!(
        lb.dp.stick_entries_of(0).unwrap().len(),
        51,
        "new entries go to the new table"
    );
    assert_eq!(
        lb.dp.set_stick_table(0, 3000).unwrap(),
        xlb::datapath::stick_maps::TableChange::Kept
    );
    // Removing a table empties the service's slot: its packets go by hash, nothing is kept.
    assert!(lb.dp.remove_stick_table(0).unwrap());
    let c = pins[0].0;
    lb.forwarded_to(&t4(c, 40002, TCP_ACK));
    assert!(lb.dp.stick_entries_of(0).unwrap().is_empty());
    assert_eq!(lb.dp.stick_capacity_of(0), None);
}

/// A pin directory under /sys/fs/bpf of this test's own, removed on drop (panics included).
struct PinDir(std::path::PathBuf);

impl PinDir {
    fn new(test: &str) -> PinDir {
        xlb::datapath::ensure_bpffs().expect("bpffs at /sys/fs/bpf");
        PinDir(std::path::Path::new("/sys/fs/bpf").join(harness::names::new_stem(test)))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = xlb::datapath::remove_pins(&self.0);
    }
}

/// What one agent pinned, the next one adopts: every service's table with its size and entries.
#[test]
fn stick_tables_pinned_by_one_load_are_adopted_by_the_next() {
    use xlb::datapath::{Datapath, LoadOptions};
    let dir = PinDir::new("stickpins");
    let opts = LoadOptions {
        pin_dir: Some(dir.0.clone()),
        ..Default::default()
    };
    let entry = |i: u32| StickEntry {
        last_seen_ns: i as u64,
        backend: i % 4,
        syn_at: 0,
    };
    let key = |service: u16, i: u32| {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&i.to_be_bytes());
        StickKey::new(addr, service, 0, FAMILY_V4)
    };
    {
        let mut dp = Datapath::load(&opts).unwrap();
        assert!(!dp.adopted());
        dp.set_stick_table(0, 1000).unwrap();
        dp.set_stick_table(3, 2000).unwrap();
        for i in 0..100 {
            dp.stick_insert(key(0, i), entry(i)).unwrap();
            dp.stick_insert(key(3, i), entry(i)).unwrap();
        }
    }
    let mut dp = Datapath::load(&opts).unwrap();
    assert!(dp.adopted());
    assert_eq!(dp.stick_services(), vec![0, 3]);
    assert_eq!(dp.stick_capacity_of(0), Some(1000));
    assert_eq!(dp.stick_capacity_of(3), Some(2000));
    for s in [0u16, 3] {
        let mut got = dp.stick_entries_of(s as u32).unwrap();
        got.sort_by_key(|(k, _)| k.addr);
        let want: Vec<_> = (0..100).map(|i| (key(s, i), entry(i))).collect();
        assert_eq!(got, want, "service {s}");
    }
    assert_eq!(
        dp.set_stick_table(0, 1000).unwrap(),
        xlb::datapath::stick_maps::TableChange::Kept,
        "an adopted table of the configured size is kept as it is"
    );
}

/// A stray single stick table (`XLB_STICK`, as format 1 had) without the rest of format 1's
/// maps and without `XLB_META`: no set this xlb knows, so it is refused with an error that says
/// what it found and what to do, before anything is loaded. (A complete set of format-1 pins is
/// migrated: e2e `format1_pins_are_migrated_keeping_ids_entries_and_admin_states`.)
#[test]
fn an_incomplete_set_of_old_pins_is_refused_with_a_clear_error() {
    use aya::maps::{Array, MapData};
    use xlb::datapath::{Datapath, DatapathError, LoadOptions};
    let dir = PinDir::new("oldstick");
    std::fs::create_dir_all(dir.0.join("maps")).unwrap();
    let old = Array::<MapData, u32>::create(1, 0).unwrap();
    old.pin(dir.0.join("maps").join(lb_common::MAP_STICK_SINGLE))
        .unwrap();
    let e = Datapath::load(&LoadOptions {
        pin_dir: Some(dir.0.clone()),
        ..Default::default()
    })
    .err()
    .expect("loading over old pins must fail");
    assert!(matches!(e, DatapathError::Format { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("XLB_STICK") && msg.contains("xlb detach"), "{msg}");
}
