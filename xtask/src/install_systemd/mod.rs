//! The unit as `cargo xtask install --root DIR` installs it, run by a real systemd (booted as
//! PID 1 of private namespaces: [`container`]) inside the balancer host of the harness's
//! topology: `systemctl start` returns once the agent said READY=1 (attached and answering),
//! `reload` takes a changed configuration, a killed agent is restarted and adopts its pins, and
//! `stop` leaves the data path forwarding. The agent runs under every sandboxing option of the
//! unit; the test reads from `/proc` that they hold. `systemctl status` and `systemd-analyze
//! verify` and `systemd-analyze security` as the container saw them are saved under
//! `target/xlb-systemd/` for people to read.

mod container;

use std::{net::IpAddr, path::Path, time::Duration};

use harness::{
    agent::{AgentPaths, SERVICES, config_text},
    lbenv::{LbEnv, Opts, api_at, xlb_bin},
};

use crate::dist::{UNIT, install};
use container::Systemd;

/// Where the unit's `RuntimeDirectory=xlb` puts the admin socket (the example config's path).
const SOCKET: &str = "/run/xlb/admin.sock";

/// The metrics listener (the stats page), inside the balancer's namespace.
const METRICS: &str = "127.0.0.1:9100";

/// The capabilities' bit numbers (linux/capability.h) of the names a unit may list.
const CAP_BITS: [(&str, u32); 5] = [
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_ADMIN", 12),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
];

/// The config of `e`'s balancer for systemd: the unit's socket path, `e`'s pins, the first
/// `n` backends in every service.
fn config(e: &LbEnv, n: usize) -> String {
    let socket = Path::new(SOCKET);
    let paths = AgentPaths {
        socket,
        bpffs: &e.bpffs,
    };
    config_text(&paths, &e.opts, &SERVICES, |_| {
        (0..n).map(|i| (i, e.topo.host(e.backends[i]))).collect()
    })
}

/// The words of the installed unit's `KEY=` line.
fn unit_words(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit has no {key}= line"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The bit mask of capability names.
fn cap_mask(names: &[String]) -> u64 {
    names
        .iter()
        .map(|n| {
            let bit = CAP_BITS
                .iter()
                .find(|(name, _)| name == n)
                .unwrap_or_else(|| panic!("{n}: add its bit to CAP_BITS"))
                .1;
            1u64 << bit
        })
        .sum()
}

/// The `Name:` line's value of `/proc/PID/status`.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// Each mount point of `pid`'s namespace with `ro` or `rw` (of the mount on top).
fn mount_options(pid: u32) -> std::collections::HashMap<String, String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...: a later line is mounted over an earlier.
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let rw = f.get(5)?.split(',').next()?;
            Some((f.get(4)?.to_string(), rw.to_string()))
        })
        .collect()
}

/// The host pid of the agent (the one process of xlb.service).
fn agent_pid(sd: &Systemd) -> u32 {
    let pids = sd.unit_pids("xlb.service");
    assert_eq!(pids.len(), 1, "xlb.service holds {pids:?}:\n{}", sd.journal());
    pids[0]
}

/// Waits (10 s at most) until xlb.service is `state`/`sub`.
fn wait_state(sd: &Systemd, state: &str, sub: &str) {
    for _ in 0..200 {
        if sd.property("xlb", "ActiveState") == state && sd.property("xlb", "SubState") == sub {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "xlb.service never {state}/{sub}:\n{}\n{}",
        sd.systemctl(&[
            "show",
            "xlb",
            "-p",
            "ActiveState,SubState,Result,NRestarts,MainPID"
        ]),
        sd.journal()
    );
}

#[test]
fn the_installed_unit_runs_under_a_real_systemd() {
    let e = LbEnv::new(
        "systemd",
        Opts {
            backends: 2,
            metrics: Some(METRICS.into()),
            ..Opts::sources(2, 0)
        },
    )
    .unwrap_or_else(|err| panic!("building the harness (needs root): {err:#}"));
    // The installed files, the configuration first: install keeps it.
    let root = e.dir.join("root");
    let config_path = root.join(crate::dist::CONFIG);
    std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    std::fs::write(&config_path, config(&e, 1)).unwrap();
    install(&crate::workspace_root(), &xlb_bin(), &root).unwrap_or_else(|err| panic!("install: {err:#}"));
    let unit = std::fs::read_to_string(root.join(UNIT)).unwrap();

    let sd = Systemd::boot(&e.topo, e.lb, &root, &format!("{}-systemd", e.topo.stem()));
    let socket = sd.path(SOCKET);
    let api =
        |cmd: &str| api_at(&socket, cmd).unwrap_or_else(|err| panic!("{cmd}: {err:#}\n{}", sd.journal()));

    // start: Type=notify, so it returns after READY=1: attached and answering, first try.
    sd.systemctl(&["start", "xlb"]);
    assert!(api("show info").starts_with("Name: xlb"));
    let link = e.topo.exec(e.lb, &["ip", "-d", "link", "show", "eth0"]).unwrap();
    assert!(
        link.contains("prog/xdp"),
        "started before the data path was attached:\n{link}"
    );
    assert_eq!(
        (sd.property("xlb", "ActiveState"), sd.property("xlb", "SubState")),
        ("active".into(), "running".into())
    );
    let s = e.sources4[0];
    let first = e
        .get_vip(s)
        .unwrap_or_else(|err| panic!("the VIP: {err:#}\n{}", sd.journal()));
    assert_eq!(first, "app1");

    // The sandbox holds: the unit's capabilities and no other, no new privileges, a seccomp
    // filter (SystemCallArchitectures=, RestrictAddressFamilies=, MemoryDenyWriteExecute=, ...).
    let pid = agent_pid(&sd);
    // The main process systemd follows is the agent itself (its pid inside the container).
    let ns_pid = status_field(pid, "NSpid");
    assert_eq!(
        Some(sd.property("xlb", "MainPID").as_str()),
        ns_pid.split_whitespace().last()
    );
    let caps = cap_mask(&unit_words(&unit, "CapabilityBoundingSet"));
    for set in ["CapBnd", "CapEff", "CapPrm", "CapAmb"] {
        let got = u64::from_str_radix(&status_field(pid, set), 16).unwrap();
        assert_eq!(got, caps, "{set} of the agent: {got:x}, the unit says {caps:x}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(pid, "Seccomp"),
        "2",
        "no seccomp filter on the agent"
    );
    // Its mounts: the system read-only but the pins; sysctls it reads but cannot write; its
    // own /tmp.
    let mounts = mount_options(pid);
    for (path, want) in [
        ("/", "ro"),
        ("/usr", "ro"),
        ("/etc", "ro"),
        ("/sys", "ro"),
        ("/sys/fs/bpf", "rw"),
    ] {
        assert_eq!(
            mounts.get(path).map(String::as_str),
            Some(want),
            "{path} for the agent: {mounts:?}"
        );
    }
    // The sysctls it reads (forwarding, for encapsulated servers): there, and read-only.
    let sysctl = format!("/proc/{pid}/root/proc/sys/net/ipv4/conf/all/forwarding");
    assert_eq!(
        mounts.get("/proc/sys").map(String::as_str),
        Some("ro"),
        "the agent's /proc/sys: {mounts:?}"
    );
    assert!(Path::new(&sysctl).exists(), "the agent cannot read {sysctl}");
    let tmp = |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/root/tmp")).map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    assert_ne!(
        tmp(pid).unwrap(),
        tmp(sd.pid()).unwrap(),
        "PrivateTmp: the agent's /tmp is the container's"
    );
    // The stats page's document opens the stick tables: by id, which only CAP_SYS_ADMIN may
    // (without it: 503, "Operation not permitted").
    let doc = harness::metrics::get(&e, METRICS, "/stats.json");
    assert!(doc.starts_with("HTTP/1.1 200 OK"), "{doc}");

    // reload: ExecReload's SIGHUP; the agent takes the changed configuration (app2).
    std::fs::write(sd.path("/etc/xlb/xlb.toml"), config(&e, 2)).unwrap();
    sd.systemctl(&["reload", "xlb"]);
    wait_state(&sd, "active", "running");
    let stat = api("show stat");
    assert!(
        stat.contains("be_app,app2,"),
        "reload did not take app2:\n{stat}\n{}",
        sd.journal()
    );
    assert!(
        sd.journal()
            .contains("xlb: configuration reloaded from /etc/xlb/xlb.toml")
    );
    assert_eq!(pid, agent_pid(&sd), "a reload is not a restart");

    // kill -9: Restart=on-failure starts it again (after RestartSec=), and it adopts the pins:
    // the client stays on its server; the data path forwards meanwhile.
    // SAFETY: plain syscall on the agent's pid (the one process of the unit's cgroup).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert_eq!(e.get_vip(s).unwrap(), first, "forwarding while the agent is gone");
    for _ in 0..200 {
        if sd.property("xlb", "NRestarts") == "1" && sd.unit_pids("xlb.service").first() != Some(&pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_state(&sd, "active", "running");
    assert_eq!(sd.property("xlb", "NRestarts"), "1");
    assert_ne!(agent_pid(&sd), pid);
    let table = api("show table be_app");
    assert!(table.contains(&format!("key={s} ")), "{table}");
    assert!(
        sd.journal()
            .contains("adopted pinned maps (1 stick entries kept)"),
        "{}",
        sd.journal()
    );
    assert_eq!(e.get_vip(s).unwrap(), first);

    // The outputs for the closing note.
    let status = sd.run(&["systemctl", "--no-pager", "status", "xlb"]);
    let verify = sd.run(&["systemd-analyze", "verify", "/usr/lib/systemd/system/xlb.service"]);
    let said = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let security = sd.run(&["systemd-analyze", "security", "--no-pager", "xlb.service"]);
    let (status, verify) = (said(&status), said(&verify));
    let out = crate::workspace_root().join("target/xlb-systemd");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("status.txt"), &status).unwrap();
    std::fs::write(out.join("verify.txt"), &verify).unwrap();
    std::fs::write(out.join("security.txt"), said(&security)).unwrap();
    let show = [
        "ActiveState",
        "SubState",
        "MainPID",
        "NRestarts",
        "Result",
        "Type",
    ];
    std::fs::write(
        out.join("show.txt"),
        sd.systemctl(&["show", "xlb", "-p", &show.join(",")]),
    )
    .unwrap();
    assert!(status.contains("Active: active (running)"), "{status}");
    assert!(verify.trim().is_empty(), "systemd-analyze verify: {verify}");

    // stop: SIGTERM to the agent; the data path keeps forwarding from its pins.
    sd.systemctl(&["stop", "xlb"]);
    assert_eq!(sd.property("xlb", "ActiveState"), "inactive");
    assert_eq!(sd.property("xlb", "Result"), "success");
    assert!(sd.unit_pids("xlb.service").is_empty());
    let link = e.topo.exec(e.lb, &["ip", "-d", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("prog/xdp"), "stop detached the program:\n{link}");
    let pins = std::fs::read_dir(&e.bpffs).map(|d| d.count()).unwrap_or(0);
    assert!(pins > 0, "no pins left under {}", e.bpffs.display());
    let other: IpAddr = e.sources4[1];
    assert_eq!(e.get_vip(s).unwrap(), first, "the data path forwards after stop");
    e.get_vip(other).expect("a new client after stop");
}
