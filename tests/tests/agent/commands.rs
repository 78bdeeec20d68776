//! Every command and its output format, garbage on the socket, the CLI's exit codes.

use std::{
    io::{Read as _, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    time::Duration,
};

use harness::lbenv::{LbEnv, Opts, env};
use harness::metrics;

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
            metrics: Some("127.0.0.1:9100".into()),
            ..Opts::sources(30, 2)
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
    let e = env("garbage", Opts::sources(4, 0));
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
    let e = env("cli", Opts::sources(4, 0));
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
