//! Stick-table replication between instances: HAProxy's `peers`, for the L4 table.
//!
//! Two balancers with one config already agree on new clients (Maglev is deterministic). They
//! disagree on clients pinned while their views differed: a client that landed elsewhere
//! during a failover, a drain, or a weight change. Peers close that gap, so a client that
//! moves to another instance (ECMP change, VRRP failover) keeps its backend.
//!
//! - Every entry the data path writes (a new client, an expired entry replaced, a redispatch)
//!   is streamed to every peer as it happens: the data path reports it through a ring
//!   (`datapath::Inserts`), and `agent::replicator` sends what arrived within about a
//!   millisecond as one batch, so a client's entry reaches the peers before its next
//!   connection can arrive at one of them.
//! - Refreshes stay on the sweep (see `agent::sweeper`): it collects the entries created or
//!   refreshed since the previous one and sends the peers those they do not hold as they are
//!   (an entry streamed and not refreshed since is left out: see `written`). They are not
//!   urgent: the peer already holds the entry, and an entry is refreshed at most once a second,
//!   so an active client costs one line per second per peer. A sender that fell behind the
//!   stream and skipped batches makes the next sweep send everything touched since it last
//!   kept up ([`Peers::take_missed`]).
//! - On every (re)connection the sender first teaches the peer its whole table, read and sent
//!   in pieces (the first piece is on the wire while the rest is read), ended by a
//!   `teach-complete` line (`wire::teach_complete`). A peer that comes back connects to this
//!   instance too; that connection cuts short this sender's wait between attempts, so the
//!   peer is taught at once. [`Peers::taught`] says when every peer has taught this instance
//!   its table since the start (what a restarted balancer waits for before it announces its
//!   VIPs).
//! - Every connection is authenticated with the key the peers share (`peer_key_file`): a
//!   challenge from each side, then frames whose MAC covers a sequence number and a key of
//!   that connection (`peer_wire`). There is no unauthenticated mode.
//! - The receiver accepts connections only from the listed peers' addresses, closes one that
//!   fails authentication, and merges by recency: an update is written unless the local entry
//!   was seen as recently or later (a key the table does not hold, the usual case, costs one
//!   `BPF_NOEXIST` write; one it holds, a read and maybe a write). Names are checked against
//!   the current config; a peer may write at most a service's stick size of entries into it per
//!   second ([`Budget`]). What it writes is remembered (up to the stick capacity) so that its
//!   own next sweep does not send it back.
//! - Time is bounded: a peer that stops reading is dropped after [`WRITE_TIMEOUT`], every
//!   handshake has a deadline, and every wait ends when the agent stops.
//!
//! Payload of the frames: one line per entry,
//! `<service> <client address after the mask> <source port or 0> <server> <idle ms>`.
//! Services and servers travel by name, so ids may differ between instances; a line about a
//! service or server the receiver does not have is dropped and counted (`unknown`).
//!
//! Here: the peers, their counters and what this instance wrote for them. `updates`: the
//! update lines, made from and merged into the table (under the agent's lock, asked through
//! [`Agent`]). `session`: the connections. `codec`: the framing on the byte stream
//! (`tokio-util`). `wire`: the handshake and the frames' MACs, without I/O.

mod codec;
mod session;
mod updates;
pub mod wire;

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use lb_common::{StickEntry, StickKey};

use crate::config::{Peer, PeerKey};
pub use session::{listen, sender};
pub use updates::{Merged, Update, apply_lines, encode, merge};

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

/// A batch of update lines for every sender: (text, number of lines).
pub type Batch = Arc<(String, u64)>;

/// What the peers' connections ask of the agent, which alone takes the balancer's lock and
/// spawns: each runs on a thread that may block, and resolves when done.
pub trait Agent: Send + Sync + 'static {
    /// Every entry of the stick table as update lines ([`encode`]), in pieces as the walk
    /// reads them (so that the first is on its way while the rest is read); the channel closes
    /// after the last. The table is walked on a map handle of its own without the lock, the
    /// names of each piece read under it.
    fn teach(&self) -> tokio::sync::mpsc::Receiver<Batch>;
    /// [`apply_lines`] under one lock of the balancer: the first error, if any.
    fn apply_lines(
        &self,
        peers: Arc<Peers>,
        index: usize,
        lines: Vec<String>,
    ) -> impl Future<Output = Option<String>> + Send;
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
    /// It has taught this instance its whole table (a `teach-complete` line) since the start.
    pub taught: AtomicBool,
    /// Inbound connections from its address that have not authenticated yet.
    unauthenticated: AtomicU64,
    /// Number of the newest authenticated inbound connection: an older one closes.
    generation: AtomicU64,
    newer: tokio::sync::Notify,
    /// An inbound connection from it authenticated: it is up (again), so this instance's
    /// sender to it, if it is waiting to connect or between attempts, tries again at once
    /// (the peer is then taught without waiting for the next retry).
    back: tokio::sync::Notify,
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

    /// Return one write taken by [`Budget::take`] that was not made.
    pub fn give_back(&mut self, service: &str) {
        if let Some(u) = self.used.get_mut(service) {
            *u = u.saturating_sub(1);
        }
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
    /// Entries the peers already hold as they are (key -> last-seen): written here from a
    /// peer's update, or streamed to the peers by the replicator; the next sweep does not send
    /// them (again). Emptied by every sweep and holds at most `written_cap` entries: one beyond
    /// that may be sent once more, which costs a line.
    written: Mutex<HashMap<StickKey, u64>>,
    written_cap: usize,
    /// A sender fell behind the stream and skipped batches ([`Peers::note_missed`]): the
    /// oldest last-seen time (coarse ns) an entry in them can have; `u64::MAX` when none did.
    /// The next sweep sends every entry touched since then.
    missed_since: AtomicU64,
    /// How many peers have taught this instance their whole table since the start.
    taught: tokio::sync::watch::Sender<usize>,
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
            missed_since: AtomicU64::new(u64::MAX),
            taught: tokio::sync::watch::Sender::new(0),
        })
    }

    /// How many of the configured peers have completed a full teach of their table to this
    /// instance since the start; all have when it reaches `list.len()` (at once without peers).
    /// It never goes down: a peer that reconnects teaches again, but was taught once.
    pub fn taught(&self) -> tokio::sync::watch::Receiver<usize> {
        self.taught.subscribe()
    }

    /// Peer `index` ended its full teach of `entries` entries, `took` after its connection
    /// authenticated (`applying` of it spent merging them).
    fn mark_taught(&self, index: usize, entries: u64, took: Duration, applying: Duration) {
        let (peer, c) = &self.list[index];
        c.taught.store(true, Relaxed);
        log::info!(
            "peer {}: taught us its table ({entries} entries in {took:?}, {applying:?} of it merging them)",
            peer.name
        );
        let n = self.list.iter().filter(|(_, c)| c.taught.load(Relaxed)).count();
        self.taught
            .send_if_modified(|taught| std::mem::replace(taught, n) != n);
    }

    fn by_ip(&self, ip: IpAddr) -> Option<usize> {
        self.list.iter().position(|(p, _)| p.address.ip() == ip)
    }

    /// Of the entries a sweep found touched, those the peers do not hold as they are (see
    /// `written`); every one when `all` (a sender missed some). Forgets what they hold, either
    /// way.
    pub fn own_changes(
        &self,
        touched: Vec<(StickKey, StickEntry)>,
        all: bool,
    ) -> Vec<(StickKey, StickEntry)> {
        let written = std::mem::take(&mut *self.written.lock().expect("peers lock"));
        touched
            .into_iter()
            .filter(|(k, e)| all || written.get(k) != Some(&e.last_seen_ns))
            .collect()
    }

    fn remember_written(&self, key: StickKey, seen: u64) {
        self.remember(&[(key, seen)]);
    }

    /// Entries the replicator has just streamed to the peers: the next sweep leaves them out
    /// unless they change meanwhile (or a sender misses them: [`Peers::note_missed`]).
    pub fn remember_streamed(&self, entries: &[(StickKey, StickEntry)]) {
        let known: Vec<_> = entries.iter().map(|(k, e)| (*k, e.last_seen_ns)).collect();
        self.remember(&known);
    }

    fn remember(&self, known: &[(StickKey, u64)]) {
        let mut w = self.written.lock().expect("peers lock");
        for (key, seen) in known {
            if w.len() < self.written_cap || w.contains_key(key) {
                w.insert(*key, *seen);
            }
        }
    }

    /// A sender skipped batches of the stream (it fell behind); the last one it took came at
    /// `last_taken` (coarse ns). The skipped entries were made after the batch before them was
    /// formed: a second's margin covers that and the clock's tick.
    fn note_missed(&self, last_taken: u64) {
        self.missed_since
            .fetch_min(last_taken.saturating_sub(1_000_000_000), Relaxed);
    }

    /// For the next sweep, which resends whatever a sender missed: since when (coarse ns)
    /// entries must be sent whether the peers are believed to have them or not; None when no
    /// sender missed any. Taking it clears it.
    pub fn take_missed(&self) -> Option<u64> {
        match self.missed_since.swap(u64::MAX, Relaxed) {
            u64::MAX => None,
            t => Some(t),
        }
    }

    /// `show peers`.
    pub fn show(&self) -> String {
        let mut out = String::from(
            "# name address state sent dropped received applied older unknown malformed refused \
             bad_auth timeouts taught\n",
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
            out.push_str(if c.taught.load(Relaxed) { " yes\n" } else { " no\n" });
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

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::FAMILY_V4;

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
        assert!(peers.own_changes(Vec::new(), false).is_empty());
        assert!(peers.written.lock().unwrap().is_empty());
    }

    #[test]
    fn a_sweep_leaves_out_what_was_streamed_unless_it_changed_or_a_sender_missed_it() {
        let peers = Peers::new(&[], test_key(), 100);
        let key = |d: u8| {
            StickKey::new(
                lb_common::addr_bytes(IpAddr::from([10, 0, 0, d])),
                0,
                0,
                FAMILY_V4,
            )
        };
        let entry = |seen: u64| StickEntry {
            last_seen_ns: seen,
            backend: 1,
            syn_at: 0,
        };
        peers.remember_streamed(&[(key(1), entry(10)), (key(2), entry(10))]);
        // key 1 unchanged since it was streamed, key 2 refreshed since, key 3 never streamed.
        let touched = vec![(key(1), entry(10)), (key(2), entry(20)), (key(3), entry(10))];
        let sent: Vec<_> = peers
            .own_changes(touched.clone(), false)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(sent, vec![key(2), key(3)]);
        // No sender missed anything: nothing to resend.
        assert_eq!(peers.take_missed(), None);
        // A sender missed batches after taking one at 5 s; another after one at 3 s: the
        // sweep resends from the older, less the margin, and everything touched.
        peers.note_missed(5_000_000_000);
        peers.note_missed(3_000_000_000);
        assert_eq!(peers.take_missed(), Some(2_000_000_000));
        assert_eq!(peers.take_missed(), None, "taken once");
        peers.remember_streamed(&[(key(1), entry(10))]);
        assert_eq!(peers.own_changes(touched, true).len(), 3);
    }

    #[test]
    fn taught_once_every_peer_completed_its_teach() {
        let peer = |name: &str, port: u16| Peer {
            name: name.to_string(),
            address: std::net::SocketAddr::from(([10, 0, 0, 1], port)),
        };
        let peers = Peers::new(&[peer("a", 1), peer("b", 2)], test_key(), 10);
        let taught = peers.taught();
        assert_eq!(*taught.borrow(), 0);
        peers.mark_taught(0, 5, Duration::ZERO, Duration::ZERO);
        assert_eq!(*taught.borrow(), 1, "b has not taught yet");
        assert!(
            peers
                .show()
                .lines()
                .any(|l| l.starts_with("a ") && l.ends_with(" yes"))
        );
        assert!(
            peers
                .show()
                .lines()
                .any(|l| l.starts_with("b ") && l.ends_with(" no"))
        );
        peers.mark_taught(1, 0, Duration::ZERO, Duration::ZERO);
        assert_eq!(*taught.borrow(), 2);
        peers.mark_taught(0, 7, Duration::ZERO, Duration::ZERO);
        assert_eq!(*taught.borrow(), 2, "a second teach of a taught peer counts once");
        assert_eq!(*peers.taught().borrow(), 2, "a later subscriber sees it too");
    }

    pub(super) fn test_key() -> PeerKey {
        // One file per call: tests run in parallel threads of one process.
        static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("xlb-peers-unit-{}-{n}.key", std::process::id()));
        std::fs::write(&path, "0123456789abcdef0123").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = crate::config::read_peer_key("test", &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        k
    }
}
