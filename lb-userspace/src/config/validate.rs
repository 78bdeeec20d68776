//! The file as a whole, from its serde shapes to the typed `Config`: `[global]`, the
//! `[[peer]]` list, the limits of the data path's maps, and what must be unique across
//! services. One `[[service]]` is `service`'s job.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::{MAX_BACKENDS, MAX_SERVICES, MAX_TX_PORTS};

use super::{
    Announce, Config, ConfigError, DEFAULT_ADMIN_SOCKET, DEFAULT_BPFFS_DIR, DEFAULT_MAX_NEW_ENTRIES_PER_CPU,
    DEFAULT_WARMUP, Global, MAX_PEERS, Peer, Protocol, WARMUP_MAX, XdpMode,
    error::Place,
    limits::{check_stick_memory, check_sweep_interval},
    peer_key::check_peer_key_setting,
    raw::{RawAnnounce, RawConfig, RawGlobal, RawPeer},
    service::{not_unicast, service, valid_name},
};

/// The validated config of `raw`, read from `file`.
pub(super) fn config(raw: RawConfig, file: &str) -> Result<Config, ConfigError> {
    let global = global(raw.global, raw.peer, file)?;
    let announce = raw.announce.map(|a| announce(a, file)).transpose()?;

    // Limits of the data path's maps: not a [global] key, so no place.
    let top = Place::top(file);
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
    let mut names: HashSet<String> = HashSet::new();
    let mut vips: HashMap<(SocketAddr, Protocol), String> = HashMap::new();
    for rs in raw.service {
        let s = service(rs, file, &global.interface, &global.encap_source)?;
        let c = Place::service(file, &s.name);
        if !names.insert(s.name.clone()) {
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
    check_stick_memory(&services, file)?;
    let interfaces: BTreeSet<&str> = services
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
    Ok(Config {
        global,
        services,
        announce,
    })
}

/// `[global]`, with the `[[peer]]` list it holds in the typed config.
fn global(raw: RawGlobal, peer: Vec<RawPeer>, file: &str) -> Result<Global, ConfigError> {
    let g = Place::global(file);
    let global = Global {
        interface: match raw.interface {
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
            .admin_socket
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET)),
        xdp_mode: match raw.xdp_mode.as_deref() {
            None | Some("native") => XdpMode::Native,
            Some("generic") => XdpMode::Generic,
            Some(o) => {
                return Err(g.err(
                    "xdp_mode",
                    format!("\"{o}\" is not a mode; use \"native\" or \"generic\""),
                ));
            }
        },
        bpffs_dir: raw.bpffs_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_BPFFS_DIR)),
        metrics: match raw.metrics {
            None => None,
            Some(m) => Some(metrics_address(&m).map_err(|e| g.err("metrics", e))?),
        },
        max_new_entries_per_cpu: match &raw.max_new_entries_per_cpu {
            None => DEFAULT_MAX_NEW_ENTRIES_PER_CPU,
            Some(n) => n.count().map_err(|e| g.err("max_new_entries_per_cpu", e))?,
        },
        sweep_interval: match &raw.sweep_interval {
            None => Duration::from_secs(1),
            Some(d) => {
                let d = d.duration().map_err(|e| g.err("sweep_interval", e))?;
                check_sweep_interval(d).map_err(|e| g.err("sweep_interval", e))?;
                d
            }
        },
        peer_listen: match raw.peer_listen {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| {
                g.err(
                    "peer_listen",
                    format!("\"{a}\" is not an address:port, e.g. \"10.0.0.1:7000\""),
                )
            })?),
        },
        peers: peers(peer, file)?,
        peer_key_file: raw.peer_key_file,
        encap_source: super::forward::global_sources(raw.encap_source, &g)?,
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
                "{} must be an absolute path under a bpffs mount, e.g. {DEFAULT_BPFFS_DIR}",
                global.bpffs_dir.display()
            ),
        ));
    }
    Ok(global)
}

/// Routing tables the kernel reserves: unspec (0), default (253), main (254), local (255).
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

/// `[announce]`.
fn announce(raw: RawAnnounce, file: &str) -> Result<Announce, ConfigError> {
    let a = Place::announce(file);
    let table = raw.table.ok_or_else(|| {
        a.err(
            "table",
            "missing; name the kernel routing table of the VIP routes (the one BIRD's kernel \
             protocol learns), e.g. table = 200",
        )
    })?;
    if RESERVED_TABLES.contains(&table) {
        return Err(a.err(
            "table",
            format!(
                "{table} is reserved by the kernel (0 unspec, 253 default, 254 main, 255 local); \
                 give the VIP routes a table of their own, e.g. 200"
            ),
        ));
    }
    let warmup = match &raw.warmup {
        None => DEFAULT_WARMUP,
        Some(d) => d.duration().map_err(|e| a.err("warmup", e))?,
    };
    if warmup > WARMUP_MAX {
        return Err(a.err(
            "warmup",
            format!(
                "{} is longer than {}: a restarted balancer would stay out of the fleet that long",
                super::format_duration(warmup),
                super::format_duration(WARMUP_MAX)
            ),
        ));
    }
    Ok(Announce { table, warmup })
}

fn peers(raw: Vec<RawPeer>, file: &str) -> Result<Vec<Peer>, ConfigError> {
    if raw.len() > MAX_PEERS {
        return Err(Place::top(file).err(
            "peer",
            format!(
                "{} [[peer]] entries; at most {MAX_PEERS} are supported",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<Peer> = Vec::new();
    for r in raw {
        let c = Place::peer(file, &r.name);
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

/// The runtime API's socket: an absolute path (a relative one would depend on the directory
/// the agent was started in, and the CLI would not find it).
fn check_admin_socket(p: &Path) -> Result<(), String> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "{} is a relative path; give an absolute one, e.g. \"{DEFAULT_ADMIN_SOCKET}\"",
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
