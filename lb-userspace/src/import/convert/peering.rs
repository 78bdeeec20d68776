//! A `peers` section turned into xlb's stick-table replication: this instance's
//! `peer_listen`, the other instances as `[[peer]]`, and the key file every peer must share
//! (haproxy.cfg has none: the output says how to make it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{Context, Value, quoted, xlb_name};
use crate::import::{
    address::endpoint,
    haproxy::{Haproxy, PeerMember, Peers},
};

/// Where the key file goes, as the README and examples/xlb.toml make it.
pub(in crate::import) const PEER_KEY_FILE: &str = "/etc/xlb/peer.key";

/// Replication settings for `[global]` and the `[[peer]]` list.
pub(in crate::import) struct Peering {
    /// "from peers NAME (line N)".
    pub(in crate::import) from: String,
    pub(in crate::import) listen: Option<Value>,
    pub(in crate::import) peers: Vec<PeerPlan>,
}

pub(in crate::import) struct PeerPlan {
    pub(in crate::import) name: String,
    pub(in crate::import) address: SocketAddr,
    /// "line N: peer …".
    pub(in crate::import) from: String,
}

/// The replication of the `peers` section the stick tables name (one: xlb replicates all
/// its tables with one set of peers). `local` names this instance when `global` has no
/// `localpeer` (HAProxy's default: the host name).
pub(in crate::import) fn peering(h: &Haproxy, local: Option<&str>, cx: &mut Context) -> Option<Peering> {
    let referenced: Vec<&str> = h
        .proxies
        .iter()
        .filter_map(|p| p.stick_table.as_ref()?.value.peers.as_deref())
        .collect();
    for p in &h.proxies {
        if let Some(t) = &p.stick_table
            && let Some(name) = &t.value.peers
            && !h.peers.iter().any(|s| &s.name == name)
        {
            cx.warn.at(
                t.line,
                format!(
                    "stick-table … peers {name}: there is no peers section {name}, so nothing is \
                     replicated (xlb's tables survive reloads and restarts anyway: they are pinned)"
                ),
            );
        }
    }
    let mut chosen: Option<&Peers> = None;
    for p in &h.peers {
        if !referenced.contains(&p.name.as_str()) {
            cx.warn.at(
                p.line,
                format!("peers {}: no stick-table uses it; not carried", p.name),
            );
        } else if let Some(c) = chosen {
            cx.warn.at(
                p.line,
                format!(
                    "peers {}: xlb replicates all its tables with one set of peers; only peers {} (line {}) \
                     is carried",
                    p.name, c.name, c.line
                ),
            );
        } else {
            chosen = Some(p);
        }
    }
    let p = chosen?;
    let local_name = h.localpeer.as_ref().map(|l| l.value.as_str()).or(local);
    let is_local = |m: &PeerMember| m.address.is_none() || Some(m.name.as_str()) == local_name;
    let me = p.members.iter().find(|m| is_local(m));
    let mut peers: Vec<PeerPlan> = Vec::new();
    for m in p.members.iter().filter(|m| !is_local(m)) {
        let text = m.address.as_deref().unwrap_or_default();
        let address = match endpoint(text) {
            Ok(e) => match (e.ip, e.ports) {
                (Some(ip), Some((port, _))) => SocketAddr::new(ip, port),
                _ => {
                    cx.warn.at(
                        m.line,
                        format!(
                            "peer {} not carried: {text} is not an address with a port",
                            m.name
                        ),
                    );
                    continue;
                }
            },
            Err(why) => {
                cx.warn.at(m.line, format!("peer {} not carried: {why}", m.name));
                continue;
            }
        };
        if peers.iter().any(|o| o.address.ip() == address.ip()) {
            cx.warn.at(
                m.line,
                format!(
                    "peer {} not carried: another peer has the address {}; xlb tells peers apart by address",
                    m.name,
                    address.ip()
                ),
            );
            continue;
        }
        if peers.len() == crate::config::MAX_PEERS {
            cx.warn.at(
                m.line,
                format!(
                    "xlb takes at most {} peers: peer {} and the next are not carried",
                    crate::config::MAX_PEERS,
                    m.name
                ),
            );
            break;
        }
        let mut name = xlb_name(&m.name, 48);
        if peers.iter().any(|o| o.name == name) {
            name = xlb_name(&format!("{name}-{}", m.line), 48);
        }
        peers.push(PeerPlan {
            name,
            address,
            from: cx.origin(m.line),
        });
    }
    if peers.is_empty() {
        cx.warn.at(
            p.line,
            format!(
                "peers {}: no other instance is listed, so it only keeps the tables across reloads: not \
                 needed, xlb's stick tables are pinned and survive reloads and restarts",
                p.name
            ),
        );
        return None;
    }
    let listen = match me {
        Some(m) => {
            let text = m.address.as_ref().or(p.bind.as_ref().map(|b| &b.value));
            let line = if m.address.is_some() {
                m.line
            } else {
                p.bind.as_ref().map_or(m.line, |b| b.line)
            };
            match text.map(|t| endpoint(t)) {
                Some(Ok(e)) if e.ports.is_some() => {
                    let ip = e.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                    let addr = SocketAddr::new(ip, e.ports.unwrap_or_default().0);
                    Some(Value {
                        toml: quoted(&addr.to_string()),
                        from: vec![format!("{}: {} is this instance", cx.origin(line), m.name)],
                    })
                }
                _ => {
                    cx.warn.at(
                        line,
                        format!(
                            "peer {} is this instance but has no address:port to listen on; set peer_listen",
                            m.name
                        ),
                    );
                    None
                }
            }
        }
        None => {
            let why = match local_name {
                Some(n) => format!("none is named {n}, this instance's name"),
                None => "no `localpeer` in global names this instance".to_string(),
            };
            cx.warn.at(
                p.line,
                format!(
                    "peers {}: {why}; every peer is listed: remove this instance's own [[peer]] and set \
                     peer_listen to its address (or import with --local-peer NAME)",
                    p.name
                ),
            );
            None
        }
    };
    cx.warn.at(
        p.line,
        format!(
            "peers {}: xlb instances replicate with xlb's own authenticated protocol (not HAProxy's), so \
             every peer runs xlb with the same services, and they share a key: make {PEER_KEY_FILE} as the \
             TODO in the output says (`xlb check` refuses the config until it exists)",
            p.name
        ),
    );
    Some(Peering {
        from: format!("from peers {} (line {})", p.name, p.line),
        listen,
        peers,
    })
}
