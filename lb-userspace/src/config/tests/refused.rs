//! Every config `parse` refuses, in one table: the config, and the whole error it gives (the
//! file, the place, the field, what is wrong and what would be right).

use lb_common::{MAX_BACKENDS, MAX_SERVICES, MAX_TX_PORTS};

use crate::config::MAX_PEERS;

use super::{OK, err, ipv6, peer_base, with, with_peer};

/// `[global]` and `MAX_SERVICES + 1` services.
fn too_many_services() -> String {
    let mut t = String::from("[global]\ninterface = \"eth0\"\n");
    for i in 0..=MAX_SERVICES {
        t += &format!("[[service]]\nname = \"s{i}\"\nvip = \"10.0.0.{i}:80\"\n");
    }
    t
}

/// Two services of `MAX_BACKENDS / 2 + 1` servers each.
fn too_many_servers() -> String {
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
    t
}

/// `with_peer` and `MAX_PEERS` more peers.
fn too_many_peers() -> String {
    let mut t = with_peer();
    for i in 0..MAX_PEERS {
        t += &format!("[[peer]]\nname = \"p{i}\"\naddress = \"10.0.1.{i}:7000\"\n");
    }
    t
}

/// A service whose servers name `MAX_TX_PORTS` interfaces besides the XDP one.
fn too_many_interfaces() -> String {
    let mut t =
        String::from("[global]\ninterface = \"eth0\"\n[[service]]\nname = \"a\"\nvip = \"10.0.0.1:80\"\n");
    for i in 0..MAX_TX_PORTS {
        t += &format!(
            "[[service.server]]\nname = \"v{i}\"\naddress = \"10.0.1.{i}\"\ninterface = \"eth{}\"\n",
            i + 1
        );
    }
    t
}

/// `OK` with `line` added to `[global]`.
fn global(line: &str) -> String {
    with("interface = \"eth0\"", &format!("interface = \"eth0\"\n{line}"))
}

/// `OK` with `key = value` added to the health check.
fn health(kv: &str) -> String {
    with("expect = 200", &format!("expect = 200, {kv}"))
}

/// `OK` with an `[announce]` section of `lines`.
fn announce(lines: &str) -> String {
    format!("{OK}[announce]\n{lines}\n")
}

/// `OK` with `line` added to the service.
fn service(line: &str) -> String {
    with("name = \"be_app\"", &format!("name = \"be_app\"\n{line}"))
}

/// `OK` with an IPv4 `encap_source` in `[global]` and `line` added to server app1.
fn encap_app1(line: &str) -> String {
    global("encap_source = [\"192.0.2.1\"]").replacen(
        "name = \"app1\"",
        &format!("name = \"app1\"\n{line}"),
        1,
    )
}

#[test]
fn parse_refuses_with_the_whole_error() {
    let long = "s".repeat(40);
    let cases: Vec<(String, String)> = vec![
        // Not TOML, unknown keys, values of the wrong type: the toml crate's message, on one
        // line, with the line and column. (`OK` starts with a blank line: [global] is line 2.)
        (
            "[global]\ninterface = \"eth0\"\nadmin_socket = /run\n".into(),
            "xlb.toml: line 3, column 16: invalid string expected `\"`, `'`".into(),
        ),
        ("[global\n".into(), "xlb.toml: line 1, column 8: invalid table header expected `.`, `]`".into()),
        (
            OK.replace("[global]", "[global]\nbogus = 1"),
            "xlb.toml: line 3, column 1: unknown field `bogus`, expected one of `interface`, `admin_socket`, `xdp_mode`, `bpffs_dir`, `metrics`, `sweep_interval`, `max_new_entries_per_cpu`, `peer_listen`, `peer_key_file`, `encap_source`".into(),
        ),
        (
            with("weight = 2", "wieght = 2"),
            "xlb.toml: line 15, column 1: unknown field `wieght`, expected one of `name`, `address`, `weight`, `mac`, `check_port`, `state`, `interface`, `observe`, `error_limit`, `on_error`, `fastinter`, `downinter`, `forward`, `gue_port`".into(),
        ),
        (
            with("expire = \"30m\"", "expires = \"30m\""),
            "xlb.toml: line 7, column 38: unknown field `expires`, expected one of `on`, `size`, `expire`, `ipv4_prefix`, `ipv6_prefix`".into(),
        ),
        (
            with("expire = \"30m\"", "expire = -5"),
            "xlb.toml: line 7, column 47: invalid value: integer `-5`, expected a duration: whole seconds, or a string such as \"500ms\", \"2s\", \"30m\", \"1h\" or \"1d\"".into(),
        ),
        (
            with("size = \"100k\"", "size = 1.5"),
            "xlb.toml: line 7, column 30: invalid type: floating point `1.5`, expected a count: an integer, or a string such as \"100k\" or \"1m\"".into(),
        ),
        (
            with("weight = 2", "weight = \"heavy\""),
            "xlb.toml: line 15, column 10: invalid type: string \"heavy\", expected u32".into(),
        ),
        // [global]
        (
            with("interface = \"eth0\"", ""),
            "xlb.toml: [global], field \"interface\": missing; name the interface XDP attaches to, e.g. interface = \"eth0\"".into(),
        ),
        (
            with("interface = \"eth0\"", "interface = \"a_very_long_ifname0\""),
            "xlb.toml: [global], field \"interface\": \"a_very_long_ifname0\" is longer than 15 bytes, which no Linux interface name is".into(),
        ),
        (
            global("max_new_entries_per_cpu = \"lots\""),
            "xlb.toml: [global], field \"max_new_entries_per_cpu\": \"lots\" is not a size; write a number, or e.g. \"100k\" or \"1m\"".into(),
        ),
        (
            global("xdp_mode = \"offload\""),
            "xlb.toml: [global], field \"xdp_mode\": \"offload\" is not a mode; use \"native\" or \"generic\"".into(),
        ),
        (
            global("metrics = \"localhost\""),
            "xlb.toml: [global], field \"metrics\": \"localhost\" is not an address:port or a port, e.g. \"127.0.0.1:9100\" or \"9100\"".into(),
        ),
        (
            global("bpffs_dir = \"xlb\""),
            "xlb.toml: [global], field \"bpffs_dir\": xlb must be an absolute path under a bpffs mount, e.g. /sys/fs/bpf/xlb".into(),
        ),
        (
            global("admin_socket = \"run/admin.sock\""),
            "xlb.toml: [global], field \"admin_socket\": run/admin.sock is a relative path; give an absolute one, e.g. \"/run/xlb/admin.sock\"".into(),
        ),
        (
            global("sweep_interval = 0"),
            "xlb.toml: [global], field \"sweep_interval\": \"0s\" is below 100ms: the sweeper would walk the whole stick table nearly all the time; use e.g. \"1s\"".into(),
        ),
        (
            global("sweep_interval = \"10ms\""),
            "xlb.toml: [global], field \"sweep_interval\": \"10ms\" is below 100ms: the sweeper would walk the whole stick table nearly all the time; use e.g. \"1s\"".into(),
        ),
        (
            global("sweep_interval = \"2h\""),
            "xlb.toml: [global], field \"sweep_interval\": \"2h\" is above 1h: expired entries would stay in memory and in `show table` that long; use e.g. \"1s\"".into(),
        ),
        // [[peer]] and the settings replication needs.
        (
            peer_base(),
            "xlb.toml: [global], field \"peer_listen\": set, but no [[peer]] is listed; updates are accepted only from listed peers, so list the other instances (or remove peer_listen)".into(),
        ),
        (
            peer_base().replace("10.0.0.1:7000", "10.0.0.1"),
            "xlb.toml: [global], field \"peer_listen\": \"10.0.0.1\" is not an address:port, e.g. \"10.0.0.1:7000\"".into(),
        ),
        (
            with_peer().replace("10.0.0.2:7000", "lb2:7000"),
            "xlb.toml: peer \"lb2\", field \"address\": \"lb2:7000\" is not an address:port (its peer_listen), e.g. \"10.0.0.2:7000\"".into(),
        ),
        (
            with_peer().replace("10.0.0.2:7000", "10.0.0.2:0"),
            "xlb.toml: peer \"lb2\", field \"address\": 10.0.0.2:0 is not a unicast address with a port".into(),
        ),
        (
            format!("{}[[peer]]\nname = \"lb2\"\naddress = \"10.0.0.3:7000\"\n", with_peer()),
            "xlb.toml: peer \"lb2\", field \"name\": another peer has this name; names must be unique".into(),
        ),
        (
            format!("{}[[peer]]\nname = \"lb3\"\naddress = \"10.0.0.2:7001\"\n", with_peer()),
            "xlb.toml: peer \"lb3\", field \"address\": 10.0.0.2 is already the address of another peer; peers are told apart by address".into(),
        ),
        (
            format!(
                "{}[[peer]]\nname = \"lb3\"\naddress = \"10.0.0.3:7000\"\nport = 1\n",
                with_peer()
            ),
            "xlb.toml: line 11, column 1: unknown field `port`, expected `name` or `address`".into(),
        ),
        (
            with_peer().replace("peer_key_file = \"/etc/xlb/peer.key\"\n", ""),
            "xlb.toml: [global], field \"peer_key_file\": missing; [[peer]] replication is authenticated with a key all peers share: make one with `head -c 32 /dev/urandom | base64 > /etc/xlb/peer.key && chmod 600 /etc/xlb/peer.key` and copy the file to every peer, then set peer_key_file = \"/etc/xlb/peer.key\"".into(),
        ),
        (
            with_peer().replace("/etc/xlb/peer.key", "peer.key"),
            "xlb.toml: [global], field \"peer_key_file\": peer.key must be an absolute path, e.g. /etc/xlb/peer.key".into(),
        ),
        (
            "[global]\ninterface = \"eth0\"\npeer_key_file = \"/etc/xlb/peer.key\"\n".into(),
            "xlb.toml: [global], field \"peer_key_file\": set, but no [[peer]] is listed; list the other instances (or remove peer_key_file)".into(),
        ),
        (
            with_peer().replace("name = \"lb2\"", "name = \"lb 2\""),
            "xlb.toml: peer \"lb 2\", field \"name\": use 1 to 48 letters, digits, '_', '.' or '-'".into(),
        ),
        (
            too_many_peers(),
            format!("xlb.toml: field \"peer\": {} [[peer]] entries; at most {MAX_PEERS} are supported", MAX_PEERS + 1),
        ),
        // The data path's limits on the whole file.
        (
            too_many_interfaces(),
            format!("xlb.toml: field \"interface\": servers name {MAX_TX_PORTS} interfaces besides the XDP one; at most {} are supported", MAX_TX_PORTS - 1),
        ),
        (
            too_many_services(),
            format!(
                "xlb.toml: field \"service\": {} [[service]] entries; at most {MAX_SERVICES} are supported",
                MAX_SERVICES + 1
            ),
        ),
        (
            too_many_servers(),
            format!(
                "xlb.toml: field \"server\": {} servers across all services; at most {MAX_BACKENDS} are supported",
                MAX_BACKENDS + 2
            ),
        ),
        // A service: its name, VIP and protocol.
        (
            with("name = \"be_app\"", "name = \"be app\""),
            "xlb.toml: service \"be app\", field \"name\": use 1 to 48 of A-Z a-z 0-9 _ . -".into(),
        ),
        (
            format!("{OK}\n[[service]]\nname = \"be_app\"\nvip = \"10.0.0.11:80\"\n"),
            "xlb.toml: service \"be_app\", field \"name\": another service has this name; names must be unique".into(),
        ),
        (
            format!("{OK}\n[[service]]\nname = \"be_b\"\nvip = \"10.0.0.10:80\"\n"),
            "xlb.toml: service \"be_b\", field \"vip\": 10.0.0.10:80/tcp is already used by service \"be_app\"".into(),
        ),
        (
            with("10.0.0.10:80", "10.0.0.10"),
            "xlb.toml: service \"be_app\", field \"vip\": \"10.0.0.10\" is not address:port; write \"10.0.0.10:80\" or \"[2001:db8::10]:80\" (port 0 = any port)".into(),
        ),
        (
            with("10.0.0.10:80", "2001:db8::10:80"),
            "xlb.toml: service \"be_app\", field \"vip\": \"2001:db8::10:80\" is not address:port; write \"10.0.0.10:80\" or \"[2001:db8::10]:80\" (port 0 = any port)".into(),
        ),
        (
            with("10.0.0.10:80", "0.0.0.0:80"),
            "xlb.toml: service \"be_app\", field \"vip\": 0.0.0.0 is the unspecified address; a VIP is the unicast address clients connect to".into(),
        ),
        (
            with("10.0.0.10:80", "255.255.255.255:80"),
            "xlb.toml: service \"be_app\", field \"vip\": 255.255.255.255 is the broadcast address; a VIP is the unicast address clients connect to".into(),
        ),
        (
            service("protocol = \"sctp\""),
            "xlb.toml: service \"be_app\", field \"protocol\": \"sctp\" is not a protocol; use \"tcp\" or \"udp\"".into(),
        ),
        (
            service("table_size = 131071"),
            "xlb.toml: service \"be_app\", field \"table_size\": 131071 is out of range; use a prime from 3 to 65537".into(),
        ),
        (
            service("table_size = 1001"),
            "xlb.toml: service \"be_app\", field \"table_size\": 1001 is not prime; use a prime such as 1009".into(),
        ),
        (
            service("table_size = 65536"),
            "xlb.toml: service \"be_app\", field \"table_size\": 65536 is not prime; use a prime such as 65537".into(),
        ),
        (
            service("table_size = 2"),
            "xlb.toml: service \"be_app\", field \"table_size\": 2 is out of range; use a prime from 3 to 65537".into(),
        ),
        // Its stick table.
        (
            with("on = \"src\"", "on = \"cookie\""),
            "xlb.toml: service \"be_app\", field \"stick.on\": \"cookie\" is not an affinity; use \"src\", \"src-port\" or \"none\"".into(),
        ),
        (
            with("size = \"100k\"", "size = \"lots\""),
            "xlb.toml: service \"be_app\", field \"stick.size\": \"lots\" is not a size; write a number, or e.g. \"100k\" or \"1m\"".into(),
        ),
        (
            with("size = \"100k\"", "size = 0"),
            "xlb.toml: service \"be_app\", field \"stick.size\": must be at least 1 (got 0)".into(),
        ),
        (
            with("size = \"100k\"", "size = \"5000m\""),
            "xlb.toml: service \"be_app\", field \"stick.size\": 5000000000 entries bring the stick tables of all services to 5000000000 entries, which take 537.8 GiB of kernel memory (about 115 bytes each: 24 key + 16 value + 48 kernel element header + a 16-byte hash bucket); the cap is 2 GiB, at most 18302407 entries in all: lower stick.size (e.g. \"100k\")".into(),
        ),
        (
            with("size = \"100k\"", "size = \"30m\""),
            "xlb.toml: service \"be_app\", field \"stick.size\": 30000000 entries bring the stick tables of all services to 30000000 entries, which take 3.0 GiB of kernel memory (about 105 bytes each: 24 key + 16 value + 48 kernel element header + a 16-byte hash bucket); the cap is 2 GiB, at most 18302407 entries in all: lower stick.size (e.g. \"100k\")".into(),
        ),
        (
            with("size = \"100k\"", "size = \"200m\""),
            "xlb.toml: service \"be_app\", field \"stick.size\": 200000000 entries bring the stick tables of all services to 200000000 entries, which take 20.4 GiB of kernel memory (about 109 bytes each: 24 key + 16 value + 48 kernel element header + a 16-byte hash bucket); the cap is 2 GiB, at most 18302407 entries in all: lower stick.size (e.g. \"100k\")".into(),
        ),
        (
            OK.replace("size = \"100k\"", "size = \"15m\"")
                + "[[service]]\nname = \"b\"\nvip = \"10.0.0.11:80\"\nstick = { size = \"10m\" }\n",
            "xlb.toml: service \"b\", field \"stick.size\": 10000000 entries bring the stick tables of all services to 25000000 entries, which take 2.5 GiB of kernel memory (about 109 bytes each: 24 key + 16 value + 48 kernel element header + a 16-byte hash bucket); the cap is 2 GiB, at most 18302407 entries in all: lower stick.size (e.g. \"100k\")".into(),
        ),
        (
            with("expire = \"30m\"", "expire = \"30 parsecs\""),
            "xlb.toml: service \"be_app\", field \"stick.expire\": \"30 parsecs\" has an unknown unit \"parsecs\"; use ms, s, m (minutes), h or d".into(),
        ),
        (
            with("expire = \"30m\"", "expire = \"500ms\""),
            "xlb.toml: service \"be_app\", field \"stick.expire\": \"500ms\" is below the minimum of 3s: the data path refreshes an entry at most once per 1s, so an active client's entry can look idle for up to 2s and would be dropped; use \"3s\" or more (or \"0s\": entries never expire)".into(),
        ),
        (
            with("expire = \"30m\"", "expire = \"2s\""),
            "xlb.toml: service \"be_app\", field \"stick.expire\": \"2s\" is below the minimum of 3s: the data path refreshes an entry at most once per 1s, so an active client's entry can look idle for up to 2s and would be dropped; use \"3s\" or more (or \"0s\": entries never expire)".into(),
        ),
        (
            with("expire = \"30m\"", "expire = \"30m\", ipv4_prefix = 33"),
            "xlb.toml: service \"be_app\", field \"stick.ipv4_prefix\": 33 is not a prefix length from 1 to 32".into(),
        ),
        (
            with("expire = \"30m\"", "expire = \"30m\", ipv6_prefix = 0"),
            "xlb.toml: service \"be_app\", field \"stick.ipv6_prefix\": 0 is not a prefix length from 1 to 128".into(),
        ),
        // Its health check.
        (
            with("send = \"GET /healthz\"", "send = \"healthz please\""),
            "xlb.toml: service \"be_app\", field \"health.send\": \"healthz please\" is not a request line \"METHOD /path\", e.g. \"GET /healthz\"".into(),
        ),
        (
            with("expect = 200", "expect = 42"),
            "xlb.toml: service \"be_app\", field \"health.expect\": 42 is not an HTTP status (100 to 599)".into(),
        ),
        (
            health("rise = 0"),
            "xlb.toml: service \"be_app\", field \"health.rise\": must be at least 1".into(),
        ),
        (
            health("fall = 0"),
            "xlb.toml: service \"be_app\", field \"health.fall\": must be at least 1".into(),
        ),
        (
            health("inter = \"0s\""),
            "xlb.toml: service \"be_app\", field \"health.inter\": must be above zero, e.g. \"2s\"".into(),
        ),
        (
            health("timeout = 0"),
            "xlb.toml: service \"be_app\", field \"health.timeout\": must be above zero, e.g. \"1s\"".into(),
        ),
        (health("port = 0"), "xlb.toml: service \"be_app\", field \"health.port\": 0 is not a port".into()),
        (
            health("host = \"a b\""),
            "xlb.toml: service \"be_app\", field \"health.host\": \"a b\" is not a Host header value; write a host name such as \"app.example\"".into(),
        ),
        (
            with("type = \"http\"", "type = \"smtp\""),
            "xlb.toml: service \"be_app\", field \"health.type\": \"smtp\" is not a check type; use \"tcp\", \"http\" or \"none\"".into(),
        ),
        // HTTP-only keys on a TCP check are a mistake worth naming.
        (
            with("type = \"http\"", "type = \"tcp\""),
            "xlb.toml: service \"be_app\", field \"health.type\": send, expect and host apply to type = \"http\" only; set type = \"http\"".into(),
        ),
        // Its servers.
        (
            with("name = \"app1\"", "name = \"app/1\""),
            "xlb.toml: service \"be_app\", server \"app/1\", field \"name\": server #1 needs a name of 1 to 48 of A-Z a-z 0-9 _ . -".into(),
        ),
        (
            with("name = \"be_app\"", &format!("name = \"{long}\"")).replacen(
                "name = \"app1\"",
                &format!("name = \"{long}\""),
                1,
            ),
            "xlb.toml: service \"ssssssssssssssssssssssssssssssssssssssss\", server \"ssssssssssssssssssssssssssssssssssssssss\", field \"name\": \"ssssssssssssssssssssssssssssssssssssssss/ssssssssssssssssssssssssssssssssssssssss\" is 81 bytes; service and server names together must fit in 64 (with the '/'), use shorter names".into(),
        ),
        (
            with("name = \"app2\"", "name = \"app1\""),
            "xlb.toml: service \"be_app\", server \"app1\", field \"name\": another server of this service has this name; names must be unique".into(),
        ),
        (
            with("10.0.1.12", "10.0.1.11"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"address\": 10.0.1.11 is already a server of this service".into(),
        ),
        (
            with("10.0.1.12", "app2.example"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"address\": \"app2.example\" is not an IP address".into(),
        ),
        (
            with("10.0.1.12", "127.0.0.1"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"address\": 127.0.0.1 is a loopback address; a server is a unicast address reachable through the interface".into(),
        ),
        (
            with("10.0.1.12", "224.0.0.1"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"address\": 224.0.0.1 is a multicast address; a server is a unicast address reachable through the interface".into(),
        ),
        (
            with("10.0.1.12", "2001:db8::2"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"address\": 2001:db8::2 is IPv6 but the service VIP 10.0.0.10:80 is IPv4; use an IPv4 address".into(),
        ),
        (
            ipv6().replace("2001:db8::12", "10.0.1.12"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"address\": 10.0.1.12 is IPv4 but the service VIP [2001:db8::10]:80 is IPv6; use an IPv6 address".into(),
        ),
        (
            with("weight = 2", "weight = 300"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"weight\": 300 is out of range; use 0 to 256".into(),
        ),
        (
            with("02:00:00:00:01:12", "02:00:00"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"mac\": \"02:00:00\" is not a MAC address like \"02:00:00:00:01:11\"".into(),
        ),
        (
            with("state = \"drain\"", "state = \"sleepy\""),
            "xlb.toml: service \"be_app\", server \"app2\", field \"state\": \"sleepy\" is not a state; use \"ready\", \"drain\" or \"maint\"".into(),
        ),
        (
            with("state = \"drain\"", "check_port = 0"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"check_port\": 0 is not a port".into(),
        ),
        (
            with("10.0.0.10:80", "10.0.0.10:0"),
            "xlb.toml: service \"be_app\", server \"app1\", field \"check_port\": the VIP takes any port (0), so health checks need a port: set check_port here or health.port".into(),
        ),
        (
            with("state = \"drain\"", "interface = \"\""),
            "xlb.toml: service \"be_app\", server \"app2\", field \"interface\": \"\" is not an interface name (1 to 15 bytes)".into(),
        ),
        (
            with("state = \"drain\"", "interface = \"a_very_long_ifname0\""),
            "xlb.toml: service \"be_app\", server \"app2\", field \"interface\": \"a_very_long_ifname0\" is not an interface name (1 to 15 bytes)".into(),
        ),
        // Passive health (`observe`), per server and per service.
        (
            with("state = \"drain\"", "observe = \"layer7\""),
            "xlb.toml: service \"be_app\", server \"app2\", field \"observe\": \"layer7\" is not an observe mode; xlb forwards packets and never sees a response; use \"layer4\" or \"none\"".into(),
        ),
        (
            with("expect = 200 }", "expect = 200, observe = \"l4\" }"),
            "xlb.toml: service \"be_app\", field \"health.observe\": \"l4\" is not an observe mode; use \"layer4\" or \"none\"".into(),
        ),
        (
            with("state = \"drain\"", "observe = \"layer4\"\nerror_limit = 0"),
            "xlb.toml: service \"be_app\", server \"app2\", field \"error_limit\": must be at least 1 (HAProxy's default is 10)".into(),
        ),
        (
            with("expect = 200 }", "expect = 200, observe = \"layer4\", on_error = \"reboot\" }"),
            "xlb.toml: service \"be_app\", field \"health.on_error\": \"reboot\" is not an action; use \"fastinter\", \"fail-check\", \"sudden-death\" or \"mark-down\"".into(),
        ),
        (
            with("state = \"drain\"", "fastinter = \"0s\""),
            "xlb.toml: service \"be_app\", server \"app2\", field \"fastinter\": must be above zero, e.g. \"500ms\"".into(),
        ),
        (
            with("expect = 200 }", "expect = 200, downinter = \"later\" }"),
            "xlb.toml: service \"be_app\", field \"health.downinter\": \"later\" is not a duration; write e.g. \"500ms\", \"2s\", \"30m\", \"1h\" or \"1d\"".into(),
        ),
        (
            with("health = { type = \"http\", send = \"GET /healthz\", expect = 200 }", "health = { type = \"none\", observe = \"layer4\" }"),
            "xlb.toml: service \"be_app\", field \"health.observe\": \"layer4\" needs health checks, which confirm a suspicion and bring the server back; set health.type".into(),
        ),
        (
            with("vip = \"10.0.0.10:80\"", "vip = \"10.0.0.10:53\"\nprotocol = \"udp\"").replace("state = \"drain\"", "observe = \"layer4\""),
            "xlb.toml: service \"be_app\", server \"app2\", field \"observe\": \"layer4\" watches TCP handshakes and this service is UDP; remove observe".into(),
        ),
        (
            announce("warmup = \"5s\""),
            "xlb.toml: [announce], field \"table\": missing; name the kernel routing table of the VIP routes (the one BIRD's kernel protocol learns), e.g. table = 200".into(),
        ),
        (
            announce("table = 254"),
            "xlb.toml: [announce], field \"table\": 254 is reserved by the kernel (0 unspec, 253 default, 254 main, 255 local); give the VIP routes a table of their own, e.g. 200".into(),
        ),
        (
            announce("table = 0"),
            "xlb.toml: [announce], field \"table\": 0 is reserved by the kernel (0 unspec, 253 default, 254 main, 255 local); give the VIP routes a table of their own, e.g. 200".into(),
        ),
        (
            announce("table = 200\nwarmup = \"2h\""),
            "xlb.toml: [announce], field \"warmup\": 2h is longer than 1h: a restarted balancer would stay out of the fleet that long".into(),
        ),
        (
            announce("table = 200\nwarmup = \"soon\""),
            "xlb.toml: [announce], field \"warmup\": \"soon\" is not a duration; write e.g. \"500ms\", \"2s\", \"30m\", \"1h\" or \"1d\"".into(),
        ),
        // How servers are reached (`config::forward`).
        (
            service("forward = \"vxlan\""),
            "xlb.toml: service \"be_app\", field \"forward\": \"vxlan\" is not a forwarding mode; use \"l2\", \"ipip\" or \"gue\"".into(),
        ),
        (
            with("name = \"app1\"", "name = \"app1\"\nforward = \"ipip\""),
            "xlb.toml: service \"be_app\", server \"app1\", field \"forward\": \"ipip\" needs an encap_source of the service's family (an address of this balancer, or a prefix routed to it): set encap_source in the service or in [global]".into(),
        ),
        (
            global("encap_source = [\"2001:db8::1\"]").replacen("name = \"app1\"", "name = \"app1\"\nforward = \"gue\"\ngue_port = 6080", 1),
            "xlb.toml: service \"be_app\", server \"app1\", field \"forward\": \"gue\" needs an encap_source of the service's family (an address of this balancer, or a prefix routed to it): set encap_source in the service or in [global]".into(),
        ),
        (
            encap_app1("forward = \"gue\""),
            "xlb.toml: service \"be_app\", server \"app1\", field \"gue_port\": forward = \"gue\" needs the backend's GUE (UDP) port: set gue_port here or in the service".into(),
        ),
        (
            encap_app1("forward = \"gue\"\ngue_port = 0"),
            "xlb.toml: service \"be_app\", server \"app1\", field \"gue_port\": 0 is not a port".into(),
        ),
        (
            encap_app1("gue_port = 6080"),
            "xlb.toml: service \"be_app\", server \"app1\", field \"gue_port\": applies to forward = \"gue\" only".into(),
        ),
        (
            service("forward = \"ipip\"\nencap_source = \"192.0.2.1\""),
            "xlb.toml: service \"be_app\", server \"app2\", field \"mac\": applies to forward = \"l2\" only; this server is forwarded by \"ipip\" through the kernel's routes (remove mac)".into(),
        ),
        (
            encap_app1("forward = \"ipip\"\ninterface = \"eth1\""),
            "xlb.toml: service \"be_app\", server \"app1\", field \"interface\": applies to forward = \"l2\" only; this server is forwarded by \"ipip\" through the kernel's routes (remove interface)".into(),
        ),
        (
            service("encap_source = \"2001:db8::1\""),
            "xlb.toml: service \"be_app\", field \"encap_source\": 2001:db8::1 is IPv6 but the service VIP 10.0.0.10 is IPv4; the outer header is of the VIP's family, so give an IPv4 source".into(),
        ),
        (
            global("encap_source = [\"fd00::/64\"]"),
            "xlb.toml: [global], field \"encap_source\": \"fd00::/64\": the prefix length must be 96 to 128 (the hash fills at most the last 32 bits)".into(),
        ),
        (
            global("encap_source = [\"192.0.2.1\", \"192.0.2.0/24\"]"),
            "xlb.toml: [global], field \"encap_source\": two IPv4 sources; give at most one per family".into(),
        ),
        (
            global("encap_source = [\"lb1\"]"),
            "xlb.toml: [global], field \"encap_source\": \"lb1\" is not an address or prefix; write \"192.0.2.1\" or \"172.16.0.0/16\"".into(),
        ),
    ];
    for (config, want) in &cases {
        assert_eq!(&err(config), want, "refused config:\n{config}");
    }
}
