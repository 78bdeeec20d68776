//! The values the data path's maps must hold for a configuration and the servers' states: pure
//! functions, no map touched. The balancer writes what they return; so does the test fixture,
//! which must program the maps exactly as the agent does.

use std::net::{IpAddr, SocketAddr};

use lb_common::{
    BACKEND_DOWN, BACKEND_DRAIN, BACKEND_MAINT, BACKEND_UP, Backend, Encap, FAMILY_V4, FAMILY_V6,
    FORWARD_GUE, FORWARD_IPIP, FORWARD_L2, PROTO_TCP, PROTO_UDP, STICK_NONE, STICK_SRC, STICK_SRC_PORT,
    SVC_F_REDISPATCH, VipKey,
    maglev::{self, MaglevServer},
};

use crate::{
    balancer::egress::Egress,
    config::{AdminState, Forward, Protocol, Stick, StickOn},
    health::Health,
};

/// The state the data path sees (`Backend::state`), admin state and health folded together:
/// maint -> MAINT; health down, or no MAC to send to -> DOWN; drain -> DRAIN; else UP. An
/// encapsulating server needs no MAC of its own (the FIB gives the next hop's): `mac_known`.
pub fn backend_state(admin: AdminState, health: Health, mac_known: bool) -> u8 {
    match (admin, health) {
        (AdminState::Maint, _) => BACKEND_MAINT,
        (_, Health::Down) => BACKEND_DOWN,
        _ if !mac_known => BACKEND_DOWN,
        (AdminState::Drain, _) => BACKEND_DRAIN,
        (AdminState::Ready, _) => BACKEND_UP,
    }
}

/// The value of a server's slot in `MAP_BACKENDS`: where its frames go and whether it takes
/// them. `service`: the id of the service it serves (stick entries of other services ignore it).
pub fn backend(service: u32, state: u8, mac: Option<[u8; 6]>, egress: &Egress) -> Backend {
    Backend {
        mac: mac.unwrap_or([0; 6]),
        state,
        tx_port: egress.tx_port,
        src_mac: egress.src_mac,
        service: service as u16,
        ..Default::default()
    }
}

/// `Backend::forward` for a server's `forward`.
pub fn forward_mode(f: &Forward) -> u8 {
    match f {
        Forward::L2 => FORWARD_L2,
        Forward::Ipip { .. } => FORWARD_IPIP,
        Forward::Gue { .. } => FORWARD_GUE,
    }
}

/// The value of an encapsulating server's slot in `MAP_ENCAP` (None for L2): the server's
/// `address` as the outer destination, the source (with a prefix, its host bits as the mask
/// the flow hash fills: at most the last 32) and the GUE port.
pub fn encap(address: IpAddr, f: &Forward) -> Option<Encap> {
    let (source, port) = match *f {
        Forward::L2 => return None,
        Forward::Ipip { source } => (source, 0),
        Forward::Gue { source, port } => (source, port),
    };
    let bits = if source.addr.is_ipv4() { 32 } else { 128 };
    let host_bits = (bits - source.prefix as u32).min(32);
    Some(Encap {
        dst: lb_common::addr_bytes(address),
        src: lb_common::addr_bytes(source.addr),
        src_hash_mask: if host_bits == 0 {
            0
        } else {
            u32::MAX >> (32 - host_bits)
        },
        gue_port: port.to_be(),
        _pad: 0,
    })
}

/// The value of a service's slot in `MAP_SERVICES` (its Maglev table sizes are the data path's
/// business: `Datapath::install_table` writes them).
pub fn service(stick: &Stick, redispatch: bool) -> lb_common::Service {
    let prefixes = stick.prefixes();
    lb_common::Service {
        expire_ns: stick.expire.as_nanos() as u64,
        stick_mode: match stick.on {
            StickOn::Src => STICK_SRC,
            StickOn::SrcPort => STICK_SRC_PORT,
            StickOn::None => STICK_NONE,
        },
        flags: if redispatch { SVC_F_REDISPATCH } else { 0 },
        enabled: 1,
        v4_mask: prefixes.v4_mask(),
        v6_mask: prefixes.v6_mask(),
        ..Default::default()
    }
}

/// `FAMILY_V4` or `FAMILY_V6`.
pub fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// The key of a service's VIP in `MAP_VIPS`.
pub fn vip_key(vip: SocketAddr, protocol: Protocol) -> VipKey {
    VipKey {
        addr: lb_common::addr_bytes(vip.ip()),
        port: vip.port().to_be(),
        proto: match protocol {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        },
        family: family(vip.ip()),
    }
}

/// A server as its service's Maglev table sees it.
#[derive(Debug, Clone, Copy)]
pub struct TableServer<'a> {
    /// Its name in the service: what its place in the table follows.
    pub name: &'a str,
    /// Its backend id: what its slots hold.
    pub id: u32,
    /// Its `Backend::state`.
    pub state: u8,
    pub weight: u32,
}

/// A service's Maglev table of `size` slots (a prime): the backend id of each slot. Only UP
/// servers with a weight above 0 get slots; a table without any holds `NO_BACKEND` throughout.
pub fn maglev_table(servers: &[TableServer<'_>], size: u32) -> Vec<u32> {
    let servers: Vec<MaglevServer<'_>> = servers
        .iter()
        .map(|s| MaglevServer {
            name: s.name,
            id: s.id,
            weight: if s.state == BACKEND_UP { s.weight } else { 0 },
        })
        .collect();
    maglev::build(&servers, size)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lb_common::{NO_BACKEND, StickPrefixes};

    use super::*;

    #[test]
    fn maint_beats_down_and_down_or_an_unknown_mac_beats_drain() {
        use AdminState::*;
        use Health::*;
        let cases = [
            (Ready, Up, true, BACKEND_UP),
            (Drain, Up, true, BACKEND_DRAIN),
            (Maint, Up, true, BACKEND_MAINT),
            (Ready, Down, true, BACKEND_DOWN),
            (Drain, Down, true, BACKEND_DOWN),
            (Maint, Down, true, BACKEND_MAINT),
            (Ready, Up, false, BACKEND_DOWN),
            (Drain, Up, false, BACKEND_DOWN),
            (Maint, Up, false, BACKEND_MAINT),
        ];
        for (admin, health, mac_known, want) in cases {
            assert_eq!(
                backend_state(admin, health, mac_known),
                want,
                "{admin:?} {health:?} mac known: {mac_known}"
            );
        }
    }

    #[test]
    fn backend_value_carries_service_state_mac_and_egress() {
        let egress = Egress {
            tx_port: 3,
            src_mac: [2, 0, 0, 0, 0, 0xee],
            ifindex: 9,
        };
        let b = backend(7, BACKEND_DRAIN, Some([2, 0, 0, 0, 1, 5]), &egress);
        assert_eq!(
            b,
            Backend {
                mac: [2, 0, 0, 0, 1, 5],
                src_mac: [2, 0, 0, 0, 0, 0xee],
                tx_port: 3,
                state: BACKEND_DRAIN,
                service: 7,
                ..Default::default()
            }
        );
        // XDP_TX, no MAC yet: zeroes, which the data path never sends to (the state is DOWN).
        let b = backend(1, BACKEND_DOWN, None, &Egress::default());
        assert_eq!((b.mac, b.src_mac, b.tx_port), ([0; 6], [0; 6], 0));
        assert!(b.serves(1) && !b.serves(7));
    }

    fn stick(on: StickOn) -> Stick {
        Stick {
            on,
            size: 1000,
            expire: Duration::from_secs(30),
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        }
    }

    #[test]
    fn encap_value_has_the_server_the_source_its_hash_mask_and_the_port_in_network_order() {
        use crate::config::EncapSource;
        let source = |s: &str, prefix| EncapSource {
            addr: s.parse().unwrap(),
            prefix,
        };
        assert_eq!(encap("10.1.0.5".parse().unwrap(), &Forward::L2), None);
        let e = encap(
            "10.1.0.5".parse().unwrap(),
            &Forward::Ipip {
                source: source("192.0.2.1", 32),
            },
        )
        .unwrap();
        assert_eq!(
            (e.dst[..4].to_vec(), e.src[..4].to_vec()),
            (vec![10, 1, 0, 5], vec![192, 0, 2, 1])
        );
        assert_eq!((e.src_hash_mask, e.gue_port), (0, 0));
        let e = encap(
            "10.1.0.5".parse().unwrap(),
            &Forward::Gue {
                source: source("172.16.0.0", 16),
                port: 6080,
            },
        )
        .unwrap();
        assert_eq!(
            (e.src_hash_mask, e.gue_port.to_ne_bytes()),
            (0xffff, [0x17, 0xc0])
        );
        let e = encap(
            "fd00:1::5".parse().unwrap(),
            &Forward::Ipip {
                source: source("fd00:2::", 96),
            },
        )
        .unwrap();
        assert_eq!((e.dst[0], e.dst[15], e.src_hash_mask), (0xfd, 5, u32::MAX));
        assert_eq!(forward_mode(&Forward::L2), FORWARD_L2);
    }

    #[test]
    fn service_value_from_stick_settings() {
        let s = service(&stick(StickOn::Src), true);
        assert_eq!(s.expire_ns, 30_000_000_000);
        assert_eq!(s.stick_mode, STICK_SRC);
        assert_eq!(s.flags, SVC_F_REDISPATCH);
        assert_eq!(s.enabled, 1);
        assert_eq!(s.v4_mask, [255, 255, 255, 0]);
        assert_eq!(s.v6_mask, StickPrefixes { v4: 24, v6: 64 }.v6_mask());
        assert_eq!(s.v6_mask[..9], [255, 255, 255, 255, 255, 255, 255, 255, 0]);
        assert_eq!(
            s.table_size,
            [0, 0],
            "the table sizes are written with the tables"
        );
        assert_eq!(service(&stick(StickOn::SrcPort), true).stick_mode, STICK_SRC_PORT);
        assert_eq!(service(&stick(StickOn::None), true).stick_mode, STICK_NONE);
        assert_eq!(service(&stick(StickOn::Src), false).flags, 0);
        let never = Stick {
            expire: Duration::ZERO,
            ..stick(StickOn::Src)
        };
        assert_eq!(service(&never, true).expire_ns, 0);
    }

    #[test]
    fn vip_key_has_the_port_in_network_order_and_the_family() {
        let k = vip_key("10.0.0.10:80".parse().unwrap(), Protocol::Tcp);
        assert_eq!(k.addr[..4], [10, 0, 0, 10]);
        assert_eq!(k.addr[4..], [0; 12]);
        assert_eq!(k.port.to_ne_bytes(), [0, 80]);
        assert_eq!((k.proto, k.family), (PROTO_TCP, FAMILY_V4));
        let k = vip_key("[fd00::10]:53".parse().unwrap(), Protocol::Udp);
        assert_eq!(k.addr[0], 0xfd);
        assert_eq!(k.addr[15], 0x10);
        assert_eq!(k.port.to_ne_bytes(), [0, 53]);
        assert_eq!((k.proto, k.family), (PROTO_UDP, FAMILY_V6));
    }

    #[test]
    fn only_up_servers_with_weight_get_maglev_slots() {
        let server = |name, id, state, weight| TableServer {
            name,
            id,
            state,
            weight,
        };
        let table = maglev_table(
            &[
                server("app1", 10, BACKEND_UP, 1),
                server("app2", 11, BACKEND_UP, 3),
                server("app3", 12, BACKEND_DRAIN, 1),
                server("app4", 13, BACKEND_DOWN, 1),
                server("app5", 14, BACKEND_MAINT, 1),
                server("app6", 15, BACKEND_UP, 0),
            ],
            7919,
        );
        assert_eq!(table.len(), 7919);
        let count = |id| table.iter().filter(|x| **x == id).count();
        assert_eq!(count(10) + count(11), 7919, "only app1 and app2 hold slots");
        assert!(count(11) > 2 * count(10), "weight 3 against 1");
        assert!(
            maglev_table(&[server("app3", 12, BACKEND_DRAIN, 1)], 7919)
                .iter()
                .all(|x| *x == NO_BACKEND)
        );
        // Exactly Maglev over the UP servers with their weights.
        let direct = maglev::build(
            &[
                MaglevServer {
                    name: "app1",
                    id: 10,
                    weight: 1,
                },
                MaglevServer {
                    name: "app2",
                    id: 11,
                    weight: 3,
                },
            ],
            7919,
        );
        assert_eq!(table, direct);
    }
}
