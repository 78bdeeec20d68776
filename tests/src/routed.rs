//! A network namespace in which the data path's FIB lookups have known answers, for
//! BPF_PROG_TEST_RUN of encapsulating backends (BPF_PROG_TEST_RUN runs in the caller's network
//! namespace: run the program from a thread inside this one, `netns::run_in`).
//!
//! One veth pair, both ends here: `WIRE` (the balancer's interface: `WIRE_MAC`, 10.200.0.1/24,
//! fd00:200::1/64) and its peer. The next hop 10.200.0.2 / fd00:200::2 has a permanent
//! neighbour entry (`NEXT_HOP_MAC`). Forwarding is on (the FIB lookup is the forwarding kind).
//! Routes, each through that next hop:
//! - `ROUTED4` 10.201.0.0/24 and `ROUTED6` fd00:201::/64: plain;
//! - `SMALL_MTU4` 10.202.0.0/24 (`mtu 1300`) and `SMALL_MTU6` fd00:202::/64 (`mtu 1400`);
//! - `NO_NEIGH4` 10.204.0.0/24 through 10.200.0.4, which has no neighbour entry;
//! - and none at all for `UNROUTED4` 10.203.0.0/24 / `UNROUTED6` fd00:203::/64.
//!
//! The namespace is removed when the value is dropped (a panic too).

use anyhow::Result;

use crate::{names, netns};

pub const WIRE: &str = "wire0";
const PEER: &str = "wire1";
pub const WIRE_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 1];
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 2];
pub const ROUTED4: [u8; 3] = [10, 201, 0];
pub const SMALL_MTU4: [u8; 3] = [10, 202, 0];
pub const UNROUTED4: [u8; 3] = [10, 203, 0];
pub const NO_NEIGH4: [u8; 3] = [10, 204, 0];
pub const MTU4: usize = 1300;
pub const MTU6: usize = 1400;

/// Host `n` of one of the IPv4 /24s above.
pub fn host4(net: [u8; 3], n: u8) -> [u8; 4] {
    [net[0], net[1], net[2], n]
}

/// Host `n` of fd00:`net`::/64 (201 routed, 202 small MTU, 203 unrouted).
pub fn host6(net: u16, n: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[2..4].copy_from_slice(&net.to_be_bytes());
    a[15] = n;
    a
}

pub struct RoutedNs {
    ns: String,
    /// `WIRE`'s interface index (in the namespace).
    pub wire_ifindex: u32,
}

impl RoutedNs {
    pub fn new(test_name: &str) -> Result<RoutedNs> {
        let ns = names::ns_name(&names::new_stem(test_name), "fib");
        netns::ip(&["netns", "add", &ns])?;
        let mut r = RoutedNs { ns, wire_ifindex: 0 };
        let mac = crate::topology::mac_str(&WIRE_MAC);
        let hop = crate::topology::mac_str(&NEXT_HOP_MAC);
        netns::ip_batch(
            &r.ns,
            &[
                "link set lo up".into(),
                format!("link add {WIRE} address {mac} type veth peer name {PEER}"),
                format!("link set {WIRE} up"),
                format!("link set {PEER} up"),
                format!("addr add 10.200.0.1/24 dev {WIRE}"),
                format!("addr add fd00:200::1/64 dev {WIRE} nodad"),
                format!("neigh add 10.200.0.2 lladdr {hop} dev {WIRE} nud permanent"),
                format!("neigh add fd00:200::2 lladdr {hop} dev {WIRE} nud permanent"),
                "route add 10.201.0.0/24 via 10.200.0.2".into(),
                format!("route add 10.202.0.0/24 via 10.200.0.2 mtu lock {MTU4}"),
                "route add 10.204.0.0/24 via 10.200.0.4".into(),
                "route add fd00:201::/64 via fd00:200::2".into(),
                format!("route add fd00:202::/64 via fd00:200::2 mtu lock {MTU6}"),
            ],
        )?;
        netns::sysctl(
            &r.ns,
            &[
                ("net.ipv4.conf.all.forwarding", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
            ],
        )?;
        let link = netns::exec(&r.ns, &["cat", &format!("/sys/class/net/{WIRE}/ifindex")])?;
        r.wire_ifindex = link.trim().parse()?;
        Ok(r)
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }
}

impl Drop for RoutedNs {
    fn drop(&mut self) {
        let _ = netns::ip(&["netns", "del", &self.ns]);
    }
}
