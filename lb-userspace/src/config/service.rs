//! One `[[service]]`, from its serde shape to the typed `Service`: the VIP and protocol, the
//! stick table, the Maglev table size, the health check (and passive health, `observe`) and the
//! servers, each value checked and each default (HAProxy's where it has one) applied.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_common::{MAGLEV_MAX_SIZE, maglev::is_prime};

use super::{
    AdminState, ConfigError, Health, HealthKind, Observe, Protocol, Server, Service, Stick, StickOn,
    error::Place,
    forward,
    limits::{check_stick_expire, stick_memory_reason},
    observe::observe,
    raw::{RawHealth, RawServer, RawService, RawStick},
};

/// Room for a backend's `service/server` name in the data path's name map.
const NAME_MAX: usize = std::mem::size_of::<lb_common::NameSlot>();

/// The service `r` of config `file`; `global_interface` is the XDP interface (a server that
/// names it is reached the default way).
pub(super) fn service(
    r: RawService,
    file: &str,
    global_interface: &str,
    encap_sources: &[super::EncapSource],
) -> Result<Service, ConfigError> {
    let c = Place::service(file, &r.name);
    if !valid_name(&r.name) {
        return Err(c.err("name", "use 1 to 48 of A-Z a-z 0-9 _ . -"));
    }
    let vip: SocketAddr = r.vip.parse().map_err(|_| {
        c.err("vip", format!("\"{}\" is not address:port; write \"10.0.0.10:80\" or \"[2001:db8::10]:80\" (port 0 = any port)", r.vip))
    })?;
    if let Some(why) = not_unicast(vip.ip()) {
        return Err(c.err(
            "vip",
            format!(
                "{} {why}; a VIP is the unicast address clients connect to",
                vip.ip()
            ),
        ));
    }
    let protocol = match r.protocol.as_deref() {
        None | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some(o) => {
            return Err(c.err(
                "protocol",
                format!("\"{o}\" is not a protocol; use \"tcp\" or \"udp\""),
            ));
        }
    };
    let stick = stick(r.stick.unwrap_or_default(), &c)?;
    let table_size = match r.table_size {
        None => lb_common::MAGLEV_DEFAULT_SIZE,
        Some(m) if !(3..=MAGLEV_MAX_SIZE).contains(&m) => {
            return Err(c.err(
                "table_size",
                format!("{m} is out of range; use a prime from 3 to {MAGLEV_MAX_SIZE}"),
            ));
        }
        Some(m) if !is_prime(m) => {
            return Err(c.err(
                "table_size",
                format!("{m} is not prime; use a prime such as {}", nearby_prime(m)),
            ));
        }
        Some(m) => m,
    };
    let mut raw_health = r.health.unwrap_or_default();
    let service_observe = raw_health.take_observe();
    let health = health(raw_health, &c)?;
    let defaults = forward::defaults(r.forward, r.gue_port, r.encap_source, encap_sources, vip.ip(), &c)?;
    let mut servers: Vec<Server> = Vec::new();
    for (i, mut rv) in r.server.into_iter().enumerate() {
        let sc = Place::server(file, &r.name, &rv.name);
        if !valid_name(&rv.name) {
            return Err(sc.err(
                "name",
                format!("server #{} needs a name of 1 to 48 of A-Z a-z 0-9 _ . -", i + 1),
            ));
        }
        let full = r.name.len() + 1 + rv.name.len();
        if full > NAME_MAX {
            return Err(sc.err(
                "name",
                format!(
                    "\"{}/{}\" is {full} bytes; service and server names together must fit in \
                     {NAME_MAX} (with the '/'), use shorter names",
                    r.name, rv.name
                ),
            ));
        }
        if servers.iter().any(|s| s.name == rv.name) {
            return Err(sc.err(
                "name",
                "another server of this service has this name; names must be unique",
            ));
        }
        let own = rv.take_observe();
        let observe = observe(
            &service_observe,
            &c,
            &own,
            &sc,
            health.inter,
            &health.kind,
            protocol,
        )?;
        let (fwd, gue_port) = (rv.forward.take(), rv.gue_port.take());
        let mut s = server(rv, &sc, vip, &health, &servers, global_interface, observe)?;
        s.forward = forward::server(
            fwd,
            gue_port,
            &defaults,
            s.mac.is_some(),
            s.interface.is_some(),
            &sc,
        )?;
        servers.push(s);
    }
    Ok(Service {
        name: r.name,
        vip,
        protocol,
        stick,
        redispatch: r.redispatch.unwrap_or(true),
        table_size,
        health,
        servers,
    })
}

/// The service's `stick` table (its entries' key, count and expiry).
fn stick(rs: RawStick, c: &Place) -> Result<Stick, ConfigError> {
    Ok(Stick {
        on: match rs.on.as_deref() {
            None | Some("src") => StickOn::Src,
            Some("src-port") => StickOn::SrcPort,
            Some("none") => StickOn::None,
            Some(o) => {
                return Err(c.err(
                    "stick.on",
                    format!("\"{o}\" is not an affinity; use \"src\", \"src-port\" or \"none\""),
                ));
            }
        },
        size: match &rs.size {
            None => 100_000,
            Some(s) => {
                let n = s.count().map_err(|e| c.err("stick.size", e))?;
                if n == 0 {
                    return Err(c.err("stick.size", "must be at least 1 (got 0)"));
                }
                // The memory cap (`check_stick_memory`) is far below u32::MAX entries.
                u32::try_from(n).map_err(|_| c.err("stick.size", stick_memory_reason(n, n)))?
            }
        },
        expire: match &rs.expire {
            None => Duration::from_secs(30 * 60),
            Some(d) => {
                let d = d.duration().map_err(|e| c.err("stick.expire", e))?;
                check_stick_expire(d).map_err(|e| c.err("stick.expire", e))?;
                d
            }
        },
        ipv4_prefix: prefix(rs.ipv4_prefix, 32, "stick.ipv4_prefix", c)?,
        ipv6_prefix: prefix(rs.ipv6_prefix, 128, "stick.ipv6_prefix", c)?,
    })
}

/// A prefix length from 1 to `max` (`max`, the whole address, when not set).
fn prefix(p: Option<u8>, max: u8, field: &str, c: &Place) -> Result<u8, ConfigError> {
    match p {
        None => Ok(max),
        Some(p) if (1..=max).contains(&p) => Ok(p),
        Some(p) => Err(c.err(field, format!("{p} is not a prefix length from 1 to {max}"))),
    }
}

/// One server of the service at `vip`, checked by `health`, after the servers `before` it;
/// `service` has checked its name.
fn server(
    rv: RawServer,
    sc: &Place,
    vip: SocketAddr,
    health: &Health,
    before: &[Server],
    global_interface: &str,
    observe: Observe,
) -> Result<Server, ConfigError> {
    let address: IpAddr = rv
        .address
        .parse()
        .map_err(|_| sc.err("address", format!("\"{}\" is not an IP address", rv.address)))?;
    if address.is_ipv4() != vip.is_ipv4() {
        let (fam, want) = if address.is_ipv4() {
            ("IPv4", "IPv6")
        } else {
            ("IPv6", "IPv4")
        };
        return Err(sc.err(
            "address",
            format!("{address} is {fam} but the service VIP {vip} is {want}; use an {want} address"),
        ));
    }
    if let Some(why) = not_unicast(address).or(address.is_loopback().then_some("is a loopback address")) {
        return Err(sc.err(
            "address",
            format!("{address} {why}; a server is a unicast address reachable through the interface"),
        ));
    }
    if before.iter().any(|s| s.address == address) {
        return Err(sc.err(
            "address",
            format!("{address} is already a server of this service"),
        ));
    }
    let weight = rv.weight.unwrap_or(1);
    if weight > 256 {
        return Err(sc.err("weight", format!("{weight} is out of range; use 0 to 256")));
    }
    let mac = match rv.mac {
        None => None,
        Some(m) => Some(crate::net::neigh::parse_mac(&m).ok_or_else(|| {
            sc.err(
                "mac",
                format!("\"{m}\" is not a MAC address like \"02:00:00:00:01:11\""),
            )
        })?),
    };
    let state = match rv.state.as_deref() {
        None => AdminState::Ready,
        Some(st) => st.parse().map_err(|_| {
            sc.err(
                "state",
                format!("\"{st}\" is not a state; use \"ready\", \"drain\" or \"maint\""),
            )
        })?,
    };
    if rv.check_port == Some(0) {
        return Err(sc.err("check_port", "0 is not a port"));
    }
    if !matches!(health.kind, HealthKind::None) && rv.check_port.or(health.port).is_none() && vip.port() == 0
    {
        return Err(sc.err(
            "check_port",
            "the VIP takes any port (0), so health checks need a port: set check_port here or health.port",
        ));
    }
    let interface = match rv.interface {
        None => None,
        Some(i) if i.is_empty() || i.len() > 15 => {
            return Err(sc.err(
                "interface",
                format!("\"{i}\" is not an interface name (1 to 15 bytes)"),
            ));
        }
        // The XDP interface itself: the default, XDP_TX.
        Some(i) if i == global_interface => None,
        Some(i) => Some(i),
    };
    Ok(Server {
        name: rv.name,
        address,
        weight,
        mac,
        check_port: rv.check_port,
        state,
        interface,
        observe,
        forward: super::Forward::L2,
    })
}

/// The service's health check (HAProxy's defaults: TCP, every 2s, rise 2, fall 3).
fn health(r: RawHealth, c: &Place) -> Result<Health, ConfigError> {
    let inter = match &r.inter {
        None => Duration::from_secs(2),
        Some(d) => d.duration().map_err(|e| c.err("health.inter", e))?,
    };
    if inter.is_zero() {
        return Err(c.err("health.inter", "must be above zero, e.g. \"2s\""));
    }
    let timeout = match &r.timeout {
        None => inter,
        Some(d) => d.duration().map_err(|e| c.err("health.timeout", e))?,
    };
    if timeout.is_zero() {
        return Err(c.err("health.timeout", "must be above zero, e.g. \"1s\""));
    }
    let rise = r.rise.unwrap_or(2);
    let fall = r.fall.unwrap_or(3);
    if rise == 0 {
        return Err(c.err("health.rise", "must be at least 1"));
    }
    if fall == 0 {
        return Err(c.err("health.fall", "must be at least 1"));
    }
    if r.port == Some(0) {
        return Err(c.err("health.port", "0 is not a port"));
    }
    let http_only = r.expect.is_some() || r.host.is_some() || r.send.is_some();
    let kind = match r.kind.as_deref() {
        None | Some("tcp") => HealthKind::Tcp,
        Some("none") => HealthKind::None,
        Some("http") => {
            let send = r.send.unwrap_or_else(|| "GET /".into());
            let mut words = send.split_whitespace();
            let (method, uri) = match (words.next(), words.next(), words.next()) {
                (Some(m), Some(u), None)
                    if m.chars().all(|ch| ch.is_ascii_uppercase())
                        && u.starts_with('/')
                        && u.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    (m.to_string(), u.to_string())
                }
                _ => {
                    return Err(c.err(
                        "health.send",
                        format!("\"{send}\" is not a request line \"METHOD /path\", e.g. \"GET /healthz\""),
                    ));
                }
            };
            let expect = r.expect.unwrap_or(200);
            if !(100..=599).contains(&expect) {
                return Err(c.err(
                    "health.expect",
                    format!("{expect} is not an HTTP status (100 to 599)"),
                ));
            }
            if let Some(h) = &r.host
                && (h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(c.err(
                    "health.host",
                    format!("{h:?} is not a Host header value; write a host name such as \"app.example\""),
                ));
            }
            HealthKind::Http {
                method,
                uri,
                expect,
                host: r.host,
            }
        }
        Some(o) => {
            return Err(c.err(
                "health.type",
                format!("\"{o}\" is not a check type; use \"tcp\", \"http\" or \"none\""),
            ));
        }
    };
    if !matches!(kind, HealthKind::Http { .. }) && http_only {
        return Err(c.err(
            "health.type",
            "send, expect and host apply to type = \"http\" only; set type = \"http\"",
        ));
    }
    Ok(Health {
        kind,
        inter,
        timeout,
        rise,
        fall,
        port: r.port,
    })
}

/// A service, server or peer name: 1 to 48 of A-Z a-z 0-9 _ . -
pub(super) fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 48 && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Why an address cannot be a VIP, a server or a peer, if it cannot.
pub(super) fn not_unicast(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("is the unspecified address")
    } else if ip.is_multicast() {
        Some("is a multicast address")
    } else if ip == IpAddr::from([255, 255, 255, 255]) {
        Some("is the broadcast address")
    } else {
        None
    }
}

/// The prime nearest above `m` within the Maglev limit (else the nearest below): a suggestion.
fn nearby_prime(m: u32) -> u32 {
    (m..=MAGLEV_MAX_SIZE)
        .find(|&p| is_prime(p))
        .or_else(|| (3..m).rev().find(|&p| is_prime(p)))
        .unwrap_or(MAGLEV_MAX_SIZE)
}
