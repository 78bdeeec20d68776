//! Backend MAC addresses from the kernel's neighbour table (ARP for IPv4, NDP for IPv6).
//!
//! When an address has no entry yet, a datagram to its discard port makes the kernel resolve it;
//! we then look again, a bounded number of times.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

/// The neighbour table's MAC for `addr`, resolving it first when needed (up to `wait`).
pub fn resolve(addr: IpAddr, wait: Duration) -> Option<[u8; 6]> {
    if let Some(mac) = lookup(addr) {
        return Some(mac);
    }
    let probe = UdpSocket::bind(match addr {
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    })
    .ok();
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while waited < wait {
        if let Some(s) = &probe {
            let _ = s.send_to(b"", SocketAddr::new(addr, 9));
        }
        std::thread::sleep(step);
        waited += step;
        if let Some(mac) = lookup(addr) {
            return Some(mac);
        }
    }
    None
}

/// The current neighbour entry of `addr`, if it is complete.
pub fn lookup(addr: IpAddr) -> Option<[u8; 6]> {
    // `ip neigh` reads the table over netlink for both families; its output is stable:
    // "10.0.0.2 dev eth0 lladdr 02:00:00:00:00:02 REACHABLE".
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let out = Command::new("ip")
        .args([family, "neigh", "show", &addr.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        if line.contains("FAILED") || line.contains("INCOMPLETE") {
            continue;
        }
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().and_then(parse_mac);
            }
        }
    }
    None
}

/// "02:00:00:00:00:01" -> bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("02:77:00:0a:ff:01").unwrap();
        assert_eq!(m, [2, 0x77, 0, 10, 255, 1]);
        assert_eq!(format_mac(&m), "02:77:00:0a:ff:01");
        assert!(parse_mac("02:77:00").is_none());
        assert!(parse_mac("02:77:00:0a:ff:01:02").is_none());
        assert!(parse_mac("zz:77:00:0a:ff:01").is_none());
    }
}
