//! Addresses as haproxy.cfg writes them on `bind`, `server` and `peer` lines: `ADDR:PORT`,
//! `[V6]:PORT`, `V6:PORT` (the last colon separates the port), `*:PORT` and `:PORT` (every
//! address), an optional `ipv4@`/`ipv6@`/`tcp@` prefix, and port ranges.

use std::net::IpAddr;

/// An address with its port(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// None: every address (`*`, empty, `0.0.0.0`, `::`).
    pub(super) ip: Option<IpAddr>,
    /// First and last port (equal unless a range); None: no port written.
    pub(super) ports: Option<(u16, u16)>,
}

/// Read `text`, or say why xlb cannot use it.
pub(super) fn endpoint(text: &str) -> Result<Endpoint, String> {
    let mut s = text;
    if let Some((family, rest)) = s.split_once('@') {
        match family {
            "ipv4" | "ipv6" | "tcp" | "tcp4" | "tcp6" => s = rest,
            "quic4" | "quic6" | "udp" | "udp4" | "udp6" => {
                return Err(format!(
                    "{family}@ is a UDP listener (QUIC); write an xlb service with protocol = \"udp\" by hand"
                ));
            }
            _ => {
                return Err(format!(
                    "{family}@ is not an IP socket; xlb balances IP addresses"
                ));
            }
        }
    }
    if s.starts_with('/') {
        return Err("a UNIX socket path; xlb balances IP addresses".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("an unclosed [")?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            // An IPv6 address without a port ("2001:db8::1"): its tail is not a port.
            Some((h, _))
                if h.parse::<IpAddr>().is_err() && !matches!(h, "" | "*") && s.parse::<IpAddr>().is_ok() =>
            {
                (s, None)
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let ip = match host {
        "" | "*" => None,
        h => match h.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => None,
            Ok(ip) => Some(ip),
            Err(_) => return Err(format!("\"{h}\" is a host name; xlb needs an IP address")),
        },
    };
    let ports = match port {
        None | Some("") => None,
        Some(p) => {
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(a) || !digits(b) {
                return Err(format!(
                    "\"{p}\" is not a port (relative ports such as +1 are not carried)"
                ));
            }
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) if a > 0 && a <= b => Some((a, b)),
                _ => {
                    return Err(format!(
                        "\"{p}\" is not a port (relative ports such as +1 are not carried)"
                    ));
                }
            }
        }
    };
    Ok(Endpoint { ip, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Option<String>, Option<(u16, u16)>) {
        let e = endpoint(s).unwrap();
        (e.ip.map(|i| i.to_string()), e.ports)
    }

    #[test]
    fn haproxy_addresses() {
        assert_eq!(ok("10.0.0.1:80"), (Some("10.0.0.1".into()), Some((80, 80))));
        assert_eq!(ok("*:443"), (None, Some((443, 443))));
        assert_eq!(ok(":8080"), (None, Some((8080, 8080))));
        assert_eq!(ok(":::80"), (None, Some((80, 80))));
        assert_eq!(ok("[::]:80"), (None, Some((80, 80))));
        assert_eq!(ok("0.0.0.0:80"), (None, Some((80, 80))));
        assert_eq!(ok("2001:db8::1:80"), (Some("2001:db8::1".into()), Some((80, 80))));
        assert_eq!(
            ok("[2001:db8::1]:80"),
            (Some("2001:db8::1".into()), Some((80, 80)))
        );
        assert_eq!(ok("2001:db8::1"), (Some("2001:db8::1".into()), None));
        assert_eq!(
            ok("ipv4@10.0.0.1:6000-6010"),
            (Some("10.0.0.1".into()), Some((6000, 6010)))
        );
        assert_eq!(ok("10.0.1.11"), (Some("10.0.1.11".into()), None));
        assert!(endpoint("app1.example.com:80").unwrap_err().contains("host name"));
        assert!(
            endpoint("unix@/run/app.sock")
                .unwrap_err()
                .contains("not an IP socket")
        );
        assert!(endpoint("/run/app.sock").unwrap_err().contains("UNIX"));
        assert!(endpoint("10.0.0.1:+1").unwrap_err().contains("relative"));
    }
}
