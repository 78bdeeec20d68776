//! The config as a whole: what `parse` accepts and the defaults it fills in, and the table of
//! what it refuses with the whole error.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;

mod refused;

/// A valid config (one service, two servers); most cases change one thing in it with `with`.
pub(super) const OK: &str = r#"
[global]
interface = "eth0"
[[service]]
name = "be_app"
vip = "10.0.0.10:80"
stick = { on = "src", size = "100k", expire = "30m" }
health = { type = "http", send = "GET /healthz", expect = 200 }
[[service.server]]
name = "app1"
address = "10.0.1.11"
[[service.server]]
name = "app2"
address = "10.0.1.12"
weight = 2
mac = "02:00:00:00:01:12"
state = "drain"
"#;

/// The whole error `parse` gives for `text`, read from "xlb.toml".
fn err(text: &str) -> String {
    parse(text, "xlb.toml").expect_err("must be rejected").to_string()
}

/// `OK` with its first `find` replaced by `replace`.
pub(super) fn with(find: &str, replace: &str) -> String {
    assert!(OK.contains(find), "fixture lacks {find}");
    OK.replacen(find, replace, 1)
}

/// `OK` with its VIP and servers on IPv6.
fn ipv6() -> String {
    OK.replace("10.0.0.10:80", "[2001:db8::10]:80")
        .replace("10.0.1.11", "2001:db8::11")
        .replace("10.0.1.12", "2001:db8::12")
}

/// `[global]` of an instance that takes updates from its peers, with no `[[peer]]` yet.
fn peer_base() -> String {
    "[global]\ninterface = \"eth0\"\npeer_listen = \"10.0.0.1:7000\"\npeer_key_file = \"/etc/xlb/peer.key\"\n"
        .into()
}

/// `peer_base` with one peer, `lb2`.
fn with_peer() -> String {
    format!(
        "{}[[peer]]\nname = \"lb2\"\naddress = \"10.0.0.2:7000\"\n",
        peer_base()
    )
}

#[test]
fn valid_config_and_haproxy_defaults() {
    let c = parse(OK, "xlb.toml").unwrap();
    let s = &c.services[0];
    assert_eq!(s.stick.size, 100_000);
    assert_eq!(s.stick.expire, Duration::from_secs(1800));
    assert_eq!(s.health.inter, Duration::from_secs(2));
    assert_eq!(s.health.timeout, s.health.inter);
    assert_eq!((s.health.rise, s.health.fall), (2, 3));
    assert!(s.redispatch);
    assert_eq!(s.table_size, 65537);
    assert_eq!(s.servers[1].weight, 2);
    assert_eq!(s.servers[1].state, AdminState::Drain);
    assert_eq!(s.servers[1].mac, Some([2, 0, 0, 0, 1, 0x12]));
    assert_eq!(c.global.admin_socket, PathBuf::from("/run/xlb/admin.sock"));
    assert_eq!(c.global.xdp_mode, XdpMode::Native);
}

#[test]
fn minimal_service_gets_haproxy_defaults() {
    let c = parse(
        "[global]\ninterface = \"eth0\"\n[[service]]\nname = \"a\"\nvip = \"10.0.0.1:80\"\n\
         [[service.server]]\nname = \"s\"\naddress = \"10.0.1.1\"\n",
        "x",
    )
    .unwrap();
    assert_eq!(c.global.bpffs_dir, PathBuf::from("/sys/fs/bpf/xlb"));
    assert_eq!(c.global.sweep_interval, Duration::from_secs(1));
    assert_eq!(c.global.metrics, None);
    assert_eq!(
        c.services[0],
        Service {
            name: "a".into(),
            vip: "10.0.0.1:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            stick: Stick {
                on: StickOn::Src,
                size: 100_000,
                expire: Duration::from_secs(30 * 60),
                ipv4_prefix: 32,
                ipv6_prefix: 128
            },
            redispatch: true,
            table_size: 65537,
            health: Health {
                kind: HealthKind::Tcp,
                inter: Duration::from_secs(2),
                timeout: Duration::from_secs(2),
                rise: 2,
                fall: 3,
                port: None
            },
            servers: vec![Server {
                name: "s".into(),
                address: "10.0.1.1".parse().unwrap(),
                weight: 1,
                mac: None,
                check_port: None,
                state: AdminState::Ready,
                interface: None,
                observe: Observe::off(Duration::from_secs(2)),
                forward: crate::config::Forward::L2,
            }],
        }
    );
    // timeout follows inter when not given.
    let t = with("expect = 200", "expect = 200, inter = \"5s\"");
    assert_eq!(
        parse(&t, "x").unwrap().services[0].health.timeout,
        Duration::from_secs(5)
    );
    let t = with("name = \"be_app\"", "name = \"be_app\"\nredispatch = false");
    assert!(!parse(&t, "x").unwrap().services[0].redispatch);
}

#[test]
fn demo_config_parses() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.toml");
    let text = std::fs::read_to_string(p)
        .unwrap()
        .replace("@ADMIN_SOCKET@", "/run/xlb/demo.sock")
        .replace("@BPFFS_DIR@", "/sys/fs/bpf/xlb-demo");
    let c = parse(&text, p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.services.len(), 2);
}

#[test]
fn example_file_parses() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/xlb.toml");
    let c = load(Path::new(p)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.services.len(), 2);
    // Replication is commented out (its key file would have to exist for `xlb check`):
    // uncommented, it is valid.
    let text = std::fs::read_to_string(p).unwrap();
    let with_peers = [
        "peer_listen = ",
        "peer_key_file = ",
        "[[peer]]\n",
        "name = \"lb2\"",
        "address = \"10.0.0.2",
    ]
    .iter()
    .fold(text, |t, k| t.replace(&format!("\n# {k}"), &format!("\n{k}")));
    let g = parse(&with_peers, p).unwrap_or_else(|e| panic!("{e}")).global;
    assert_eq!(g.peers.len(), 1, "{with_peers}");
    assert_eq!(g.peer_key_file.as_deref(), Some(Path::new("/etc/xlb/peer.key")));
    let app = c.service("be_app").expect("be_app");
    let names: Vec<&str> = app.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["app1", "app2", "app3", "app4", "app5", "app6"]);
    for (i, s) in app.servers.iter().take(4).enumerate() {
        assert_eq!(s.address, IpAddr::from([10, 0, 1, 11 + i as u8]));
        assert_eq!(s.interface, None);
    }
    assert_eq!(app.servers[4].interface.as_deref(), Some("eth1"));
    assert!(matches!(
        app.servers[5].forward,
        crate::config::Forward::Gue { port: 6080, .. }
    ));
    assert!(
        app.servers[..5]
            .iter()
            .all(|s| s.forward == crate::config::Forward::L2)
    );
    assert!(matches!(app.health.kind, HealthKind::Http { host: Some(_), .. }));
    let other = &c.services[1];
    assert!(other.vip.is_ipv6() && other.protocol == Protocol::Udp);
}

#[test]
fn server_interface() {
    let c = parse(&with("state = \"drain\"", "interface = \"eth1\""), "xlb.toml").unwrap();
    assert_eq!(c.services[0].servers[1].interface.as_deref(), Some("eth1"));
    // Naming the XDP interface itself is the default.
    let c = parse(&with("state = \"drain\"", "interface = \"eth0\""), "xlb.toml").unwrap();
    assert_eq!(c.services[0].servers[1].interface, None);
}

#[test]
fn ipv6_vip_and_servers() {
    let c = parse(&ipv6(), "x").unwrap();
    let s = &c.services[0];
    assert_eq!(s.vip, "[2001:db8::10]:80".parse::<SocketAddr>().unwrap());
    assert_eq!(s.servers[1].address, "2001:db8::12".parse::<IpAddr>().unwrap());
}

#[test]
fn same_vip_over_udp_is_another_service() {
    let t = format!("{OK}\n[[service]]\nname = \"be_b\"\nvip = \"10.0.0.10:80\"\nprotocol = \"udp\"\n");
    parse(&t, "x").unwrap();
}

#[test]
fn table_size_is_a_prime() {
    let t = OK.replace("name = \"be_app\"", "name = \"be_app\"\ntable_size = 251");
    assert_eq!(parse(&t, "x").unwrap().services[0].table_size, 251);
}

#[test]
fn http_check_fields() {
    let t = with(
        "expect = 200",
        "expect = 204, host = \"app.example\", port = 8080",
    );
    let h = parse(&t, "x").unwrap().services[0].health.clone();
    assert_eq!(
        h.kind,
        HealthKind::Http {
            method: "GET".into(),
            uri: "/healthz".into(),
            expect: 204,
            host: Some("app.example".into())
        }
    );
    assert_eq!(h.port, Some(8080));
    // "GET /" and 200 by default.
    let t = with(
        "health = { type = \"http\", send = \"GET /healthz\", expect = 200 }",
        "health = { type = \"http\" }",
    );
    let h = parse(&t, "x").unwrap().services[0].health.clone();
    assert!(
        matches!(&h.kind, HealthKind::Http { method, uri, expect: 200, host: None } if method == "GET" && uri == "/")
    );
}

/// A VIP on any port (0) checks its servers on `health.port`, or not at all (refused without
/// either: see `refused`).
#[test]
fn any_port_vip_checks_on_the_health_port_or_not_at_all() {
    let t = with("10.0.0.10:80", "10.0.0.10:0");
    parse(&t.replace("expect = 200", "expect = 200, port = 8080"), "x").unwrap();
    parse(
        &t.replace(
            "type = \"http\", send = \"GET /healthz\", expect = 200",
            "type = \"none\"",
        ),
        "x",
    )
    .unwrap();
}

#[test]
fn any_port_and_specific_port_vips_coexist() {
    let t = format!(
        "{OK}\n[[service]]\nname = \"be_any\"\nvip = \"10.0.0.10:0\"\nhealth = {{ type = \"none\" }}\n"
    );
    let c = parse(&t, "x").unwrap();
    assert_eq!(c.services[1].vip.port(), 0);
    assert!(c.service("be_any").is_some() && c.service("be_nope").is_none());
}

#[test]
fn global_settings() {
    let t = with(
        "interface = \"eth0\"",
        "interface = \"veth1\"\nxdp_mode = \"generic\"\nmetrics = \"[::1]:9100\"\nsweep_interval = \"250ms\"\nbpffs_dir = \"/sys/fs/bpf/t\"\nadmin_socket = \"/tmp/x.sock\"",
    );
    let g = parse(&t, "x").unwrap().global;
    assert_eq!(
        g,
        Global {
            interface: "veth1".into(),
            admin_socket: "/tmp/x.sock".into(),
            xdp_mode: XdpMode::Generic,
            bpffs_dir: "/sys/fs/bpf/t".into(),
            metrics: Some("[::1]:9100".parse().unwrap()),
            sweep_interval: Duration::from_millis(250),
            max_new_entries_per_cpu: DEFAULT_MAX_NEW_ENTRIES_PER_CPU,
            peer_listen: None,
            peers: Vec::new(),
            peer_key_file: None,
            encap_source: Vec::new(),
        }
    );
}

#[test]
fn peers() {
    let g = parse(&with_peer(), "x").unwrap().global;
    assert_eq!(g.peer_listen, Some("10.0.0.1:7000".parse().unwrap()));
    assert_eq!(
        g.peers,
        [Peer {
            name: "lb2".into(),
            address: "10.0.0.2:7000".parse().unwrap()
        }]
    );
}

#[test]
fn no_services_and_no_servers_are_fine() {
    let c = parse("[global]\ninterface = \"eth0\"\n", "x").unwrap();
    assert!(c.services.is_empty());
    let c = parse(
        "[global]\ninterface = \"eth0\"\n[[service]]\nname = \"a\"\nvip = \"10.0.0.1:80\"\n",
        "x",
    )
    .unwrap();
    assert!(c.services[0].servers.is_empty());
}

#[test]
fn stick_settings() {
    let t = with(
        "on = \"src\", size = \"100k\", expire = \"30m\"",
        "on = \"src-port\", size = \"1m\", expire = 90, ipv4_prefix = 24, ipv6_prefix = 64",
    );
    let s = parse(&t, "x").unwrap().services[0].stick.clone();
    assert_eq!(
        s,
        Stick {
            on: StickOn::SrcPort,
            size: 1_000_000,
            expire: Duration::from_secs(90),
            ipv4_prefix: 24,
            ipv6_prefix: 64
        }
    );
    // "0s" = entries never expire.
    let t = with("expire = \"30m\"", "expire = \"0s\"");
    assert_eq!(parse(&t, "x").unwrap().services[0].stick.expire, Duration::ZERO);
    let t = with("on = \"src\", ", "on = \"none\", ");
    assert_eq!(parse(&t, "x").unwrap().services[0].stick.on, StickOn::None);
}

/// The edges of the limits on values that parse but would hurt (issue 9, item 8) are accepted;
/// what lies beyond them is refused (see `refused`).
#[test]
fn limits_accept_their_edges() {
    for (find, replace) in [
        ("expire = \"30m\"", "expire = \"3s\""),
        ("expire = \"30m\"", "expire = \"0s\""),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nsweep_interval = \"100ms\"",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nsweep_interval = \"1h\"",
        ),
        ("size = \"100k\"", "size = \"18302407\""),
    ] {
        assert!(parse(&with(find, replace), "x").is_ok(), "{replace}");
    }
}

#[test]
fn metrics_port_alone_listens_on_loopback() {
    let t = with("interface = \"eth0\"", "interface = \"eth0\"\nmetrics = \"9100\"");
    assert_eq!(
        parse(&t, "x").unwrap().global.metrics,
        Some("127.0.0.1:9100".parse().unwrap())
    );
}

#[test]
fn admin_state_words() {
    for st in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
        assert_eq!(st.as_str().parse::<AdminState>(), Ok(st));
        assert_eq!(st.to_string(), st.as_str());
    }
    assert!("up".parse::<AdminState>().is_err());
}

#[test]
fn unreadable_file() {
    let e = load(Path::new("/nonexistent/xlb.toml")).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    // The reason is the source error, shown after the message as `xlb check` and `xlb run`
    // print the chain.
    assert_eq!(
        format!("{:#}", anyhow::Error::from(e)),
        "/nonexistent/xlb.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn announce_is_optional_and_defaults_its_warmup() {
    assert_eq!(parse(OK, "x").unwrap().announce, None);
    let a = parse(&format!("{OK}[announce]\ntable = 200\n"), "x")
        .unwrap()
        .announce;
    assert_eq!(
        a,
        Some(Announce {
            table: 200,
            warmup: DEFAULT_WARMUP
        })
    );
    let a = parse(
        &format!("{OK}[announce]\ntable = 4294967295\nwarmup = \"0s\"\n"),
        "x",
    )
    .unwrap()
    .announce;
    assert_eq!(
        a,
        Some(Announce {
            table: u32::MAX,
            warmup: Duration::ZERO
        })
    );
}

#[test]
fn observe_keys_of_the_service_are_each_servers_default_and_a_server_overrides_them() {
    let t = with(
        "expect = 200 }",
        "expect = 200, inter = \"2s\", observe = \"layer4\", error_limit = 5, fastinter = \"300ms\" }",
    )
    .replace(
        "state = \"drain\"",
        "on_error = \"mark-down\"\nerror_limit = 20\ndowninter = \"5s\"",
    );
    let c = parse(&t, "x").unwrap();
    let [app1, app2] = [0, 1].map(|i| c.services[0].servers[i].observe);
    assert_eq!(
        app1,
        Observe {
            layer4: true,
            error_limit: 5,
            on_error: OnError::FastInter,
            fastinter: Duration::from_millis(300),
            downinter: Duration::from_secs(2),
        }
    );
    assert_eq!(
        app2,
        Observe {
            layer4: true,
            error_limit: 20,
            on_error: OnError::MarkDown,
            fastinter: Duration::from_millis(300),
            downinter: Duration::from_secs(5),
        }
    );
    // Off unless asked for, with HAProxy's defaults.
    let off = parse(OK, "x").unwrap().services[0].servers[0].observe;
    assert_eq!(off, Observe::off(Duration::from_secs(2)));
    assert_eq!(off.error_limit, DEFAULT_ERROR_LIMIT);
}
