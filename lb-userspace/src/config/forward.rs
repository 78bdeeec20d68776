//! How each server is reached: `forward = "l2" | "ipip" | "gue"` (on the server, else its
//! service's, else "l2"), the GUE port (`gue_port`, on the server or its service) and the outer
//! source (`encap_source`, on the service or in `[global]`, one per family).
//!
//! `encap_source` is an address of the balancer ("192.0.2.1"), or a prefix ("172.16.0.0/16")
//! from which each flow's outer source is drawn: its host bits (at most the last 32) carry the
//! flow's entropy hash, as Katran does, so a backend's NIC that hashes only the outer header
//! still spreads the flows over its queues (RSS). A prefix must be routed back to the balancer
//! if ICMP errors about the outer packets are to arrive; a backend needs no route to it (it
//! answers the client directly).

use std::net::IpAddr;

use super::{ConfigError, EncapSource, Forward, error::Place};

/// A service's defaults for its servers.
pub(super) struct Defaults {
    forward: Option<String>,
    gue_port: Option<u16>,
    /// The outer source for the service's family: the service's own, else `[global]`'s.
    source: Option<EncapSource>,
}

/// `[global] encap_source`: at most one address or prefix per family.
pub(super) fn global_sources(raw: Vec<String>, g: &Place) -> Result<Vec<EncapSource>, ConfigError> {
    let mut out: Vec<EncapSource> = Vec::new();
    for s in raw {
        let src = source(&s).map_err(|e| g.err("encap_source", e))?;
        if out.iter().any(|o| o.addr.is_ipv4() == src.addr.is_ipv4()) {
            return Err(g.err(
                "encap_source",
                format!("two {} sources; give at most one per family", family(src.addr)),
            ));
        }
        out.push(src);
    }
    Ok(out)
}

/// The defaults of a service whose VIP is `vip`.
pub(super) fn defaults(
    forward: Option<String>,
    gue_port: Option<u16>,
    encap_source: Option<String>,
    global: &[EncapSource],
    vip: IpAddr,
    c: &Place,
) -> Result<Defaults, ConfigError> {
    if gue_port == Some(0) {
        return Err(c.err("gue_port", "0 is not a port"));
    }
    if let Some(f) = &forward {
        mode(f).map_err(|e| c.err("forward", e))?;
    }
    let source = match encap_source {
        Some(s) => {
            let src = source(&s).map_err(|e| c.err("encap_source", e))?;
            if src.addr.is_ipv4() != vip.is_ipv4() {
                return Err(c.err(
                    "encap_source",
                    format!(
                        "{} is {} but the service VIP {vip} is {}; the outer header is of the VIP's \
                         family, so give an {} source",
                        src.addr,
                        family(src.addr),
                        family(vip),
                        family(vip)
                    ),
                ));
            }
            Some(src)
        }
        None => global.iter().copied().find(|g| g.addr.is_ipv4() == vip.is_ipv4()),
    };
    Ok(Defaults {
        forward,
        gue_port,
        source,
    })
}

/// How the server at `sc` is reached: its own `forward`/`gue_port` over its service's
/// `defaults`. `mac` and `interface`: whether it sets those (L2 settings only).
pub(super) fn server(
    forward: Option<String>,
    gue_port: Option<u16>,
    defaults: &Defaults,
    mac: bool,
    interface: bool,
    sc: &Place,
) -> Result<Forward, ConfigError> {
    if gue_port == Some(0) {
        return Err(sc.err("gue_port", "0 is not a port"));
    }
    let (field, name) = match (&forward, &defaults.forward) {
        (Some(f), _) => ("forward", f.as_str()),
        (None, Some(f)) => ("forward (the service's)", f.as_str()),
        (None, None) => ("forward", "l2"),
    };
    let m = mode(name).map_err(|e| sc.err(field, e))?;
    if m == Mode::L2 {
        if gue_port.is_some() {
            return Err(sc.err("gue_port", "applies to forward = \"gue\" only"));
        }
        return Ok(Forward::L2);
    }
    for (set, key) in [(mac, "mac"), (interface, "interface")] {
        if set {
            return Err(sc.err(
                key,
                format!(
                    "applies to forward = \"l2\" only; this server is forwarded by \"{name}\" through \
                     the kernel's routes (remove {key})"
                ),
            ));
        }
    }
    let source = defaults.source.ok_or_else(|| {
        sc.err(
            field,
            format!(
                "\"{name}\" needs an encap_source of the service's family (an address of this \
                 balancer, or a prefix routed to it): set encap_source in the service or in \
                 [global]"
            ),
        )
    })?;
    Ok(match m {
        Mode::Ipip => Forward::Ipip { source },
        _ => Forward::Gue {
            source,
            port: gue_port.or(defaults.gue_port).ok_or_else(|| {
                sc.err(
                    "gue_port",
                    "forward = \"gue\" needs the backend's GUE (UDP) port: set gue_port here or in \
                     the service",
                )
            })?,
        },
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    L2,
    Ipip,
    Gue,
}

fn mode(s: &str) -> Result<Mode, String> {
    match s {
        "l2" => Ok(Mode::L2),
        "ipip" => Ok(Mode::Ipip),
        "gue" => Ok(Mode::Gue),
        o => Err(format!(
            "\"{o}\" is not a forwarding mode; use \"l2\", \"ipip\" or \"gue\""
        )),
    }
}

/// "address" or "address/prefix" (IPv6: a prefix of 96 or longer, so only the last 32 bits
/// vary).
fn source(s: &str) -> Result<EncapSource, String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| {
        format!("\"{s}\" is not an address or prefix; write \"192.0.2.1\" or \"172.16.0.0/16\"")
    })?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let min = if addr.is_ipv4() { 0 } else { 96 };
    let prefix = match p {
        None => bits,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if (min..=bits).contains(&n) => n,
            _ => {
                return Err(format!(
                    "\"{s}\": the prefix length must be {min} to {bits} (the hash fills at most the \
                     last 32 bits)"
                ));
            }
        },
    };
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err(format!(
            "{addr} cannot be a packet's source; use an address of this balancer"
        ));
    }
    Ok(EncapSource { addr, prefix })
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

#[cfg(test)]
mod tests {
    use crate::config::{EncapSource, Forward, parse, tests::OK};

    #[test]
    fn servers_take_their_own_mode_else_the_services_with_the_source_of_their_family() {
        let t = OK
            .replace(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nencap_source = [\"192.0.2.1\", \"2001:db8::1\"]",
            )
            .replace(
                "name = \"be_app\"",
                "name = \"be_app\"\nforward = \"gue\"\ngue_port = 6080\nencap_source = \"172.16.0.0/16\"",
            )
            .replace("name = \"app1\"", "name = \"app1\"\nforward = \"ipip\"")
            .replace("mac = \"02:00:00:00:01:12\"\n", "gue_port = 6081\n");
        let c = parse(&t, "x").unwrap();
        let src: EncapSource = EncapSource {
            addr: "172.16.0.0".parse().unwrap(),
            prefix: 16,
        };
        let s = &c.services[0].servers;
        assert_eq!(s[0].forward, Forward::Ipip { source: src });
        assert_eq!(
            s[1].forward,
            Forward::Gue {
                source: src,
                port: 6081
            }
        );
        assert_eq!(c.global.encap_source.len(), 2);
        // Without the service's own source, [global]'s of the VIP's family; l2 by default.
        let t = OK
            .replace(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nencap_source = [\"2001:db8::1\", \"192.0.2.1\"]",
            )
            .replace("name = \"app1\"", "name = \"app1\"\nforward = \"ipip\"");
        let c = parse(&t, "x").unwrap();
        let s = &c.services[0].servers;
        let own = EncapSource {
            addr: "192.0.2.1".parse().unwrap(),
            prefix: 32,
        };
        assert_eq!(
            (s[0].forward, s[1].forward),
            (Forward::Ipip { source: own }, Forward::L2)
        );
    }
}
