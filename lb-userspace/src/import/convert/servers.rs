//! A backend's `server` lines made xlb servers: the address (of the VIP's family, unique),
//! a valid name, weight, state, and the port the checks go to.

use std::net::SocketAddr;

use super::{Context, ServerPlan, Value, checks::HealthPlan, quoted, xlb_name};
use crate::import::{
    address::{Endpoint, endpoint},
    haproxy::Proxy,
};

/// Bytes of `service/server` (the data path's name slot).
const NAME_SLOT: usize = std::mem::size_of::<lb_common::NameSlot>();

/// A server kept for the service.
pub(super) struct Kept {
    pub(super) plan: ServerPlan,
    /// Where its checks go when not to the VIP's port (its `port`, or the port it listens on
    /// in haproxy.cfg), and the line that says so.
    check_port: Option<(u16, usize)>,
    /// It has `check` in haproxy.cfg.
    pub(super) checked: bool,
}

impl Kept {
    /// The server's plan, with its check port when the service checks its servers.
    pub(super) fn into_plan(self, health: &HealthPlan) -> ServerPlan {
        let mut plan = self.plan;
        if let Some((_, own)) = health.overrides.iter().find(|(line, _)| *line == plan.line) {
            plan.passive = own.clone();
        }
        if health.checks
            && let Some((port, line)) = self.check_port
        {
            plan.check_port = Some(Value {
                toml: port.to_string(),
                from: vec![format!("line {line}")],
            });
        }
        plan
    }
}

/// The servers of `be` that xlb can take, for the service `service` at `vip`.
pub(super) fn servers(be: &Proxy, vip: SocketAddr, service: &str, cx: &mut Context) -> Vec<Kept> {
    let mut out: Vec<Kept> = Vec::new();
    for s in &be.servers {
        let line = s.line;
        let (ip, ports) = match endpoint(&s.address) {
            Ok(Endpoint { ip: Some(ip), ports }) => (ip, ports),
            Ok(_) => {
                cx.warn.at(
                    line,
                    format!(
                        "server {} not carried: {} is every address, not a server's",
                        s.name, s.address
                    ),
                );
                continue;
            }
            Err(e) => {
                cx.warn.at(line, format!("server {} not carried: {e}", s.name));
                continue;
            }
        };
        let why = if ip.is_ipv4() != vip.is_ipv4() {
            Some(format!(
                "{ip} is not of the VIP's family ({vip}); xlb forwards within one family"
            ))
        } else if ip.is_loopback() || ip.is_multicast() {
            Some(format!(
                "{ip} is not a unicast address reachable through the interface"
            ))
        } else if out.iter().any(|o| o.plan.address == ip) {
            Some(format!(
                "{ip} is already a server of this service; xlb tells servers apart by address"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            cx.warn.at(line, format!("server {} not carried: {why}", s.name));
            continue;
        }
        let room = NAME_SLOT.saturating_sub(service.len() + 2).min(48);
        let mut name = xlb_name(&s.name, room);
        let mut n = 2;
        while out.iter().any(|o| o.plan.name == name) {
            name = format!("{}-{n}", xlb_name(&s.name, room.saturating_sub(4)));
            n += 1;
        }
        if name != s.name {
            cx.warn.at(
                line,
                format!(
                    "server \"{}\" is named \"{name}\" (xlb's names: 1 to 48 of A-Z a-z 0-9 _ . -, unique)",
                    s.name
                ),
            );
        }
        let p = &s.params;
        if let Some(w) = p.weight.as_ref().filter(|w| w.value > 256) {
            cx.warn.at(
                w.line,
                format!(
                    "weight {}: xlb's weights go from 0 to 256 (HAProxy's range); 256 kept",
                    w.value
                ),
            );
        }
        let mut weight = p.weight.as_ref().map(|w| Value {
            toml: w.value.min(256).to_string(),
            from: vec![format!("line {}", w.line)],
        });
        if let Some(b) = p.backup {
            cx.warn.at(
                b,
                format!(
                    "server {} is a backup: xlb has no backup servers; it gets weight = 0 (checked, but \
                     given no clients): `xlb set server {service}/{name} weight 1` puts it in service",
                    s.name
                ),
            );
            weight = Some(Value {
                toml: "0".into(),
                from: vec![format!("line {b}: backup")],
            });
        }
        let state = p.disabled.map(|d| Value {
            toml: quoted("maint"),
            from: vec![format!("line {d}: disabled")],
        });
        let port = ports.map(|p| p.0);
        if let Some(port) = port.filter(|p| *p != vip.port()) {
            cx.warn.at(
                line,
                format!(
                    "server {} listens on port {port}, but xlb hands it the clients' packets unchanged \
                     (direct server return), addressed to {vip}: it must accept port {} on the VIP \
                     (its checks still go to {port})",
                    s.name,
                    vip.port()
                ),
            );
        }
        let check_port = p
            .port
            .as_ref()
            .map(|c| (c.value, c.line))
            .or(port.filter(|p| *p != vip.port()).map(|p| (p, line)));
        out.push(Kept {
            plan: ServerPlan {
                name,
                address: ip,
                line,
                from: cx.origin(line),
                weight,
                state,
                check_port: None,
                passive: Vec::new(),
            },
            check_port,
            checked: p.check.is_some(),
        });
    }
    out
}
