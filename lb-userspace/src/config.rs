//! The TOML config: strict parsing (unknown keys are errors), HAProxy's defaults, and
//! validation whose every error names the file, the service/server, the field, and what would
//! be right. `xlb check -c FILE` is `load` and nothing else.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::Deserialize;

use lb_common::{MAGLEV_MAX_SIZE, MAX_BACKENDS, MAX_SERVICES, maglev::is_prime};

// --- the validated config ------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    pub interface: String,
    pub admin_socket: PathBuf,
    pub xdp_mode: XdpMode,
    pub bpffs_dir: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub stick: Stick,
    pub redispatch: bool,
    pub table_size: u32,
    pub health: Health,
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stick {
    pub on: StickOn,
    pub size: u32,
    /// Idle time after which an entry no longer counts; zero = never.
    pub expire: Duration,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickOn {
    Src,
    SrcPort,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub kind: HealthKind,
    pub inter: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthKind {
    Tcp,
    Http {
        method: String,
        uri: String,
        expect: u16,
        host: Option<String>,
    },
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: String,
    pub address: IpAddr,
    pub weight: u32,
    pub mac: Option<[u8; 6]>,
    pub check_port: Option<u16>,
    pub state: AdminState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

impl AdminState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl FromStr for AdminState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ready" => Ok(AdminState::Ready),
            "drain" => Ok(AdminState::Drain),
            "maint" => Ok(AdminState::Maint),
            _ => Err(()),
        }
    }
}

impl Config {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

// --- errors -----------------------------------------------------------------------------------

/// A config error: where (file, service, server, field) and what is wrong / what would be right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{file}: {place}field \"{field}\": {reason}")]
    Invalid {
        file: String,
        /// `service "x", ` / `service "x", server "y", ` / empty for [global].
        place: String,
        field: String,
        reason: String,
    },
    #[error("interface \"{0}\" does not exist (in this network namespace); list them with \"ip link\"")]
    NoInterface(String),
}

struct Ctx<'a> {
    file: &'a str,
    place: String,
}

impl Ctx<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            place: self.place.clone(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

// --- raw serde shapes -----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    global: RawGlobal,
    #[serde(default)]
    service: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    interface: Option<String>,
    admin_socket: Option<PathBuf>,
    xdp_mode: Option<String>,
    bpffs_dir: Option<PathBuf>,
    metrics: Option<String>,
    sweep_interval: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    vip: String,
    protocol: Option<String>,
    stick: Option<RawStick>,
    redispatch: Option<bool>,
    table_size: Option<u32>,
    health: Option<RawHealth>,
    #[serde(default)]
    server: Vec<RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStick {
    on: Option<String>,
    size: Option<Size>,
    expire: Option<Dur>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(rename = "type")]
    kind: Option<String>,
    send: Option<String>,
    expect: Option<u16>,
    inter: Option<Dur>,
    timeout: Option<Dur>,
    rise: Option<u32>,
    fall: Option<u32>,
    port: Option<u16>,
    host: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    address: String,
    weight: Option<u32>,
    mac: Option<String>,
    check_port: Option<u16>,
    state: Option<String>,
}

/// A duration: integer seconds or a string such as "500ms", "2s", "30m", "1h", "1d".
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Dur {
    Secs(u64),
    Text(String),
}

/// A count: integer or "100k" / "1m".
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Size {
    Num(u64),
    Text(String),
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("\"{s}\" is not a duration; write e.g. \"500ms\", \"2s\", \"30m\", \"1h\" or \"1d\"")
    })?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!(
                "\"{s}\" has an unknown unit \"{unit}\"; use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_millis(ms))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(86_400_000) && ms > 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn dur(d: &Dur) -> Result<Duration, String> {
    match d {
        Dur::Secs(s) => Ok(Duration::from_secs(*s)),
        Dur::Text(t) => parse_duration(t),
    }
}

fn size(s: &Size) -> Result<u64, String> {
    match s {
        Size::Num(n) => Ok(*n),
        Size::Text(t) => {
            let t = t.trim();
            let (num, mult) = match t.char_indices().last() {
                Some((i, 'k' | 'K')) => (&t[..i], 1_000),
                Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
                _ => (t, 1),
            };
            num.parse::<u64>()
                .map(|n| n * mult)
                .map_err(|_| format!("\"{t}\" is not a size; write a number, or e.g. \"100k\" or \"1m\""))
        }
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    crate::neigh::parse_mac(s)
}

// --- loading ----------------------------------------------------------------------------------

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    parse(&text, &file)
}

pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: origin.to_string(),
        reason: e.to_string().trim().replace('\n', " "),
    })?;
    let g = Ctx {
        file: origin,
        place: "[global], ".into(),
    };
    let global = Global {
        interface: match raw.global.interface {
            Some(i) if !i.is_empty() && i.len() < 16 => i,
            Some(i) if !i.is_empty() => {
                return Err(g.err(
                    "interface",
                    format!("\"{i}\" is longer than 15 bytes, which no Linux interface name is"),
                ));
            }
            _ => {
                return Err(g.err(
                    "interface",
                    "missing; name the interface XDP attaches to, e.g. interface = \"eth0\"",
                ));
            }
        },
        admin_socket: raw
            .global
            .admin_socket
            .unwrap_or_else(|| PathBuf::from("/run/xlb/admin.sock")),
        xdp_mode: match raw.global.xdp_mode.as_deref() {
            None | Some("native") => XdpMode::Native,
            Some("generic") => XdpMode::Generic,
            Some(o) => {
                return Err(g.err(
                    "xdp_mode",
                    format!("\"{o}\" is not a mode; use \"native\" or \"generic\""),
                ));
            }
        },
        bpffs_dir: raw
            .global
            .bpffs_dir
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/xlb")),
        metrics: match raw.global.metrics {
            None => None,
            Some(m) => Some(m.parse().map_err(|_| {
                g.err(
                    "metrics",
                    format!("\"{m}\" is not an address:port, e.g. \"127.0.0.1:9100\""),
                )
            })?),
        },
        sweep_interval: match &raw.global.sweep_interval {
            None => Duration::from_secs(1),
            Some(d) => {
                let d = dur(d).map_err(|e| g.err("sweep_interval", e))?;
                if d.is_zero() {
                    return Err(g.err("sweep_interval", "must be above zero, e.g. \"1s\""));
                }
                d
            }
        },
    };
    if !global.bpffs_dir.is_absolute() {
        return Err(g.err(
            "bpffs_dir",
            format!(
                "{} must be an absolute path under a bpffs mount, e.g. /sys/fs/bpf/xlb",
                global.bpffs_dir.display()
            ),
        ));
    }

    if raw.service.len() > MAX_SERVICES as usize {
        return Err(g.err(
            "service",
            format!(
                "{} services; at most {MAX_SERVICES} are supported",
                raw.service.len()
            ),
        ));
    }
    let total: usize = raw.service.iter().map(|s| s.server.len()).sum();
    if total > MAX_BACKENDS as usize {
        return Err(g.err(
            "server",
            format!("{total} servers in all; at most {MAX_BACKENDS} are supported"),
        ));
    }
    let mut services = Vec::new();
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut vips: HashMap<(SocketAddr, Protocol), String> = HashMap::new();
    for rs in raw.service {
        let s = service(rs, origin)?;
        let c = Ctx {
            file: origin,
            place: format!("service \"{}\", ", s.name),
        };
        if names.insert(s.name.clone(), ()).is_some() {
            return Err(c.err("name", "another service has this name; names must be unique"));
        }
        let proto = match s.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        if let Some(other) = vips.insert((s.vip, s.protocol), s.name.clone()) {
            return Err(c.err(
                "vip",
                format!("{}/{proto} is already used by service \"{other}\"", s.vip),
            ));
        }
        services.push(s);
    }
    Ok(Config { global, services })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 48 && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn service(r: RawService, file: &str) -> Result<Service, ConfigError> {
    let c = Ctx {
        file,
        place: format!("service \"{}\", ", r.name),
    };
    if !valid_name(&r.name) {
        return Err(c.err("name", "use 1 to 48 of A-Z a-z 0-9 _ . -"));
    }
    let vip: SocketAddr = r.vip.parse().map_err(|_| {
        c.err("vip", format!("\"{}\" is not address:port; write \"10.0.0.10:80\" or \"[2001:db8::10]:80\" (port 0 = any port)", r.vip))
    })?;
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
    let rs = r.stick.unwrap_or(RawStick {
        on: None,
        size: None,
        expire: None,
        ipv4_prefix: None,
        ipv6_prefix: None,
    });
    let stick = Stick {
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
                let n = size(s).map_err(|e| c.err("stick.size", e))?;
                if n == 0 {
                    return Err(c.err("stick.size", "must be at least 1 (got 0)"));
                }
                if n > 100_000_000 {
                    return Err(c.err(
                        "stick.size",
                        format!("{n} is more than the 100m entries supported"),
                    ));
                }
                n as u32
            }
        },
        expire: match &rs.expire {
            None => Duration::from_secs(30 * 60),
            Some(d) => dur(d).map_err(|e| c.err("stick.expire", e))?,
        },
        ipv4_prefix: match rs.ipv4_prefix {
            None => 32,
            Some(p @ 1..=32) => p,
            Some(p) => {
                return Err(c.err(
                    "stick.ipv4_prefix",
                    format!("{p} is not a prefix length from 1 to 32"),
                ));
            }
        },
        ipv6_prefix: match rs.ipv6_prefix {
            None => 128,
            Some(p @ 1..=128) => p,
            Some(p) => {
                return Err(c.err(
                    "stick.ipv6_prefix",
                    format!("{p} is not a prefix length from 1 to 128"),
                ));
            }
        },
    };
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
                format!("{m} is not prime; use a prime such as 65537 or 16381"),
            ));
        }
        Some(m) => m,
    };
    let health = health(r.health, &c, vip)?;
    let mut servers: Vec<Server> = Vec::new();
    for (i, rv) in r.server.into_iter().enumerate() {
        let sc = Ctx {
            file,
            place: format!("service \"{}\", server \"{}\", ", r.name, rv.name),
        };
        if !valid_name(&rv.name) {
            return Err(sc.err(
                "name",
                format!("server #{} needs a name of 1 to 48 of A-Z a-z 0-9 _ . -", i + 1),
            ));
        }
        if servers.iter().any(|s| s.name == rv.name) {
            return Err(sc.err(
                "name",
                "another server of this service has this name; names must be unique",
            ));
        }
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
        if servers.iter().any(|s| s.address == address) {
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
            Some(m) => Some(parse_mac(&m).ok_or_else(|| {
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
        if !matches!(health.kind, HealthKind::None)
            && rv.check_port.or(health.port).is_none()
            && vip.port() == 0
        {
            return Err(sc.err("check_port", "the VIP takes any port (0), so health checks need a port: set check_port here or health.port"));
        }
        servers.push(Server {
            name: rv.name,
            address,
            weight,
            mac,
            check_port: rv.check_port,
            state,
        });
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

fn health(r: Option<RawHealth>, c: &Ctx<'_>, _vip: SocketAddr) -> Result<Health, ConfigError> {
    let r = r.unwrap_or(RawHealth {
        kind: None,
        send: None,
        expect: None,
        inter: None,
        timeout: None,
        rise: None,
        fall: None,
        port: None,
        host: None,
    });
    let inter = match &r.inter {
        None => Duration::from_secs(2),
        Some(d) => dur(d).map_err(|e| c.err("health.inter", e))?,
    };
    if inter.is_zero() {
        return Err(c.err("health.inter", "must be above zero, e.g. \"2s\""));
    }
    let timeout = match &r.timeout {
        None => inter,
        Some(d) => dur(d).map_err(|e| c.err("health.timeout", e))?,
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
                    if m.chars().all(|ch| ch.is_ascii_uppercase()) && u.starts_with('/') =>
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

/// The interface's index, or an error saying how to find the right name.
pub fn check_interface(name: &str) -> Result<u32, ConfigError> {
    let c = std::ffi::CString::new(name).map_err(|_| ConfigError::NoInterface(name.into()))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(ConfigError::NoInterface(name.into())),
        i => Ok(i),
    }
}

#[cfg(test)]
mod tests {
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
    fn example_file_parses() {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/xlb.toml");
        let c = load(Path::new(p)).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.services.len() >= 2);
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("3 weeks").is_err());
        assert_eq!(size(&Size::Text("1m".into())).unwrap(), 1_000_000);
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn ipv6_vip_and_servers() {
        let t = OK
            .replace("10.0.0.10:80", "[2001:db8::10]:80")
            .replace("10.0.1.11", "2001:db8::11")
            .replace("10.0.1.12", "2001:db8::12");
        let c = parse(&t, "x").unwrap();
        assert!(c.services[0].vip.is_ipv6());
    }

    #[test]
    fn unknown_key() {
        let e = err(&OK.replace("[global]", "[global]\nbogus = 1"));
        assert!(
            e.starts_with("xlb.toml: ") && e.contains("unknown field `bogus`"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_the_file() {
        assert!(err("[global\n").starts_with("xlb.toml: "));
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
            "xlb.toml: service \"be_app\", field \"table_size\": 1001 is not prime; use a prime such as 65537 or 16381"
        );
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
            err(&with("state = \"drain\"", "state = \"sleepy\"")).contains(
                "field \"state\": \"sleepy\" is not a state; use \"ready\", \"drain\" or \"maint\""
            )
        );
        assert!(
            err(&with("on = \"src\"", "on = \"cookie\""))
                .contains("field \"stick.on\": \"cookie\" is not an affinity")
        );
    }

    #[test]
    fn bad_vip_and_protocol() {
        assert!(
            err(&with("10.0.0.10:80", "10.0.0.10"))
                .contains("field \"vip\": \"10.0.0.10\" is not address:port")
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
            err(&with("send = \"GET /healthz\"", "send = \"healthz please\""))
                .contains("field \"health.send\"")
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
    }

    #[test]
    fn prefix_out_of_range() {
        assert!(
            err(&with("expire = \"30m\"", "expire = \"30m\", ipv4_prefix = 33"))
                .contains("field \"stick.ipv4_prefix\": 33 is not a prefix length")
        );
    }

    #[test]
    fn interface_that_does_not_exist() {
        assert_eq!(
            check_interface("xlbnope0").unwrap_err().to_string(),
            "interface \"xlbnope0\" does not exist (in this network namespace); list them with \"ip link\""
        );
        assert!(check_interface("lo").is_ok());
    }
}
