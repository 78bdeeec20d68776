//! The failover bench's clients. Every source of the client host opens a fresh connection
//! (`GET /`, `Connection: close`) once per [`PERIOD`], the sources staggered over the period,
//! and every attempt is logged ([`Attempt`]). A failed attempt is tried again [`RETRY_PAUSE`]
//! after it ended, from a new port. A connect gives up after [`CONNECT_TIMEOUT`] (the kernel
//! retransmits the SYN once meanwhile, at 1 s), a response after [`RESPONSE_TIMEOUT`].
//!
//! When the fault begins ([`Load::fault_began`]), attempts in flight since before it are
//! abandoned and made again at once: no source waits on a connection made before the fault.
//!
//! All of it runs on one tokio current-thread runtime, on a thread inside the client's
//! namespace, bounded by the time given to [`Load::start`].

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
    sync::watch,
    time::timeout,
};

use crate::{HostId, Topology, client::parse_complete, netns};

/// How often each source opens a connection while all goes well.
pub const PERIOD: Duration = Duration::from_secs(1);
/// A client gives up a connect after this long (the seed HAProxy config's `timeout connect`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A client waits this long for the response once connected: long enough for HAProxy's
/// `retries 3` of a 2 s connect and its redispatch.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// The pause after a failed attempt before the next one.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why an attempt made before the fault was given up.
const ABANDONED: &str = "abandoned: made before the fault began";

/// One connection attempt of one source.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub source: IpAddr,
    /// When it began, since the load began.
    pub start: Duration,
    /// When it ended (answered or failed), since the load began.
    pub end: Duration,
    /// The backend that answered (`X-Served-By`), or why it failed.
    pub outcome: Result<String, String>,
}

impl Attempt {
    /// The backend that answered, if it succeeded.
    pub fn served_by(&self) -> Option<&str> {
        self.outcome.as_deref().ok()
    }
}

/// What every source task shares.
#[derive(Clone)]
struct Shared {
    t0: Instant,
    until: Duration,
    dst: SocketAddr,
    log: Arc<Mutex<Vec<Attempt>>>,
    fault: watch::Receiver<Option<Duration>>,
    stop: watch::Receiver<bool>,
}

/// The clients, running until [`Load::finish`] (or the bound of [`Load::start`]).
pub struct Load {
    t0: Instant,
    log: Arc<Mutex<Vec<Attempt>>>,
    fault: watch::Sender<Option<Duration>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Load {
    /// Starts one client per source of `sources` on host `client`, to `dst`, for `bound` at most.
    pub fn start(
        topo: &Topology,
        client: HostId,
        sources: &[IpAddr],
        dst: SocketAddr,
        bound: Duration,
    ) -> Result<Load> {
        let t0 = Instant::now();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (fault, fault_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Shared {
            t0,
            until: bound,
            dst,
            log: log.clone(),
            fault: fault_rx,
            stop: stop_rx,
        };
        let sources = sources.to_vec();
        let thread = netns::spawn_in(&topo.host(client).ns, "failover-load", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime for the clients")?;
            rt.block_on(async move {
                let n = sources.len().max(1) as u32;
                let tasks: Vec<_> = sources
                    .into_iter()
                    .enumerate()
                    .map(|(i, src)| {
                        let offset = PERIOD * i as u32 / n;
                        tokio::spawn(source_loop(src, offset, shared.clone()))
                    })
                    .collect();
                for t in tasks {
                    t.await.context("a client task panicked")?;
                }
                Ok(())
            })
        })?;
        Ok(Load {
            t0,
            log,
            fault,
            stop,
            thread: Some(thread),
        })
    }

    /// Time since the load began.
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Says the fault begins now (attempts in flight since before are made again); returns when
    /// that is, since the load began.
    pub fn fault_began(&self) -> Duration {
        let at = self.t0.elapsed();
        self.fault.send_replace(Some(at));
        at
    }

    /// Every attempt logged so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.log.lock().expect("attempt log").clone()
    }

    /// Stops the clients and returns every attempt.
    pub fn finish(mut self) -> Result<Vec<Attempt>> {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow!("the client thread panicked"))??;
        }
        Ok(self.attempts())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One source's clients: an attempt per [`PERIOD`], again after [`RETRY_PAUSE`] on failure.
async fn source_loop(src: IpAddr, offset: Duration, mut sh: Shared) {
    let mut next = offset;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until((sh.t0 + next).into()) => {}
            _ = sh.stop.wait_for(|s| *s) => return,
        }
        let start = sh.t0.elapsed();
        if start >= sh.until {
            return;
        }
        let mut fault = sh.fault.clone();
        let outcome = tokio::select! {
            r = attempt(src, sh.dst) => r.map_err(|e| format!("{e:#}")),
            _ = abandoned_at_fault(&mut fault, start) => Err(ABANDONED.to_string()),
            _ = sh.stop.wait_for(|s| *s) => return,
        };
        let end = sh.t0.elapsed();
        next = match &outcome {
            Ok(_) => start + PERIOD,
            Err(e) if e == ABANDONED => end,
            Err(_) => end + RETRY_PAUSE,
        };
        sh.log.lock().expect("attempt log").push(Attempt {
            source: src,
            start,
            end,
            outcome,
        });
    }
}

/// Resolves when the fault begins after `start` (never when it began before).
async fn abandoned_at_fault(fault: &mut watch::Receiver<Option<Duration>>, start: Duration) {
    if fault.wait_for(|f| f.is_some_and(|at| at > start)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A fresh connection from `src` to `dst`, `GET /`; the backend that answered.
async fn attempt(src: IpAddr, dst: SocketAddr) -> Result<String> {
    let sock = if dst.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(src, 0))
        .with_context(|| format!("bind {src}"))?;
    let mut s = timeout(CONNECT_TIMEOUT, sock.connect(dst))
        .await
        .map_err(|_| anyhow!("connect {src} -> {dst}: no answer in {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("connect {src} -> {dst}"))?;
    timeout(RESPONSE_TIMEOUT, exchange(&mut s))
        .await
        .map_err(|_| anyhow!("{src} -> {dst}: no response in {RESPONSE_TIMEOUT:?}"))?
        .with_context(|| format!("{src} -> {dst}"))
}

async fn exchange(s: &mut TcpStream) -> Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(r) = parse_complete(&buf)? {
            anyhow::ensure!(
                r.status == 200 && !r.served_by.is_empty(),
                "status {}, served by {:?}",
                r.status,
                r.served_by
            );
            return Ok(r.served_by);
        }
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed after {} bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
        anyhow::ensure!(buf.len() <= 1 << 20, "response too large");
    }
}

/// Each source's backend before `at`: the one that answered its last attempt that ended
/// before `at`.
pub fn pins_before(attempts: &[Attempt], at: Duration) -> BTreeMap<IpAddr, String> {
    let mut last: BTreeMap<IpAddr, (Duration, String)> = BTreeMap::new();
    for a in attempts.iter().filter(|a| a.end < at) {
        if let Some(b) = a.served_by()
            && last.get(&a.source).is_none_or(|(t, _)| *t <= a.end)
        {
            last.insert(a.source, (a.end, b.to_string()));
        }
    }
    last.into_iter().map(|(s, (_, b))| (s, b)).collect()
}

/// For each source pinned to `failed` in `pins`: seconds from `fault` to the end of its first
/// attempt begun at or after `fault` that another backend answered; `None` for a source that
/// had none.
pub fn redispatch_s(
    attempts: &[Attempt],
    pins: &BTreeMap<IpAddr, String>,
    failed: &str,
    fault: Duration,
) -> BTreeMap<IpAddr, Option<f64>> {
    let mut out: BTreeMap<IpAddr, Option<f64>> = pins
        .iter()
        .filter(|(_, b)| *b == failed)
        .map(|(s, _)| (*s, None))
        .collect();
    for a in attempts.iter().filter(|a| a.start >= fault) {
        if let (Some(slot), Some(b)) = (out.get_mut(&a.source), a.served_by())
            && b != failed
        {
            let s = (a.end - fault).as_secs_f64();
            if slot.is_none_or(|t| s < t) {
                *slot = Some(s);
            }
        }
    }
    out
}

/// Attempts begun per second within `[from, to)`.
pub fn rate(attempts: &[Attempt], from: Duration, to: Duration) -> f64 {
    let n = attempts
        .iter()
        .filter(|a| a.start >= from && a.start < to)
        .count();
    n as f64 / (to - from).as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(src: u8, start_ms: u64, end_ms: u64, outcome: Result<&str, &str>) -> Attempt {
        Attempt {
            source: IpAddr::from([10, 77, 16, src]),
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(end_ms),
            outcome: outcome.map(str::to_string).map_err(str::to_string),
        }
    }

    #[test]
    fn pins_are_the_last_backend_answering_before_the_fault() {
        let log = [
            at(1, 0, 5, Ok("app1")),
            at(1, 1000, 1005, Ok("app2")),
            at(1, 2000, 2100, Ok("app3")), // ends after the fault: not a pin
            at(2, 500, 505, Ok("app2")),
            at(2, 1500, 1600, Err("refused")),
            at(3, 100, 200, Err("refused")),
        ];
        let pins = pins_before(&log, Duration::from_millis(2050));
        assert_eq!(pins.len(), 2, "{pins:?}");
        assert_eq!(pins[&IpAddr::from([10, 77, 16, 1])], "app2");
        assert_eq!(pins[&IpAddr::from([10, 77, 16, 2])], "app2");
    }

    #[test]
    fn redispatch_counts_the_first_answer_of_another_backend_begun_after_the_fault() {
        let fault = Duration::from_millis(3000);
        let log = [
            at(1, 2000, 2001, Ok("app2")),
            at(2, 2500, 2501, Ok("app2")),
            at(3, 2600, 2601, Ok("app1")),
            at(4, 2700, 2701, Ok("app2")),
            // Begun before the fault: not counted even though another backend answered.
            at(1, 2990, 3500, Ok("app3")),
            at(1, 3000, 5000, Err("connect: no answer")),
            at(1, 5100, 6500, Ok("app3")),
            at(1, 7000, 7100, Ok("app4")),
            // The failed backend answering does not count.
            at(2, 3100, 3200, Ok("app2")),
            at(2, 4000, 4250, Ok("app1")),
            // Source 3 was never pinned to app2; source 4 never got away.
            at(3, 3100, 3101, Ok("app1")),
            at(4, 3100, 5100, Err("connect: no answer")),
        ];
        let pins = pins_before(&log, fault);
        let r = redispatch_s(&log, &pins, "app2", fault);
        let ip = |n| IpAddr::from([10, 77, 16, n]);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[&ip(1)], Some(3.5));
        assert_eq!(r[&ip(2)], Some(1.25));
        assert_eq!(r[&ip(4)], None);
    }

    #[test]
    fn rate_counts_attempts_begun_in_the_window() {
        let log = [
            at(1, 0, 1, Ok("a")),
            at(1, 1000, 1001, Ok("a")),
            at(2, 1500, 1501, Err("x")),
            at(2, 2000, 2001, Ok("a")),
        ];
        assert_eq!(
            rate(&log, Duration::from_millis(1000), Duration::from_millis(2000)),
            2.0
        );
    }
}
