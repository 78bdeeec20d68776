//! Peers: two balancers sharing their stick tables, and a peer played by the test.

mod faults;
mod stream;

use std::{collections::HashMap, net::IpAddr, time::Duration};

use harness::{
    agent::PinsGuard,
    lbenv::{LbEnv, Opts},
};

use crate::pin_all;

/// Two balancers on one bridge, each the other's peer: the environment's agent (lb1) and a
/// second agent (lb2) with its own pins, socket and config, both holding the same peer key.
/// `extra_peers` names more peers of lb1: hosts on the bridge that the test plays itself.
struct Replicas {
    e: LbEnv,
    lb2: harness::HostId,
    /// Hosts of the extra peers, in the order named.
    extra: Vec<harness::HostId>,
    key: Vec<u8>,
    socket2: std::path::PathBuf,
    config2: std::path::PathBuf,
    log2: std::path::PathBuf,
    agent2: Option<harness::ChildGuard>,
    _pins2: PinsGuard,
}

fn replicas(name: &str, opts: Opts, extra_peers: &[&str]) -> Replicas {
    let mut e = LbEnv::new(name, opts).unwrap_or_else(|err| panic!("building the harness: {err:#}"));
    let lb2 = e.topo.add_host("lb2").unwrap();
    let extra: Vec<harness::HostId> = extra_peers.iter().map(|r| e.topo.add_host(r).unwrap()).collect();
    let port = e.topo.host(lb2).port.clone();
    harness::netns::run_in(e.topo.switch_ns(), move || {
        xlb::datapath::attach_pass_program(&port)
    })
    .unwrap()
    .unwrap();
    let (ip1, ip2) = (e.topo.host(e.lb).ipv4, e.topo.host(lb2).ipv4);
    // One key for the group, in a file only root may read.
    let key_file = e.dir.join("peer.key");
    let key = harness::agent::write_peer_key(&key_file).unwrap();
    let socket2 = e.dir.join("admin2.sock");
    let bpffs2 = std::path::PathBuf::from(format!("{}-lb2", e.bpffs.display()));
    let pins2 = PinsGuard(bpffs2.clone());
    let base = e.config_text(4);
    let with_peers = |listen, peers: &[(&str, std::net::Ipv4Addr)]| {
        harness::agent::with_peers(&base, listen, &key_file, peers)
    };
    let mut peers1 = vec![("lb2", ip2)];
    for (role, h) in extra_peers.iter().zip(&extra) {
        peers1.push((role, e.topo.host(*h).ipv4));
    }
    e.write_config(&with_peers(ip1, &peers1)).unwrap();
    let config2 = e.dir.join("xlb2.toml");
    std::fs::write(
        &config2,
        with_peers(ip2, &[("lb1", ip1)])
            .replace(&e.socket.display().to_string(), &socket2.display().to_string())
            .replace(&e.bpffs.display().to_string(), &bpffs2.display().to_string()),
    )
    .unwrap();
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    let mut r = Replicas {
        e,
        lb2,
        extra,
        key,
        socket2,
        config2,
        log2: std::path::PathBuf::new(),
        agent2: None,
        _pins2: pins2,
    };
    r.log2 = r.e.dir.join("agent-lb2.log");
    r.start2();
    assert!(
        r.e.wait_until(Duration::from_secs(20), || r.api2("show peers").contains("lb1 ")
            && r.api2("show peers").contains(" CONNECTED ")
            && r.e
                .api("show peers")
                .unwrap()
                .lines()
                .any(|l| l.starts_with("lb2 ") && l.contains(" CONNECTED "))),
        "peers did not connect:\n{}\n{}\n{}",
        r.api2("show peers"),
        r.e.agent_log(),
        r.log2()
    );
    r
}

impl Replicas {
    /// (Re)start the second agent (kill -9 the running one first).
    fn start2(&mut self) {
        if let Some(a) = self.agent2.take() {
            a.kill();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log2)
            .unwrap();
        let mut cmd = std::process::Command::new(harness::lbenv::xlb_bin());
        cmd.args(["run", "-c"])
            .arg(&self.config2)
            .args(["--netns", &self.e.topo.host(self.lb2).ns])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        self.agent2 = Some(self.e.topo.spawn_here(cmd).unwrap());
    }

    fn api2(&self, cmd: &str) -> String {
        harness::lbenv::api_at(&self.socket2, cmd).unwrap_or_default()
    }

    fn log2(&self) -> String {
        std::fs::read_to_string(&self.log2).unwrap_or_default()
    }
}

/// A column of `peer`'s row in `show peers`, by the header's name for it.
fn peer_column(show_peers: &str, peer: &str, column: &str) -> u64 {
    let header: Vec<&str> = show_peers
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split_whitespace()
        .collect();
    let i = header
        .iter()
        .position(|h| *h == column)
        .unwrap_or_else(|| panic!("no column {column}: {show_peers}"));
    show_peers
        .lines()
        .find(|l| l.starts_with(&format!("{peer} ")))
        .and_then(|l| l.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {column} for {peer}: {show_peers}"))
}

/// Update lines (the frames' payload) pinning `clients` of `service` to `server`.
fn update_lines(service: &str, clients: impl Iterator<Item = IpAddr>, server: &str) -> String {
    clients.map(|c| format!("{service} {c} 0 {server} 0\n")).collect()
}

/// One line from a peer connection (at most 128 bytes), without its newline.
fn read_peer_line(s: &mut std::net::TcpStream) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 128 {
        if s.read(&mut b)? == 0 {
            anyhow::bail!("closed after {line:?}");
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8(line)?);
        }
        line.push(b[0]);
    }
    anyhow::bail!("line too long")
}

/// Play a peer's sender on `s`: authenticate with `key`, send `lines` in frames, close, and
/// wait for the other side to close.
fn peer_send(s: &mut std::net::TcpStream, key: &[u8], lines: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use xlb::control::peers::wire as peer_wire;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mine = peer_wire::random_nonce()?;
    s.write_all(peer_wire::hello(&mine).as_bytes())?;
    let theirs = peer_wire::check_challenge(key, &mine, &read_peer_line(s)?)?;
    s.write_all(peer_wire::response(key, &mine, &theirs).as_bytes())?;
    let mut w = peer_wire::FrameWriter::new(key, &mine, &theirs);
    for p in peer_wire::split_frames(lines) {
        s.write_all(&w.seal(p))?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(s, &mut sink);
    Ok(())
}

/// Play a peer's receiver on `s`: authenticate the connecting agent with `key`.
fn peer_accept(s: &mut std::net::TcpStream, key: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use xlb::control::peers::wire as peer_wire;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let theirs = peer_wire::parse_hello(&read_peer_line(s)?)?;
    let mine = peer_wire::random_nonce()?;
    s.write_all(peer_wire::challenge(key, &theirs, &mine).as_bytes())?;
    peer_wire::check_response(key, &theirs, &mine, &read_peer_line(s)?)?;
    Ok(())
}

#[test]
fn s14_peers_share_the_stick_table_so_clients_keep_their_backend_on_another_balancer() {
    let opts = Opts {
        v6_sources: 0,
        metrics: Some("127.0.0.1:9100".into()),
        ..Default::default()
    };
    let mut r = replicas("peers", opts, &[]);
    let e = &r.e;
    let lb2 = r.lb2;
    let ip1 = e.topo.host(e.lb).ipv4;

    // Only peers may send: a connection from the client host is refused and counted.
    let (src, to): (IpAddr, std::net::SocketAddr) = (e.topo.host(e.client).ipv4.into(), (ip1, 7000).into());
    let _ = e
        .topo
        .worker(e.client)
        .unwrap()
        .run(move || harness::client::connect_from(src, to, Duration::from_secs(2)));
    assert!(
        e.wait_until(Duration::from_secs(5), || e
            .api("show peers")
            .unwrap()
            .contains("refused (not from a peer's address): 1")),
        "{}",
        e.api("show peers").unwrap()
    );

    // On the first balancer only, app1 takes no new clients while they arrive: about a quarter
    // of them, whom Maglev gives app1, are pinned elsewhere there. Then app1 is back.
    assert_eq!(e.api("set server be_app/app1 state drain").unwrap().trim(), "");
    let pins = pin_all(e, &e.sources4);
    assert!(pins.values().all(|b| b != "app1"));
    assert_eq!(e.api("set server be_app/app1 state ready").unwrap().trim(), "");

    // The second balancer learns every entry from its peer.
    let learned = |want: &HashMap<IpAddr, String>| {
        let t = r.api2("show table be_app");
        want.iter().all(|(s, b)| {
            t.lines()
                .find(|l| l.contains(&format!("key={s} ")))
                .is_some_and(|l| l.ends_with(&format!("server_key={b}")))
        })
    };
    assert!(
        e.wait_until(Duration::from_secs(10), || learned(&pins)),
        "lb2 did not learn the table:\n{}\n{}",
        r.api2("show peers"),
        r.api2("show table be_app")
    );
    // The first balancer's metrics show the peer's families, and promtool accepts them.
    let answer = harness::metrics::scrape(e, "127.0.0.1:9100");
    let text = harness::metrics::checked_text(&answer);
    assert_eq!(
        harness::metrics::sample(text, "xlb_peer_connected{peer=\"lb2\"} "),
        1.0
    );
    assert!(
        harness::metrics::sample(text, "xlb_peer_updates_sent_total{peer=\"lb2\"} ") >= pins.len() as f64,
        "{text}"
    );
    assert_eq!(
        harness::metrics::sample(text, "xlb_peer_connections_refused_total "),
        1.0
    );
    for m in [
        "xlb_peer_updates_received_total{peer=\"lb2\"} ",
        "xlb_peer_auth_failures_total{peer=\"lb2\"} ",
        "xlb_peer_write_timeouts_total{peer=\"lb2\"} ",
        "xlb_peer_connections_refused_busy_total ",
    ] {
        harness::metrics::sample(text, m);
    }

    // The clients move to the second balancer (as after a VRRP failover or an ECMP change):
    // every one keeps its backend.
    e.topo
        .route_vip_via(e.client, harness::topology::VIP4.into(), lb2)
        .unwrap();
    for (s, b) in &pins {
        assert_eq!(
            &e.get_vip(*s).unwrap(),
            b,
            "{s} changed backend on the second balancer"
        );
    }
    let peers2 = r.api2("show peers");
    assert!(
        peer_column(&peers2, "lb1", "applied") >= pins.len() as u64,
        "{peers2}"
    );
    assert_eq!(peer_column(&peers2, "lb1", "bad_auth"), 0, "{peers2}");

    // Without the learned entries the test would have seen moves: cleared, the second
    // balancer sends Maglev's app1 share there.
    assert_eq!(r.api2("clear table be_app").trim(), "");
    let fresh = pin_all(e, &e.sources4);
    let moved = pins.iter().filter(|(s, b)| &fresh[*s] != *b).count();
    assert!(
        moved >= 10,
        "only {moved} of {} clients would have moved",
        pins.len()
    );
    assert!(fresh.values().any(|b| b == "app1"));

    // A peer that restarts is taught the whole table again when the connection comes back.
    let n = pins.len() as u64;
    r.start2();
    assert!(
        r.e.wait_until(Duration::from_secs(15), || {
            let p = r.api2("show peers");
            p.contains("lb1 ") && peer_column(&p, "lb1", "received") >= n
        }),
        "the restarted peer was not taught the table:\n{}\n{}",
        r.api2("show peers"),
        r.log2()
    );
}
