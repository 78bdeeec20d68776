//! The agent as dist/xlb.service runs it: with only the unit's capabilities and systemd's
//! `NOTIFY_SOCKET` (here a datagram socket the test binds), it says READY=1 once the data path
//! is attached and the runtime API answers, RELOADING=1 then READY=1 around a SIGHUP, and
//! STOPPING=1 on SIGTERM, after which the data path keeps forwarding.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use harness::{
    ChildGuard,
    lbenv::{LbEnv, Opts, xlb_bin},
};

/// The unit's `KEY=` line's words (the unit file itself, as the package installs it).
fn unit_words(key: &str) -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/xlb.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{}: {e}", unit.display()));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{} has no {key}= line", unit.display()));
    line.split_whitespace().map(str::to_string).collect()
}

/// The agent's next notification, as text; panics when the agent exits first or after 20 s.
fn next_notification(sock: &UnixDatagram, agent: &ChildGuard, log: &Path) -> String {
    let mut buf = [0u8; 4096];
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    for _ in 0..100 {
        match sock.recv(&mut buf) {
            Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading NOTIFY_SOCKET: {e}"),
        }
        if let Some(st) = agent.try_wait() {
            panic!("the agent exited ({st}) before notifying; its log:\n{}", log());
        }
    }
    panic!("no notification from the agent within 20 s; its log:\n{}", log())
}

#[test]
fn agent_notifies_systemd_with_only_the_units_capabilities() {
    let e = LbEnv::new("notify", Opts::sources(1, 0))
        .unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    let caps = unit_words("CapabilityBoundingSet");
    assert_eq!(
        caps,
        unit_words("AmbientCapabilities"),
        "the unit's two capability sets differ"
    );
    let bounding: String = caps
        .iter()
        .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();

    let notify_path = e.dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log = e.dir.join("agent-notify.log");
    // Network namespace only (the host's mounts and bpffs stay), then the unit's capabilities
    // (as root, what is outside the bounding set is gone after exec) and NoNewPrivileges=yes.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", e.topo.host(e.lb).ns))
        .args(["--", "setpriv", "--no-new-privs", "--inh-caps=-all"])
        .arg(format!("--bounding-set=-all{bounding}"))
        .arg(xlb_bin())
        .args(["run", "-c"])
        .arg(&e.config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let agent = e.topo.spawn_here(cmd).unwrap();
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    assert_eq!(next_notification(&notify, &agent, &log), "READY=1\n");
    // Ready means attached and answering: the first try works, no waiting.
    let info = e
        .api("show info")
        .unwrap_or_else(|err| panic!("API after READY=1: {err:#}\n{}", agent_log()));
    assert!(info.starts_with("Name: xlb"), "{info}");
    // The stick tables open (by id: CAP_SYS_ADMIN), which `show stat` needs.
    let stat = e.api("show stat").unwrap();
    assert!(stat.starts_with("# pxname"), "{stat}\n{}", agent_log());
    let link = e.topo.exec(e.lb, &["ip", "-d", "link", "show", "eth0"]).unwrap();
    assert!(
        link.contains("prog/xdp"),
        "READY=1 before the data path was attached:\n{link}"
    );
    let s = e.sources4[0];
    e.get_vip(s)
        .unwrap_or_else(|err| panic!("the VIP after READY=1: {err:#}\n{}", agent_log()));

    // `systemctl reload`: ExecReload sends SIGHUP.
    agent.signal(libc::SIGHUP);
    let reloading = next_notification(&notify, &agent, &log);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(next_notification(&notify, &agent, &log), "READY=1\n");
    assert!(agent_log().contains("configuration reloaded"), "{}", agent_log());

    // `systemctl stop`: SIGTERM; the data path keeps forwarding.
    agent.signal(libc::SIGTERM);
    assert_eq!(next_notification(&notify, &agent, &log), "STOPPING=1\n");
    let st = agent
        .wait_timeout(Duration::from_secs(10))
        .expect("the agent exits on SIGTERM");
    assert!(st.success(), "{st}\n{}", agent_log());
    e.get_vip(s)
        .expect("the data path forwards after the agent stopped");
}
