//! The config as a whole: what `parse` accepts and the defaults it fills in, and the table of
//! what it refuses with the whole error.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::{MAX_BACKENDS, MAX_SERVICES};

use super::*;

const OK: &str = r#"
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

fn err(text: &str) -> String {
    parse(text, "xlb.toml").expect_err("must be rejected").to_string()
}

fn with(find: &str, replace: &str) -> String {
    assert!(OK.contains(find), "fixture lacks {find}");
    OK.replacen(find, replace, 1)
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
    assert_eq!(names, ["app1", "app2", "app3", "app4", "app5"]);
    for (i, s) in app.servers.iter().take(4).enumerate() {
        assert_eq!(s.address, IpAddr::from([10, 0, 1, 11 + i as u8]));
        assert_eq!(s.interface, None);
    }
    assert_eq!(app.servers[4].interface.as_deref(), Some("eth1"));
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
    for bad in ["\"\"", "\"a_very_long_ifname0\""] {
        let e = err(&with("state = \"drain\"", &format!("interface = {bad}")));
        assert!(
            e.contains("field \"interface\": ") && e.contains("is not an interface name (1 to 15 bytes)"),
            "{e}"
        );
    }
    let mut cfg = parse(
        &with("state = \"drain\"", "interface = \"xlb-nosuch9\""),
        "xlb.toml",
    )
    .unwrap();
    cfg.global.interface = "lo".into();
    assert_eq!(
        check_interfaces(&cfg).unwrap_err().to_string(),
        "service \"be_app\", server \"app2\", field \"interface\": \"xlb-nosuch9\" does not exist (in this \
         network namespace); list them with \"ip link\""
    );
    cfg.services[0].servers[1].interface = Some("lo".into());
    check_interfaces(&cfg).unwrap();
}

#[test]
fn ipv6_vip_and_servers() {
    let t = OK
        .replace("10.0.0.10:80", "[2001:db8::10]:80")
        .replace("10.0.1.11", "2001:db8::11")
        .replace("10.0.1.12", "2001:db8::12");
    let c = parse(&t, "x").unwrap();
    let s = &c.services[0];
    assert_eq!(s.vip, "[2001:db8::10]:80".parse::<SocketAddr>().unwrap());
    assert_eq!(s.servers[1].address, "2001:db8::12".parse::<IpAddr>().unwrap());
    let e = err(&t.replace("2001:db8::12", "10.0.1.12"));
    assert_eq!(
        e,
        "xlb.toml: service \"be_app\", server \"app2\", field \"address\": 10.0.1.12 is IPv4 but the service VIP [2001:db8::10]:80 is IPv6; use an IPv6 address"
    );
    assert!(
        err(&with("10.0.0.10:80", "2001:db8::10:80"))
            .contains("field \"vip\": \"2001:db8::10:80\" is not address:port")
    );
}

#[test]
fn unknown_key() {
    // OK starts with a blank line: [global] is line 2, the new key line 3.
    let e = err(&OK.replace("[global]", "[global]\nbogus = 1"));
    assert!(
        e.starts_with("xlb.toml: line 3, column 1: unknown field `bogus`, expected one of `interface`"),
        "{e}"
    );
    // In a server table, and in an inline table.
    let e = err(&with("weight = 2", "wieght = 2"));
    assert!(e.contains("unknown field `wieght`, expected one of"), "{e}");
    let e = err(&with("expire = \"30m\"", "expires = \"30m\""));
    assert!(e.contains("unknown field `expires`"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn syntax_error_names_the_file_line_and_column() {
    let e = err("[global]\ninterface = \"eth0\"\nadmin_socket = /run\n");
    assert!(e.starts_with("xlb.toml: line 3, column 16: "), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(err("[global\n").starts_with("xlb.toml: line 1, "));
}

#[test]
fn missing_interface() {
    let e = err(&with("interface = \"eth0\"", ""));
    assert_eq!(
        e,
        "xlb.toml: [global], field \"interface\": missing; name the interface XDP attaches to, e.g. interface = \"eth0\""
    );
}

#[test]
fn duplicate_service_name() {
    let t = format!("{OK}\n[[service]]\nname = \"be_app\"\nvip = \"10.0.0.11:80\"\n");
    assert_eq!(
        err(&t),
        "xlb.toml: service \"be_app\", field \"name\": another service has this name; names must be unique"
    );
}

#[test]
fn duplicate_vip() {
    let t = format!("{OK}\n[[service]]\nname = \"be_b\"\nvip = \"10.0.0.10:80\"\n");
    assert_eq!(
        err(&t),
        "xlb.toml: service \"be_b\", field \"vip\": 10.0.0.10:80/tcp is already used by service \"be_app\""
    );
    // The same VIP over UDP is another service.
    let t = format!("{OK}\n[[service]]\nname = \"be_b\"\nvip = \"10.0.0.10:80\"\nprotocol = \"udp\"\n");
    parse(&t, "x").unwrap();
}

#[test]
fn duplicate_server_name() {
    let e = err(&with("name = \"app2\"", "name = \"app1\""));
    assert_eq!(
        e,
        "xlb.toml: service \"be_app\", server \"app1\", field \"name\": another server of this service has this name; names must be unique"
    );
}

#[test]
fn server_of_the_other_family() {
    let e = err(&with("10.0.1.12", "2001:db8::2"));
    assert_eq!(
        e,
        "xlb.toml: service \"be_app\", server \"app2\", field \"address\": 2001:db8::2 is IPv6 but the service VIP 10.0.0.10:80 is IPv4; use an IPv4 address"
    );
}

#[test]
fn weight_out_of_range() {
    assert_eq!(
        err(&with("weight = 2", "weight = 300")),
        "xlb.toml: service \"be_app\", server \"app2\", field \"weight\": 300 is out of range; use 0 to 256"
    );
}

#[test]
fn stick_size_zero() {
    assert_eq!(
        err(&with("size = \"100k\"", "size = 0")),
        "xlb.toml: service \"be_app\", field \"stick.size\": must be at least 1 (got 0)"
    );
}

#[test]
fn table_size_not_prime() {
    let e = err(&OK.replace("name = \"be_app\"", "name = \"be_app\"\ntable_size = 131071"));
    assert_eq!(
        e,
        "xlb.toml: service \"be_app\", field \"table_size\": 131071 is out of range; use a prime from 3 to 65537"
    );
    let e = err(&OK.replace("name = \"be_app\"", "name = \"be_app\"\ntable_size = 1001"));
    assert_eq!(
        e,
        "xlb.toml: service \"be_app\", field \"table_size\": 1001 is not prime; use a prime such as 1009"
    );
    let e = err(&OK.replace("name = \"be_app\"", "name = \"be_app\"\ntable_size = 65536"));
    assert_eq!(
        e,
        "xlb.toml: service \"be_app\", field \"table_size\": 65536 is not prime; use a prime such as 65537"
    );
    let e = err(&OK.replace("name = \"be_app\"", "name = \"be_app\"\ntable_size = 2"));
    assert!(e.contains("2 is out of range"), "{e}");
    let t = OK.replace("name = \"be_app\"", "name = \"be_app\"\ntable_size = 251");
    assert_eq!(parse(&t, "x").unwrap().services[0].table_size, 251);
}

#[test]
fn bad_duration_size_mac_state_affinity() {
    assert!(
        err(&with("expire = \"30m\"", "expire = \"30 parsecs\""))
            .contains("field \"stick.expire\": \"30 parsecs\" has an unknown unit")
    );
    assert!(
        err(&with("size = \"100k\"", "size = \"lots\""))
            .contains("field \"stick.size\": \"lots\" is not a size")
    );
    assert!(
        err(&with("02:00:00:00:01:12", "02:00:00"))
            .contains("field \"mac\": \"02:00:00\" is not a MAC address")
    );
    assert!(
        err(&with("state = \"drain\"", "state = \"sleepy\""))
            .contains("field \"state\": \"sleepy\" is not a state; use \"ready\", \"drain\" or \"maint\"")
    );
    assert!(
        err(&with("on = \"src\"", "on = \"cookie\""))
            .contains("field \"stick.on\": \"cookie\" is not an affinity")
    );
}

#[test]
fn bad_vip_and_protocol() {
    assert!(
        err(&with("10.0.0.10:80", "10.0.0.10")).contains("field \"vip\": \"10.0.0.10\" is not address:port")
    );
    assert!(
        err(&with(
            "name = \"be_app\"",
            "name = \"be_app\"\nprotocol = \"sctp\""
        ))
        .contains("field \"protocol\": \"sctp\" is not a protocol")
    );
}

#[test]
fn health_errors() {
    assert!(
        err(&with("send = \"GET /healthz\"", "send = \"healthz please\"")).contains("field \"health.send\"")
    );
    assert!(
        err(&with("expect = 200", "expect = 42"))
            .contains("field \"health.expect\": 42 is not an HTTP status")
    );
    assert!(
        err(&with("expect = 200", "expect = 200, rise = 0"))
            .contains("field \"health.rise\": must be at least 1")
    );
    assert!(
        err(&with("expect = 200", "expect = 200, inter = \"0s\""))
            .contains("field \"health.inter\": must be above zero")
    );
    assert_eq!(
        err(&with("expect = 200", "expect = 200, fall = 0")),
        "xlb.toml: service \"be_app\", field \"health.fall\": must be at least 1"
    );
    assert!(
        err(&with("expect = 200", "expect = 200, timeout = 0"))
            .contains("field \"health.timeout\": must be above zero")
    );
    assert!(
        err(&with("type = \"http\"", "type = \"smtp\""))
            .contains("field \"health.type\": \"smtp\" is not a check type")
    );
    assert!(
        err(&with("expect = 200", "expect = 200, port = 0"))
            .contains("field \"health.port\": 0 is not a port")
    );
    assert!(
        err(&with("expect = 200", "expect = 200, host = \"a b\""))
            .contains("field \"health.host\": \"a b\" is not a Host header value")
    );
    // HTTP-only keys on a TCP check are a mistake worth naming.
    assert_eq!(
        err(&with("type = \"http\"", "type = \"tcp\"")),
        "xlb.toml: service \"be_app\", field \"health.type\": send, expect and host apply to type = \"http\" only; set type = \"http\""
    );
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

#[test]
fn any_port_vip_needs_a_check_port() {
    let t = with("10.0.0.10:80", "10.0.0.10:0");
    assert_eq!(
        err(&t),
        "xlb.toml: service \"be_app\", server \"app1\", field \"check_port\": the VIP takes any port (0), so health checks need a port: set check_port here or health.port"
    );
    parse(&t.replace("expect = 200", "expect = 200, port = 8080"), "x").unwrap();
    parse(
        &t.replace(
            "type = \"http\", send = \"GET /healthz\", expect = 200",
            "type = \"none\"",
        ),
        "x",
    )
    .unwrap();
    assert!(
        err(&with("state = \"drain\"", "check_port = 0")).contains("field \"check_port\": 0 is not a port")
    );
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
fn global_errors() {
    assert!(
        err(&with(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nxdp_mode = \"offload\""
        ))
        .contains("[global], field \"xdp_mode\": \"offload\" is not a mode; use \"native\" or \"generic\"")
    );
    assert!(
        err(&with(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nmetrics = \"localhost\""
        ))
        .contains("[global], field \"metrics\": \"localhost\" is not an address:port or a port")
    );
    assert!(
        err(&with(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nbpffs_dir = \"xlb\""
        ))
        .contains("[global], field \"bpffs_dir\": xlb must be an absolute path")
    );
    assert!(
        err(&with(
            "interface = \"eth0\"",
            "interface = \"a_very_long_ifname0\""
        ))
        .contains("[global], field \"interface\": \"a_very_long_ifname0\" is longer than 15 bytes")
    );
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
        }
    );
}

#[test]
fn peers() {
    let base = "[global]\ninterface = \"eth0\"\npeer_listen = \"10.0.0.1:7000\"\npeer_key_file = \"/etc/xlb/peer.key\"\n";
    let ok = format!("{base}[[peer]]\nname = \"lb2\"\naddress = \"10.0.0.2:7000\"\n");
    let g = parse(&ok, "x").unwrap().global;
    assert_eq!(g.peer_listen, Some("10.0.0.1:7000".parse().unwrap()));
    assert_eq!(
        g.peers,
        [Peer {
            name: "lb2".into(),
            address: "10.0.0.2:7000".parse().unwrap()
        }]
    );
    for (text, want) in [
        (
            base.to_string(),
            "x: [global], field \"peer_listen\": set, but no [[peer]] is listed",
        ),
        (
            base.replace("10.0.0.1:7000", "10.0.0.1"),
            "x: [global], field \"peer_listen\": \"10.0.0.1\" is not an address:port",
        ),
        (
            ok.replace("10.0.0.2:7000", "lb2:7000"),
            "x: peer \"lb2\", field \"address\": \"lb2:7000\" is not an address:port",
        ),
        (
            ok.replace("10.0.0.2:7000", "10.0.0.2:0"),
            "x: peer \"lb2\", field \"address\": 10.0.0.2:0 is not a unicast address with a port",
        ),
        (
            format!("{ok}[[peer]]\nname = \"lb2\"\naddress = \"10.0.0.3:7000\"\n"),
            "x: peer \"lb2\", field \"name\": another peer has this name",
        ),
        (
            format!("{ok}[[peer]]\nname = \"lb3\"\naddress = \"10.0.0.2:7001\"\n"),
            "x: peer \"lb3\", field \"address\": 10.0.0.2 is already the address of another peer",
        ),
        (
            format!("{ok}[[peer]]\nname = \"lb3\"\naddress = \"10.0.0.3:7000\"\nport = 1\n"),
            "unknown field `port`",
        ),
        (
            ok.replace("peer_key_file = \"/etc/xlb/peer.key\"\n", ""),
            "x: [global], field \"peer_key_file\": missing; [[peer]] replication is authenticated",
        ),
        (
            ok.replace("/etc/xlb/peer.key", "peer.key"),
            "x: [global], field \"peer_key_file\": peer.key must be an absolute path",
        ),
        (
            "[global]\ninterface = \"eth0\"\npeer_key_file = \"/etc/xlb/peer.key\"\n".to_string(),
            "x: [global], field \"peer_key_file\": set, but no [[peer]] is listed",
        ),
    ] {
        let e = parse(&text, "x").expect_err(&text).to_string();
        assert!(e.contains(want), "{e}\nwanted: {want}");
    }
}

#[test]
fn too_many_services() {
    let mut t = String::from("[global]\ninterface = \"eth0\"\n");
    for i in 0..=MAX_SERVICES {
        t += &format!("[[service]]\nname = \"s{i}\"\nvip = \"10.0.0.{i}:80\"\n");
    }
    assert_eq!(
        err(&t),
        format!(
            "xlb.toml: field \"service\": {} [[service]] entries; at most {MAX_SERVICES} are supported",
            MAX_SERVICES + 1
        )
    );
}

#[test]
fn too_many_servers() {
    let mut t = String::from("[global]\ninterface = \"eth0\"\n");
    for s in 0..2 {
        t += &format!("[[service]]\nname = \"s{s}\"\nvip = \"10.0.0.{s}:80\"\n");
        for i in 0..=MAX_BACKENDS / 2 {
            t += &format!(
                "[[service.server]]\nname = \"v{i}\"\naddress = \"10.{s}.{}.{}\"\n",
                i / 256,
                i % 256
            );
        }
    }
    assert_eq!(
        err(&t),
        format!(
            "xlb.toml: field \"server\": {} servers across all services; at most {MAX_BACKENDS} are supported",
            MAX_BACKENDS + 2
        )
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
fn names_and_addresses() {
    assert!(
        err(&with("name = \"be_app\"", "name = \"be app\""))
            .contains("service \"be app\", field \"name\": use 1 to 48 of")
    );
    assert!(
        err(&with("name = \"app1\"", "name = \"app/1\""))
            .contains("server \"app/1\", field \"name\": server #1 needs a name")
    );
    let long = "s".repeat(40);
    let e = err(
        &with("name = \"be_app\"", &format!("name = \"{long}\"")).replacen(
            "name = \"app1\"",
            &format!("name = \"{long}\""),
            1,
        ),
    );
    assert!(
        e.contains("is 81 bytes; service and server names together must fit in 64"),
        "{e}"
    );
    assert!(
        err(&with("10.0.1.12", "10.0.1.11"))
            .contains("server \"app2\", field \"address\": 10.0.1.11 is already a server of this service")
    );
    assert!(
        err(&with("10.0.1.12", "app2.example"))
            .contains("field \"address\": \"app2.example\" is not an IP address")
    );
    assert!(
        err(&with("10.0.1.12", "127.0.0.1")).contains("field \"address\": 127.0.0.1 is a loopback address")
    );
    assert!(
        err(&with("10.0.1.12", "224.0.0.1")).contains("field \"address\": 224.0.0.1 is a multicast address")
    );
    assert_eq!(
        err(&with("10.0.0.10:80", "0.0.0.0:80")),
        "xlb.toml: service \"be_app\", field \"vip\": 0.0.0.0 is the unspecified address; a VIP is the unicast address clients connect to"
    );
    assert!(err(&with("10.0.0.10:80", "255.255.255.255:80")).contains("is the broadcast address"));
}

#[test]
fn value_of_the_wrong_type() {
    let e = err(&with("expire = \"30m\"", "expire = -5"));
    assert!(
        e.contains("invalid value: integer `-5`, expected a duration: whole seconds"),
        "{e}"
    );
    let e = err(&with("size = \"100k\"", "size = 1.5"));
    assert!(
        e.contains("expected a count: an integer, or a string such as \"100k\""),
        "{e}"
    );
    let e = err(&with("weight = 2", "weight = \"heavy\""));
    assert!(e.contains("line ") && e.contains("expected u32"), "{e}");
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
    assert!(
        err(&with("expire = \"30m\"", "expire = \"30m\", ipv6_prefix = 0"))
            .contains("field \"stick.ipv6_prefix\": 0 is not a prefix length from 1 to 128")
    );
}

/// Item 8 of issue 9: values that parse but would hurt, each refused with the field, the
/// reason and the fix. (fixture text to replace, its replacement, the whole error).
#[test]
fn config_refuses_values_that_parse_but_hurt() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "expire = \"30m\"",
            "expire = \"500ms\"",
            "xlb.toml: service \"be_app\", field \"stick.expire\": \"500ms\" is below the minimum of 3s: the data path refreshes an entry at most once per 1s, so an active client's entry can look idle for up to 2s and would be dropped; use \"3s\" or more (or \"0s\": entries never expire)",
        ),
        (
            "expire = \"30m\"",
            "expire = \"2s\"",
            "xlb.toml: service \"be_app\", field \"stick.expire\": \"2s\" is below the minimum of 3s: the data path refreshes an entry at most once per 1s, so an active client's entry can look idle for up to 2s and would be dropped; use \"3s\" or more (or \"0s\": entries never expire)",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nadmin_socket = \"run/admin.sock\"",
            "xlb.toml: [global], field \"admin_socket\": run/admin.sock is a relative path; give an absolute one, e.g. \"/run/xlb/admin.sock\"",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nsweep_interval = 0",
            "xlb.toml: [global], field \"sweep_interval\": \"0s\" is below 100ms: the sweeper would walk the whole stick table nearly all the time; use e.g. \"1s\"",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nsweep_interval = \"10ms\"",
            "xlb.toml: [global], field \"sweep_interval\": \"10ms\" is below 100ms: the sweeper would walk the whole stick table nearly all the time; use e.g. \"1s\"",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nsweep_interval = \"2h\"",
            "xlb.toml: [global], field \"sweep_interval\": \"2h\" is above 1h: expired entries would stay in memory and in `show table` that long; use e.g. \"1s\"",
        ),
        (
            "size = \"100k\"",
            "size = \"30m\"",
            "xlb.toml: service \"be_app\", field \"stick.size\": 30000000 entries bring the stick tables of all services to 30000000 entries, which take 3.0 GiB of kernel memory (about 105 bytes each: 24 key + 16 value + 48 kernel element header + a 16-byte hash bucket); the cap is 2 GiB, at most 18302407 entries in all: lower stick.size (e.g. \"100k\")",
        ),
        (
            "size = \"100k\"",
            "size = \"200m\"",
            "xlb.toml: service \"be_app\", field \"stick.size\": 200000000 entries bring the stick tables of all services to 200000000 entries, which take 20.4 GiB of kernel memory (about 109 bytes each: 24 key + 16 value + 48 kernel element header + a 16-byte hash bucket); the cap is 2 GiB, at most 18302407 entries in all: lower stick.size (e.g. \"100k\")",
        ),
    ];
    for (find, replace, want) in cases {
        assert_eq!(&err(&with(find, replace)), want, "{replace}");
    }
    // The edges that are accepted.
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
fn stick_memory_of_two_services_counts_together() {
    let t = OK.replace("size = \"100k\"", "size = \"15m\"")
        + "[[service]]\nname = \"b\"\nvip = \"10.0.0.11:80\"\nstick = { size = \"10m\" }\n";
    let e = err(&t);
    assert!(
        e.starts_with("xlb.toml: service \"b\", field \"stick.size\": 10000000 entries bring the stick tables of all services to 25000000 entries"),
        "{e}"
    );
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
fn vip_equal_to_the_interfaces_own_address_is_refused() {
    let c = parse(OK, "x").unwrap();
    let own: IpAddr = "10.0.0.10".parse().unwrap();
    assert_eq!(
        check_vips_are_not_own_addresses(&c, &[own])
            .unwrap_err()
            .to_string(),
        "service \"be_app\", field \"vip\": 10.0.0.10 is an address of the XDP interface \"eth0\" itself, so the balancer would take the host's own traffic to that address (its SSH, its peers, its health checks' answers); give the service an address of its own"
    );
    assert!(check_vips_are_not_own_addresses(&c, &["10.0.0.9".parse().unwrap()]).is_ok());
    // At runtime the addresses come from the interface itself.
    let t = OK
        .replace("interface = \"eth0\"", "interface = \"lo\"")
        .replace("10.0.0.10:80", "127.0.0.1:80");
    let e = check_interfaces(&parse(&t, "x").unwrap()).unwrap_err();
    assert!(matches!(e, ConfigError::VipIsOwnAddress { .. }), "{e}");
    assert!(interface_addresses("lo").contains(&IpAddr::from([127, 0, 0, 1])));
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
    let e = load(Path::new("/nonexistent/xlb.toml")).unwrap_err().to_string();
    assert!(e.starts_with("/nonexistent/xlb.toml: cannot read: "), "{e}");
}

#[test]
fn prefix_out_of_range() {
    assert!(
        err(&with("expire = \"30m\"", "expire = \"30m\", ipv4_prefix = 33"))
            .contains("field \"stick.ipv4_prefix\": 33 is not a prefix length")
    );
}
