//! How a client address becomes a `StickKey`, and back: what the agent needs to find, write,
//! filter and show the entries the data path keys on (`xlb where`, `clear table ... key`, peer
//! updates). The data path masks the same way, byte by byte with `Service::v4_mask`/`v6_mask`,
//! which the agent builds from the same [`StickPrefixes`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{FAMILY_V4, FAMILY_V6, StickKey};

/// A client address as the maps store it: 16 bytes, IPv4 in the first 4 (the rest zero).
pub fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&v.octets());
            o
        }
        IpAddr::V6(v) => v.octets(),
    }
}

/// `FAMILY_V4` or `FAMILY_V6`.
pub fn family_of(a: IpAddr) -> u8 {
    if a.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// The prefix lengths a service keys its clients on (`stick.ipv4_prefix`, `stick.ipv6_prefix`):
/// clients of one prefix share an entry. A length longer than the address counts as the whole
/// address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StickPrefixes {
    pub v4: u8,
    pub v6: u8,
}

impl StickPrefixes {
    /// `Service::v4_mask`: the IPv4 prefix as bytes in network order (/20 = ff ff f0 00).
    pub fn v4_mask(&self) -> [u8; 4] {
        prefix_mask(self.v4)
    }

    /// `Service::v6_mask`.
    pub fn v6_mask(&self) -> [u8; 16] {
        prefix_mask(self.v6)
    }
}

/// The first `prefix` bits set, as bytes in network order.
fn prefix_mask<const N: usize>(prefix: u8) -> [u8; N] {
    let mut m = [0u8; N];
    for (i, b) in m.iter_mut().enumerate() {
        let bits = (prefix as usize).saturating_sub(8 * i).min(8);
        *b = (0xffu16 << (8 - bits)) as u8;
    }
    m
}

impl StickKey {
    /// The key the data path files `client` under in service `service`: the address masked
    /// with the service's prefixes, in the address's family. `port` is the client's source
    /// port in network order for `src-port` services, else 0.
    pub fn for_client(client: IpAddr, service: u16, port: u16, prefixes: StickPrefixes) -> Self {
        let mut addr = addr_bytes(client);
        match client {
            IpAddr::V4(_) => {
                for (a, m) in addr.iter_mut().zip(prefixes.v4_mask()) {
                    *a &= m;
                }
            }
            IpAddr::V6(_) => {
                for (a, m) in addr.iter_mut().zip(prefixes.v6_mask()) {
                    *a &= m;
                }
            }
        }
        StickKey::new(addr, service, port, family_of(client))
    }

    /// The key's (masked) client address, for display and for peers.
    pub fn client_addr(&self) -> IpAddr {
        if self.family == FAMILY_V4 {
            let a = self.addr;
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHOLE: StickPrefixes = StickPrefixes { v4: 32, v6: 128 };

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    #[test]
    fn prefix_masks_are_network_order_bytes() {
        let p = StickPrefixes { v4: 20, v6: 0 };
        assert_eq!(p.v4_mask(), [0xff, 0xff, 0xf0, 0x00]);
        assert_eq!(p.v6_mask(), [0; 16]);
        assert_eq!(WHOLE.v4_mask(), [0xff; 4]);
        assert_eq!(WHOLE.v6_mask(), [0xff; 16]);
        let p = StickPrefixes { v4: 0, v6: 57 };
        assert_eq!(p.v4_mask(), [0; 4]);
        let mut want = [0u8; 16];
        want[..7].fill(0xff);
        want[7] = 0x80;
        assert_eq!(p.v6_mask(), want);
    }

    /// Every prefix length masks exactly as shifting the address as an integer does.
    #[test]
    fn for_client_masks_like_an_integer_prefix() {
        let a4 = Ipv4Addr::new(10, 77, 203, 171);
        let a6 = Ipv6Addr::new(0xfd77, 0x1234, 0x5678, 0x9abc, 0xdef0, 0x1357, 0x2468, 0xace1);
        for p in 0..=32u8 {
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            let k = StickKey::for_client(IpAddr::V4(a4), 3, 0, StickPrefixes { v4: p, v6: 0 });
            assert_eq!(
                k.client_addr(),
                IpAddr::V4(Ipv4Addr::from(u32::from(a4) & m)),
                "/{p}"
            );
            assert_eq!(k.addr[4..], [0; 12]);
        }
        for p in 0..=128u8 {
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            let k = StickKey::for_client(IpAddr::V6(a6), 3, 0, StickPrefixes { v4: 0, v6: p });
            assert_eq!(
                k.client_addr(),
                IpAddr::V6(Ipv6Addr::from(u128::from(a6) & m)),
                "/{p}"
            );
        }
    }

    #[test]
    fn for_client_keeps_service_port_and_family() {
        let k = StickKey::for_client(v4([10, 77, 0, 3]), 7, 8080u16.to_be(), WHOLE);
        assert_eq!(
            k,
            StickKey::new(
                [10, 77, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                7,
                8080u16.to_be(),
                FAMILY_V4
            )
        );
        let a6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 5));
        let k = StickKey::for_client(a6, 2, 0, WHOLE);
        assert_eq!(k.family, FAMILY_V6);
        assert_eq!(k.client_addr(), a6);
    }

    #[test]
    fn clients_of_one_prefix_share_a_key() {
        let p = StickPrefixes { v4: 24, v6: 64 };
        let a = StickKey::for_client(v4([10, 77, 0, 3]), 1, 0, p);
        let b = StickKey::for_client(v4([10, 77, 0, 200]), 1, 0, p);
        let c = StickKey::for_client(v4([10, 77, 1, 3]), 1, 0, p);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.client_addr(), v4([10, 77, 0, 0]));
    }

    #[test]
    fn addr_bytes_puts_ipv4_first() {
        assert_eq!(
            addr_bytes(v4([192, 0, 2, 1])),
            [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(family_of(v4([192, 0, 2, 1])), FAMILY_V4);
    }
}
