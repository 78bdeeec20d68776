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

use lb_common::{MAGLEV_MAX_SIZE, MAX_BACKENDS, MAX_SERVICES, MAX_TX_PORTS, maglev::is_prime};

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
    /// New stick entries each CPU may create per second; 0 = no cap. Default
    /// `DEFAULT_MAX_NEW_ENTRIES_PER_CPU`.
    pub max_new_entries_per_cpu: u64,
    /// Where this agent accepts stick-table updates from its peers (None = it does not).
    pub peer_listen: Option<SocketAddr>,
    /// Other instances that share this one's stick tables (`[[peer]]`, top level).
    pub peers: Vec<Peer>,
    /// The file holding the key the peers authenticate with (required with `[[peer]]`).
    pub peer_key_file: Option<PathBuf>,
}

/// Another xlb instance: stick entries this one creates or refreshes are sent there, and
/// updates are accepted only from its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Its `peer_listen` address.
    pub address: SocketAddr,
}

/// Peers one instance may have.
pub const MAX_PEERS: usize = 16;

/// Default cap on new stick entries per CPU per second. A stick entry is a client (an address,
/// or with `src-port` a connection): one CPU of a busy balancer sees a few thousand new ones a
/// second, a spoofed-ACK flood millions. Katran caps new connection-table entries at 125k per
/// second per core (`MAX_CONN_RATE`, katran/lib/bpf/balancer_consts.h); an entry here is per
/// client, so 50k leaves a wide margin for real clients while a flood renews at most 50k
/// entries per CPU per second. Over the cap a packet still goes to the backend Maglev picks
/// (the one the entry would have named); only the entry is not written.
pub const DEFAULT_MAX_NEW_ENTRIES_PER_CPU: u64 = 50_000;

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

impl Stick {
    /// The prefixes the service's clients are keyed on (see `StickKey::for_client`).
    pub fn prefixes(&self) -> lb_common::StickPrefixes {
        lb_common::StickPrefixes {
            v4: self.ipv4_prefix,
            v6: self.ipv6_prefix,
        }
    }
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
    /// The interface the server is reached through when it is not the one XDP runs on
    /// (frames go out by `XDP_REDIRECT`); None = the XDP interface (`XDP_TX`).
    pub interface: Option<String>,
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

impl std::fmt::Display for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
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
        /// `[global], ` / `service "x", ` / `service "x", server "y", ` / empty for limits on
        /// the whole file (number of services, of servers).
        place: String,
        field: String,
        reason: String,
    },
    #[error("interface \"{0}\" does not exist (in this network namespace); list them with \"ip link\"")]
    NoInterface(String),
    #[error(
        "service \"{service}\", server \"{server}\", field \"interface\": \"{interface}\" does not \
         exist (in this network namespace); list them with \"ip link\""
    )]
    NoServerInterface {
        service: String,
        server: String,
        interface: String,
    },
    #[error(
        "service \"{service}\", field \"vip\": {vip} is an address of the XDP interface \
         \"{interface}\" itself, so the balancer would take the host's own traffic to that \
         address (its SSH, its peers, its health checks' answers); give the service an address \
         of its own"
    )]
    VipIsOwnAddress {
        service: String,
        vip: IpAddr,
        interface: String,
    },
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
    #[serde(default)]
    peer: Vec<RawPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    address: String,
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
    max_new_entries_per_cpu: Option<Size>,
    peer_listen: Option<String>,
    peer_key_file: Option<PathBuf>,
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
    interface: Option<String>,
}

/// A duration as written: integer seconds or a string such as "500ms", "2s", "30m", "1h", "1d".
/// Checked in the validation step, so that the error names the service and the field.
#[derive(Clone)]
enum Dur {
    Secs(u64),
    Text(String),
}

/// A count as written: an integer or a string such as "100k" / "1m".
#[derive(Clone)]
enum Size {
    Num(u64),
    Text(String),
}

/// `Deserialize` for an integer-or-string value, with an error that says what is expected
/// (serde's untagged enums only say "data did not match any variant").
macro_rules! int_or_text {
    ($ty:ident, $int:ident, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        Ok($ty::$int(v))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$ty, E> {
                        u64::try_from(v)
                            .map($ty::$int)
                            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty::Text(v.to_owned()))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
int_or_text!(
    Dur,
    Secs,
    "a duration: whole seconds, or a string such as \"500ms\", \"2s\", \"30m\", \"1h\" or \"1d\""
);
int_or_text!(
    Size,
    Num,
    "a count: an integer, or a string such as \"100k\" or \"1m\""
);

/// Parse a duration: an integer (seconds) with an optional unit `ms`, `s`, `m` (minutes),
/// `h` or `d`, e.g. "500ms", "2s", "30m", "1h", "1d", "7". "0s" is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("\"{s}\" is not a duration; write e.g. \"500ms\", \"2s\", \"30m\", \"1h\" or \"1d\"")
    })?;
    let ms_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        u => {
            return Err(format!(
                "\"{s}\" has an unknown unit \"{u}\"; use ms, s, m (minutes), h or d"
            ));
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{s}\" is too long a duration"))
}

/// The shortest exact form `parse_duration` reads back: "30m", "2s", "1500ms", "0s".
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

/// A count: integer, or a string with an optional `k` (1000) or `m` (1 000 000) suffix.
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
            let bad = || format!("\"{t}\" is not a size; write a number, or e.g. \"100k\" or \"1m\"");
            num.trim_end()
                .parse::<u64>()
                .map_err(|_| bad())?
                .checked_mul(mult)
                .ok_or_else(bad)
        }
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    crate::net::neigh::parse_mac(s)
}

// --- loading ----------------------------------------------------------------------------------

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let cfg = parse(&text, &file)?;
    if let Some(key) = &cfg.global.peer_key_file {
        read_peer_key(&file, key)?;
    }
    Ok(cfg)
}

/// "line L, column C: message" from the toml crate's error, on one line (its source snippet
/// dropped: the line number is enough to find it). Covers syntax errors, unknown keys
/// ("unknown field `bogus`, expected one of ..."), missing keys and values of the wrong type.
fn syntax_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim().replace('\n', " ");
    let reason = match e.span().and_then(|sp| text.get(..sp.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
            format!("line {line}, column {column}: {msg}")
        }
        None => msg,
    };
    ConfigError::Syntax {
        file: file.to_string(),
        reason,
    }
}

pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(origin, text, &e))?;
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
            Some(m) => Some(metrics_address(&m).map_err(|e| g.err("metrics", e))?),
        },
        max_new_entries_per_cpu: match &raw.global.max_new_entries_per_cpu {
            None => DEFAULT_MAX_NEW_ENTRIES_PER_CPU,
            Some(n) => size(n).map_err(|e| g.err("max_new_entries_per_cpu", e))?,
        },
        sweep_interval: match &raw.global.sweep_interval {
            None => Duration::from_secs(1),
            Some(d) => {
                let d = dur(d).map_err(|e| g.err("sweep_interval", e))?;
                check_sweep_interval(d).map_err(|e| g.err("sweep_interval", e))?;
                d
            }
        },
        peer_listen: match raw.global.peer_listen {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| {
                g.err(
                    "peer_listen",
                    format!("\"{a}\" is not an address:port, e.g. \"10.0.0.1:7000\""),
                )
            })?),
        },
        peers: peers(raw.peer, origin)?,
        peer_key_file: raw.global.peer_key_file,
    };
    if global.peer_listen.is_some() && global.peers.is_empty() {
        return Err(g.err(
            "peer_listen",
            "set, but no [[peer]] is listed; updates are accepted only from listed peers, so list \
             the other instances (or remove peer_listen)",
        ));
    }
    check_admin_socket(&global.admin_socket).map_err(|e| g.err("admin_socket", e))?;
    check_peer_key_setting(&global, &g)?;
    if !global.bpffs_dir.is_absolute() {
        return Err(g.err(
            "bpffs_dir",
            format!(
                "{} must be an absolute path under a bpffs mount, e.g. /sys/fs/bpf/xlb",
                global.bpffs_dir.display()
            ),
        ));
    }

    // Limits of the data path's maps: not a [global] key, so no place.
    let top = Ctx {
        file: origin,
        place: String::new(),
    };
    if raw.service.len() > MAX_SERVICES as usize {
        return Err(top.err(
            "service",
            format!(
                "{} [[service]] entries; at most {MAX_SERVICES} are supported",
                raw.service.len()
            ),
        ));
    }
    let total: usize = raw.service.iter().map(|s| s.server.len()).sum();
    if total > MAX_BACKENDS as usize {
        return Err(top.err(
            "server",
            format!("{total} servers across all services; at most {MAX_BACKENDS} are supported"),
        ));
    }
    let mut services = Vec::new();
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut vips: HashMap<(SocketAddr, Protocol), String> = HashMap::new();
    for rs in raw.service {
        let s = service(rs, origin, &global.interface)?;
        let c = Ctx {
            file: origin,
            place: format!("service \"{}\", ", s.name),
        };
        if names.insert(s.name.clone(), ()).is_some() {
            return Err(c.err("name", "another service has this name; names must be unique"));
        }
        let proto = s.protocol.as_str();
        if let Some(other) = vips.insert((s.vip, s.protocol), s.name.clone()) {
            return Err(c.err(
                "vip",
                format!("{}/{proto} is already used by service \"{other}\"", s.vip),
            ));
        }
        services.push(s);
    }
    check_stick_memory(&services, origin)?;
    let interfaces: std::collections::BTreeSet<&str> = services
        .iter()
        .flat_map(|s| s.servers.iter().filter_map(|v| v.interface.as_deref()))
        .collect();
    if interfaces.len() >= MAX_TX_PORTS as usize {
        return Err(top.err(
            "interface",
            format!(
                "servers name {} interfaces besides the XDP one; at most {} are supported",
                interfaces.len(),
                MAX_TX_PORTS - 1
            ),
        ));
    }
    Ok(Config { global, services })
}

fn peers(raw: Vec<RawPeer>, file: &str) -> Result<Vec<Peer>, ConfigError> {
    if raw.len() > MAX_PEERS {
        let top = Ctx {
            file,
            place: String::new(),
        };
        return Err(top.err(
            "peer",
            format!(
                "{} [[peer]] entries; at most {MAX_PEERS} are supported",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<Peer> = Vec::new();
    for r in raw {
        let c = Ctx {
            file,
            place: format!("peer \"{}\", ", r.name),
        };
        if !valid_name(&r.name) {
            return Err(c.err("name", "use 1 to 48 letters, digits, '_', '.' or '-'"));
        }
        if out.iter().any(|p| p.name == r.name) {
            return Err(c.err("name", "another peer has this name; names must be unique"));
        }
        let address: SocketAddr = r.address.parse().map_err(|_| {
            c.err(
                "address",
                format!(
                    "\"{}\" is not an address:port (its peer_listen), e.g. \"10.0.0.2:7000\"",
                    r.address
                ),
            )
        })?;
        if address.port() == 0 || not_unicast(address.ip()).is_some() {
            return Err(c.err(
                "address",
                format!("{address} is not a unicast address with a port"),
            ));
        }
        if out.iter().any(|p| p.address.ip() == address.ip()) {
            return Err(c.err(
                "address",
                format!(
                    "{} is already the address of another peer; peers are told apart by address",
                    address.ip()
                ),
            ));
        }
        out.push(Peer {
            name: r.name,
            address,
        });
    }
    Ok(out)
}

// --- peers: the replication key ----------------------------------------------------------

/// Shortest peer key accepted, in bytes.
pub const PEER_KEY_MIN: usize = 16;
/// Largest peer key file read: a bigger file is not a key.
pub const PEER_KEY_MAX: usize = 4096;

/// How to make a key, for the error messages.
const PEER_KEY_HOWTO: &str = "make one with `head -c 32 /dev/urandom | base64 > /etc/xlb/peer.key \
     && chmod 600 /etc/xlb/peer.key` and copy the file to every peer";

/// The secret a group of peers shares (the contents of `peer_key_file`). Debug does not show
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerKey(Vec<u8>);

impl PeerKey {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerKey({} bytes)", self.0.len())
    }
}

/// Replication is authenticated or off: `[[peer]]` needs `peer_key_file`, and the key file is
/// named by an absolute path.
fn check_peer_key_setting(global: &Global, g: &Ctx) -> Result<(), ConfigError> {
    match &global.peer_key_file {
        None if !global.peers.is_empty() => Err(g.err(
            "peer_key_file",
            format!(
                "missing; [[peer]] replication is authenticated with a key all peers share: \
                 {PEER_KEY_HOWTO}, then set peer_key_file = \"/etc/xlb/peer.key\""
            ),
        )),
        Some(_) if global.peers.is_empty() => Err(g.err(
            "peer_key_file",
            "set, but no [[peer]] is listed; list the other instances (or remove peer_key_file)",
        )),
        Some(p) if !p.is_absolute() => Err(g.err(
            "peer_key_file",
            format!("{} must be an absolute path, e.g. /etc/xlb/peer.key", p.display()),
        )),
        _ => Ok(()),
    }
}

/// Read the peer key from `path` (named by `peer_key_file` in `config_file`): a regular file
/// owned by the user running xlb, readable by nobody else, holding at least
/// [`PEER_KEY_MIN`] bytes (one trailing newline is not part of the key).
pub fn read_peer_key(config_file: &str, path: &Path) -> Result<PeerKey, ConfigError> {
    use std::{io::Read as _, os::unix::fs::MetadataExt as _};
    let g = Ctx {
        file: config_file,
        place: "[global], ".into(),
    };
    let bad = |reason: String| g.err("peer_key_file", reason);
    let shown = path.display();
    let mut f =
        std::fs::File::open(path).map_err(|e| bad(format!("cannot open {shown}: {e}; {PEER_KEY_HOWTO}")))?;
    let meta = f
        .metadata()
        .map_err(|e| bad(format!("cannot stat {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(bad(format!("{shown} is not a regular file")));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "{shown} is open to other users (mode {:04o}); the key must be readable by its owner \
             only: chmod 600 {shown}",
            meta.mode() & 0o7777
        )));
    }
    // SAFETY: plain syscall.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(bad(format!(
            "{shown} belongs to uid {}, not to the user running xlb (uid {me}): chown {me} {shown}",
            meta.uid()
        )));
    }
    let mut key = Vec::new();
    (&mut f)
        .take(PEER_KEY_MAX as u64 + 1)
        .read_to_end(&mut key)
        .map_err(|e| bad(format!("cannot read {shown}: {e}")))?;
    if key.len() > PEER_KEY_MAX {
        return Err(bad(format!(
            "{shown} is larger than {PEER_KEY_MAX} bytes: not a key file"
        )));
    }
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.len() < PEER_KEY_MIN {
        return Err(bad(format!(
            "{shown} holds a key of {} bytes; at least {PEER_KEY_MIN} are needed: {PEER_KEY_HOWTO}",
            key.len()
        )));
    }
    Ok(PeerKey(key))
}

/// Room for a backend's `service/server` name in the data path's name map.
const NAME_MAX: usize = std::mem::size_of::<lb_common::NameSlot>();

/// Why an address cannot be a VIP or a server, if it cannot.
fn not_unicast(ip: IpAddr) -> Option<&'static str> {
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

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 48 && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn service(r: RawService, file: &str, global_interface: &str) -> Result<Service, ConfigError> {
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
                // The memory cap (`check_stick_memory`) is far below u32::MAX entries.
                u32::try_from(n).map_err(|_| c.err("stick.size", stick_memory_reason(n, n)))?
            }
        },
        expire: match &rs.expire {
            None => Duration::from_secs(30 * 60),
            Some(d) => {
                let d = dur(d).map_err(|e| c.err("stick.expire", e))?;
                check_stick_expire(d).map_err(|e| c.err("stick.expire", e))?;
                d
            }
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
                format!("{m} is not prime; use a prime such as {}", nearby_prime(m)),
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
        servers.push(Server {
            name: rv.name,
            address,
            weight,
            mac,
            check_port: rv.check_port,
            state,
            interface,
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

/// Every interface the config names exists in this network namespace, and no VIP is an
/// address of the XDP interface (checked where the agent runs, not by `xlb check`, which may
/// run elsewhere).
pub fn check_interfaces(cfg: &Config) -> Result<(), ConfigError> {
    check_interface(&cfg.global.interface)?;
    check_vips_are_not_own_addresses(cfg, &interface_addresses(&cfg.global.interface))?;
    for s in &cfg.services {
        for v in &s.servers {
            if let Some(i) = &v.interface {
                check_interface(i).map_err(|_| ConfigError::NoServerInterface {
                    service: s.name.clone(),
                    server: v.name.clone(),
                    interface: i.clone(),
                })?;
            }
        }
    }
    Ok(())
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

// --- local-input limits (each check is one function: the value, the reason, the fix) --------

/// The data path refreshes an entry's last-seen time at most once per `STICK_REFRESH_NS`, so an
/// entry of a client that sends steadily can look idle for just under two refresh intervals
/// (refreshed at t, a packet at t + 0.9 s does not refresh, the next at t + 1.8 s does). An
/// `expire` at or below that throws out active clients; one more interval of margin gives the
/// smallest value accepted.
pub const MIN_STICK_EXPIRE: Duration = Duration::from_nanos(3 * lb_common::STICK_REFRESH_NS);

/// The expiry sweeper's interval: below this it walks the table so often that the walk is the
/// agent's main work; above it expired entries linger in `show table` and in memory for hours.
pub const SWEEP_INTERVAL_MIN: Duration = Duration::from_millis(100);
pub const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(3600);

/// The most kernel memory all stick tables together may take: 2 GiB, about 18 million clients
/// (`stick_memory_bytes`). A table bigger than that is a typo ("100m" for "100k") far more
/// often than a plan, and the kernel allocates an LRU map's every element when it is created.
pub const STICK_MEMORY_CAP: u64 = 2 << 30;

/// Kernel memory of an LRU hash map of `entries` stick entries, as the kernel accounts it
/// (`memlock` in the map's fdinfo; 104 778 112 bytes for 1 000 000 entries, measured on 6.18):
/// per element 88 bytes (key 24 + value 16 + 48 of `htab_elem` header with its LRU node), plus
/// 16 bytes per hash bucket, the buckets rounded up to a power of two, plus 896 for the map.
pub fn stick_memory_bytes(entries: u64) -> u64 {
    const KEY: u64 = std::mem::size_of::<lb_common::StickKey>() as u64;
    const VALUE: u64 = std::mem::size_of::<lb_common::StickEntry>() as u64;
    const ELEMENT_HEADER: u64 = 48;
    const BUCKET: u64 = 16;
    const MAP: u64 = 896;
    entries * (ELEMENT_HEADER + KEY + VALUE) + BUCKET * entries.max(1).next_power_of_two() + MAP
}

/// The most entries whose memory stays within `STICK_MEMORY_CAP` (18 302 407).
pub fn stick_max_entries() -> u64 {
    let (mut lo, mut hi) = (0u64, u64::from(u32::MAX));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if stick_memory_bytes(mid) <= STICK_MEMORY_CAP {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

fn stick_memory_reason(entries: u64, total: u64) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    format!(
        "{entries} entries bring the stick tables of all services to {total} entries, which take \
         {:.1} GiB of kernel memory (about {} bytes each: 24 key + 16 value + 48 kernel element \
         header + a 16-byte hash bucket); the cap is {:.0} GiB, at most {} entries in all: lower \
         stick.size (e.g. \"100k\")",
        gib(stick_memory_bytes(total)),
        stick_memory_bytes(total) / total.max(1),
        gib(STICK_MEMORY_CAP),
        stick_max_entries(),
    )
}

/// The stick tables' memory, summed over the services in order: the service that crosses
/// `STICK_MEMORY_CAP` is named.
fn check_stick_memory(services: &[Service], file: &str) -> Result<(), ConfigError> {
    let mut total = 0u64;
    for s in services {
        total += u64::from(s.stick.size);
        if stick_memory_bytes(total) > STICK_MEMORY_CAP {
            let c = Ctx {
                file,
                place: format!("service \"{}\", ", s.name),
            };
            return Err(c.err("stick.size", stick_memory_reason(u64::from(s.stick.size), total)));
        }
    }
    Ok(())
}

fn check_stick_expire(d: Duration) -> Result<(), String> {
    if d.is_zero() || d >= MIN_STICK_EXPIRE {
        return Ok(());
    }
    let refresh = Duration::from_nanos(lb_common::STICK_REFRESH_NS);
    Err(format!(
        "\"{}\" is below the minimum of {}: the data path refreshes an entry at most once per {}, \
         so an active client's entry can look idle for up to {} and would be dropped; use \"{}\" \
         or more (or \"0s\": entries never expire)",
        format_duration(d),
        format_duration(MIN_STICK_EXPIRE),
        format_duration(refresh),
        format_duration(refresh * 2),
        format_duration(MIN_STICK_EXPIRE),
    ))
}

fn check_sweep_interval(d: Duration) -> Result<(), String> {
    if d < SWEEP_INTERVAL_MIN {
        return Err(format!(
            "\"{}\" is below {}: the sweeper would walk the whole stick table nearly all the \
             time; use e.g. \"1s\"",
            format_duration(d),
            format_duration(SWEEP_INTERVAL_MIN)
        ));
    }
    if d > SWEEP_INTERVAL_MAX {
        return Err(format!(
            "\"{}\" is above {}: expired entries would stay in memory and in `show table` that \
             long; use e.g. \"1s\"",
            format_duration(d),
            format_duration(SWEEP_INTERVAL_MAX)
        ));
    }
    Ok(())
}

/// The runtime API's socket: an absolute path (a relative one would depend on the directory
/// the agent was started in, and the CLI would not find it).
fn check_admin_socket(p: &Path) -> Result<(), String> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "{} is a relative path; give an absolute one, e.g. \"/run/xlb/admin.sock\"",
            p.display()
        ))
    }
}

/// `metrics`: "address:port", or a port alone, which listens on 127.0.0.1 only (the endpoint
/// has no authentication; a wildcard address is accepted with a warning when it is opened).
fn metrics_address(m: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = m.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    m.parse()
        .map_err(|_| format!("\"{m}\" is not an address:port or a port, e.g. \"127.0.0.1:9100\" or \"9100\""))
}

/// No service's VIP is one of `own` (the XDP interface's addresses).
pub fn check_vips_are_not_own_addresses(cfg: &Config, own: &[IpAddr]) -> Result<(), ConfigError> {
    match cfg.services.iter().find(|s| own.contains(&s.vip.ip())) {
        Some(s) => Err(ConfigError::VipIsOwnAddress {
            service: s.name.clone(),
            vip: s.vip.ip(),
            interface: cfg.global.interface.clone(),
        }),
        None => Ok(()),
    }
}

/// The IPv4 and IPv6 addresses of interface `name` (empty if it has none or they cannot be read).
pub fn interface_addresses(name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned; freed only after the walk.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name from getifaddrs.
        if unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: `ifa_addr` points to a sockaddr of the family it names.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()));
            }
            libc::AF_INET6 => {
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(a.sin6_addr.s6_addr));
            }
            _ => {}
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
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
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("3 weeks").is_err());
        assert_eq!(size(&Size::Text("1m".into())).unwrap(), 1_000_000);
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(parse_duration("2 s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(
            parse_duration("").is_err() && parse_duration("1.5s").is_err() && parse_duration("-1s").is_err()
        );
        assert!(
            parse_duration("99999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
        for ms in [
            0, 1, 500, 1000, 90_000, 1_800_000, 3_600_000, 86_400_000, 86_401_000,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms} ms");
        }
        assert_eq!(size(&Size::Text("100k".into())).unwrap(), 100_000);
        assert_eq!(size(&Size::Text("42".into())).unwrap(), 42);
        assert!(
            size(&Size::Text("k".into())).is_err() && size(&Size::Text("99999999999999999m".into())).is_err()
        );
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
            err(&with("state = \"drain\"", "check_port = 0"))
                .contains("field \"check_port\": 0 is not a port")
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
            .contains(
                "[global], field \"xdp_mode\": \"offload\" is not a mode; use \"native\" or \"generic\""
            )
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
    fn peer_key_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("xlb-peer-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peer.key");
        let write = |bytes: &[u8], mode: u32| {
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let shown = path.display().to_string();
        write(b"0123456789abcdef0123456789abcdef\n", 0o600);
        let key = read_peer_key("x", &path).unwrap();
        assert_eq!(key.bytes(), b"0123456789abcdef0123456789abcdef");
        assert_eq!(format!("{key:?}"), "PeerKey(32 bytes)");
        write(b"0123456789abcdef0123456789abcdef\n", 0o644);
        let e = read_peer_key("x", &path).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "x: [global], field \"peer_key_file\": {shown} is open to other users (mode 0644)"
            )) && e.contains(&format!("chmod 600 {shown}")),
            "{e}"
        );
        write(b"0123456789abcdef", 0o640);
        let e = read_peer_key("x", &path).unwrap_err().to_string();
        assert!(e.contains("(mode 0640)"), "{e}");
        write(b"0123456789abcde\n", 0o600);
        let e = read_peer_key("x", &path).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "{shown} holds a key of 15 bytes; at least 16 are needed"
            )),
            "{e}"
        );
        let e = read_peer_key("x", &dir.join("absent.key"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot open") && e.contains("head -c 32 /dev/urandom"),
            "{e}"
        );
        // `load` (so `xlb check` and `xlb run`) reads the key file too.
        let config = dir.join("xlb.toml");
        std::fs::write(
            &config,
            format!(
                "[global]\ninterface = \"eth0\"\npeer_key_file = \"{shown}\"\n[[peer]]\nname = \"lb2\"\naddress = \"10.0.0.2:7000\"\n"
            ),
        )
        .unwrap();
        write(b"0123456789abcdef0123456789abcdef\n", 0o604);
        let e = load(&config).unwrap_err().to_string();
        assert!(e.contains("is open to other users (mode 0604)"), "{e}");
        write(b"0123456789abcdef0123456789abcdef\n", 0o400);
        assert_eq!(
            load(&config).unwrap().global.peer_key_file.as_deref(),
            Some(path.as_path())
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
            err(&with("10.0.1.12", "10.0.1.11")).contains(
                "server \"app2\", field \"address\": 10.0.1.11 is already a server of this service"
            )
        );
        assert!(
            err(&with("10.0.1.12", "app2.example"))
                .contains("field \"address\": \"app2.example\" is not an IP address")
        );
        assert!(
            err(&with("10.0.1.12", "127.0.0.1"))
                .contains("field \"address\": 127.0.0.1 is a loopback address")
        );
        assert!(
            err(&with("10.0.1.12", "224.0.0.1"))
                .contains("field \"address\": 224.0.0.1 is a multicast address")
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
    fn stick_memory_matches_the_kernels_accounting() {
        assert_eq!(stick_max_entries(), 18_302_407);
        assert!(stick_memory_bytes(18_302_408) > STICK_MEMORY_CAP);
        // memlock of an LRU hash map (key 24, value 16) in its fdinfo, Linux 6.18.
        assert_eq!(stick_memory_bytes(1_000_000), 104_778_112);
        assert_eq!(stick_memory_bytes(1_048_576), 109_052_800);
        assert_eq!(stick_memory_bytes(100_000), 10_898_048);
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

    #[test]
    fn interface_that_does_not_exist() {
        assert_eq!(
            check_interface("xlbnope0").unwrap_err().to_string(),
            "interface \"xlbnope0\" does not exist (in this network namespace); list them with \"ip link\""
        );
        assert!(check_interface("lo").is_ok());
    }
}
