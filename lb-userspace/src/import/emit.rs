//! The plan written as xlb's TOML, in the order and style of examples/xlb.toml: `[global]`,
//! then each `[[service]]` with its `[[service.server]]`s, then the `[[peer]]`s; above each
//! value, comments saying which haproxy.cfg lines it came from, and TODOs where xlb needs
//! what haproxy.cfg does not say.

use std::fmt::Write as _;

use super::convert::{PEER_KEY_FILE, Plan, Value, quoted};

/// The interface written when haproxy.cfg does not say (it never does): a TODO to change.
pub(super) const PLACEHOLDER_INTERFACE: &str = "eth0";

pub(super) fn emit(plan: &Plan, file: &str) -> String {
    let mut out = String::new();
    let o = &mut out;
    line(o, &format!("# xlb config imported by `xlb import` from {file}"));
    line(
        o,
        "# Check it with `xlb check -c FILE`. What haproxy.cfg holds that xlb does not carry was",
    );
    line(o, "# printed as warnings, line by line.");
    line(
        o,
        "# xlb forwards packets at L4 by direct server return: each server holds its service's VIP",
    );
    line(o, "# on its loopback interface and answers the clients itself.");
    line(o, "");
    line(o, "[global]");
    line(
        o,
        "# TODO: the interface the clients' traffic arrives on (haproxy.cfg does not say); set it.",
    );
    key(o, "interface", &quoted(PLACEHOLDER_INTERFACE));
    if let Some(p) = &plan.peering {
        line(o, &format!("# stick-table replication {}", p.from));
        if let Some(listen) = &p.listen {
            value(o, "peer_listen", listen);
        }
        line(
            o,
            "# TODO: make the key the peers share, once, and copy it to every peer:",
        );
        line(
            o,
            &format!("#   head -c 32 /dev/urandom | base64 > {PEER_KEY_FILE} && chmod 600 {PEER_KEY_FILE}"),
        );
        key(o, "peer_key_file", &quoted(PEER_KEY_FILE));
    }
    for s in &plan.services {
        line(o, "");
        line(o, &format!("# {}", s.from));
        line(o, "[[service]]");
        key(o, "name", &quoted(&s.name));
        value(o, "vip", &s.vip);
        key(o, "protocol", &quoted("tcp"));
        value(o, "stick", &s.stick);
        value(o, "redispatch", &s.redispatch);
        value(o, "health", &s.health);
        for v in &s.servers {
            line(o, "");
            line(o, &format!("# {}", v.from));
            line(o, "[[service.server]]");
            key(o, "name", &quoted(&v.name));
            key(o, "address", &quoted(&v.address.to_string()));
            for (k, val) in [
                ("weight", &v.weight),
                ("state", &v.state),
                ("check_port", &v.check_port),
            ] {
                if let Some(val) = val {
                    // The server's own line says where it came from already.
                    let own = format!("line {}", v.line);
                    let from: Vec<String> = val.from.iter().filter(|f| **f != own).cloned().collect();
                    value(
                        o,
                        k,
                        &Value {
                            toml: val.toml.clone(),
                            from,
                        },
                    );
                }
            }
            if !v.passive.is_empty() {
                line(
                    o,
                    "# its own passive health (the service's is its first checked server's)",
                );
            }
            for (k, toml) in &v.passive {
                key(o, k, toml);
            }
        }
    }
    if let Some(p) = &plan.peering {
        line(o, "");
        line(
            o,
            &format!("# The other instances sharing the stick tables, {}.", p.from),
        );
        for peer in &p.peers {
            line(o, &format!("# {}", peer.from));
            line(o, "[[peer]]");
            key(o, "name", &quoted(&peer.name));
            key(o, "address", &quoted(&peer.address.to_string()));
        }
    }
    out
}

fn line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

fn key(out: &mut String, key: &str, toml: &str) {
    let _ = writeln!(out, "{key} = {toml}");
}

fn value(out: &mut String, k: &str, v: &Value) {
    for f in &v.from {
        line(out, &format!("# {}", f.replace(|c: char| c.is_control(), " ")));
    }
    key(out, k, &v.toml);
}
