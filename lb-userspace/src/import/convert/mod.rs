//! The proxies read from haproxy.cfg turned into xlb services: which binds reach which
//! backend, the VIP (a placeholder where haproxy.cfg binds every address), the stickiness,
//! redispatch, the health check and the servers. Every value keeps the lines it came from.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

mod checks;
mod peering;
mod servers;
mod stickiness;

pub(super) use peering::PEER_KEY_FILE;
use peering::{Peering, peering};

use super::{
    address::endpoint,
    haproxy::{At, Haproxy, Kind, Proxy},
    warnings::Warnings,
};

/// What the xlb config will hold.
pub(super) struct Plan {
    pub(super) services: Vec<ServicePlan>,
    pub(super) peering: Option<Peering>,
}

/// A value as TOML text, and comments saying where it came from.
#[derive(Debug, Clone)]
pub(super) struct Value {
    pub(super) toml: String,
    pub(super) from: Vec<String>,
}

pub(super) struct ServicePlan {
    pub(super) name: String,
    /// The sections it came from.
    pub(super) from: String,
    pub(super) vip: Value,
    pub(super) stick: Value,
    pub(super) redispatch: Value,
    pub(super) health: Value,
    pub(super) servers: Vec<ServerPlan>,
}

pub(super) struct ServerPlan {
    pub(super) name: String,
    pub(super) address: IpAddr,
    pub(super) line: usize,
    /// "line N: server …".
    pub(super) from: String,
    pub(super) weight: Option<Value>,
    pub(super) state: Option<Value>,
    pub(super) check_port: Option<Value>,
    /// Passive-health keys of its own (where it differs from its service's), as (key, TOML).
    pub(super) passive: Vec<(&'static str, String)>,
}

/// Services one config may hold (the data path's limit).
const MAX_SERVICES: usize = lb_common::MAX_SERVICES as usize;

/// What the conversion shares between services.
pub(super) struct Context<'a> {
    /// The text of each haproxy.cfg line, for the comments.
    pub(super) texts: HashMap<usize, String>,
    pub(super) warn: &'a mut Warnings,
    /// Placeholder VIPs handed out, per proxy.
    placeholders: HashMap<String, u16>,
    vips: HashSet<SocketAddr>,
    names: HashSet<String>,
    /// Stick entries of the services made so far (`stickiness::DEFAULT_STICK_SIZE` for those
    /// without a size), and of those still to make (at the default size).
    stick_entries: u64,
    stick_reserve: u64,
}

impl Context<'_> {
    /// "line N: TEXT".
    pub(super) fn origin(&self, line: usize) -> String {
        format!(
            "line {line}: {}",
            self.texts.get(&line).map_or("", String::as_str)
        )
    }
}

/// Convert what `read` found.
pub(super) fn convert(
    h: &Haproxy,
    texts: HashMap<usize, String>,
    local_peer: Option<&str>,
    warn: &mut Warnings,
) -> Plan {
    let mut cx = Context {
        texts,
        warn,
        placeholders: HashMap::new(),
        vips: HashSet::new(),
        names: HashSet::new(),
        stick_entries: 0,
        stick_reserve: 0,
    };
    let backends: HashMap<&str, &Proxy> = h
        .proxies
        .iter()
        .filter(|p| matches!(p.kind, Kind::Backend | Kind::Listen))
        .map(|p| (p.name.as_str(), p))
        .collect();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut reached: HashSet<&str> = HashSet::new();
    for fe in h
        .proxies
        .iter()
        .filter(|p| matches!(p.kind, Kind::Frontend | Kind::Listen))
    {
        let Some(be) = backend_of(fe, &backends, &mut cx) else {
            continue;
        };
        if fe.binds.is_empty() {
            if fe.kind == Kind::Frontend {
                cx.warn.at(
                    fe.line,
                    format!("{} has no `bind`: no service made of it", fe.label()),
                );
            }
            continue;
        }
        reached.insert(be.name.as_str());
        wanted.extend(fe.binds.iter().map(|b| Wanted {
            frontend: Some(fe),
            bind: Some(b),
            backend: be,
        }));
    }
    for be in h
        .proxies
        .iter()
        .filter(|p| matches!(p.kind, Kind::Backend | Kind::Listen))
    {
        if reached.contains(be.name.as_str()) || (be.kind == Kind::Listen && be.servers.is_empty()) {
            continue;
        }
        if be.servers.is_empty() {
            cx.warn.at(
                be.line,
                format!(
                    "{} has no servers and no frontend uses it: not converted",
                    be.label()
                ),
            );
            continue;
        }
        wanted.push(Wanted {
            frontend: None,
            bind: None,
            backend: be,
        });
    }
    let mut services = Vec::new();
    let count = wanted.len().min(MAX_SERVICES) as u64;
    for (
        i,
        Wanted {
            frontend: fe,
            bind,
            backend: be,
        },
    ) in wanted.into_iter().enumerate()
    {
        if services.len() == MAX_SERVICES {
            cx.warn.at(
                bind.map_or(be.line, |b| b.line),
                format!("xlb takes at most {MAX_SERVICES} services: this one and the next are not converted"),
            );
            break;
        }
        cx.stick_reserve = count.saturating_sub(i as u64 + 1) * stickiness::DEFAULT_STICK_SIZE;
        if let Some(s) = service(fe, bind, be, &backends, &mut cx) {
            services.push(s);
        }
    }
    let peering = peering(h, local_peer, &mut cx);
    Plan { services, peering }
}

/// A service to make: a backend reached through a bind of a frontend (or through none: a
/// backend no frontend names gets a placeholder VIP).
struct Wanted<'a> {
    frontend: Option<&'a Proxy>,
    bind: Option<&'a At<String>>,
    backend: &'a Proxy,
}

/// The backend a frontend sends its traffic to: itself for a `listen` with servers, else its
/// `default_backend`, else its `use_backend` without a condition, else its first conditional one.
fn backend_of<'a>(fe: &'a Proxy, backends: &HashMap<&str, &'a Proxy>, cx: &mut Context) -> Option<&'a Proxy> {
    if fe.kind == Kind::Listen && !fe.servers.is_empty() {
        return Some(fe);
    }
    let chosen = fe
        .default_backend
        .as_ref()
        .map(|d| (d.value.as_str(), d.line))
        .or_else(|| {
            fe.use_backends
                .iter()
                .find(|u| !u.conditional)
                .map(|u| (u.name.as_str(), u.line))
        })
        .or_else(|| {
            let u = fe.use_backends.first()?;
            cx.warn.at(
                u.line,
                format!(
                    "{} has no default_backend: all its traffic goes to {}, the first `use_backend`",
                    fe.label(),
                    u.name
                ),
            );
            Some((u.name.as_str(), u.line))
        });
    for u in fe.use_backends.iter().filter(|u| u.conditional) {
        if Some(u.name.as_str()) != chosen.map(|c| c.0) {
            cx.warn.at(
                u.line,
                format!(
                    "`{}` routes by a request condition; xlb routes by VIP: backend {} becomes a \
                     service of its own, with its own VIP",
                    cx.texts.get(&u.line).map_or("", String::as_str),
                    u.name
                ),
            );
        }
    }
    let Some((name, line)) = chosen else {
        let what = if fe.kind == Kind::Frontend {
            "names no backend"
        } else {
            "has no servers"
        };
        cx.warn
            .at(fe.line, format!("{} {what}: no service made of it", fe.label()));
        return None;
    };
    let be = backends.get(name).copied();
    if be.is_none() {
        cx.warn.at(
            line,
            format!("no backend named \"{name}\": no service made of it"),
        );
    }
    be
}

/// The service of `be` reached through `bind` of `fe` (or with a placeholder VIP).
fn service(
    fe: Option<&Proxy>,
    bind: Option<&At<String>>,
    be: &Proxy,
    backends: &HashMap<&str, &Proxy>,
    cx: &mut Context,
) -> Option<ServicePlan> {
    let from = match fe {
        Some(fe) if fe.kind == Kind::Frontend => format!("from {} and {}", fe.label(), be.label()),
        _ => format!("from {}", be.label()),
    };
    let family_v6 = be
        .servers
        .iter()
        .find_map(|s| endpoint(&s.address).ok()?.ip)
        .is_some_and(|ip| ip.is_ipv6());
    let vip = vip(fe.unwrap_or(be), bind, be, family_v6, cx)?;
    for p in [fe, Some(be)].into_iter().flatten() {
        if let Some(line) = p.mode_http {
            cx.warn.at(
                line,
                "mode http: xlb balances the TCP connections at L4 and keeps each client on its \
                 server by its source address; the HTTP rules are not carried (each is warned about)",
            );
        }
    }
    let name = service_name(&be.name, vip.0.port(), cx);
    if xlb_name(&be.name, 40) != be.name {
        cx.warn.at(
            be.line,
            format!(
                "{} is named \"{name}\" (xlb's names: 1 to 48 of A-Z a-z 0-9 _ . -)",
                be.label()
            ),
        );
    }
    let (stick, persistent) = stickiness::stick(be, fe, backends, cx);
    let redispatch = stickiness::redispatch(be, persistent, cx);
    let kept = servers::servers(be, vip.0, &name, cx);
    let health = checks::health(be, &kept, cx);
    let servers = kept.into_iter().map(|k| k.into_plan(&health)).collect();
    Some(ServicePlan {
        name,
        from,
        vip: vip.1,
        stick,
        redispatch,
        health: health.value,
        servers,
    })
}

/// The service's VIP, and its value for the file.
fn vip(
    owner: &Proxy,
    bind: Option<&At<String>>,
    be: &Proxy,
    v6: bool,
    cx: &mut Context,
) -> Option<(SocketAddr, Value)> {
    let (ip, port, line) = match bind {
        Some(b) => {
            let e = match endpoint(&b.value) {
                Ok(e) => e,
                Err(why) => {
                    cx.warn.at(b.line, format!("bind {} not carried: {why}", b.value));
                    return None;
                }
            };
            let Some((first, last)) = e.ports else {
                cx.warn
                    .at(b.line, format!("bind {} has no port: not carried", b.value));
                return None;
            };
            if first != last {
                cx.warn.at(
                    b.line,
                    format!(
                        "bind {}: an xlb service takes one port (or every port, with port 0): port {first} \
                         kept; add a service per port you need",
                        b.value
                    ),
                );
            }
            (e.ip, first, Some(b.line))
        }
        None => {
            let port = be
                .servers
                .iter()
                .find_map(|s| endpoint(&s.address).ok()?.ports)
                .map_or(80, |p| p.0);
            (None, port, None)
        }
    };
    let mut from: Vec<String> = line.map(|l| cx.origin(l)).into_iter().collect();
    let addr = match ip {
        Some(ip) => SocketAddr::new(ip, port),
        None => {
            let n = cx.placeholders.len() as u16 + 1;
            let n = *cx.placeholders.entry(owner.name.clone()).or_insert(n);
            let ip = if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n))
            } else {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, n.min(254) as u8))
            };
            let addr = SocketAddr::new(ip, port);
            let why = match line {
                Some(_) => "binds every address".to_string(),
                None => "is not used by any frontend (or only by `use_backend` conditions)".to_string(),
            };
            cx.warn.at(
                line.unwrap_or(be.line),
                format!(
                    "{} {why}; an xlb service needs the VIP its clients connect to: vip = \"{addr}\" is \
                     a placeholder (a documentation address), set the real one",
                    if line.is_some() { owner.label() } else { be.label() },
                ),
            );
            from.push("TODO: a placeholder; set the address clients connect to".into());
            addr
        }
    };
    if !cx.vips.insert(addr) {
        cx.warn.at(
            line.unwrap_or(be.line),
            format!("{addr} is already the VIP of another service: not converted twice"),
        );
        return None;
    }
    Some((
        addr,
        Value {
            toml: quoted(&addr.to_string()),
            from,
        },
    ))
}

/// `be`'s name made an xlb name (A-Z a-z 0-9 _ . -, at most 48), unique: a backend behind
/// several VIPs gets its port appended from the second on.
fn service_name(name: &str, port: u16, cx: &mut Context) -> String {
    let base = xlb_name(name, 40);
    let mut candidate = base.clone();
    let mut n = 1;
    while cx.names.contains(&candidate) {
        candidate = if n == 1 {
            format!("{base}-{port}")
        } else {
            format!("{base}-{port}-{n}")
        };
        n += 1;
    }
    cx.names.insert(candidate.clone());
    candidate
}

/// `name` with what xlb refuses in a name replaced by `_`, at most `max` bytes.
pub(super) fn xlb_name(name: &str, max: usize) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(max);
    if out.is_empty() { "unnamed".into() } else { out }
}

pub(super) fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
