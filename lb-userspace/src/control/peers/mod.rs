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
//! - Every connection is authenticated with the key the peers share (`peer_key_file`): a
//!   challenge from each side, then frames whose MAC covers a sequence number and a key of
//!   that connection (`peer_wire`). There is no unauthenticated mode.
//! - The receiver accepts connections only from the listed peers' addresses, closes one that
//!   fails authentication, and merges by recency: an update is written unless the local entry
//!   was seen as recently or later. Names are checked against the current config; a peer may
//!   write at most a service's stick size of entries into it per second ([`Budget`]). What it
//!   writes is remembered (up to the stick capacity) so that its own next sweep does not send
//!   it back.
//! - Time is bounded: a peer that stops reading is dropped after [`WRITE_TIMEOUT`], every
//!   handshake has a deadline, and every wait ends when the agent stops.
//!
//! Payload of the frames: one line per entry,
//! `<service> <client address after the mask> <source port or 0> <server> <idle ms>`.
//! Services and servers travel by name, so ids may differ between instances; a line about a
//! service or server the receiver does not have is dropped and counted (`unknown`).

pub mod wire;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use lb_common::{StickEntry, StickKey};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    sync::{broadcast, watch},
};

use crate::{
    balancer::Balancer,
    config::{Peer, PeerKey, StickOn},
    datapath::coarse_now_ns,
};
use wire::{FrameReader, FrameWriter, WireError};

/// Longest update line accepted (a service and a server name, an IPv6 address, two numbers).
const MAX_LINE: usize = 256;
/// Lines applied per lock of the balancer.
const BATCH: usize = 512;
/// A peer that takes no byte of a frame for this long has stopped reading: its connection is
/// dropped (and made again).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connecting to a peer, and each side's handshake, must finish within these.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait between two connection attempts.
const RETRY: Duration = Duration::from_secs(1);
/// Inbound connections from one peer's address that may be authenticating at once.
pub const MAX_UNAUTHENTICATED: u64 = 4;

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

/// Counters of one peer (both directions), and what its connections share.
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub connected: AtomicBool,
    /// Lines sent to it.
    pub sent: AtomicU64,
    /// Lines not sent because the connection was down or too slow.
    pub dropped: AtomicU64,
    /// Lines received from it (in authenticated frames).
    pub received: AtomicU64,
    /// Received lines written to the table.
    pub applied: AtomicU64,
    /// Received lines that changed nothing: the local entry was as recent, or the update had
    /// already expired.
    pub older: AtomicU64,
    /// Received lines naming a service or server this instance does not have (or a service
    /// without a stick table, or a client address of the other family).
    pub unknown: AtomicU64,
    /// Received lines that do not parse.
    pub malformed: AtomicU64,
    /// Received lines not written: over the peer's budget for the service this second (see
    /// [`Budget`]), or the table refused the write.
    pub refused: AtomicU64,
    /// Connections closed because the other side did not prove the key: no handshake or a
    /// wrong key (either direction), a frame with a bad MAC or out of sequence.
    pub bad_auth: AtomicU64,
    /// Connections to it closed because it stopped reading ([`WRITE_TIMEOUT`]).
    pub timeouts: AtomicU64,
    /// Inbound connections from its address that have not authenticated yet.
    unauthenticated: AtomicU64,
    /// Number of the newest authenticated inbound connection: an older one closes.
    generation: AtomicU64,
    newer: tokio::sync::Notify,
    budget: Mutex<Budget>,
}

impl PeerCounters {
    /// The update-line counters, in this order: sent, dropped, received, applied, older,
    /// unknown, malformed, refused (`show peers` columns, `metrics::PEER_UPDATES`).
    pub fn line_counts(&self) -> [u64; 8] {
        [
            &self.sent,
            &self.dropped,
            &self.received,
            &self.applied,
            &self.older,
            &self.unknown,
            &self.malformed,
            &self.refused,
        ]
        .map(|v| v.load(Relaxed))
    }
}

/// Writes one peer may make into each service within one second: the service's stick size.
/// A peer that sends more (a flood, or a bug) is refused the rest of that second; a normal
/// peer sends at most its whole table at (re)connection and then a line per active client
/// per second, which a table of that size holds.
#[derive(Debug, Default)]
pub struct Budget {
    second: u64,
    /// Writes this second, by service name (only names of configured services).
    used: HashMap<String, u64>,
}

impl Budget {
    /// Take one write into `service` (of stick size `size`) at `now_ns`; false when spent.
    pub fn take(&mut self, service: &str, size: u32, now_ns: u64) -> bool {
        let second = now_ns / 1_000_000_000;
        if second != self.second {
            self.second = second;
            self.used.clear();
        }
        let used = match self.used.get_mut(service) {
            Some(u) => u,
            None => self.used.entry(service.to_string()).or_default(),
        };
        if *used >= size as u64 {
            return false;
        }
        *used += 1;
        true
    }
}

/// The peers of this instance and their counters (shared with the runtime API).
#[derive(Debug)]
pub struct Peers {
    pub list: Vec<(Peer, PeerCounters)>,
    /// The key the peers share.
    key: PeerKey,
    /// Connections refused because they came from an address that is not a peer's.
    pub refused: AtomicU64,
    /// Connections refused because their peer's address already had
    /// [`MAX_UNAUTHENTICATED`] connections waiting to authenticate.
    pub refused_busy: AtomicU64,
    /// Entries this instance wrote for its peers (key -> last-seen written), so the next sweep
    /// does not send them back. Emptied by every sweep and holds at most `written_cap`
    /// entries: one written beyond that may be sent back once, which costs a line.
    written: Mutex<HashMap<StickKey, u64>>,
    written_cap: usize,
}

impl Peers {
    /// `written_cap`: the most entries remembered between two sweeps (the stick capacity).
    pub fn new(list: &[Peer], key: PeerKey, written_cap: usize) -> Arc<Peers> {
        Arc::new(Peers {
            list: list
                .iter()
                .map(|p| (p.clone(), PeerCounters::default()))
                .collect(),
            key,
            refused: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            written: Mutex::new(HashMap::new()),
            written_cap,
        })
    }

    fn by_ip(&self, ip: IpAddr) -> Option<usize> {
        self.list.iter().position(|(p, _)| p.address.ip() == ip)
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

    fn remember_written(&self, key: StickKey, seen: u64) {
        let mut w = self.written.lock().expect("peers lock");
        if w.len() < self.written_cap || w.contains_key(&key) {
            w.insert(key, seen);
        }
    }

    /// `show peers`.
    pub fn show(&self) -> String {
        let mut out = String::from(
            "# name address state sent dropped received applied older unknown malformed refused \
             bad_auth timeouts\n",
        );
        for (p, c) in &self.list {
            out.push_str(&format!(
                "{} {} {}",
                p.name,
                p.address,
                if c.connected.load(Relaxed) {
                    "CONNECTED"
                } else {
                    "DISCONNECTED"
                },
            ));
            let auth_and_time = [c.bad_auth.load(Relaxed), c.timeouts.load(Relaxed)];
            for v in c.line_counts().into_iter().chain(auth_and_time) {
                out.push_str(&format!(" {v}"));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "# connections refused (not from a peer's address): {}\n\
             # connections refused (too many unauthenticated from one peer's address): {}\n",
            self.refused.load(Relaxed),
            self.refused_busy.load(Relaxed)
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
            addr: k.client_addr(),
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
    /// Idle longer than the service's `expire`: nothing to keep.
    Expired,
    /// A service or server this instance does not have, a service without a stick table, or
    /// an address of the other family.
    Unknown(String),
    /// The peer spent its budget for the service this second.
    OverBudget,
    /// The table refused the write.
    Failed(String),
}

/// Merge one update into the stick table, by recency. Services and servers are looked up in
/// the current configuration; a write takes one from the peer's `budget`.
pub fn merge(b: &mut Balancer, peers: &Peers, budget: &mut Budget, u: &Update, now: u64) -> Merged {
    let Some(svc) = b.service(&u.service) else {
        return Merged::Unknown(format!("no service {:?}", u.service));
    };
    if svc.cfg.stick.on == StickOn::None {
        return Merged::Unknown(format!("service {:?} has no stick table", u.service));
    }
    if u.addr.is_ipv4() != svc.cfg.vip.is_ipv4() {
        return Merged::Unknown(format!("{} is not of service {:?}'s family", u.addr, u.service));
    }
    let Some(server) = svc.server(&u.server) else {
        return Merged::Unknown(format!("no server {:?} in service {:?}", u.server, u.service));
    };
    let expire = svc.cfg.stick.expire.as_nanos() as u64;
    let idle = u.idle_ms.saturating_mul(1_000_000);
    if expire != 0 && idle > expire {
        return Merged::Expired;
    }
    let port = if svc.cfg.stick.on == StickOn::SrcPort {
        u.port.to_be()
    } else {
        0
    };
    let key = StickKey::for_client(u.addr, svc.id as u16, port, svc.cfg.stick.prefixes());
    let seen = now.saturating_sub(idle);
    let backend = server.id;
    let size = svc.cfg.stick.size;
    match b.dp.stick_get(&key) {
        Err(e) => return Merged::Failed(e.to_string()),
        Ok(Some(e)) if e.last_seen_ns >= seen => return Merged::Older,
        Ok(_) => {}
    }
    if !budget.take(&u.service, size, now) {
        return Merged::OverBudget;
    }
    let entry = StickEntry {
        last_seen_ns: seen,
        backend,
        _pad: 0,
    };
    if let Err(e) = b.dp.stick_insert(key, entry) {
        return Merged::Failed(e.to_string());
    }
    peers.remember_written(key, seen);
    Merged::Written
}

type Shared = Arc<Mutex<Balancer>>;

/// A batch of update lines for every sender: (text, number of lines).
pub type Batch = Arc<(String, u64)>;

/// Resolves when the agent is stopping (at once if it already is).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("the agent is stopping")]
    Stopping,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("closed by the other side")]
    Closed,
    #[error("a line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("{0}")]
    Wire(#[from] WireError),
}

/// `fut`, bounded by `limit` and cut short when the agent stops.
async fn bounded<T>(
    limit: Duration,
    shutdown: &mut watch::Receiver<bool>,
    fut: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::select! {
        r = tokio::time::timeout(limit, fut) => r.unwrap_or(Err(ConnError::Timeout(limit))),
        _ = stopping(shutdown) => Err(ConnError::Stopping),
    }
}

/// One line of at most `max` bytes (newline excluded), without its newline.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, max: usize) -> Result<String, ConnError> {
    let mut line = Vec::new();
    (&mut *r)
        .take(max as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > max {
            ConnError::LineTooLong(max)
        } else {
            ConnError::Closed
        });
    }
    line.pop();
    String::from_utf8(line).map_err(|e| {
        ConnError::Wire(WireError::Malformed {
            what: "line (not text)",
            line: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    })
}

/// The sender's half of the handshake; seals frames for this connection.
async fn authenticate_to(stream: &mut BufReader<TcpStream>, key: &[u8]) -> Result<FrameWriter, ConnError> {
    let mine = wire::random_nonce()?;
    stream.get_mut().write_all(wire::hello(&mine).as_bytes()).await?;
    let line = read_line(stream, wire::MAX_HEADER).await?;
    let theirs = wire::check_challenge(key, &mine, &line)?;
    stream
        .get_mut()
        .write_all(wire::response(key, &mine, &theirs).as_bytes())
        .await?;
    Ok(FrameWriter::new(key, &mine, &theirs))
}

/// The receiver's half of the handshake; opens frames of this connection.
async fn authenticate_from(stream: &mut BufReader<TcpStream>, key: &[u8]) -> Result<FrameReader, ConnError> {
    let line = read_line(stream, wire::MAX_HEADER).await?;
    let theirs = wire::parse_hello(&line)?;
    let mine = wire::random_nonce()?;
    stream
        .get_mut()
        .write_all(wire::challenge(key, &theirs, &mine).as_bytes())
        .await?;
    let line = read_line(stream, wire::MAX_HEADER).await?;
    wire::check_response(key, &theirs, &mine, &line)?;
    Ok(FrameReader::new(key, &theirs, &mine))
}

/// Send `text` (whole update lines) as frames, each within [`WRITE_TIMEOUT`].
async fn send_frames(
    stream: &mut TcpStream,
    w: &mut FrameWriter,
    text: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ConnError> {
    for payload in wire::split_frames(text) {
        let frame = w.seal(payload);
        bounded(WRITE_TIMEOUT, shutdown, async {
            stream.write_all(&frame).await.map_err(ConnError::from)
        })
        .await?;
    }
    Ok(())
}

/// Keeps an authenticated connection to `peer` and sends it every batch; on each
/// (re)connection, the whole table first. Every wait is bounded and ends when the agent stops.
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
    let key = peers.key.bytes();
    let mut warned = false;
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stopping(&mut shutdown) => return,
            }
        }
        first = false;
        let conn = bounded(CONNECT_TIMEOUT, &mut shutdown, async {
            TcpStream::connect(peer.address).await.map_err(ConnError::from)
        })
        .await;
        let stream = match conn {
            Ok(s) => s,
            Err(ConnError::Stopping) => return,
            Err(e) => {
                if !warned {
                    log::warn!(
                        "peer {} ({}): cannot connect: {e}; retrying every second",
                        peer.name,
                        peer.address
                    );
                    warned = true;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = BufReader::with_capacity(wire::MAX_HEADER, stream);
        let mut writer = match bounded(
            HANDSHAKE_TIMEOUT,
            &mut shutdown,
            authenticate_to(&mut stream, key),
        )
        .await
        {
            Ok(w) => w,
            Err(ConnError::Stopping) => return,
            Err(e) => {
                if matches!(&e, ConnError::Wire(w) if w.is_auth_failure()) {
                    counters.bad_auth.fetch_add(1, Relaxed);
                }
                if !warned {
                    log::warn!(
                        "peer {} ({}): handshake failed: {e}; is peer_key_file the same file on \
                         both? retrying every second",
                        peer.name,
                        peer.address
                    );
                    warned = true;
                }
                continue;
            }
        };
        warned = false;
        let mut stream = stream.into_inner();
        // Subscribe before the dump: what changes during it follows it.
        let mut rx = batches.subscribe();
        // The walk uses its own map handle, without the balancer's lock.
        let (s, pin) = (shared.clone(), stick_pin.clone());
        let dump = tokio::task::spawn_blocking(move || {
            let all = crate::balancer::stick::read_all(&pin).unwrap_or_else(|e| {
                log::warn!("peers: reading the stick table: {e:#}");
                Vec::new()
            });
            encode(&s.lock().expect("balancer lock"), &all)
        });
        let dump = tokio::select! {
            d = dump => d.unwrap_or_default(),
            _ = stopping(&mut shutdown) => return,
        };
        let mut result = send_frames(&mut stream, &mut writer, &dump.0, &mut shutdown).await;
        if result.is_ok() {
            counters.sent.fetch_add(dump.1, Relaxed);
            counters.connected.store(true, Relaxed);
            log::info!(
                "peer {} ({}): connected, sent the table ({} entries)",
                peer.name,
                peer.address,
                dump.1
            );
        }
        // The peer writes nothing after the handshake: EOF or an error on the read side means
        // it went away, which must be noticed without waiting for the next batch.
        let mut probe = [0u8; 64];
        while result.is_ok() {
            tokio::select! {
                r = stream.read(&mut probe) => result = match r {
                    Ok(0) => Err(ConnError::Closed),
                    Ok(_) => Err(ConnError::Wire(WireError::Malformed { what: "data from the receiver", line: String::new() })),
                    Err(e) => Err(e.into()),
                },
                m = rx.recv() => match m {
                    Ok(batch) => {
                        result = send_frames(&mut stream, &mut writer, &batch.0, &mut shutdown).await;
                        if result.is_ok() {
                            counters.sent.fetch_add(batch.1, Relaxed);
                        } else {
                            counters.dropped.fetch_add(batch.1, Relaxed);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        log::warn!("peer {}: too slow, {n} batches of updates skipped", peer.name);
                        counters.dropped.fetch_add(n, Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => result = Err(ConnError::Stopping),
                },
                _ = stopping(&mut shutdown) => result = Err(ConnError::Stopping),
            }
        }
        counters.connected.store(false, Relaxed);
        match result {
            Err(ConnError::Stopping) => return,
            Err(ConnError::Timeout(t)) => {
                counters.timeouts.fetch_add(1, Relaxed);
                log::warn!(
                    "peer {} ({}): stopped reading (nothing taken for {t:?}); connection dropped, \
                     reconnecting",
                    peer.name,
                    peer.address
                );
            }
            Err(e) => log::warn!(
                "peer {} ({}): connection lost ({e}); reconnecting",
                peer.name,
                peer.address
            ),
            Ok(()) => {}
        }
    }
}

/// Accepts peers' connections on `listener` (from listed addresses only, at most
/// [`MAX_UNAUTHENTICATED`] per address waiting to authenticate) and merges what they send.
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
            _ = stopping(&mut shutdown) => return,
        };
        let ip = canonical(from);
        let Some(index) = peers.by_ip(ip) else {
            peers.refused.fetch_add(1, Relaxed);
            log::warn!("peers: connection from {from} refused: not the address of a [[peer]]");
            continue;
        };
        let c = &peers.list[index].1;
        if c.unauthenticated.fetch_add(1, Relaxed) >= MAX_UNAUTHENTICATED {
            c.unauthenticated.fetch_sub(1, Relaxed);
            peers.refused_busy.fetch_add(1, Relaxed);
            log::warn!(
                "peers: connection from {from} refused: {MAX_UNAUTHENTICATED} connections from \
                 this address are already authenticating"
            );
            continue;
        }
        tokio::spawn(receive(
            stream,
            index,
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

/// One frame's payload (authenticated and in sequence).
async fn read_frame(
    stream: &mut BufReader<TcpStream>,
    reader: &mut FrameReader,
) -> Result<Vec<u8>, ConnError> {
    let line = read_line(stream, wire::MAX_HEADER).await?;
    let header = reader.header(&line)?;
    let mut payload = vec![0u8; header.len];
    stream.read_exact(&mut payload).await?;
    reader.open(&header, &payload)?;
    Ok(payload)
}

/// One inbound connection of peer `index`: authenticate (the connection counts as
/// unauthenticated until then), then merge its frames until it closes, fails, is superseded by
/// a newer authenticated connection of the same peer, or the agent stops.
async fn receive(
    stream: TcpStream,
    index: usize,
    shared: Shared,
    peers: Arc<Peers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (peer, c) = (&peers.list[index].0, &peers.list[index].1);
    let name = peer.name.clone();
    // Payloads are read into their own buffer: the reader only needs room for header lines.
    let mut stream = BufReader::new(stream);
    let auth = bounded(
        HANDSHAKE_TIMEOUT,
        &mut shutdown,
        authenticate_from(&mut stream, peers.key.bytes()),
    )
    .await;
    c.unauthenticated.fetch_sub(1, Relaxed);
    let mut reader = match auth {
        Ok(r) => r,
        Err(ConnError::Stopping) => return,
        Err(e) => {
            c.bad_auth.fetch_add(1, Relaxed);
            log::warn!("peer {name}: inbound connection did not authenticate ({e}); closed");
            return;
        }
    };
    let generation = c.generation.fetch_add(1, Relaxed) + 1;
    c.newer.notify_waiters();
    let mut complained = false;
    let why = loop {
        if c.generation.load(Relaxed) != generation {
            break "a newer connection from the peer authenticated".to_string();
        }
        let frame = tokio::select! {
            f = read_frame(&mut stream, &mut reader) => f,
            _ = c.newer.notified() => continue,
            _ = stopping(&mut shutdown) => return,
        };
        let payload = match frame {
            Ok(p) => p,
            Err(ConnError::Closed) => break "closed by the peer".to_string(),
            Err(ConnError::Wire(e)) => {
                if e.is_auth_failure() {
                    c.bad_auth.fetch_add(1, Relaxed);
                } else {
                    c.malformed.fetch_add(1, Relaxed);
                }
                break e.to_string();
            }
            Err(ConnError::LineTooLong(n)) => {
                c.malformed.fetch_add(1, Relaxed);
                break format!("a frame header longer than {n} bytes");
            }
            Err(e) => break e.to_string(),
        };
        let text = String::from_utf8_lossy(&payload).into_owned();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        for chunk in lines.chunks(BATCH) {
            let batch = chunk.to_vec();
            let (s, p) = (shared.clone(), peers.clone());
            let first_error = tokio::task::spawn_blocking(move || apply_lines(&s, &p, index, &batch))
                .await
                .unwrap_or(None);
            if let Some(e) = first_error
                && !complained
            {
                log::warn!("peer {name}: update not applied: {e} (further ones are only counted)");
                complained = true;
            }
        }
    };
    log::info!("peer {name}: inbound connection closed: {why}");
}

/// Merge `lines` from peer `index` under one lock of the balancer; the first error, if any.
fn apply_lines(shared: &Shared, peers: &Peers, index: usize, lines: &[String]) -> Option<String> {
    let c = &peers.list[index].1;
    let mut first = None;
    let now = coarse_now_ns();
    let mut budget = c.budget.lock().expect("budget lock");
    let mut b = shared.lock().expect("balancer lock");
    for l in lines.iter().filter(|l| !l.trim().is_empty()) {
        c.received.fetch_add(1, Relaxed);
        let merged = if l.len() > MAX_LINE {
            Err(format!("a line longer than {MAX_LINE} bytes"))
        } else {
            Update::parse(l).map(|u| merge(&mut b, peers, &mut budget, &u, now))
        };
        let counter = match merged {
            Ok(Merged::Written) => &c.applied,
            Ok(Merged::Older | Merged::Expired) => &c.older,
            Ok(Merged::Unknown(e)) => {
                first.get_or_insert(e);
                &c.unknown
            }
            Ok(Merged::OverBudget) => {
                first.get_or_insert_with(|| "over the peer's budget for the service this second".into());
                &c.refused
            }
            Ok(Merged::Failed(e)) => {
                first.get_or_insert(format!("writing the table: {e}"));
                &c.refused
            }
            Err(e) => {
                first.get_or_insert(e);
                &c.malformed
            }
        };
        counter.fetch_add(1, Relaxed);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::FAMILY_V4;

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
    fn budget_allows_a_stick_size_of_writes_per_service_per_second() {
        let mut b = Budget::default();
        let t = 7_000_000_000;
        assert!((0..3).all(|_| b.take("a", 3, t)));
        assert!(!b.take("a", 3, t + 999_999_999), "a fourth write in one second");
        assert!(b.take("b", 3, t), "another service has its own budget");
        assert!(b.take("a", 3, t + 1_000_000_000), "the next second");
    }

    #[test]
    fn written_map_is_bounded() {
        let peers = Peers::new(&[], test_key(), 2);
        for i in 0..10u8 {
            peers.remember_written(
                StickKey::new(
                    lb_common::addr_bytes(IpAddr::from([10, 0, 0, i])),
                    0,
                    0,
                    FAMILY_V4,
                ),
                1,
            );
        }
        assert_eq!(peers.written.lock().unwrap().len(), 2);
        // A key already remembered is updated even when full.
        let k = StickKey::new(
            lb_common::addr_bytes(IpAddr::from([10, 0, 0, 0])),
            0,
            0,
            FAMILY_V4,
        );
        peers.remember_written(k, 5);
        assert_eq!(peers.written.lock().unwrap().get(&k), Some(&5));
        // A sweep empties it.
        assert!(peers.own_changes(Vec::new()).is_empty());
        assert!(peers.written.lock().unwrap().is_empty());
    }

    fn test_key() -> PeerKey {
        let path = std::env::temp_dir().join(format!("xlb-peers-unit-{}.key", std::process::id()));
        std::fs::write(&path, "0123456789abcdef0123").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = crate::config::read_peer_key("test", &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        k
    }

    #[test]
    fn mapped_v4_peer_address_is_canonical() {
        let a: SocketAddr = "[::ffff:10.0.0.2]:4000".parse().unwrap();
        assert_eq!(canonical(a), IpAddr::from([10, 0, 0, 2]));
        let b: SocketAddr = "[fd00::2]:4000".parse().unwrap();
        assert_eq!(canonical(b), b.ip());
    }
}
