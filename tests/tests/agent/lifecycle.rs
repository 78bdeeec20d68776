//! Detaching, and an admin socket path that is taken.

use harness::lbenv::{LbEnv, Opts, env};

#[test]
fn detach_removes_the_program_and_the_pins() {
    let e = env("detach", Opts::sources(2, 0));
    let s = e.sources4[0];
    e.get_vip(s).unwrap();
    let bin = harness::lbenv::xlb_bin();
    let ns = e.topo.host(e.lb).ns.clone();
    let detach = || {
        std::process::Command::new(&bin)
            .args(["detach", "-c"])
            .arg(&e.config)
            .args(["--netns", &ns])
            .output()
            .unwrap()
    };
    // While the agent runs, detach refuses.
    let out = detach();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("an agent is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stopped, the data path keeps forwarding from its pins ...
    e.stop_agent().expect("agent exited");
    assert!(e.get_vip(s).is_ok());
    assert!(
        e.topo
            .exec(e.lb, &["ip", "-d", "link", "show", "eth0"])
            .unwrap()
            .contains("prog/xdp")
    );
    // ... until detach removes the link and the maps: the link detached by BPF_LINK_DETACH,
    // not only unpinned (the kernel frees an unpinned link later; this test once saw the
    // program still attached after `xlb detach` returned).
    let out = detach();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("cannot detach"), "{stderr}");
    assert!(!e.bpffs.exists(), "pins removed");
    assert!(
        !e.topo
            .exec(e.lb, &["ip", "-d", "link", "show", "eth0"])
            .unwrap()
            .contains("prog/xdp"),
        "program detached"
    );
    assert!(
        e.get_vip(s).is_err(),
        "with no data path the VIP no longer answers"
    );
}

#[test]
fn admin_socket_path_holding_a_regular_file_stops_the_agent_and_keeps_the_file() {
    let e = LbEnv::new("sockfile", Opts::sources(1, 0))
        .unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    std::fs::write(&e.socket, "not a socket").unwrap();
    let err = format!(
        "{:#}",
        e.start_agent().expect_err("the agent must refuse to start")
    );
    assert!(
        err.contains("a file that is not a socket is there; xlb does not delete it"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&e.socket).unwrap(), "not a socket");
    assert!(
        !e.topo
            .exec(e.lb, &["ip", "-d", "link", "show", "eth0"])
            .unwrap()
            .contains("prog/xdp"),
        "refused before the data path was attached"
    );
    // Moved away, the same config starts, and the socket is 0600.
    std::fs::remove_file(&e.socket).unwrap();
    e.start_agent().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&e.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
}
