//! Stick-table replication between instances: HAProxy's `peers`, for the L4 table.
//!
//! Two balancers with one config already agree on new clients (Maglev is deterministic). They
//! disagree on clients pinned while their views differed: a client that landed elsewhere
//! during a failover, a drain, or a weight change. Peers close that gap, so a client that
//! moves to another instance (ECMP change, VRRP failover) keeps its backend.
//!
//! - Each sweep (see `agent::sweeper`) collects the entries created or refreshed since the
//!   previous one; they go to every peer as one text line each (below). An entry is refreshed
//!   at most once a second, so an active client costs one line per second per peer.
//! - On every (re)connection the sender first teaches the peer its whole table.
//! - The receiver accepts connections only from the listed peers' addresses, and merges by
//!   recency: an update is written unless the local entry was seen as recently or later.
//!   What it writes is remembered so that its own next sweep does not send it back.
//!
//! Wire format, over TCP to the peer's `peer_listen`: the line `xlb-peers 1`, then one line
//! per entry: `<service> <client address after the mask> <source port or 0> <server> <idle ms>`.
//! Services and servers travel by name, so ids may differ between instances; a line about a
//! service or server the receiver does not have is ignored and counted.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use lb_common::{FAMILY_V4, FAMILY_V6, StickEntry, StickKey};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{broadcast, watch},
};

use crate::{
    config::{Peer, StickOn},
    datapath::coarse_now_ns,
    services::{Balancer, addr16},
    stick_table::{key_addr, masked},
};

/// The first line of every connection.
pub const HELLO: &str = "xlb-peers 1";
/// Longest line accepted (a service and a server name, an IPv6 address, two numbers).
const MAX_LINE: usize = 256;
/// Lines applied per lock of the balancer.
const BATCH: usize = 512;

/// One stick entry as it travels between peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub service: String,
    /// The key's address (already masked by the sender's prefix).
    pub addr: IpAddr,
    /// Source port for `src-port` services, else 0 (host order).
    pub port: u16,
    pub server: String,
    pub idle_ms: u64,
}

impl Update {
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {}\n",
            self.service, self.addr, self.port, self.server, self.idle_ms
        )
    }

    pub fn parse(line: &str) -> Result<Update, String> {
        let w: Vec<&str> = line.split_ascii_whitespace().collect();
        let [service, addr, port, server, idle] = w[..] else {
            return Err(format!("expected 5 words, got {}", w.len()));
        };
        Ok(Update {
            service: service.to_string(),
            addr: addr.parse().map_err(|_| format!("bad address {addr:?}"))?,
            port: port.parse().map_err(|_| format!("bad port {port:?}"))?,
            server: server.to_string(),
            idle_ms: idle.parse().map_err(|_| format!("bad idle time {idle:?}"))?,
        })
    }
}

/// Counters of one peer (both directions).
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub connected: AtomicBool,
    /// Lines sent to it.
    pub sent: AtomicU64,
    /// Lines not sent because the connection was down or too slow.
    pub dropped: AtomicU64,
    /// Lines received from it.
    pub received: AtomicU64,
    /// Received lines written to the table.
    pub applied: AtomicU64,
    /// Received lines that changed nothing (the local entry was as recent).
    pub older: AtomicU64,
    /// Received lines about unknown services or servers, expired, or malformed.
    pub ignored: AtomicU64,
}

/// The peers of this instance and their counters (shared with the runtime API).
#[derive(Debug, Default)]
pub struct Peers {
    pub list: Vec<(Peer, PeerCounters)>,
    /// Connections refused because they came from an address that is not a peer's.
    pub refused: AtomicU64,
    /// Entries this instance wrote for its peers (key -> last-seen written), so the next sweep
    /// does not send them back.
    written: Mutex<HashMap<StickKey, u64>>,
}

impl Peers {
    pub fn new(list: &[Peer]) -> Arc<Peers> {
        Arc::new(Peers {
            list: list
                .iter()
                .map(|p| (p.clone(), PeerCounters::default()))
                .collect(),
            ..Default::default()
        })
    }

    fn by_ip(&self, ip: IpAddr) -> Option<(&Peer, &PeerCounters)> {
        self.list
            .iter()
            .find(|(p, _)| p.address.ip() == ip)
            .map(|(p, c)| (p, c))
    }

    /// Of the entries a sweep found touched, those this instance did not itself write for a
    /// peer (forgets what it wrote, either way).
    pub fn own_changes(&self, touched: Vec<(StickKey, StickEntry)>) -> Vec<(StickKey, StickEntry)> {
        let written = std::mem::take(&mut *self.written.lock().expect("peers lock"));
        touched
            .into_iter()
            .filter(|(k, e)| written.get(k) != Some(&e.last_seen_ns))
            .collect()
    }

    /// `show peers`.
    pub fn show(&self) -> String {
        let mut out = String::from("# name address state sent dropped received applied older ignored\n");
        for (p, c) in &self.list {
            out.push_str(&format!(
                "{} {} {} {} {} {} {} {} {}\n",
                p.name,
                p.address,
                if c.connected.load(Relaxed) {
                    "CONNECTED"
                } else {
                    "DISCONNECTED"
                },
                c.sent.load(Relaxed),
                c.dropped.load(Relaxed),
                c.received.load(Relaxed),
                c.applied.load(Relaxed),
                c.older.load(Relaxed),
                c.ignored.load(Relaxed),
            ));
        }
        out.push_str(&format!(
            "# connections refused (not from a peer's address): {}\n",
            self.refused.load(Relaxed)
        ));
        out
    }
}

/// Stick entries as update lines (names from the balancer), one text block.
pub fn encode(b: &Balancer, entries: &[(StickKey, StickEntry)]) -> (String, u64) {
    let now = coarse_now_ns();
    let mut text = String::new();
    let mut n = 0;
    for (k, e) in entries {
        let Some(svc) = b.services.iter().find(|s| s.id == k.service as u32) else {
            continue;
        };
        let Some(server) = svc.server_by_id(e.backend) else {
            continue;
        };
        let u = Update {
            service: svc.cfg.name.clone(),
            addr: key_addr(k),
            port: u16::from_be(k.port),
            server: server.cfg.name.clone(),
            idle_ms: now.saturating_sub(e.last_seen_ns) / 1_000_000,
        };
        text.push_str(&u.line());
        n += 1;
    }
    (text, n)
}

/// What merging one update did.
#[derive(Debug, PartialEq, Eq)]
pub enum Merged {
    Written,
    /// The local entry was seen as recently or later: kept.
    Older,
}

/// Merge one update into the stick table, by recency.
pub fn merge(b: &mut Balancer, peers: &Peers, u: &Update, now: u64) -> Result<Merged, String> {
    let svc = b
        .service(&u.service)
        .ok_or_else(|| format!("no service {:?}", u.service))?;
    if svc.cfg.stick.on == StickOn::None {
        return Err(format!("service {:?} has no stick table", u.service));
    }
    let family = if u.addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
    if u.addr.is_ipv4() != svc.cfg.vip.is_ipv4() {
        return Err(format!("{} is not of service {:?}'s family", u.addr, u.service));
    }
    let server = svc
        .server(&u.server)
        .ok_or_else(|| format!("no server {:?} in service {:?}", u.server, u.service))?;
    let expire = svc.cfg.stick.expire.as_nanos() as u64;
    let idle = u.idle_ms.saturating_mul(1_000_000);
    if expire != 0 && idle > expire {
        return Err("already expired".into());
    }
    let port = if svc.cfg.stick.on == StickOn::SrcPort {
        u.port.to_be()
    } else {
        0
    };
    let key = StickKey::new(addr16(masked(svc, u.addr)), svc.id as u16, port, family);
    let seen = now.saturating_sub(idle);
    let backend = server.id;
    match b.dp.stick_get(&key).map_err(|e| e.to_string())? {
        Some(e) if e.last_seen_ns >= seen => Ok(Merged::Older),
        _ => {
            b.dp.stick_insert(
                key,
                StickEntry {
                    last_seen_ns: seen,
                    backend,
                    _pad: 0,
                },
            )
            .map_err(|e| e.to_string())?;
            peers.written.lock().expect("peers lock").insert(key, seen);
            Ok(Merged::Written)
        }
    }
}

type Shared = Arc<Mutex<Balancer>>;

/// A batch of update lines for every sender: (text, number of lines).
pub type Batch = Arc<(String, u64)>;

/// Keeps a connection to `peer` and sends it every batch; on each (re)connection, the whole
/// table first.
pub async fn sender(
    shared: Shared,
    stick_pin: std::path::PathBuf,
    peers: Arc<Peers>,
    index: usize,
    batches: broadcast::Sender<Batch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (peer, counters) = {
        let (p, c) = &peers.list[index];
        (p.clone(), c)
    };
    let mut warned = false;
    loop {
        let conn = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(peer.address)) => r,
            _ = shutdown.changed() => return,
        };
        let mut stream = match conn {
            Ok(Ok(s)) => s,
            other => {
                if !warned {
                    let why = match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    log::warn!(
                        "peer {} ({}): cannot connect: {why}; retrying every second",
                        peer.name,
                        peer.address
                    );
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        warned = false;
        let _ = stream.set_nodelay(true);
        // Subscribe before the dump: what changes during it follows it.
        let mut rx = batches.subscribe();
        // The walk uses its own map handle, without the balancer's lock.
        let (s, pin) = (shared.clone(), stick_pin.clone());
        let dump = tokio::task::spawn_blocking(move || {
            let all = crate::stick_table::read_all(&pin).unwrap_or_else(|e| {
                log::warn!("peers: reading the stick table: {e:#}");
                Vec::new()
            });
            encode(&s.lock().expect("balancer lock"), &all)
        })
        .await
        .unwrap_or_default();
        let mut ok = stream.write_all(format!("{HELLO}\n").as_bytes()).await.is_ok()
            && stream.write_all(dump.0.as_bytes()).await.is_ok();
        if ok {
            counters.sent.fetch_add(dump.1, Relaxed);
            counters.connected.store(true, Relaxed);
            log::info!(
                "peer {} ({}): connected, sent the table ({} entries)",
                peer.name,
                peer.address,
                dump.1
            );
        }
        // The peer never writes: EOF or an error on the read side means it went away, which
        // must be noticed without waiting for the next batch (it may be long in coming).
        let mut probe = [0u8; 64];
        while ok {
            tokio::select! {
                _ = stream.read(&mut probe) => ok = false,
                m = rx.recv() => match m {
                    Ok(batch) => {
                        ok = stream.write_all(batch.0.as_bytes()).await.is_ok();
                        if ok {
                            counters.sent.fetch_add(batch.1, Relaxed);
                        } else {
                            counters.dropped.fetch_add(batch.1, Relaxed);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        log::warn!("peer {}: too slow, {n} batches of updates skipped", peer.name);
                        counters.dropped.fetch_add(n, Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
            }
        }
        counters.connected.store(false, Relaxed);
        log::warn!(
            "peer {} ({}): connection lost; reconnecting",
            peer.name,
            peer.address
        );
    }
}

/// Accepts peers' connections on `listener` (from listed addresses only) and merges what
/// they send.
pub async fn listen(
    listener: TcpListener,
    shared: Shared,
    peers: Arc<Peers>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("peers: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let ip = canonical(from);
        if peers.by_ip(ip).is_none() {
            peers.refused.fetch_add(1, Relaxed);
            log::warn!("peers: connection from {from} refused: not the address of a [[peer]]");
            continue;
        }
        tokio::spawn(receive(
            stream,
            ip,
            shared.clone(),
            peers.clone(),
            shutdown.clone(),
        ));
    }
}

/// An IPv4 peer seen through a dual-stack socket is `::ffff:a.b.c.d`.
fn canonical(a: SocketAddr) -> IpAddr {
    match a.ip() {
        IpAddr::V6(v) => v.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v)),
        v4 => v4,
    }
}

async fn receive(
    mut stream: TcpStream,
    ip: IpAddr,
    shared: Shared,
    peers: Arc<Peers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = peers.by_ip(ip).map(|(p, _)| p.name.clone()).unwrap_or_default();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut greeted = false;
    let mut complained = false;
    loop {
        let n = tokio::select! {
            r = stream.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = shutdown.changed() => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
            if buf.len() > MAX_LINE {
                log::warn!("peer {name}: line longer than {MAX_LINE} bytes; closing");
                break;
            }
            continue;
        };
        let text: String = String::from_utf8_lossy(&buf[..last_nl]).into_owned();
        buf.drain(..=last_nl);
        let mut lines: Vec<&str> = text.lines().collect();
        if !greeted {
            if lines.first().map(|l| l.trim()) != Some(HELLO) {
                log::warn!("peer {name}: does not speak {HELLO:?}; closing");
                break;
            }
            greeted = true;
            lines.remove(0);
        }
        if lines.iter().any(|l| l.len() > MAX_LINE) {
            log::warn!("peer {name}: line longer than {MAX_LINE} bytes; closing");
            break;
        }
        for chunk in lines.chunks(BATCH) {
            let batch: Vec<String> = chunk.iter().map(|l| l.to_string()).collect();
            let (s, p) = (shared.clone(), peers.clone());
            let first_error = tokio::task::spawn_blocking(move || apply_lines(&s, &p, ip, &batch))
                .await
                .unwrap_or(None);
            if let Some(e) = first_error
                && !complained
            {
                log::warn!("peer {name}: update ignored: {e} (further ones are only counted)");
                complained = true;
            }
        }
    }
    log::info!("peer {name}: connection closed");
}

/// Merge `lines` under one lock of the balancer; the first error, if any.
fn apply_lines(shared: &Shared, peers: &Peers, ip: IpAddr, lines: &[String]) -> Option<String> {
    let (_, c) = peers.by_ip(ip)?;
    let mut first = None;
    let now = coarse_now_ns();
    let mut b = shared.lock().expect("balancer lock");
    for l in lines.iter().filter(|l| !l.trim().is_empty()) {
        c.received.fetch_add(1, Relaxed);
        match Update::parse(l).and_then(|u| merge(&mut b, peers, &u, now)) {
            Ok(Merged::Written) => c.applied.fetch_add(1, Relaxed),
            Ok(Merged::Older) => c.older.fetch_add(1, Relaxed),
            Err(e) => {
                first.get_or_insert(e);
                c.ignored.fetch_add(1, Relaxed)
            }
        };
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_line_round_trip() {
        let u = Update {
            service: "be_app".into(),
            addr: "fd77:1::5".parse().unwrap(),
            port: 0,
            server: "app2".into(),
            idle_ms: 1234,
        };
        assert_eq!(u.line(), "be_app fd77:1::5 0 app2 1234\n");
        assert_eq!(Update::parse(u.line().trim_end()).unwrap(), u);
        assert!(
            Update::parse("be_app 10.0.0.1 0 app2")
                .unwrap_err()
                .contains("5 words")
        );
        assert!(
            Update::parse("be_app 10.0.0 0 app2 1")
                .unwrap_err()
                .contains("bad address")
        );
        assert!(
            Update::parse("be_app 10.0.0.1 70000 app2 1")
                .unwrap_err()
                .contains("bad port")
        );
        assert!(
            Update::parse("be_app 10.0.0.1 0 app2 -1")
                .unwrap_err()
                .contains("bad idle")
        );
    }

    #[test]
    fn mapped_v4_peer_address_is_canonical() {
        let a: SocketAddr = "[::ffff:10.0.0.2]:4000".parse().unwrap();
        assert_eq!(canonical(a), IpAddr::from([10, 0, 0, 2]));
        let b: SocketAddr = "[fd00::2]:4000".parse().unwrap();
        assert_eq!(canonical(b), b.ip());
    }
}
