//! A test that panics leaves no BIRD daemon, agent, namespace or file of its fleet behind
//! (pins, instance locks, announce state files included).

use std::path::{Path, PathBuf};

use harness::{
    fleet::{AgentOpts, Fleet},
    netns, require_root,
};

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

#[test]
fn a_panicking_test_with_agents_leaves_no_agent_or_file_behind() {
    require_root();
    let mut seen: Option<(Vec<u32>, Vec<PathBuf>, Vec<String>)> = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fleet = Fleet::with_agents("fleet_cleanup2", AgentOpts::default())
            .unwrap_or_else(|e| panic!("fleet: {e:#}"));
        let pids = fleet.agents.iter().filter_map(|a| a.pid()).collect();
        let files = fleet
            .agents
            .iter()
            .flat_map(|a| {
                [
                    a.bpffs.clone(),
                    xlb::agent::lock_path(&a.bpffs),
                    xlb::agent::announce_state_path(&a.bpffs),
                ]
            })
            .collect();
        seen = Some((pids, files, fleet.topo.namespaces().to_vec()));
        panic!("on purpose, with the agents running");
    }));
    assert!(r.is_err(), "the closure panics");
    let (pids, files, namespaces) = seen.expect("the fleet was built");
    assert_eq!(pids.len(), 3, "three agents ran");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "agent {pid} still runs"
        );
    }
    for f in files {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    for ns in namespaces {
        assert!(!netns::ns_path(&ns).exists(), "namespace {ns} left behind");
    }
}
