//! Tests of the netns harness itself: real namespaces, veths, a bridge, real sockets. Need
//! root; they fail loudly (never skip) without it.

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use harness::{
    BackendServer, HostId, PREFIX, Topology, client,
    loss::Loss,
    names, netns, require_root,
    topology::{CLIENT_POOL4, VIP4, VIP6},
};

const T: Duration = Duration::from_secs(3);
const PORT: u16 = 8080;

/// Namespaces that `ip netns list` shows now.
fn listed() -> Vec<String> {
    netns::ip(&["netns", "list"])
        .expect("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn assert_gone(names: &[String]) {
    let now = listed();
    let left: Vec<&String> = names.iter().filter(|n| now.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// client + be1 + be2, a backend server on each, 200 IPv4 and 50 IPv6 client addresses.
fn setup(test: &str) -> (Topology, HostId, [HostId; 2], [BackendServer; 2], Vec<IpAddr>) {
    require_root();
    let mut t = Topology::new(test).expect("topology");
    let c = t.add_host("client").unwrap();
    let b1 = t.add_host("be1").unwrap();
    let b2 = t.add_host("be2").unwrap();
    let srcs = t.add_client_addrs(c, 200, 50).unwrap();
    let s1 = BackendServer::start(&t, b1, "be1", PORT, Some("/healthz")).unwrap();
    let s2 = BackendServer::start(&t, b2, "be2", PORT, Some("/healthz")).unwrap();
    (t, c, [b1, b2], [s1, s2], srcs)
}

#[test]
fn topology_layout() {
    require_root();
    let mut t = Topology::new("layout").unwrap();
    let c = t.add_host("client").unwrap();
    let b = t.add_host("be1").unwrap();
    let (hc, hb) = (t.host(c).clone(), t.host(b).clone());
    assert!(
        hc.ns.starts_with(PREFIX) && hc.ns.ends_with("-layout-client"),
        "{}",
        hc.ns
    );
    assert_eq!(names::creator_pid(&hc.ns), Some(std::process::id()));
    assert_eq!(hc.ipv4.to_string(), "10.77.0.1");
    assert_eq!(hb.ipv6.to_string(), "fd77::2");
    assert_eq!(hb.mac_str(), "02:77:00:00:00:02");
    assert!(hc.ifindex > 0);
    assert!(t.hosts().iter().all(|h| h.port.len() <= 15));
    // Bridge settings, GRO on both veth ends.
    let br = netns::ip(&["-n", t.switch_ns(), "-d", "link", "show", "br0"]).unwrap();
    assert!(
        br.contains("stp_state 0") && br.contains("forward_delay 0"),
        "{br}"
    );
    for (ns, dev) in [(&hc.ns, "eth0"), (&t.switch_ns().to_string(), hc.port.as_str())] {
        let k = netns::exec(ns, &["ethtool", "-k", dev]).unwrap();
        assert!(k.contains("generic-receive-offload: on"), "{ns} {dev}: {k}");
    }
    let nf = netns::sysctl_get(t.switch_ns(), "net.bridge.bridge-nf-call-iptables");
    assert!(nf.as_deref().unwrap_or("0") == "0", "{nf:?}");
    // No default route: nothing can leave the harness.
    let r = t.exec(c, &["ip", "route", "show", "default"]).unwrap();
    assert!(r.trim().is_empty(), "{r}");
    // DSR helpers.
    t.add_vip_on_lo(b, VIP4.into()).unwrap();
    t.add_vip_on_lo(b, VIP6.into()).unwrap();
    assert_eq!(
        netns::sysctl_get(&hb.ns, "net.ipv4.conf.all.arp_ignore").unwrap(),
        "1"
    );
    assert_eq!(
        netns::sysctl_get(&hb.ns, "net.ipv4.conf.all.arp_announce").unwrap(),
        "2"
    );
    let lo = t.exec(b, &["ip", "addr", "show", "dev", "lo"]).unwrap();
    assert!(
        lo.contains("10.77.200.1/32") && lo.contains("fd77:200::1/128"),
        "{lo}"
    );
    t.route_vip_via(c, VIP4.into(), b).unwrap();
    let r = t.exec(c, &["ip", "route", "get", "10.77.200.1"]).unwrap();
    assert!(r.contains("via 10.77.0.2"), "{r}");
    // Client tuning and pool routes in later-added hosts.
    let addrs = t.add_client_addrs(c, 3, 2).unwrap();
    assert_eq!(addrs.len(), 5);
    assert_eq!(addrs[0].to_string(), "10.77.16.1");
    assert_eq!(addrs[3].to_string(), "fd77:1::1");
    assert_eq!(netns::sysctl_get(&hc.ns, "net.ipv4.tcp_tw_reuse").unwrap(), "1");
    let range = netns::sysctl_get(&hc.ns, "net.ipv4.ip_local_port_range").unwrap();
    assert_eq!(range.split_whitespace().collect::<Vec<_>>(), ["1024", "65535"]);
    let late = t.add_host("be2").unwrap();
    let r = t
        .exec(late, &["ip", "route", "show", &format!("{}/20", CLIENT_POOL4.0)])
        .unwrap();
    assert!(r.contains("via 10.77.0.1"), "{r}");
    let r = t
        .exec(late, &["ip", "-6", "route", "show", "fd77:1::/64"])
        .unwrap();
    assert!(r.contains("via fd77::1"), "{r}");
    // run_in and the worker really are inside the namespace.
    let idx = t
        .run_in(b, || {
            let c = std::ffi::CString::new("eth0").unwrap();
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        })
        .unwrap();
    assert_eq!(idx, hb.ifindex);
    let w = t
        .worker(c)
        .unwrap()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse"));
    assert_eq!(w.unwrap().trim(), "1");
    let ns = t.namespaces().to_vec();
    assert_eq!(ns.len(), 4);
    t.cleanup().unwrap();
    assert_gone(&ns);
}

#[test]
fn direct_http_and_udp_v4_v6_from_many_sources() {
    let (t, c, bes, servers, srcs) = setup("direct");
    assert_eq!(srcs.len(), 250);
    let hc = t.host(c).clone();
    for (b, s) in bes.iter().zip(&servers) {
        let h = t.host(*b);
        for (src, dst) in [
            (IpAddr::from(hc.ipv4), IpAddr::from(h.ipv4)),
            (hc.ipv6.into(), h.ipv6.into()),
        ] {
            let to = SocketAddr::new(dst, PORT);
            assert_eq!(t.http_get(c, src, to, T).unwrap(), s.name(), "{src} -> {to}");
            let r = t.http_request(c, src, to, "/", T).unwrap();
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, format!("{}\n", s.name()).as_str())
            );
            assert_eq!(r.client_addr, src.to_string());
            assert_eq!(t.udp_query(c, src, to, T).unwrap(), s.name(), "udp {src} -> {to}");
        }
    }
    // 20 IPv4 and 20 IPv6 pool addresses, each to both backends over TCP and UDP; the
    // backends answer them directly through the pool routes.
    let picks: Vec<IpAddr> = srcs
        .iter()
        .filter(|a| a.is_ipv4())
        .take(20)
        .chain(srcs.iter().filter(|a| a.is_ipv6()).take(20))
        .copied()
        .collect();
    for src in &picks {
        for (b, s) in bes.iter().zip(&servers) {
            let to = SocketAddr::new(t.host(*b).addr_like(*src), PORT);
            let r = t.http_request(c, *src, to, "/", T).unwrap();
            assert_eq!(r.served_by, s.name());
            assert_eq!(r.client_addr, src.to_string(), "the backend saw the pool address");
            assert_eq!(t.udp_query(c, *src, to, T).unwrap(), s.name());
        }
    }
    for s in &servers {
        assert_eq!(s.requests(), 4 + 40);
        assert_eq!(s.udp_queries(), 2 + 40);
    }
    let ns = t.namespaces().to_vec();
    drop(servers);
    drop(t);
    assert_gone(&ns);
}

#[test]
fn dual_stack_server_answers_on_a_vip_on_lo() {
    // The backend's VIP on lo (DSR): the client routes the VIP to that backend directly here
    // (no load balancer); TCP is accepted on the VIP and UDP is answered FROM the VIP.
    let (t, c, bes, servers, _srcs) = setup("viplo");
    let b1 = bes[0];
    t.add_vip_on_lo(b1, VIP4.into()).unwrap();
    t.add_vip_on_lo(b1, VIP6.into()).unwrap();
    t.route_vip_via(c, VIP4.into(), b1).unwrap();
    t.route_vip_via(c, VIP6.into(), b1).unwrap();
    let hc = t.host(c).clone();
    for (src, vip) in [
        (IpAddr::from(hc.ipv4), IpAddr::from(VIP4)),
        (hc.ipv6.into(), VIP6.into()),
    ] {
        let to = SocketAddr::new(vip, PORT);
        assert_eq!(t.http_get(c, src, to, T).unwrap(), "be1");
        assert_eq!(
            t.udp_query(c, src, to, T).unwrap(),
            "be1",
            "UDP reply must come from {vip}"
        );
    }
    let ns = t.namespaces().to_vec();
    drop(servers);
    drop(t);
    assert_gone(&ns);
}

#[test]
fn stopped_backend_refuses_then_serves_again() {
    let (t, c, bes, mut servers, _srcs) = setup("stopstart");
    let hc = t.host(c).clone();
    let to4 = SocketAddr::new(t.host(bes[0]).ipv4.into(), PORT);
    let to6 = SocketAddr::new(t.host(bes[0]).ipv6.into(), PORT);
    assert_eq!(t.http_get(c, hc.ipv4.into(), to4, T).unwrap(), "be1");
    servers[0].stop();
    assert!(!servers[0].is_running());
    for (src, to) in [(IpAddr::from(hc.ipv4), to4), (hc.ipv6.into(), to6)] {
        let t0 = Instant::now();
        let e = t.http_get(c, src, to, T).unwrap_err();
        assert!(client::is_refused(&e), "expected refused, got {e:#}");
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "refusal took {:?}",
            t0.elapsed()
        );
        let e = t.udp_query(c, src, to, T).unwrap_err();
        assert!(client::is_refused(&e), "expected port unreachable, got {e:#}");
    }
    // The other backend is untouched.
    let to2 = SocketAddr::new(t.host(bes[1]).ipv4.into(), PORT);
    assert_eq!(t.http_get(c, hc.ipv4.into(), to2, T).unwrap(), "be2");
    servers[0].restart().unwrap();
    assert_eq!(t.http_get(c, hc.ipv4.into(), to4, T).unwrap(), "be1");
    assert_eq!(t.http_get(c, hc.ipv6.into(), to6, T).unwrap(), "be1");
    assert_eq!(t.udp_query(c, hc.ipv4.into(), to4, T).unwrap(), "be1");
    let ns = t.namespaces().to_vec();
    drop(servers);
    drop(t);
    assert_gone(&ns);
}

#[test]
fn stop_closes_open_connections() {
    let (t, c, bes, mut servers, _srcs) = setup("stopconn");
    let src: IpAddr = t.host(c).ipv4.into();
    let to = SocketAddr::new(t.host(bes[0]).ipv4.into(), PORT);
    // An idle keep-alive connection that the server holds open.
    let stream = t
        .worker(c)
        .unwrap()
        .run(move || client::connect_from(src, to, T))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    servers[0].stop();
    stream.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut &stream, &mut buf);
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "connection must be closed by stop(): {n:?}"
    );
    drop(stream);
    let ns = t.namespaces().to_vec();
    drop(servers);
    drop(t);
    assert_gone(&ns);
}

#[test]
fn health_status_changes_are_seen() {
    let (t, c, bes, servers, _srcs) = setup("health");
    let src: IpAddr = t.host(c).ipv4.into();
    let to = SocketAddr::new(t.host(bes[0]).ipv4.into(), PORT);
    let status = || t.http_request(c, src, to, "/healthz", T).unwrap().status;
    assert_eq!(status(), 200);
    servers[0].set_health_status(503);
    assert_eq!(status(), 503);
    // Ordinary requests still succeed; health checks are not counted as requests.
    assert_eq!(t.http_get(c, src, to, T).unwrap(), "be1");
    assert_eq!(servers[0].requests(), 1);
    servers[0].set_health_status(200);
    assert_eq!(status(), 200);
    let ns = t.namespaces().to_vec();
    drop(servers);
    drop(t);
    assert_gone(&ns);
}

#[test]
fn keep_alive_when_asked() {
    let (t, c, bes, servers, _srcs) = setup("keepalive");
    let src: IpAddr = t.host(c).ipv6.into();
    let to = SocketAddr::new(t.host(bes[1]).ipv6.into(), PORT);
    let replies = t
        .worker(c)
        .unwrap()
        .run(move || -> anyhow::Result<Vec<String>> {
            use std::io::{Read, Write};
            let mut s = client::connect_from(src, to, T)?;
            s.set_read_timeout(Some(T))?;
            let mut out = Vec::new();
            for _ in 0..3 {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !String::from_utf8_lossy(&buf).ends_with("be2\n") {
                    let n = s.read(&mut chunk)?;
                    anyhow::ensure!(n > 0, "closed early");
                    buf.extend_from_slice(&chunk[..n]);
                }
                out.push(String::from_utf8_lossy(&buf).into_owned());
            }
            Ok(out)
        })
        .unwrap();
    assert_eq!(replies.len(), 3);
    assert!(
        replies.iter().all(|r| r.contains("Connection: keep-alive")),
        "{replies:?}"
    );
    assert_eq!(servers[1].requests(), 3);
    let ns = t.namespaces().to_vec();
    drop(servers);
    drop(t);
    assert_gone(&ns);
}

#[test]
fn guard_cleans_up_on_panic() {
    require_root();
    let seen: Mutex<(Vec<String>, u32)> = Mutex::new((Vec::new(), 0));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut t = Topology::new("panics").unwrap();
        let c = t.add_host("client").unwrap();
        let b = t.add_host("be1").unwrap();
        let _server = BackendServer::start(&t, b, "be1", PORT, None).unwrap();
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let child = t.spawn(c, sleep).unwrap();
        *seen.lock().unwrap() = (t.namespaces().to_vec(), child.pid());
        std::mem::forget(child); // not its guard: the topology alone must end it
        // The process really runs inside the client namespace.
        let pid = seen.lock().unwrap().1;
        let pids = netns::ip(&["netns", "pids", &t.host(c).ns]).unwrap();
        assert!(pids.split_whitespace().any(|p| p == pid.to_string()), "{pids}");
        panic!("on purpose");
    }));
    assert!(r.is_err(), "the closure panics on purpose");
    let (ns, pid) = seen.into_inner().unwrap();
    assert_eq!(ns.len(), 3);
    assert_gone(&ns);
    // The spawned process was terminated and reaped.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists"
    );
}

#[test]
fn sweep_removes_only_dead_runs() {
    require_root();
    // A live topology of this process must survive the sweep.
    let mut live = Topology::new("sweeplive").unwrap();
    live.add_host("h").unwrap();
    // A namespace named as a dead run would have named it.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = format!("{PREFIX}-{dead_pid}-0-sweepdead-x");
    netns::ip(&["netns", "add", &stale]).unwrap();
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = netns::ip(&["netns", "del", &self.0]);
        }
    }
    let _del = Del(stale.clone());
    let removed = names::sweep_stale().unwrap();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!listed().contains(&stale));
    for n in live.namespaces() {
        assert!(listed().contains(n), "live namespace {n} was swept");
        assert!(!removed.contains(n));
    }
    let ns = live.namespaces().to_vec();
    drop(live);
    assert_gone(&ns);
}

#[test]
fn loss_drops_silently_then_at_random_and_goes_with_its_guard() {
    let (t, c, bes, _servers, _srcs) = setup("loss");
    let hc = t.host(c).clone();
    let hb = t.host(bes[0]).clone();
    let to4 = SocketAddr::new(hb.ipv4.into(), PORT);
    let to6 = SocketAddr::new(hb.ipv6.into(), PORT);
    let silent = Loss::silent(&hb.ns, &[hb.ipv4.into(), hb.ipv6.into()]).expect("nft silent drop");
    assert!(
        Loss::silent(&hb.ns, &[hb.ipv4.into()]).is_err(),
        "a second loss in one namespace must be refused"
    );
    for (src, to) in [(IpAddr::from(hc.ipv4), to4), (hc.ipv6.into(), to6)] {
        let e = t.http_get(c, src, to, Duration::from_millis(300)).unwrap_err();
        assert!(client::is_timeout(&e), "a silent drop must time out, got {e:#}");
    }
    assert!(silent.dropped().unwrap() >= 2, "the drops are counted");
    // The other backend is untouched.
    let to2 = SocketAddr::new(t.host(bes[1]).ipv4.into(), PORT);
    assert_eq!(t.http_get(c, hc.ipv4.into(), to2, T).unwrap(), "be2");
    silent.remove().unwrap();
    assert_eq!(t.http_get(c, hc.ipv4.into(), to4, T).unwrap(), "be1");
    // Five in ten: some packets go, some pass; the guard's drop lets them all through again.
    {
        let half = Loss::random(&hb.ns, &[hb.ipv4.into()], 5).expect("nft random drop");
        let served = (0..20)
            .filter(|_| {
                t.http_get(c, hc.ipv4.into(), to4, Duration::from_millis(300))
                    .is_ok()
            })
            .count();
        assert!(
            served > 0,
            "half the packets pass: some of 20 requests must be served"
        );
        assert!(half.dropped().unwrap() > 0, "half the packets are dropped");
    }
    assert_eq!(t.http_get(c, hc.ipv4.into(), to4, T).unwrap(), "be1");
    // None in ten drops nothing.
    let none = Loss::random(&hb.ns, &[hb.ipv4.into()], 0).unwrap();
    assert_eq!(t.http_get(c, hc.ipv4.into(), to4, T).unwrap(), "be1");
    assert_eq!(none.dropped().unwrap(), 0);
    assert!(Loss::random(&hb.ns, &[hb.ipv4.into()], 10).is_err());
}
