//! Addresses and routes of a topology's hosts: forwarding, VIPs on `lo` (the backend's side of
//! DSR), routes to VIPs and prefixes, the client and spoof pools (see the address plan in the
//! parent module).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};

use super::{CLIENT_POOL4, CLIENT_POOL6, HOST_IF, HostId, SPOOF_POOL4, SPOOF_POOL6, Topology};

impl Topology {
    /// Turns IP forwarding on (IPv4 and IPv6) in the host's namespace.
    pub fn enable_forwarding(&self, id: HostId) -> Result<()> {
        self.sysctl(
            id,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
            ],
        )
    }

    /// A backend's side of DSR: `vip` on `lo` (/32, or /128 nodad) and ARP kept quiet about it
    /// (`arp_ignore=1`, `arp_announce=2`), so only routing brings the VIP's traffic here.
    pub fn add_vip_on_lo(&self, id: HostId, vip: IpAddr) -> Result<()> {
        self.sysctl(
            id,
            &[
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
            ],
        )?;
        let line = match vip {
            IpAddr::V4(a) => format!("addr replace {a}/32 dev lo"),
            IpAddr::V6(a) => format!("addr replace {a}/128 dev lo nodad"),
        };
        self.ip_batch(id, &[line])
    }

    /// In `client`'s namespace: route `vip` (/32 or /128) via `via`'s primary address.
    pub fn route_vip_via(&self, client: HostId, vip: IpAddr, via: HostId) -> Result<()> {
        let len = if vip.is_ipv4() { 32 } else { 128 };
        let gw = self.host(via).addr_like(vip);
        self.ip_batch(client, &[format!("route replace {vip}/{len} via {gw}")])
    }

    /// In every host except `via` (also hosts added later): route `prefix/len` via `via`'s
    /// primary address. `prefix` must lie inside 10.77.0.0/16 or fd77::/16.
    pub fn route_prefix_via(&mut self, prefix: IpAddr, len: u8, via: HostId) -> Result<()> {
        let inside = match prefix {
            IpAddr::V4(a) => a.octets()[..2] == [10, 77] && (16..=32).contains(&len),
            IpAddr::V6(a) => a.segments()[0] == 0xfd77 && (16..=128).contains(&len),
        };
        if !inside {
            bail!("{prefix}/{len} is outside the harness's ranges (10.77.0.0/16, fd77::/16)");
        }
        let gw = self.host(via).addr_like(prefix);
        for (i, _) in self.hosts.iter().enumerate().filter(|(i, _)| *i != via.0) {
            self.ip_batch(HostId(i), &[format!("route replace {prefix}/{len} via {gw}")])?;
        }
        self.routes.push((prefix, len, via));
        Ok(())
    }

    /// Client-side tuning for many short connections: `tcp_tw_reuse=1`,
    /// `ip_local_port_range="1024 65535"`, `arp_announce=2` (ARP from the primary address).
    pub fn tune_client(&self, id: HostId) -> Result<()> {
        self.sysctl(
            id,
            &[
                ("net.ipv4.tcp_tw_reuse", "1"),
                ("net.ipv4.ip_local_port_range", "1024 65535"),
                ("net.ipv4.conf.all.arp_announce", "2"),
            ],
        )
    }

    /// The first `v4_count` addresses of the IPv4 client pool (10.77.16.1, ...), then the first
    /// `v6_count` of the IPv6 one (fd77:1::1, ...).
    pub fn client_pool(v4_count: usize, v6_count: usize) -> Result<Vec<IpAddr>> {
        if v4_count > 4094 || v6_count > 65535 {
            bail!("client pools hold 4094 IPv4 and 65535 IPv6 addresses");
        }
        let base4 = u32::from(CLIENT_POOL4.0);
        let base6 = u128::from(CLIENT_POOL6.0);
        let mut addrs: Vec<IpAddr> = Vec::with_capacity(v4_count + v6_count);
        addrs.extend((0..v4_count as u32).map(|i| IpAddr::V4(Ipv4Addr::from(base4 + 1 + i))));
        addrs.extend((0..v6_count as u128).map(|i| IpAddr::V6(Ipv6Addr::from(base6 + 1 + i))));
        Ok(addrs)
    }

    /// Gives host `id` the extra addresses `addrs` on `eth0`, as /32 and /128 nodad.
    pub fn add_addrs(&self, id: HostId, addrs: &[IpAddr]) -> Result<()> {
        let lines: Vec<String> = addrs
            .iter()
            .map(|a| match a {
                IpAddr::V4(a) => format!("addr replace {a}/32 dev {HOST_IF}"),
                IpAddr::V6(a) => format!("addr replace {a}/128 dev {HOST_IF} nodad"),
            })
            .collect();
        self.ip_batch(id, &lines)
    }

    /// Gives `client` `v4_count` extra IPv4 addresses from 10.77.16.0/20 (10.77.16.1, ...) and
    /// `v6_count` IPv6 addresses from fd77:1::/64 (fd77:1::1, ...), as /32 and /128 nodad on
    /// `eth0`; routes both pools via the client in every other host (also hosts added later),
    /// so backends can answer them directly (DSR); applies [`Topology::tune_client`]. Returns
    /// the IPv4 addresses, then the IPv6 ones.
    pub fn add_client_addrs(
        &mut self,
        client: HostId,
        v4_count: usize,
        v6_count: usize,
    ) -> Result<Vec<IpAddr>> {
        let addrs = Self::client_pool(v4_count, v6_count)?;
        self.add_addrs(client, &addrs)?;
        self.tune_client(client)?;
        if !self
            .routes
            .iter()
            .any(|r| r.0 == IpAddr::V4(CLIENT_POOL4.0) && r.2 == client)
        {
            self.route_prefix_via(CLIENT_POOL4.0.into(), CLIENT_POOL4.1, client)?;
            self.route_prefix_via(CLIENT_POOL6.0.into(), CLIENT_POOL6.1, client)?;
        }
        Ok(addrs)
    }

    /// Routes the spoof pools (10.77.64.0/18, fd77:2::/64) to `client` in every other host, so
    /// that replies to spoofed sources stay inside the harness (the client drops them).
    pub fn route_spoof_pool(&mut self, client: HostId) -> Result<()> {
        self.route_prefix_via(SPOOF_POOL4.0.into(), SPOOF_POOL4.1, client)?;
        self.route_prefix_via(SPOOF_POOL6.0.into(), SPOOF_POOL6.1, client)
    }

    /// Makes the IPv4 spoof pool (10.77.64.0/18) addresses of `host` (one `local` route on `lo`:
    /// every address of the pool is the host's own) and routes both pools to it from every
    /// other host. Replies to spoofed sources then reach a kernel that owns those addresses and
    /// answers what it never asked for, a backend's SYN-ACK, with an RST to the VIP, as the real
    /// owners of spoofed addresses do. Nothing leaves the harness.
    pub fn own_spoof_pool(&mut self, host: HostId) -> Result<()> {
        let (prefix, len) = SPOOF_POOL4;
        self.ip_batch(host, &[format!("route replace local {prefix}/{len} dev lo")])?;
        self.route_spoof_pool(host)
    }
}
