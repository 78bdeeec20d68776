use xlb::datapath::{Datapath, LoadOptions};

#[test]
fn loads_and_passes_arp() {
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let r = dp.test_run("xlb", &arp, 1).expect("run");
    assert_eq!(r.verdict, 2);
    for p in ["xlb_floor", "xlb_bench_fresh", "xlb_bench_fresh_floor"] {
        dp.program(p).expect(p);
    }
}
