//! The peers' connections: the sender keeps one to each peer, teaches it the whole table (ended
//! by a `teach-complete` line) and then sends it every batch of update lines; the listener
//! accepts peers' connections, merges what they send and notes each completed teach. Every wait is
//! bounded and ends when the agent stops. What needs the balancer is asked of the agent
//! ([`Agent`]); the connections of the listener run inside its own future, so neither spawns.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use tokio::{
    io::AsyncWriteExt as _,
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{broadcast, watch},
};
use tokio_util::codec::FramedRead;

use super::{
    Agent, BATCH, Batch, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, MAX_UNAUTHENTICATED, Peers, RETRY,
    WRITE_TIMEOUT,
    codec::{Frames, Lines, Nothing},
    wire::{self, FrameReader, FrameWriter, WireError},
};
use crate::datapath::coarse_now_ns;

/// Resolves when the agent is stopping (at once if it already is).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
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

/// The next handshake line.
async fn next_line(lines: &mut FramedRead<OwnedReadHalf, Lines>) -> Result<String, ConnError> {
    lines.next().await.unwrap_or(Err(ConnError::Closed))
}

/// The sender's half of the handshake; seals frames for this connection.
async fn authenticate_to(
    lines: &mut FramedRead<OwnedReadHalf, Lines>,
    out: &mut OwnedWriteHalf,
    key: &[u8],
) -> Result<FrameWriter, ConnError> {
    let mine = wire::random_nonce()?;
    out.write_all(wire::hello(&mine).as_bytes()).await?;
    let theirs = wire::check_challenge(key, &mine, &next_line(lines).await?)?;
    out.write_all(wire::response(key, &mine, &theirs).as_bytes())
        .await?;
    Ok(FrameWriter::new(key, &mine, &theirs))
}

/// The receiver's half of the handshake; opens frames of this connection.
async fn authenticate_from(
    lines: &mut FramedRead<OwnedReadHalf, Lines>,
    out: &mut OwnedWriteHalf,
    key: &[u8],
) -> Result<FrameReader, ConnError> {
    let theirs = wire::parse_hello(&next_line(lines).await?)?;
    let mine = wire::random_nonce()?;
    out.write_all(wire::challenge(key, &theirs, &mine).as_bytes())
        .await?;
    wire::check_response(key, &theirs, &mine, &next_line(lines).await?)?;
    Ok(FrameReader::new(key, &theirs, &mine))
}

/// Send `text` (whole update lines) as frames, each within [`WRITE_TIMEOUT`].
async fn send_frames(
    out: &mut OwnedWriteHalf,
    w: &mut FrameWriter,
    text: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ConnError> {
    for payload in wire::split_frames(text) {
        let frame = w.seal(payload);
        bounded(WRITE_TIMEOUT, shutdown, async {
            out.write_all(&frame).await.map_err(ConnError::from)
        })
        .await?;
    }
    Ok(())
}

/// Keeps an authenticated connection to peer `index` and sends it every batch; on each
/// (re)connection, the whole table first (made by `agent`), ended by a teach-complete line.
pub async fn sender<A: Agent>(
    agent: Arc<A>,
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
                _ = counters.back.notified() => {}
                _ = stopping(&mut shutdown) => return,
            }
        }
        first = false;
        let connect = bounded(CONNECT_TIMEOUT, &mut shutdown, async {
            TcpStream::connect(peer.address).await.map_err(ConnError::from)
        });
        // An attempt made while the peer was down may hang until its timeout: the peer's own
        // connection to us says it is back, and a new attempt starts at once.
        let conn = tokio::select! {
            c = connect => c,
            _ = counters.back.notified() => {
                first = true;
                continue;
            }
        };
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
        let (input, mut out) = stream.into_split();
        let mut lines = FramedRead::new(input, Lines::new());
        let mut writer = match bounded(
            HANDSHAKE_TIMEOUT,
            &mut shutdown,
            authenticate_to(&mut lines, &mut out, key),
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
        // The receiver writes nothing after the handshake: EOF or an error on the read side
        // means it went away, which must be noticed without waiting for the next batch.
        let mut input = lines.map_decoder(|_| Nothing);
        // Subscribe before the dump: what changes during it follows it.
        let mut rx = batches.subscribe();
        // When the last batch was taken (at first: when the stream began for this connection).
        let mut last_taken = coarse_now_ns();
        let taught_in = std::time::Instant::now();
        let mut pieces = agent.teach();
        let mut entries = 0;
        let mut result = Ok(());
        while result.is_ok() {
            let piece = tokio::select! {
                p = pieces.recv() => p,
                _ = stopping(&mut shutdown) => return,
            };
            let Some(piece) = piece else { break };
            result = send_frames(&mut out, &mut writer, &piece.0, &mut shutdown).await;
            entries += piece.1;
        }
        drop(pieces);
        if result.is_ok() {
            result = send_frames(
                &mut out,
                &mut writer,
                &wire::teach_complete(entries),
                &mut shutdown,
            )
            .await;
        }
        if result.is_ok() {
            counters.sent.fetch_add(entries, Relaxed);
            counters.connected.store(true, Relaxed);
            log::info!(
                "peer {} ({}): connected, sent the table ({entries} entries in {:?})",
                peer.name,
                peer.address,
                taught_in.elapsed()
            );
        }
        while result.is_ok() {
            tokio::select! {
                r = input.next() => result = match r {
                    None => Err(ConnError::Closed),
                    Some(Err(e)) => Err(e),
                    Some(Ok(nothing)) => match nothing {},
                },
                m = rx.recv() => match m {
                    Ok(batch) => {
                        last_taken = coarse_now_ns();
                        result = send_frames(&mut out, &mut writer, &batch.0, &mut shutdown).await;
                        if result.is_ok() {
                            counters.sent.fetch_add(batch.1, Relaxed);
                        } else {
                            counters.dropped.fetch_add(batch.1, Relaxed);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        log::warn!(
                            "peer {}: too slow, {n} batches of updates skipped (the next sweep sends their entries)",
                            peer.name
                        );
                        counters.dropped.fetch_add(n, Relaxed);
                        peers.note_missed(last_taken);
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
/// [`MAX_UNAUTHENTICATED`] per address waiting to authenticate) and merges what they send
/// through `agent`. The connections run concurrently inside this future, which the agent
/// spawns: it has one thread, so a task per connection would run no more at once.
pub async fn listen<A: Agent>(
    listener: TcpListener,
    agent: Arc<A>,
    peers: Arc<Peers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = FuturesUnordered::new();
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
            Some(()) = connections.next() => continue,
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
        connections.push(receive(
            stream,
            index,
            agent.clone(),
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

/// One inbound connection of peer `index`: authenticate (the connection counts as
/// unauthenticated until then), then merge its frames until it closes, fails, is superseded by
/// a newer authenticated connection of the same peer, or the agent stops.
async fn receive<A: Agent>(
    stream: TcpStream,
    index: usize,
    agent: Arc<A>,
    peers: Arc<Peers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (peer, c) = (&peers.list[index].0, &peers.list[index].1);
    let name = peer.name.clone();
    // The write half lives as long as the connection: dropping it would close our side.
    let (input, mut out) = stream.into_split();
    let mut lines = FramedRead::new(input, Lines::new());
    let auth = bounded(
        HANDSHAKE_TIMEOUT,
        &mut shutdown,
        authenticate_from(&mut lines, &mut out, peers.key.bytes()),
    )
    .await;
    c.unauthenticated.fetch_sub(1, Relaxed);
    let reader = match auth {
        Ok(r) => r,
        Err(ConnError::Stopping) => return,
        Err(e) => {
            c.bad_auth.fetch_add(1, Relaxed);
            log::warn!("peer {name}: inbound connection did not authenticate ({e}); closed");
            return;
        }
    };
    let authenticated = std::time::Instant::now();
    let mut frames = lines.map_decoder(|lines| Frames::new(lines, reader));
    let generation = c.generation.fetch_add(1, Relaxed) + 1;
    c.newer.notify_waiters();
    if !c.connected.load(Relaxed) {
        c.back.notify_one();
    }
    let mut complained = false;
    // Time spent merging (waiting for the balancer and writing its table), for the log.
    let mut applying = Duration::ZERO;
    let why = loop {
        if c.generation.load(Relaxed) != generation {
            break "a newer connection from the peer authenticated".to_string();
        }
        let frame = tokio::select! {
            f = frames.next() => f,
            _ = c.newer.notified() => continue,
            _ = stopping(&mut shutdown) => return,
        };
        let payload = match frame {
            Some(Ok(p)) => p,
            None | Some(Err(ConnError::Closed)) => break "closed by the peer".to_string(),
            Some(Err(ConnError::Wire(e))) => {
                if e.is_auth_failure() {
                    c.bad_auth.fetch_add(1, Relaxed);
                } else {
                    c.malformed.fetch_add(1, Relaxed);
                }
                break e.to_string();
            }
            Some(Err(ConnError::LineTooLong(n))) => {
                c.malformed.fetch_add(1, Relaxed);
                break format!("a frame header longer than {n} bytes");
            }
            Some(Err(e)) => break e.to_string(),
        };
        let text = String::from_utf8_lossy(&payload).into_owned();
        let mut lines: Vec<String> = Vec::new();
        // Update lines are applied in order, and a teach-complete line only after every line
        // before it.
        for line in text.lines().map(Some).chain([None]) {
            let taught = line.and_then(wire::parse_teach_complete);
            if let Some(l) = line
                && taught.is_none()
            {
                lines.push(l.to_string());
                continue;
            }
            let mut rest = std::mem::take(&mut lines);
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(BATCH));
                let chunk = std::mem::replace(&mut rest, tail);
                let t = std::time::Instant::now();
                let first_error = agent.apply_lines(peers.clone(), index, chunk).await;
                applying += t.elapsed();
                if let Some(e) = first_error
                    && !complained
                {
                    log::warn!("peer {name}: update not applied: {e} (further ones are only counted)");
                    complained = true;
                }
            }
            if let Some(entries) = taught {
                peers.mark_taught(index, entries, authenticated.elapsed(), applying);
            }
        }
    };
    log::info!("peer {name}: inbound connection closed: {why}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Peer;
    use std::sync::Mutex;

    /// A table of fixed lines to teach; what it is given to apply, in order.
    struct Table {
        dump: (String, u64),
        applied: Mutex<Vec<String>>,
    }

    impl Agent for Table {
        fn teach(&self) -> tokio::sync::mpsc::Receiver<Batch> {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.try_send(Arc::new(self.dump.clone()))
                .expect("room for the dump");
            rx
        }

        fn apply_lines(
            &self,
            _peers: Arc<Peers>,
            _index: usize,
            lines: Vec<String>,
        ) -> impl std::future::Future<Output = Option<String>> + Send {
            self.applied.lock().unwrap().extend(lines);
            async { None }
        }
    }

    /// A sender teaches its table over loopback, ended by the marker: the receiver applies every
    /// line in order (never the marker), then counts the teach complete; later batches follow.
    #[tokio::test]
    async fn a_full_teach_ends_with_its_marker_and_makes_the_receiver_taught() {
        let key = super::super::tests::test_key();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let peer = |name: &str, address| Peer {
            name: name.to_string(),
            address,
        };
        let receiving = Peers::new(
            &[peer("a", SocketAddr::from(([127, 0, 0, 1], 1)))],
            key.clone(),
            10,
        );
        let sending = Peers::new(&[peer("b", at)], key, 10);
        let dump: String = (1..=3).map(|i| format!("web 10.0.0.{i} 0 s1 5\n")).collect();
        let teacher = Arc::new(Table {
            dump: (dump.clone(), 3),
            applied: Mutex::new(Vec::new()),
        });
        let learner = Arc::new(Table {
            dump: (String::new(), 0),
            applied: Mutex::new(Vec::new()),
        });
        let (batches, _) = broadcast::channel::<Batch>(16);
        let (stop, shutdown) = watch::channel(false);
        let mut taught = receiving.taught();
        assert_eq!(*taught.borrow(), 0);
        let check = async {
            let r = tokio::time::timeout(Duration::from_secs(10), taught.wait_for(|n| *n == 1)).await;
            assert!(r.is_ok(), "the teach never completed");
            let want: Vec<String> = dump.lines().map(str::to_string).collect();
            assert_eq!(
                *learner.applied.lock().unwrap(),
                want,
                "every line, in order, before the marker"
            );
            assert!(
                receiving
                    .show()
                    .lines()
                    .any(|l| l.starts_with("a ") && l.ends_with(" yes"))
            );
            // A batch after the teach is applied too.
            let _ = batches.send(Arc::new(("web 10.0.0.9 0 s1 0\n".to_string(), 1)));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while learner.applied.lock().unwrap().len() < 4 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(learner.applied.lock().unwrap().len(), 4);
            let _ = stop.send(true);
        };
        tokio::join!(
            listen(listener, learner.clone(), receiving.clone(), shutdown.clone()),
            sender(teacher, sending.clone(), 0, batches.clone(), shutdown.clone()),
            check,
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
