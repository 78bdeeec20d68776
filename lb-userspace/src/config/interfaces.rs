//! Checks against the host the agent runs on, not made by `xlb check` (which may run
//! elsewhere): the interfaces the config names exist, no VIP is the XDP interface's own
//! address, and encapsulated servers have forwarding on the XDP interface for their family.

use std::net::IpAddr;

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
        check_interfaces(&cfg).unwrap();
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
