//! Backends a route away (issue 13): a router host on the bridge and backends linked to it,
//! each in a subnet of its own, reached by the balancer through IPIP or GUE (`forward` in the
//! config) and running `xlb decap`. [`crate::lbenv::LbEnv`] builds it when `Opts::routed` or
//! `Opts::forward` ask:
//!
//! ```text
//!   client ──┐                    ┌── be1  10.77.100.2  fd77:64::2   (routed)
//!   lb ──────┼── br0 ── router ───┤
//!   be3 ─────┘  10.77.0.0/24      └── be2  10.77.101.2  fd77:65::2   (routed)
//! ```
//!
//! The LB and the client route each routed backend's address (/32, /128) via the router; the
//! backends route 10.77.0.0/16 and fd77::/16 back via the router (`Topology::add_linked_host`).
//! The LB forwards (its encapsulation asks the FIB the forwarding kind of question). Every
//! backend holds the VIPs on `lo` and, when a server encapsulates, runs `xlb decap` on `eth0`,
//! started through the real CLI; its pins are removed when the environment is dropped.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use xlb::datapath::decap::Hook;

use crate::{
    HostId, Topology,
    encap::{gue, ipip},
    lbenv::{Forward, Opts, xlb_bin},
    packet::Frame,
    topology::{HOST_IF, VIP4, VIP6},
};

/// The balancer's GUE port in these environments (and the one `xlb decap` strips).
pub const GUE_PORT: u16 = 6080;

/// The router, on the bridge, when there are `routed` backends to put behind it.
pub fn add_router(topo: &mut Topology, routed: usize) -> Result<Option<HostId>> {
    if routed == 0 {
        return Ok(None);
    }
    Ok(Some(topo.add_host("router")?))
}

/// `n` backends behind `router` (roles be1..ben, router-side links rb1..rbn), routed from the
/// LB and the client.
pub fn add_routed_backends(topo: &mut Topology, lb: HostId, router: HostId, n: usize) -> Result<Vec<HostId>> {
    let client = topo.by_role("client").context("the client comes first")?;
    let (gw4, gw6) = (topo.host(router).ipv4, topo.host(router).ipv6);
    let mut ids = Vec::new();
    for i in 0..n {
        let id = topo.add_linked_host(&format!("be{}", i + 1), router, &format!("rb{}", i + 1))?;
        let (a4, a6) = (topo.host(id).ipv4, topo.host(id).ipv6);
        let routes = [
            format!("route replace {a4}/32 via {gw4}"),
            format!("route replace {a6}/128 via {gw6}"),
        ];
        topo.ip_batch(lb, &routes)?;
        topo.ip_batch(client, &routes)?;
        ids.push(id);
    }
    Ok(ids)
}

/// When any server encapsulates: forwarding on in the LB, its addresses as the outer source
/// (unless `opts.encap_source` names others), and `xlb decap attach` on every backend (VIP4
/// and VIP6, GUE on [`GUE_PORT`], at `opts.decap_hook`). Returns where each pinned.
pub fn prepare_encap(
    topo: &Topology,
    lb: HostId,
    backends: &[HostId],
    opts: &mut Opts,
) -> Result<Vec<PathBuf>> {
    if opts.forward.iter().all(|f| *f == Forward::L2) {
        return Ok(Vec::new());
    }
    topo.enable_forwarding(lb)?;
    if opts.encap_source.is_empty() {
        opts.encap_source = vec![topo.host(lb).ipv4.into(), topo.host(lb).ipv6.into()];
    }
    let encapsulated: Vec<HostId> = backends
        .iter()
        .zip(opts.forward.iter())
        .filter(|(_, f)| **f != Forward::L2)
        .map(|(b, _)| *b)
        .collect();
    resolve_next_hops(topo, lb, &encapsulated)?;
    let mut bases = Vec::new();
    for b in backends {
        match attach_decap(&topo.host(*b).ns, &[VIP4.into(), VIP6.into()], opts.decap_hook) {
            Ok(base) => bases.push(base),
            Err(e) => {
                remove_decap_pins(&bases);
                return Err(e);
            }
        }
    }
    Ok(bases)
}

/// The balancer's data path encapsulates only towards a next hop the kernel already has a
/// neighbour entry for (else it passes the packet, counted as a FIB miss), and nothing else
/// makes the LB talk to a backend's next hop before the first client does. So: a datagram from
/// the LB to each of `backends`' addresses (port 9, discard), then wait (2 s at most per
/// address) until the LB's route to it has a resolved neighbour.
pub fn resolve_next_hops(topo: &Topology, lb: HostId, backends: &[HostId]) -> Result<()> {
    for b in backends {
        let h = topo.host(*b);
        for addr in [IpAddr::from(h.ipv4), IpAddr::from(h.ipv6)] {
            topo.run_in(lb, move || -> Result<()> {
                let any: IpAddr = if addr.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
                UdpSocket::bind(SocketAddr::new(any, 0))?.send_to(b"x", SocketAddr::new(addr, 9))?;
                Ok(())
            })??;
            let route = topo.exec(lb, &["ip", "route", "get", &addr.to_string()])?;
            let hop = route
                .split(" via ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or(&addr.to_string())
                .to_string();
            let t0 = std::time::Instant::now();
            loop {
                let neigh = topo.exec(lb, &["ip", "neigh", "show", "to", &hop])?;
                if neigh.contains("lladdr") {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(2) {
                    bail!("the LB has no neighbour entry for {hop} (next hop to {addr}): {neigh}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(())
}

impl crate::lbenv::LbEnv {
    /// `xlb decap attach` on backend `i` for `vips` (GUE on [`GUE_PORT`]) at `hook`; detached on
    /// drop. For an environment whose `Opts::forward` did not already attach it there.
    pub fn add_decap(&mut self, i: usize, vips: &[IpAddr], hook: Hook) -> Result<()> {
        let base = attach_decap(&self.topo.host(self.backends[i]).ns, vips, hook)?;
        self.decap_bases.push(base);
        Ok(())
    }
}

/// `xlb --netns NS decap attach -i eth0 --vip V.. --gue-port GUE_PORT --hook HOOK`; where it
/// pinned.
fn attach_decap(ns: &str, vips: &[IpAddr], hook: Hook) -> Result<PathBuf> {
    let mut cmd = Command::new(xlb_bin());
    cmd.args(["--netns", ns, "decap", "attach", "--interface", HOST_IF]);
    cmd.args(["--hook", &hook.to_string()]);
    for vip in vips {
        cmd.args(["--vip", &vip.to_string()]);
    }
    let out = cmd
        .args(["--gue-port", &GUE_PORT.to_string()])
        .output()
        .context("run xlb decap attach")?;
    if !out.status.success() {
        bail!(
            "xlb decap attach in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(xlb::datapath::decap::base_dir(Some(ns)))
}

/// Detach every decapsulator pinned under `bases` (the interface's pins, then the directory).
pub fn remove_decap_pins(bases: &[PathBuf]) {
    for base in bases {
        let _ = xlb::datapath::decap::detach(HOST_IF, base);
    }
}

/// The `[global]` line naming the outer sources, when there are any.
pub fn encap_source_line(sources: &[IpAddr]) -> String {
    if sources.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = sources.iter().map(|a| format!("\"{a}\"")).collect();
    format!("encap_source = [{}]\n", quoted.join(", "))
}

/// The config lines of a server reached by `forward`.
pub fn forward_lines(forward: Forward) -> String {
    match forward {
        Forward::L2 => String::new(),
        Forward::Ipip => "forward = \"ipip\"\n".to_string(),
        Forward::Gue => format!("forward = \"gue\"\ngue_port = {GUE_PORT}\n"),
    }
}

/// How a test encapsulates a query it sends itself ([`encapsulated_query`]).
#[derive(Clone, Copy, Debug)]
pub enum Encap {
    Ipip,
    Gue(u16),
}

/// The inner UDP checksum of an [`encapsulated_query`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerChecksum {
    Right,
    /// Wrong (not zero): a stack that checks it drops the query, and no answer comes.
    Wrong,
}

/// Run in the client's namespace: a UDP query from `src` to `vip`, encapsulated by hand and
/// sent from a raw socket straight to `backend` (no balancer on the way); returns the answer,
/// which the backend sends to `src` from the VIP. Waits at most `timeout`.
pub fn encapsulated_query(
    src: IpAddr,
    backend: IpAddr,
    vip: SocketAddr,
    how: Encap,
    checksum: InnerChecksum,
    timeout: Duration,
) -> Result<String> {
    let s = UdpSocket::bind(SocketAddr::new(src, 0)).with_context(|| format!("bind udp {src}"))?;
    s.connect(vip)?;
    s.set_read_timeout(Some(timeout))?;
    let port = s.local_addr()?.port();
    let mut inner = Frame::udp(src, port, vip.ip(), vip.port())
        .payload(b"who")
        .packet();
    if checksum == InnerChecksum::Wrong {
        // The UDP checksum's first byte, after the IP header.
        let at = if src.is_ipv4() { 20 } else { 40 } + 6;
        inner[at] ^= 0x5a;
    }
    let outer = match how {
        Encap::Ipip => ipip(src, backend, &inner),
        Encap::Gue(p) => gue(src, backend, p, &inner),
    };
    send_raw(backend, &outer)?;
    let mut buf = [0u8; 1500];
    let n = s
        .recv(&mut buf)
        .with_context(|| format!("no answer from {vip} to {src} ({how:?} via {backend})"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// Send a whole IP packet (header included) to `dst` from a raw socket.
fn send_raw(dst: IpAddr, packet: &[u8]) -> Result<()> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let domain = if dst.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    // IPPROTO_RAW: the packet carries its own IP header, in both families.
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).context("raw socket")?;
    let n = s
        .send_to(packet, &SockAddr::from(SocketAddr::new(dst, 0)))
        .with_context(|| format!("raw send to {dst}"))?;
    if n != packet.len() {
        bail!("raw send to {dst}: {n} of {} bytes", packet.len());
    }
    Ok(())
}
