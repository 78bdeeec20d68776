//! Announcements (issue 11): the agent keeps a route per announced VIP in table 200 of the LB
//! host (proto 250), which BIRD would export. Read with `ip route show table 200` in the LB
//! namespace: after the warm-up, withdrawn when every server is DOWN or in maintenance (not
//! when draining), on the operator's commands, kept across kill -9 and a restart, removed by
//! `xlb detach`.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use harness::{
    lbenv::{LbEnv, Opts},
    topology::{VIP4, VIP6},
};

use crate::wait_state;

const TABLE: &str = "200";
const METRICS: &str = "127.0.0.1:9100";

/// An environment of two backends whose agent announces into table 200 after a warm-up of
/// `warmup`, with one configured peer that never teaches (nothing listens at its address), so
/// the warm-up runs its whole length. The agent is not started.
fn announcing_env(name: &str, warmup: &str) -> LbEnv {
    let e = LbEnv::new(
        name,
        Opts {
            backends: 2,
            metrics: Some(METRICS.into()),
            ..Opts::sources(4, 0)
        },
    )
    .unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    let key_file = e.dir.join("peer.key");
    std::fs::write(&key_file, "0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let silent_peer = e.topo.host(e.client).ipv4;
    let text = e.config_text(2).replacen(
        "[global]\n",
        &format!("[global]\npeer_key_file = \"{}\"\n", key_file.display()),
        1,
    ) + &format!(
        "\n[[peer]]\nname = \"silent\"\naddress = \"{silent_peer}:7000\"\n\n[announce]\ntable = {TABLE}\nwarmup = \"{warmup}\"\n"
    );
    e.write_config(&text).unwrap();
    e
}

/// `ip route show table 200` and `ip -6 route show table 200` in the LB namespace.
fn routes(e: &LbEnv) -> String {
    let show = |family: &str| match e
        .topo
        .exec(e.lb, &["ip", family, "route", "show", "table", TABLE])
    {
        Ok(r) => r,
        // A table that never held a route does not exist yet.
        Err(err) if format!("{err:#}").contains("FIB table does not exist") => String::new(),
        Err(err) => panic!("ip {family} route show table {TABLE}: {err:#}"),
    };
    show("-4") + &show("-6")
}

/// Which of the two VIPs have xlb's route.
fn announced(e: &LbEnv) -> (bool, bool) {
    let r = routes(e);
    let has = |vip: IpAddr| {
        r.lines()
            .any(|l| l.starts_with(&format!("{vip} dev eth0 proto 250 ")))
    };
    (has(VIP4.into()), has(VIP6.into()))
}

/// Wait (bounded) until the VIPs' routes are `want` (v4, v6); panics with the table if not.
fn wait_announced(e: &LbEnv, want: (bool, bool), within: Duration, moment: &str) -> Duration {
    let t0 = Instant::now();
    let ok = e.wait_until(within, || announced(e) == want);
    let r = routes(e);
    assert!(
        ok,
        "{moment}: want (v4, v6) announced = {want:?} within {within:?}; table {TABLE}:\n{r}\nshow frontends:\n{}",
        e.api("show frontends").unwrap_or_default()
    );
    eprintln!(
        "--- {moment} ({:?}): ip route show table {TABLE}\n{r}show frontends:\n{}",
        t0.elapsed(),
        e.api("show frontends").unwrap_or_default()
    );
    t0.elapsed()
}

fn frontend_line(e: &LbEnv, service: &str) -> String {
    let out = e.api("show frontends").unwrap();
    out.lines()
        .find(|l| l.starts_with(&format!("{service} ")))
        .unwrap_or_else(|| panic!("{service} not in show frontends:\n{out}"))
        .to_string()
}

fn api_ok(e: &LbEnv, cmd: &str) {
    assert_eq!(e.api(cmd).unwrap(), "", "{cmd}");
}

#[test]
fn announcements_follow_warm_up_health_and_the_operator() {
    let mut e = announcing_env("announce", "8s");
    e.start_agent().unwrap();
    // Warming up: the one peer has not taught; nothing is announced yet.
    let line = frontend_line(&e, "be_app");
    assert!(
        line.starts_with(&format!("be_app {VIP4} no warming up (peers 0/1 taught, ")),
        "{line}"
    );
    assert_eq!(announced(&e), (false, false), "{}", routes(&e));
    wait_announced(&e, (true, true), Duration::from_secs(15), "after the warm-up");
    assert_eq!(frontend_line(&e, "be_app"), format!("be_app {VIP4} yes -"));

    // Every server of be_app6 (VIP6's only service) in maintenance: VIP6 withdrawn at once.
    api_ok(&e, "set server be_app6/app1 state maint");
    api_ok(&e, "set server be_app6/app2 state maint");
    wait_announced(&e, (true, false), Duration::from_secs(3), "be_app6 all maint");
    assert_eq!(
        frontend_line(&e, "be_app6"),
        format!("be_app6 {VIP6} no no usable server")
    );
    // A draining server still serves its clients: the VIP comes back and stays.
    api_ok(&e, "set server be_app6/app1 state drain");
    wait_announced(
        &e,
        (true, true),
        Duration::from_secs(3),
        "be_app6 app1 drain, app2 maint",
    );
    api_ok(&e, "set server be_app6/app1 state ready");
    api_ok(&e, "set server be_app6/app2 state ready");

    // Every backend's HTTP server stops: all servers DOWN (dns checks port 80 too).
    for h in &mut e.http {
        h.stop();
    }
    for svc in ["be_app", "be_app6", "dns"] {
        for srv in ["app1", "app2"] {
            wait_state(&e, svc, srv, "DOWN", Duration::from_secs(5));
        }
    }
    wait_announced(&e, (false, false), Duration::from_secs(3), "every server DOWN");
    e.http[0].restart().unwrap();
    wait_announced(&e, (true, true), Duration::from_secs(5), "app1 UP again");

    // Two services share VIP4: it stays while either is announced.
    api_ok(&e, "disable frontend be_app");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(announced(&e), (true, true), "{}", routes(&e));
    assert_eq!(
        frontend_line(&e, "be_app"),
        format!("be_app {VIP4} yes disabled; address announced for dns")
    );
    api_ok(&e, "disable frontend dns");
    wait_announced(
        &e,
        (false, true),
        Duration::from_secs(3),
        "be_app and dns disabled",
    );
    assert_eq!(frontend_line(&e, "dns"), format!("dns {VIP4} no disabled"));
    let answer = harness::metrics::scrape(&e, METRICS);
    let text = harness::metrics::checked_text(&answer);
    for (service, want) in [("be_app", 0.0), ("dns", 0.0), ("be_app6", 1.0)] {
        let prefix = format!("xlb_frontend_announced{{service=\"{service}\"}} ");
        assert_eq!(harness::metrics::sample(text, &prefix), want, "{prefix}");
    }
    api_ok(&e, "enable frontend be_app");
    wait_announced(&e, (true, true), Duration::from_secs(3), "be_app enabled");
    api_ok(&e, "enable frontend dns");
    assert!(
        e.api("disable frontend nope")
            .unwrap()
            .starts_with("No such frontend: 'nope'."),
        "unknown frontend"
    );

    // The balancer out of the fleet (through the CLI): every VIP withdrawn, forwarding unchanged.
    let out = e.cli(&["disable", "announce"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_announced(&e, (false, false), Duration::from_secs(3), "disable announce");
    assert_eq!(
        frontend_line(&e, "be_app6"),
        format!("be_app6 {VIP6} no balancer out (disable announce)")
    );
    let src = e.sources4[0];
    assert_eq!(e.get_vip(src).unwrap(), "app1", "the data path keeps forwarding");

    // The operator's disable survives a restart.
    e.stop_agent().expect("agent exited");
    e.start_agent().unwrap();
    assert_eq!(
        frontend_line(&e, "be_app"),
        format!("be_app {VIP4} no balancer out (disable announce)")
    );
    let out = e.cli(&["enable", "announce"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(frontend_line(&e, "be_app").contains(" no warming up ("));
    wait_announced(
        &e,
        (true, true),
        Duration::from_secs(15),
        "enable announce after the restart's warm-up",
    );
}

#[test]
fn routes_survive_kill_9_and_restart_without_a_gap_and_detach_removes_them() {
    let e = announcing_env("annkeep", "3s");
    e.start_agent().unwrap();
    wait_announced(&e, (true, true), Duration::from_secs(10), "after the warm-up");
    // A route of xlb's protocol for an address no service has (left by an older config).
    e.topo
        .exec(
            e.lb,
            &[
                "ip",
                "route",
                "add",
                "10.77.200.99",
                "dev",
                "eth0",
                "table",
                TABLE,
                "proto",
                "250",
                "scope",
                "link",
            ],
        )
        .unwrap();
    e.kill_agent();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        announced(&e),
        (true, true),
        "kill -9 leaves the routes:\n{}",
        routes(&e)
    );
    eprintln!("--- after kill -9: ip route show table {TABLE}\n{}", routes(&e));

    // The next agent warms up again (3 s): the routes stay through it, without a gap.
    e.start_agent().unwrap();
    let t0 = Instant::now();
    let kept = e.wait_until(Duration::from_secs(2), || {
        frontend_line(&e, "be_app6").contains(" yes warming up (peers 0/1 taught, ")
    });
    assert!(kept, "{}", e.api("show frontends").unwrap());
    assert!(
        frontend_line(&e, "be_app6").ends_with("s left); route kept until warm"),
        "{}",
        frontend_line(&e, "be_app6")
    );
    let mut polls = 0;
    while t0.elapsed() < Duration::from_secs(5) {
        let (v4, v6) = announced(&e);
        assert!(v4 && v6, "gap after {:?}:\n{}", t0.elapsed(), routes(&e));
        polls += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{polls} polls over 5 s after the restart: both routes present at each");
    // The stray route (no service has its address) is withdrawn.
    let stray_gone = e.wait_until(Duration::from_secs(5), || !routes(&e).contains("10.77.200.99"));
    assert!(stray_gone, "{}", routes(&e));
    eprintln!(
        "--- after the restart's warm-up: ip route show table {TABLE}\n{}",
        routes(&e)
    );

    // A route removed underneath the agent (the kernel does so for routes through an
    // interface set down; or an operator's flush) is put back without any other change.
    e.topo
        .exec(e.lb, &["ip", "route", "flush", "table", TABLE, "proto", "250"])
        .unwrap();
    let t0 = Instant::now();
    let back = e.wait_until(Duration::from_secs(10), || announced(&e).0);
    assert!(back, "the flushed route never came back:\n{}", routes(&e));
    eprintln!("flushed IPv4 route back after {:?}", t0.elapsed());

    // SIGTERM leaves them too; `xlb detach` removes them and says so.
    e.stop_agent().expect("agent exited");
    assert_eq!(announced(&e), (true, true), "{}", routes(&e));
    let out = std::process::Command::new(harness::lbenv::xlb_bin())
        .args(["--netns", &e.topo.host(e.lb).ns, "detach", "-c"])
        .arg(&e.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("xlb: 2 VIP routes (proto 250) removed from table 200"),
        "{stdout}"
    );
    assert_eq!(routes(&e), "", "detach removes the routes");
    assert!(!xlb::agent::announce_state_path(&e.bpffs).exists());
}
