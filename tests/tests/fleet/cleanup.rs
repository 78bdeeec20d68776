//! A test that panics leaves no BIRD daemon, namespace or file of its fleet behind.

use std::path::{Path, PathBuf};

use harness::{fleet::Fleet, netns, require_root};

#[test]
fn a_panicking_fleet_test_leaves_nothing_behind() {
    require_root();
    let mut seen: Option<(Vec<u32>, Vec<String>, PathBuf)> = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fleet = Fleet::new("fleet_cleanup").unwrap_or_else(|e| panic!("fleet: {e:#}"));
        let pids = std::iter::once(&fleet.router_bird)
            .chain(&fleet.balancer_birds)
            .map(|b| b.pid())
            .collect();
        seen = Some((pids, fleet.topo.namespaces().to_vec(), fleet.dir().to_path_buf()));
        panic!("on purpose, with the fleet running");
    }));
    assert!(r.is_err(), "the closure panics");
    let (pids, namespaces, dir) = seen.expect("the fleet was built");
    assert_eq!(pids.len(), 4, "router and three balancers");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "bird {pid} still runs"
        );
    }
    for ns in namespaces {
        assert!(!netns::ns_path(&ns).exists(), "namespace {ns} left behind");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}
