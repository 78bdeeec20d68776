//! Checks against the host the agent runs on, not made by `xlb check` (which may run
//! elsewhere): the interfaces the config names exist, no VIP is the XDP interface's own
//! address, every "l2" server is on a network of the interface it is reached by, and
//! encapsulated servers have forwarding on the XDP interface for their family.

use std::{collections::HashMap, net::IpAddr};

use super::{Config, ConfigError};
use crate::net::link::{self, LinkError};

/// Every interface the config names exists in this network namespace, and no VIP is an
/// address of the XDP interface.
pub fn check_interfaces(cfg: &Config) -> Result<(), ConfigError> {
    check_interface(&cfg.global.interface)?;
    check_vips_are_not_own_addresses(cfg, &link::addresses(&cfg.global.interface)?)?;
    check_forwarding(cfg, |key| {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::read_to_string(&path)
            .map(|v| v.trim() == "1")
            .map_err(|e| format!("{path}: {e}"))
    })?;
    for s in &cfg.services {
        for v in &s.servers {
            if let Some(i) = &v.interface {
                check_interface(i).map_err(|e| match e {
                    ConfigError::Link(LinkError::NoInterface { .. }) => ConfigError::NoServerInterface {
                        service: s.name.clone(),
                        server: v.name.clone(),
                        interface: i.clone(),
                    },
                    e => e,
                })?;
            }
        }
    }
    let mut networks = HashMap::new();
    check_segments(cfg, |iface| {
        if !networks.contains_key(iface) {
            networks.insert(iface.to_string(), link::networks(iface)?);
        }
        Ok(networks[iface].clone())
    })?;
    Ok(())
}

/// Every encapsulated server's family has forwarding on the XDP interface (`on` reads a
/// sysctl by its dotted name): `bpf_fib_lookup` answers nothing else. A sysctl that cannot be
/// read (a sandbox that hides /proc/sys) is warned about, not refused: the data path then
/// counts what the FIB does not answer (`encap_fib_miss`).
pub fn check_forwarding(cfg: &Config, on: impl Fn(&str) -> Result<bool, String>) -> Result<(), ConfigError> {
    let iface = &cfg.global.interface;
    for s in &cfg.services {
        let family = if s.vip.is_ipv4() { "ipv4" } else { "ipv6" };
        let sysctl = format!("net.{family}.conf.{iface}.forwarding");
        let Some(v) = s.servers.iter().find(|v| v.forward != super::Forward::L2) else {
            continue;
        };
        match on(&sysctl) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ConfigError::ForwardingOff {
                    service: s.name.clone(),
                    server: v.name.clone(),
                    sysctl,
                });
            }
            Err(e) => log::warn!(
                "service {:?}, server {:?}: cannot read {sysctl} ({e}); an encapsulated server needs it \
                 set to 1 (encap_fib_miss in show info counts what the FIB does not answer)",
                s.name,
                v.name
            ),
        }
    }
    Ok(())
}

/// Every "l2" server's address is on one of the networks (`networks` of an interface: its
/// addresses with their prefix lengths) of the interface it is reached by (its own `interface`,
/// else the XDP interface): its MAC is resolved, and its frames sent, on that segment only.
pub fn check_segments(
    cfg: &Config,
    mut networks: impl FnMut(&str) -> Result<Vec<(IpAddr, u8)>, ConfigError>,
) -> Result<(), ConfigError> {
    for s in &cfg.services {
        for v in s.servers.iter().filter(|v| v.forward == super::Forward::L2) {
            let iface = v.interface.as_deref().unwrap_or(&cfg.global.interface);
            let nets = networks(iface)?;
            if nets.iter().any(|(net, len)| on_network(v.address, *net, *len)) {
                continue;
            }
            let shown: Vec<String> = nets.iter().map(|(a, l)| format!("{a}/{l}")).collect();
            let shown = if shown.is_empty() {
                "no address".into()
            } else {
                shown.join(", ")
            };
            return Err(ConfigError::NotOnSegment {
                service: s.name.clone(),
                server: v.name.clone(),
                address: v.address,
                interface: format!("\"{iface}\" ({shown})"),
            });
        }
    }
    Ok(())
}

/// Whether `ip` is on the network of `net`/`len` (same family, same first `len` bits).
fn on_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let bits = |a: &[u8]| a.iter().fold(0u128, |acc, b| acc << 8 | u128::from(*b));
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (bits(&a.octets()), bits(&b.octets()), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (bits(&a.octets()), bits(&b.octets()), 128),
        _ => return false,
    };
    let len = u32::from(len).min(width);
    len == 0 || (a ^ b) >> (width - len) == 0
}

/// The interface's index, or an error saying how to find the right name.
pub fn check_interface(name: &str) -> Result<u32, ConfigError> {
    Ok(link::lookup(name)?.index)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        parse,
        tests::{OK, with},
    };

    #[test]
    fn an_l2_server_must_be_on_a_network_of_its_interface() {
        let c = parse(OK, "x").unwrap();
        let addrs: Vec<IpAddr> = c.services[0].servers.iter().map(|v| v.address).collect();
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        // The servers' own /24 (whatever OK holds, the first server's network).
        let IpAddr::V4(first) = addrs[0] else {
            panic!("{addrs:?}")
        };
        let o = first.octets();
        let own = IpAddr::from([o[0], o[1], o[2], 250]);
        check_segments(&c, |_| Ok(vec![(v4("fd00::1"), 64), (own, 24)])).unwrap();
        let err = check_segments(&c, |_| Ok(vec![(v4("192.0.2.10"), 24)])).unwrap_err();
        let server = &c.services[0].servers[0];
        assert_eq!(
            err.to_string(),
            format!(
                "service \"{}\", server \"{}\", field \"address\": {} is on none of the networks of \
                 \"eth0\" (192.0.2.10/24), and an \"l2\" server is reached by its MAC on that \
                 interface's segment; for a server a route away set forward = \"ipip\" or \"gue\" (and \
                 run xlb decap on it), or name the interface it is on (`interface`)",
                c.services[0].name, server.name, server.address
            )
        );
        assert!(
            check_segments(&c, |_| Ok(vec![]))
                .unwrap_err()
                .to_string()
                .contains("(no address)")
        );
    }

    #[test]
    fn on_network_compares_the_prefix_bits() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(on_network(ip("10.0.1.7"), ip("10.0.1.1"), 24));
        assert!(!on_network(ip("10.0.2.7"), ip("10.0.1.1"), 24));
        assert!(on_network(ip("10.0.2.7"), ip("10.0.1.1"), 22));
        assert!(!on_network(ip("10.0.1.7"), ip("10.0.1.1"), 32));
        assert!(on_network(ip("10.0.1.1"), ip("10.0.1.1"), 32));
        assert!(on_network(ip("8.8.8.8"), ip("10.0.1.1"), 0));
        assert!(on_network(ip("fd00::9"), ip("fd00::1"), 64));
        assert!(!on_network(ip("fd01::9"), ip("fd00::1"), 64));
        assert!(!on_network(ip("10.0.1.7"), ip("fd00::1"), 0), "another family");
    }

    #[test]
    fn interface_that_does_not_exist() {
        assert_eq!(
            check_interface("xlbnope0").unwrap_err().to_string(),
            "interface \"xlbnope0\" does not exist (in this network namespace); list them with \"ip link\""
        );
        assert!(check_interface("lo").is_ok());
    }

    /// A server's interface that does not exist here: refused where the agent runs, not by
    /// `parse`.
    #[test]
    fn server_interface_that_does_not_exist() {
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
        // Every interface exists now; the servers are on none of lo's networks.
        assert!(
            matches!(
                check_interfaces(&cfg),
                Err(ConfigError::NotOnSegment { ref interface, .. }) if interface.starts_with("\"lo\" (")
            ),
            "{:?}",
            check_interfaces(&cfg)
        );
    }

    #[test]
    fn encapsulated_servers_need_forwarding_on_the_xdp_interface() {
        let t = OK
            .replace(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nencap_source = [\"192.0.2.1\"]",
            )
            .replace("name = \"app1\"", "name = \"app1\"\nforward = \"ipip\"");
        let c = parse(&t, "x").unwrap();
        assert_eq!(
            check_forwarding(&c, |_| Ok(false)).unwrap_err().to_string(),
            "service \"be_app\", server \"app1\", field \"forward\": an encapsulated server's next hop \
             comes from the kernel's FIB, which answers only with forwarding on the XDP interface; run \
             sysctl -w net.ipv4.conf.eth0.forwarding=1 (or make the server \"l2\")"
        );
        check_forwarding(&c, |k| Ok(k == "net.ipv4.conf.eth0.forwarding")).unwrap();
        // Unreadable (a sandbox hides /proc/sys): a warning, not a refusal.
        check_forwarding(&c, |_| Err("No such file or directory".into())).unwrap();
        // Only L2 servers: nothing asked.
        check_forwarding(&parse(OK, "x").unwrap(), |_| Ok(false)).unwrap();
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
        assert!(
            link::addresses("lo")
                .unwrap()
                .contains(&IpAddr::from([127, 0, 0, 1]))
        );
    }
}
