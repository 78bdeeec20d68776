//! Where the router sends new connections: SYNs from the client ([`send_syns`]) and a count of
//! the SYNs to a VIP that reach each balancer (an nftables named counter in the balancer's
//! namespace, [`SynCounter`]), with no load balancer running yet.

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};
use socket2::{Domain, Socket, Type};

use crate::{HostId, Topology, netns};

/// The nftables table the counters live in (inside a balancer's namespace only).
const TABLE: &str = "fleetsyns";

/// SYN counters (SYN set, ACK clear) for one IPv4 and one IPv6 VIP in a balancer's namespace,
/// counted at prerouting, before anything else sees the packet.
pub struct SynCounter {
    ns: String,
}

/// SYNs seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynCount {
    pub v4: u64,
    pub v6: u64,
}

impl SynCounter {
    /// Installs the counters in host `id`'s namespace.
    pub fn install(topo: &Topology, id: HostId, vip4: IpAddr, vip6: IpAddr) -> Result<SynCounter> {
        let ns = topo.host(id).ns.clone();
        let ruleset = format!(
            "table inet {TABLE} {{\n\
             \tcounter syn4 {{ }}\n\
             \tcounter syn6 {{ }}\n\
             \tchain prerouting {{\n\
             \t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t\tip daddr {vip4} tcp flags & (syn | ack) == syn counter name \"syn4\"\n\
             \t\tip6 daddr {vip6} tcp flags & (syn | ack) == syn counter name \"syn6\"\n\
             \t}}\n\
             }}\n"
        );
        let (mut cmd, _ns) = netns::command_in(&ns, "nft")?;
        let mut child = cmd
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run nft (is Debian's nftables installed? `cargo xtask setup` does it)")?;
        let wrote = child.stdin.take().expect("piped").write_all(ruleset.as_bytes());
        let out = child.wait_with_output().context("wait for nft")?;
        wrote.context("write the nft ruleset")?;
        if !out.status.success() {
            bail!(
                "nft -f in {ns}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(SynCounter { ns })
    }

    /// The SYNs counted so far.
    pub fn read(&self) -> Result<SynCount> {
        let (mut cmd, _ns) = netns::command_in(&self.ns, "nft")?;
        let out = cmd
            .args(["-j", "list", "counters", "table", "inet", TABLE])
            .stdin(Stdio::null())
            .output()
            .context("run nft list counters")?;
        if !out.status.success() {
            bail!(
                "nft list counters in {}: {}",
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse nft -j output")?;
        let packets = |name: &str| -> Result<u64> {
            json["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["counter"]["name"] == name)
                .and_then(|o| o["counter"]["packets"].as_u64())
                .with_context(|| format!("no counter {name} in {}: {json}", self.ns))
        };
        Ok(SynCount {
            v4: packets("syn4")?,
            v6: packets("syn6")?,
        })
    }
}

/// From host `client`'s namespace, one SYN per `(source address, source port)` to `dst` (port
/// 0: any free port): a non-blocking connect, abandoned once every SYN is out (closing a socket
/// that is still connecting sends nothing, and nothing waits for a SYN retransmission).
/// Returns how many SYNs went out.
pub fn send_syns(
    topo: &Topology,
    client: HostId,
    flows: Vec<(IpAddr, u16)>,
    dst: SocketAddr,
) -> Result<usize> {
    Ok(open_connections(topo, client, flows, dst)?.len())
}

/// Like [`send_syns`], but the sockets are returned, still connecting: while the caller holds
/// them, the client's kernel completes each handshake (its ACK is what makes a balancer create
/// the client's stick entry); dropping one closes it.
pub fn open_connections(
    topo: &Topology,
    client: HostId,
    flows: Vec<(IpAddr, u16)>,
    dst: SocketAddr,
) -> Result<Vec<Socket>> {
    topo.worker(client)?.run(move || -> Result<Vec<Socket>> {
        let mut pending = Vec::with_capacity(flows.len());
        for (src, port) in flows {
            let s =
                Socket::new(Domain::for_address(dst), Type::STREAM, None).context("create a TCP socket")?;
            s.set_nonblocking(true).context("set non-blocking")?;
            s.bind(&SocketAddr::new(src, port).into())
                .with_context(|| format!("bind {src}:{port}"))?;
            match s.connect(&dst.into()) {
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                other => bail!("connect {src}:{port} -> {dst}: expected EINPROGRESS, got {other:?}"),
            }
            pending.push(s);
        }
        Ok(pending)
    })
}
