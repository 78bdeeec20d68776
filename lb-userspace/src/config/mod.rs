//! The TOML config: strict parsing (unknown keys are errors), HAProxy's defaults, and
//! validation whose every error names the file, the service/server, the field, and what would
//! be right. `xlb check -c FILE` is `load` and nothing else.
//!
//! This file holds the typed config and the two entry points, `load` and `parse`. The rest:
//! `raw` (the file's serde shapes), `units` (durations and counts as written), `validate` (the
//! file as a whole, `[global]` and `[[peer]]`), `service` (one `[[service]]` with its stick
//! table, health check and servers), `forward` (how each server is reached: L2, IPIP, GUE),
//! `limits` (values that parse but would hurt), `peer_key`
//! (the replication key file), `interfaces` (checks against the host the agent runs on) and
//! `error` (`ConfigError`, and where in the file an error is).

mod error;
mod forward;
mod interfaces;
mod limits;
mod observe;
mod peer_key;
mod raw;
mod service;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

pub use error::ConfigError;
pub use interfaces::{check_interface, check_interfaces, check_vips_are_not_own_addresses};
pub use limits::{
    MIN_STICK_EXPIRE, STICK_MEMORY_CAP, SWEEP_INTERVAL_MAX, SWEEP_INTERVAL_MIN, stick_max_entries,
    stick_memory_bytes,
};
pub use observe::{DEFAULT_ERROR_LIMIT, Observe, OnError};
pub use peer_key::{PEER_KEY_MAX, PEER_KEY_MIN, PeerKey, read_peer_key};
pub use units::{format_duration, parse_duration};

/// Where the runtime API listens when `admin_socket` is not set.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/xlb/admin.sock";

/// Where the maps and links are pinned when `bpffs_dir` is not set.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/xlb";

// --- the validated config ------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub services: Vec<Service>,
    /// `[announce]`: None = the agent announces nothing and touches no route.
    pub announce: Option<Announce>,
}

/// `[announce]`: the agent keeps a route per announced VIP in a kernel routing table, which
/// the operator's BIRD exports by BGP (see `agent::announcer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// The kernel routing table of the VIP routes.
    pub table: u32,
    /// After a start, how long the agent waits for its peers' full teach before it announces
    /// anyway.
    pub warmup: Duration,
}

/// `[announce] warmup` when not set.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(10);

/// Longest `[announce] warmup` accepted.
pub const WARMUP_MAX: Duration = Duration::from_secs(3600);

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
    /// The outer source of encapsulated packets, at most one per family (a service may set
    /// its own).
    pub encap_source: Vec<EncapSource>,
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
    /// Passive health and the check intervals it drives (its own keys, else the service's).
    pub observe: Observe,
    /// L2 direct server return, or encapsulated (`config::forward`).
    pub forward: Forward,
}

/// How a server's packets reach it (`forward` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// On a connected segment: the frame's MACs rewritten, the IP packet untouched.
    L2,
    /// IP in IP (IPv4 in IPv4, IPv6 in IPv6), next hop from the kernel's routes.
    Ipip { source: EncapSource },
    /// The same inside UDP to `port` with a GUE header.
    Gue { source: EncapSource, port: u16 },
}

/// `encap_source`: an address of the balancer (`prefix` = the whole address), or a prefix
/// whose host bits carry each flow's entropy hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapSource {
    pub addr: IpAddr,
    pub prefix: u8,
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

// --- loading ----------------------------------------------------------------------------------

/// Read, parse and validate the config file at `path`, and read the peer key file it names (so
/// `xlb check` finds a missing or open key before `xlb run` does).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let cfg = parse(&text, &file)?;
    if let Some(key) = &cfg.global.peer_key_file {
        read_peer_key(&file, key)?;
    }
    Ok(cfg)
}

/// Parse and validate config `text`; `origin` names it in errors (the file's path).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::syntax(origin, text, &e))?;
    validate::config(raw, origin)
}
