//! The agent's runtime API and CLI against the real agent and data path: every command and its
//! output format, the errors, garbage input that must not hurt it, and the metrics endpoint.

use std::{
    io::{Read as _, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    time::Duration,
};

use harness::{
    lbenv::{LbEnv, Opts},
    metrics,
};

fn env(name: &str, opts: Opts) -> LbEnv {
    let e = LbEnv::new(name, opts).unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    e
}

fn raw(e: &LbEnv, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(&e.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn every_command_and_its_format() {
    let e = env(
        "api",
        Opts {
            v4_sources: 30,
            v6_sources: 2,
            metrics: Some("127.0.0.1:9100".into()),
            ..Default::default()
        },
    );
    let mut pins = Vec::new();
    for s in &e.sources4 {
        pins.push((*s, e.get_vip(*s).unwrap()));
    }
    let help = e.api("help").unwrap();
    for w in [
        "show table",
        "show servers state",
        "show stat",
        "show info",
        "set server",
        "clear table",
        "where",
    ] {
        assert!(help.contains(w), "help lacks {w}: {help}");
    }
    let info = e.api("show info").unwrap();
    assert!(info.starts_with("Name: xlb\nVersion: "), "{info}");
    // 30 clients of be_app, one entry each; nothing else made entries. The figure is the
    // sweeper's last count (at most one sweep old).
    assert!(
        e.wait_until(Duration::from_secs(5), || e
            .api("show info")
            .is_ok_and(|i| i.contains("\nStickTableUsed: 30\n"))),
        "{}",
        e.api("show info").unwrap()
    );
    // show table: one header per table.
    let tables = e.api("show table").unwrap();
    assert_eq!(
        tables,
        "# table: be_app, type: ip, size:10000, used:30\n# table: be_app6, type: ipv6, size:10000, used:0\n# table: dns, type: ip, size:10000, used:0\n"
    );
    let t = e.api("show table be_app").unwrap();
    assert_eq!(t.lines().count(), 31);
    for l in t.lines().skip(1) {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 6, "{l}");
        assert!(f[0].starts_with("0x") && f[0].ends_with(':'), "{l}");
        assert!(
            f[1].starts_with("key=10.77.16.") && f[2] == "use=0" && f[3].starts_with("exp="),
            "{l}"
        );
        assert!(
            f[4].starts_with("server_id=") && f[5].starts_with("server_key=app"),
            "{l}"
        );
        let exp: u64 = f[3][4..].parse().unwrap();
        assert!(
            exp > 1_790_000 && exp <= 1_800_000,
            "exp counts down from 30m: {l}"
        );
    }
    // Filters.
    let (s0, b0) = &pins[0];
    let one = e.api(&format!("show table be_app key {s0}")).unwrap();
    assert_eq!(one.lines().count(), 2, "{one}");
    assert!(one.lines().nth(1).unwrap().ends_with(&format!("server_key={b0}")));
    let id: u32 = one
        .split("server_id=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let by_id = e
        .api(&format!("show table be_app data.server_id eq {id}"))
        .unwrap();
    let n_id = pins.iter().filter(|(_, b)| b == b0).count();
    assert_eq!(by_id.lines().count(), n_id + 1, "{by_id}");
    // show servers state: HAProxy version 1.
    let st = e.api("show servers state be_app").unwrap();
    let mut lines = st.lines();
    assert_eq!(lines.next(), Some("1"));
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), 4);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[1], "be_app");
        assert_eq!(r[2], (i + 1).to_string());
        assert_eq!(r[3], format!("app{}", i + 1));
        assert_eq!(r[5], "2", "op_state RUNNING");
        assert_eq!(r[6], "0", "admin_state none");
    }
    // show stat: CSV with HAProxy's leading columns.
    let stat = e.api("show stat").unwrap();
    assert!(
        stat.starts_with("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,weight,"),
        "{stat}"
    );
    assert_eq!(stat.lines().filter(|l| l.starts_with("be_app,")).count(), 5);
    // set server state: drain then maint show in servers state and stat.
    assert_eq!(e.api(&format!("set server be_app/{b0} state drain")).unwrap(), "");
    let st = e.api("show servers state be_app").unwrap();
    let row = st.lines().find(|l| l.contains(&format!(" {b0} "))).unwrap();
    assert_eq!(
        row.split(' ').nth(6),
        Some("8"),
        "drain = admin_state 0x08: {row}"
    );
    assert_eq!(e.server_state("be_app", b0).unwrap(), "DRAIN");
    assert_eq!(e.api(&format!("set server be_app/{b0} state maint")).unwrap(), "");
    let st = e.api("show servers state be_app").unwrap();
    let row = st.lines().find(|l| l.contains(&format!(" {b0} "))).unwrap();
    assert_eq!(
        (row.split(' ').nth(5), row.split(' ').nth(6)),
        (Some("0"), Some("1")),
        "maint: {row}"
    );
    // Maint + redispatch: its clients go elsewhere.
    assert_ne!(&e.get_vip(*s0).unwrap(), b0);
    assert_eq!(e.api(&format!("set server be_app/{b0} state ready")).unwrap(), "");
    // Weight 0: no new clients; weight back.
    assert_eq!(e.api(&format!("set server be_app/{b0} weight 0")).unwrap(), "");
    assert!(
        e.api("show stat")
            .unwrap()
            .contains(&format!("be_app,{b0},0,0,0,0,,"))
    );
    assert_eq!(e.api(&format!("set server be_app/{b0} weight 1")).unwrap(), "");
    // where.
    let (s1, b1) = &pins[1];
    let w = e.api(&format!("where be_app {s1}")).unwrap();
    assert!(
        w.starts_with(&format!("{s1} -> {b1} (pinned by stick entry")),
        "{w}"
    );
    let w = e.api("where be_app 10.77.31.250").unwrap();
    assert!(w.contains("no stick entry yet; by hash"), "{w}");
    // clear table: one key, one server, all.
    assert_eq!(e.api(&format!("clear table be_app key {s1}")).unwrap(), "");
    assert!(
        !e.api("show table be_app")
            .unwrap()
            .contains(&format!("key={s1} "))
    );
    assert_eq!(
        e.api(&format!("clear table be_app data.server_id eq {id}"))
            .unwrap(),
        ""
    );
    assert!(
        !e.api("show table be_app")
            .unwrap()
            .contains(&format!("server_key={b0}\n"))
    );
    assert_eq!(e.api("clear table be_app").unwrap(), "");
    assert!(
        e.api("show table")
            .unwrap()
            .starts_with("# table: be_app, type: ip, size:10000, used:0\n")
    );
    // Errors: one line each, specific.
    for (cmd, want) in [
        (
            "bogus",
            "Unknown command: 'bogus'. Type 'help' for the list of commands.\n",
        ),
        (
            "show tabel",
            "Unknown command: 'show tabel'. Type 'help' for the list of commands.\n",
        ),
        (
            "show table nope",
            "No such table: 'nope'. Tables: be_app, be_app6, dns.\n",
        ),
        (
            "set server be_app/nope state drain",
            "No such server: 'be_app/nope'.\n",
        ),
        ("set server nope/app1 state drain", "No such backend: 'nope'.\n"),
        (
            "set server be_app/app1 state sleepy",
            "'sleepy' is not a state; use ready, drain or maint.\n",
        ),
        (
            "set server be_app/app1 weight 300",
            "'300' is not a weight; use an integer from 0 to 256.\n",
        ),
        (
            "set server app1 state drain",
            "'app1' must be written <service>/<server>.\n",
        ),
        (
            "show table be_app key notanaddress",
            "'notanaddress' is not an IPv4 or IPv6 address\n",
        ),
        (
            "show table be_app color eq blue",
            "unknown filter 'color eq blue'; use 'key <addr>' or 'data.server_id eq <n>'\n",
        ),
        ("", "Empty command. Type 'help' for the list of commands.\n"),
    ] {
        assert_eq!(e.api(cmd).unwrap(), want, "command {cmd:?}");
    }
    // Metrics (inside the LB namespace); a check latency appears once a check has completed.
    let scrape = || metrics::scrape(&e, "127.0.0.1:9100");
    assert!(
        e.wait_until(Duration::from_secs(10), || {
            scrape().contains("xlb_server_check_latency_seconds{service=\"be_app\",server=\"app1\"}")
        }),
        "no check latency in the metrics"
    );
    let body = scrape();
    let text = metrics::checked_text(&body);
    // The 30 clients' traffic went through be_app: its counters are not zero.
    for m in [
        "xlb_service_packets_total{service=\"be_app\"} ",
        "xlb_service_stick_inserts_total{service=\"be_app\"} ",
        "xlb_server_checks_total{service=\"be_app\",server=\"app1\"} ",
    ] {
        assert!(metrics::sample(text, m) > 0.0, "{m}:\n{text}");
    }
    for m in [
        "# HELP xlb_datapath_packets_total ",
        "# TYPE xlb_datapath_packets_total counter\n",
        "# TYPE xlb_stick_table_used gauge\n",
        "xlb_datapath_packets_total{event=\"tx\"}",
        "xlb_service_stick_hits_total{service=\"be_app\"}",
        "xlb_server_state{service=\"be_app\",server=\"app1\",state=\"UP\"} 1",
        "xlb_stick_table_size{service=\"be_app\"} 10000",
        "xlb_server_check_latency_seconds{service=\"be_app\",server=\"app1\"}",
    ] {
        assert!(body.contains(m), "metrics lack {m}:\n{body}");
    }
    // Table usage comes from the sweeper's last pass: it matches `show table` after one.
    let used = e.api("show table be_app").unwrap();
    let used = used
        .split("used:")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    assert!(
        e.wait_until(Duration::from_secs(5), || scrape()
            .contains(&format!("xlb_stick_table_used{{service=\"be_app\"}} {used}\n"))),
        "used {used}:\n{}",
        scrape()
    );
}

#[test]
fn garbage_on_the_socket_gets_an_error_and_the_agent_lives() {
    let e = env(
        "garbage",
        Opts {
            v4_sources: 4,
            v6_sources: 0,
            ..Default::default()
        },
    );
    let long = vec![b'a'; 10_000];
    assert_eq!(raw(&e, &long), "Command too long: at most 4096 bytes.\n");
    let bin: Vec<u8> = (0..=255u8).cycle().take(600).filter(|b| *b != b'\n').collect();
    let mut bin = bin;
    bin.push(b'\n');
    assert!(raw(&e, &bin).starts_with("Unknown command"), "binary input");
    assert!(raw(&e, b"show table be_app key 10.0.0.1 extra words here\n").starts_with("unknown filter"));
    assert!(raw(&e, b"\x00\x01\x02\n").starts_with("Unknown command"));
    assert_eq!(
        raw(&e, b""),
        "Empty command. Type 'help' for the list of commands.\n"
    );
    // Many connections at once.
    let handles: Vec<_> = (0..50).map(|_| UnixStream::connect(&e.socket).unwrap()).collect();
    drop(handles);
    assert!(
        e.api("show info").unwrap().starts_with("Name: xlb"),
        "the agent survived"
    );
    assert!(e.get_vip(e.sources4[0]).is_ok());
}

#[test]
fn cli_wraps_the_api_with_exit_codes() {
    let e = env(
        "cli",
        Opts {
            v4_sources: 4,
            v6_sources: 0,
            ..Default::default()
        },
    );
    let s: IpAddr = e.sources4[0];
    let b = e.get_vip(s).unwrap();
    let out = e.cli(&["show", "table", "be_app"]).unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("key={s} ")));
    let out = e.cli(&["where", "be_app", &s.to_string()]).unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{s} -> {b} (pinned")));
    let out = e
        .cli(&["set", "server", "be_app/nope", "state", "drain"])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an error answer exits 1");
    let out = e.cli(&["show", "table", "nope"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = e
        .cli(&["set", "server", "be_app/app1", "state", "drain"])
        .unwrap();
    assert!(out.status.success());
    // A closed pipe is not an error.
    let cmd = format!(
        "{} --socket {} show stat | head -1",
        harness::lbenv::xlb_bin().display(),
        e.socket.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No agent there: a clear error and exit 1.
    let out = std::process::Command::new(harness::lbenv::xlb_bin())
        .args(["--socket", "/nonexistent/x.sock", "show", "info"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent at /nonexistent/x.sock"));
    // A wrong argument: clap's message, exit 2.
    let out = std::process::Command::new(harness::lbenv::xlb_bin())
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn detach_removes_the_program_and_the_pins() {
    let e = env(
        "detach",
        Opts {
            v4_sources: 2,
            v6_sources: 0,
            ..Default::default()
        },
    );
    let s = e.sources4[0];
    e.get_vip(s).unwrap();
    let bin = harness::lbenv::xlb_bin();
    let ns = e.topo.host(e.lb).ns.clone();
    // While the agent runs, detach refuses.
    let out = std::process::Command::new(&bin)
        .args(["detach", "-c"])
        .arg(&e.config)
        .args(["--netns", &ns])
        .output()
        .unwrap();
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
    // ... until detach removes the link and the maps.
    let out = std::process::Command::new(&bin)
        .args(["detach", "-c"])
        .arg(&e.config)
        .args(["--netns", &ns])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
    let e = LbEnv::new(
        "sockfile",
        Opts {
            v4_sources: 1,
            v6_sources: 0,
            ..Default::default()
        },
    )
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

/// `cmd`'s answer read as it streams: (lines, time to the first byte, time to the end).
fn api_streamed(e: &LbEnv, cmd: &str) -> (usize, Duration, Duration) {
    use std::io::BufRead as _;
    let t0 = std::time::Instant::now();
    let mut s = UnixStream::connect(&e.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut r = std::io::BufReader::with_capacity(1 << 20, s);
    let first = r.fill_buf().map(|_| t0.elapsed()).unwrap();
    let mut lines = 0;
    loop {
        let buf = r.fill_buf().unwrap_or_else(|err| panic!("{cmd}: {err}"));
        if buf.is_empty() {
            break;
        }
        lines += buf.iter().filter(|b| **b == b'\n').count();
        let n = buf.len();
        r.consume(n);
    }
    (lines, first, t0.elapsed())
}

/// Issue 9, item 7: `show info`, `show stat`, `show table` and `clear table` walked the whole
/// stick table while holding the agent's lock, and the runtime thread — which runs the health
/// checks — blocked on that lock whenever it needed it (the sweeper takes it every
/// `sweep_interval`). With a million entries, checks stalled for as long as a walk took. Here
/// the table holds a million entries while `show table` and `show info` run back to back: no
/// health check of a backend comes more than one interval late, and `show info` answers within
/// a second.
#[test]
fn health_checks_keep_their_interval_while_a_million_entry_table_is_walked() {
    const ENTRIES: u32 = 1_000_000;
    let inter = Duration::from_millis(200);
    let e = env(
        "walk",
        Opts {
            backends: 2,
            v4_sources: 0,
            v6_sources: 0,
            // Each service has its own table: room for the million in be_app's.
            stick_size: 1_100_000,
            inter: format!("{}ms", inter.as_millis()),
            ..Default::default()
        },
    );
    // be_app's id, from `show servers state` (be_id = id + 1).
    let state = e.api("show servers state be_app").unwrap();
    let be_id: u16 = state
        .lines()
        .nth(2)
        .and_then(|l| l.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{state}"));
    // A million clients of be_app, written through the pinned map (only map data: no packet
    // is sent from or to these addresses).
    let pin = e.bpffs.join("maps").join(lb_common::MAP_STICK_TABLES);
    let mut tables = xlb::balancer::stick::open_pinned(&pin).unwrap();
    let map = &mut tables
        .get_mut((be_id - 1) as u32)
        .expect("be_app has a stick table")
        .map;
    let now = xlb::datapath::coarse_now_ns();
    for i in 0..ENTRIES {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&(u32::from(std::net::Ipv4Addr::new(10, 64, 0, 0)) + i).to_be_bytes());
        let key = lb_common::StickKey::new(addr, be_id - 1, 0, lb_common::FAMILY_V4);
        let entry = lb_common::StickEntry {
            last_seen_ns: now,
            backend: 0,
            _pad: 0,
        };
        map.insert(key, entry, 0)
            .unwrap_or_else(|err| panic!("entry {i}: {err}"));
    }
    drop(tables);
    let used = |info: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("StickTableUsed: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no StickTableUsed in show info:\n{info}"))
    };

    // `StickTableUsed` is the sweeper's count (a second old at most here): it sees them all.
    assert!(
        e.wait_until(Duration::from_secs(10), || used(&e.api("show info").unwrap())
            > ENTRIES as u64 * 99 / 100),
        "{}",
        e.api("show info").unwrap()
    );

    // Walk it back to back while the checks run; the checks of app1 and app2 from the LB.
    let lb_addr = IpAddr::from(e.topo.host(e.lb).ipv4);
    let started = std::time::Instant::now();
    let mut info_times = Vec::new();
    for round in 0..3 {
        let (lines, first, total) = api_streamed(&e, "show table be_app");
        assert!(
            lines > ENTRIES as usize * 99 / 100,
            "round {round}: show table be_app gave {lines} lines"
        );
        eprintln!("show table be_app: {lines} lines, first byte after {first:?}, all after {total:?}");
        let t0 = std::time::Instant::now();
        let info = e.api("show info").unwrap();
        info_times.push(t0.elapsed());
        assert!(used(&info) > ENTRIES as u64 * 99 / 100, "{info}");
        let t0 = std::time::Instant::now();
        let stat = e.api("show stat").unwrap();
        assert!(stat.lines().any(|l| l.starts_with("be_app,BACKEND,")), "{stat}");
        eprintln!(
            "show info after {:?}, show stat after {:?}",
            info_times[round],
            t0.elapsed()
        );
    }
    // And the whole table cleared, entry by entry.
    let t0 = std::time::Instant::now();
    assert_eq!(e.api("clear table be_app").unwrap(), "");
    eprintln!("clear table be_app after {:?}", t0.elapsed());
    let (lines, ..) = api_streamed(&e, "show table be_app");
    assert_eq!(lines, 1, "only the header is left");
    let walked = started.elapsed();
    // The checks' interval holds: from the last check before the walks to one interval after
    // their end, every gap between two checks of a server is at most two intervals (no check
    // one interval late).
    std::thread::sleep(inter);
    let ended = std::time::Instant::now();
    for (i, http) in e.http.iter().enumerate() {
        let all = http.health_checks_from(lb_addr);
        let before = all.iter().rposition(|t| *t < started).unwrap_or(0);
        let mut times = all[before..].to_vec();
        times.push(ended);
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let worst = gaps.iter().max().copied().unwrap_or_default();
        eprintln!(
            "app{}: {} checks while walking for {walked:?}, longest gap {worst:?}",
            i + 1,
            times.len()
        );
        assert!(
            worst <= 2 * inter,
            "app{}: a health check came {:?} after the previous one (interval {inter:?}): \
             more than one interval late while the table was walked; gaps {gaps:?}",
            i + 1,
            worst
        );
        assert!(
            times.len() as u128 >= walked.as_millis() / (2 * inter.as_millis()),
            "app{}: {} checks in {walked:?}",
            i + 1,
            times.len()
        );
    }
    for t in &info_times {
        assert!(
            *t < Duration::from_secs(1),
            "show info took {t:?} with {ENTRIES} entries"
        );
    }
}
