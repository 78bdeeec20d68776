//! Health checks as HAProxy defines them.
//!
//! One tokio task per target. The first check runs after a random delay in `[0, inter)` so that
//! many servers configured at once do not check in lockstep; after that a check starts `inter`
//! after the previous one finished (checks of one target never overlap). Every check is bounded
//! by `timeout` as a whole (connect, request and status line together).
//!
//! `rise` consecutive successes move a server from Down to Up, `fall` consecutive failures move
//! it from Up to Down; a result resets the opposite counter. A [`Transition`] goes to the agent
//! only on an actual change of state, with the last result and the count
//! (`"connect refused, 3/3 failed"`, `"HTTP 200 in 1ms, 2/2 succeeded"`).
//!
//! Kinds:
//! - `tcp`: the TCP connect succeeds;
//! - `http`: connect, send `"{method} {uri} HTTP/1.1"` with `Host` (the configured host, or
//!   the address's IP, bracketed for IPv6), `Connection: close` and `User-Agent: xlb-health`,
//!   read until the status line is complete; success iff its status equals `expect`.
//!
//! Tasks are cancelled through a `watch` channel: [`HealthChecker::remove`] stops one target,
//! [`HealthChecker::shutdown`] stops all and waits for them. A task whose target was removed or
//! replaced can no longer change the shared state nor send a transition (each task carries a
//! generation checked under the lock), so after `remove` returns nothing more is reported for
//! that key. The state is shared behind a std `Mutex` (never held across an `.await`) and can be
//! read from other tasks through a [`StatusView`].

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher},
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinHandle,
};

/// The agent's opaque id of a target: (service, server).
pub type TargetKey = (String, String);

/// What a check does.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// The TCP connect succeeds.
    Tcp,
    /// An HTTP/1.1 request whose status line must carry `expect`.
    Http {
        method: String,
        uri: String,
        expect: u16,
        /// `Host` header; the address's IP when `None`.
        host: Option<String>,
    },
}

/// One target's check: what, where, how often and the thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub addr: SocketAddr,
    /// Delay between the end of a check and the start of the next one.
    pub inter: Duration,
    /// Bound on one whole check (connect + request + status line).
    pub timeout: Duration,
    /// Consecutive successes that move Down to Up (0 counts as 1).
    pub rise: u32,
    /// Consecutive failures that move Up to Down (0 counts as 1).
    pub fall: u32,
}

/// A target's health as seen by the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// One result of one check.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ok {
        latency: Duration,
    },
    Failed {
        /// E.g. "connect refused", "timeout after 2s while connecting",
        /// "HTTP status 503, expected 200", "connection closed before status line".
        reason: String,
        latency: Duration,
    },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    /// Time from the start of the check to its result.
    pub fn latency(&self) -> Duration {
        match self {
            Outcome::Ok { latency } | Outcome::Failed { latency, .. } => *latency,
        }
    }

    /// The failure reason, if it failed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Failed { reason, .. } => Some(reason),
        }
    }
}

/// A state change, sent to the agent.
#[derive(Debug, Clone)]
pub struct Transition {
    pub key: TargetKey,
    pub to: Health,
    /// E.g. "connect refused, 3/3 failed" or "HTTP 200 in 1ms, 2/2 succeeded".
    pub reason: String,
}

/// A target's latest state, for `show servers state` and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckStatus {
    pub health: Health,
    /// Consecutive successful checks (0 after a failure).
    pub consecutive_ok: u32,
    /// Consecutive failed checks (0 after a success).
    pub consecutive_failed: u32,
    /// The latest check's result; `None` before the first check of the current spec ended.
    pub last_outcome: Option<Outcome>,
    /// Latency of the latest check (kept across a spec change).
    pub last_latency: Option<Duration>,
    /// Reason of the latest failed check (kept across successes and spec changes).
    pub last_failure: Option<String>,
    /// Checks run for this key since it was first set.
    pub checks: u64,
    /// When `health` last changed (or the key was first set).
    pub since: Instant,
    /// The thresholds in force (effective values, at least 1).
    pub rise: u32,
    pub fall: u32,
}

impl CheckStatus {
    /// HAProxy's `check_health` counter, in `[0, rise + fall - 1]`: the server is up at
    /// `rise` or above; each failure takes one off, each success adds one.
    pub fn haproxy_health(&self) -> u32 {
        match self.health {
            Health::Up => {
                (self.rise + self.fall - 1).saturating_sub(self.consecutive_failed.min(self.fall - 1))
            }
            Health::Down => self.consecutive_ok.min(self.rise - 1),
        }
    }
}

struct Slot {
    /// The task allowed to write this slot.
    generation: u64,
    status: CheckStatus,
}

type SharedMap = Arc<Mutex<HashMap<TargetKey, Slot>>>;

fn lock(m: &Mutex<HashMap<TargetKey, Slot>>) -> MutexGuard<'_, HashMap<TargetKey, Slot>> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cheap, cloneable read handle on every target's [`CheckStatus`], for other tasks.
#[derive(Clone)]
pub struct StatusView(SharedMap);

impl StatusView {
    pub fn get(&self, key: &TargetKey) -> Option<CheckStatus> {
        lock(&self.0).get(key).map(|s| s.status.clone())
    }

    /// Every target's status, sorted by key.
    pub fn all(&self) -> Vec<(TargetKey, CheckStatus)> {
        let mut v: Vec<_> = lock(&self.0)
            .iter()
            .map(|(k, s)| (k.clone(), s.status.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

struct Task {
    spec: CheckSpec,
    /// Sending `true` (or dropping the sender) stops the task.
    cancel: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Owns one check task per target. Must be used inside a tokio runtime (`set` spawns).
pub struct HealthChecker {
    events: mpsc::UnboundedSender<Transition>,
    tasks: HashMap<TargetKey, Task>,
    shared: SharedMap,
    next_generation: u64,
}

impl HealthChecker {
    pub fn new(events: mpsc::UnboundedSender<Transition>) -> Self {
        HealthChecker {
            events,
            tasks: HashMap::new(),
            shared: Arc::new(Mutex::new(HashMap::new())),
            next_generation: 1,
        }
    }

    /// Start the task for `key` in state `initial`, or restart it with a new spec.
    ///
    /// The same spec as the running one is a no-op (the task and its counters go on: a reload
    /// that changes nothing for this target disturbs nothing). A different spec restarts only
    /// this target's task and keeps its current health (`initial` is then ignored: the checker's
    /// own state is the freshest); the consecutive counters restart from zero under the new spec.
    pub fn set(&mut self, key: TargetKey, spec: CheckSpec, initial: Health) {
        if let Some(t) = self.tasks.get(&key)
            && t.spec == spec
            && !t.handle.is_finished()
        {
            return;
        }
        if let Some(old) = self.tasks.remove(&key) {
            stop(old);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let (rise, fall) = (spec.rise.max(1), spec.fall.max(1));
        {
            let mut map = lock(&self.shared);
            match map.get_mut(&key) {
                Some(slot) => {
                    // Restart: the old task can no longer write; state carries over.
                    slot.generation = generation;
                    let s = &mut slot.status;
                    s.consecutive_ok = 0;
                    s.consecutive_failed = 0;
                    s.last_outcome = None;
                    s.rise = rise;
                    s.fall = fall;
                }
                None => {
                    map.insert(
                        key.clone(),
                        Slot {
                            generation,
                            status: CheckStatus {
                                health: initial,
                                consecutive_ok: 0,
                                consecutive_failed: 0,
                                last_outcome: None,
                                last_latency: None,
                                last_failure: None,
                                checks: 0,
                                since: Instant::now(),
                                rise,
                                fall,
                            },
                        },
                    );
                }
            }
        }
        let (cancel, cancelled) = watch::channel(false);
        let first = jitter(&key, generation, spec.inter);
        let handle = tokio::spawn(run(
            key.clone(),
            spec.clone(),
            generation,
            first,
            self.shared.clone(),
            self.events.clone(),
            cancelled,
        ));
        self.tasks.insert(key, Task { spec, cancel, handle });
    }

    /// Stop the task for `key` and forget its state. Once this returns, no transition for
    /// this key is sent any more (an in-flight check is dropped, its socket closed).
    pub fn remove(&mut self, key: &TargetKey) {
        lock(&self.shared).remove(key);
        if let Some(t) = self.tasks.remove(key) {
            stop(t);
        }
    }

    /// Latest state, consecutive counters, last latency, last failure reason.
    pub fn status(&self, key: &TargetKey) -> Option<CheckStatus> {
        lock(&self.shared).get(key).map(|s| s.status.clone())
    }

    /// A handle for reading statuses from other tasks.
    pub fn view(&self) -> StatusView {
        StatusView(self.shared.clone())
    }

    /// The keys with a running task, sorted.
    pub fn keys(&self) -> Vec<TargetKey> {
        let mut v: Vec<_> = self.tasks.keys().cloned().collect();
        v.sort();
        v
    }

    /// The spec in force for `key`.
    pub fn spec(&self, key: &TargetKey) -> Option<&CheckSpec> {
        self.tasks.get(key).map(|t| &t.spec)
    }

    /// Stop every task and wait until they have all ended.
    pub async fn shutdown(mut self) {
        lock(&self.shared).clear();
        let tasks: Vec<Task> = self.tasks.drain().map(|(_, t)| t).collect();
        for t in &tasks {
            let _ = t.cancel.send(true);
        }
        for t in tasks {
            // A task only ends by returning (it never panics by design); an error here would be a
            // panic or an abort, neither of which leaves anything to clean up.
            let _ = t.handle.await;
        }
    }
}

fn stop(t: Task) {
    let _ = t.cancel.send(true);
    // The task notices at its next poll; dropping the handle detaches it, which is fine since the
    // generation check keeps it from writing anything.
}

/// The first check's delay: pseudo-random in `[0, inter)`. `RandomState` is seeded randomly per
/// process, and the key, generation and clock spread it further; no `rand` needed.
fn jitter(key: &TargetKey, generation: u64, inter: Duration) -> Duration {
    let nanos = inter.as_nanos();
    if nanos == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    key.hash(&mut h);
    generation.hash(&mut h);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        .hash(&mut h);
    let r = u128::from(h.finish()) % nanos;
    Duration::from_nanos(u64::try_from(r).unwrap_or(u64::MAX))
}

async fn run(
    key: TargetKey,
    spec: CheckSpec,
    generation: u64,
    first: Duration,
    shared: SharedMap,
    events: mpsc::UnboundedSender<Transition>,
    mut cancelled: watch::Receiver<bool>,
) {
    let mut delay = first;
    loop {
        // `changed()` resolves on cancel (Ok) and when the checker is dropped (Err): both stop.
        tokio::select! {
            biased;
            _ = cancelled.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let outcome = tokio::select! {
            biased;
            _ = cancelled.changed() => return,
            o = check_once(&spec) => o,
        };
        if let Outcome::Failed { reason, latency } = &outcome {
            log::debug!(
                "{}/{}: check failed after {}: {reason}",
                key.0,
                key.1,
                fmt_duration(*latency)
            );
        }
        if !record(&shared, &key, generation, &spec, outcome, &events) {
            return;
        }
        delay = spec.inter;
    }
}

/// Apply one result; send a transition on a change of state. False when this task is stale.
fn record(
    shared: &Mutex<HashMap<TargetKey, Slot>>,
    key: &TargetKey,
    generation: u64,
    spec: &CheckSpec,
    outcome: Outcome,
    events: &mpsc::UnboundedSender<Transition>,
) -> bool {
    let mut map = lock(shared);
    let Some(slot) = map.get_mut(key) else {
        return false;
    };
    if slot.generation != generation {
        return false;
    }
    let s = &mut slot.status;
    s.checks += 1;
    s.last_latency = Some(outcome.latency());
    let change = match &outcome {
        Outcome::Ok { latency } => {
            s.consecutive_failed = 0;
            s.consecutive_ok = s.consecutive_ok.saturating_add(1);
            (s.health == Health::Down && s.consecutive_ok >= s.rise).then(|| {
                (
                    Health::Up,
                    format!(
                        "{}, {}/{} succeeded",
                        success_text(spec, *latency),
                        s.rise,
                        s.rise
                    ),
                )
            })
        }
        Outcome::Failed { reason, .. } => {
            s.consecutive_ok = 0;
            s.consecutive_failed = s.consecutive_failed.saturating_add(1);
            s.last_failure = Some(reason.clone());
            (s.health == Health::Up && s.consecutive_failed >= s.fall)
                .then(|| (Health::Down, format!("{reason}, {}/{} failed", s.fall, s.fall)))
        }
    };
    s.last_outcome = Some(outcome);
    if let Some((to, reason)) = change {
        s.health = to;
        s.since = Instant::now();
        // Sent under the lock so that a `remove`/`set` racing with us is strictly before or after.
        let _ = events.send(Transition {
            key: key.clone(),
            to,
            reason,
        });
    }
    true
}

fn success_text(spec: &CheckSpec, latency: Duration) -> String {
    match &spec.kind {
        CheckKind::Tcp => format!("TCP connect in {}", fmt_duration(latency)),
        CheckKind::Http { expect, .. } => format!("HTTP {expect} in {}", fmt_duration(latency)),
    }
}

/// "2s", "1.5s", "150ms", "320us".
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 {
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            let frac = format!("{:03}", ms % 1000);
            format!("{}.{}s", ms / 1000, frac.trim_end_matches('0'))
        }
    } else if ms >= 1 {
        format!("{ms}ms")
    } else {
        format!("{}us", d.as_micros())
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Connect,
    Send,
    StatusLine,
}

impl Phase {
    fn text(self) -> &'static str {
        match self {
            Phase::Connect => "while connecting",
            Phase::Send => "while sending the request",
            Phase::StatusLine => "waiting for the status line",
        }
    }
}

/// The longest status line read before giving up.
const MAX_STATUS_LINE: usize = 4096;

/// Run one check now, bounded by `spec.timeout`.
pub async fn check_once(spec: &CheckSpec) -> Outcome {
    let start = Instant::now();
    let mut phase = Phase::Connect;
    let result = tokio::time::timeout(spec.timeout, attempt(spec, &mut phase)).await;
    let latency = start.elapsed();
    match result {
        Ok(Ok(())) => Outcome::Ok { latency },
        Ok(Err(reason)) => Outcome::Failed { reason, latency },
        Err(_) => Outcome::Failed {
            reason: format!("timeout after {} {}", fmt_duration(spec.timeout), phase.text()),
            latency,
        },
    }
}

async fn attempt(spec: &CheckSpec, phase: &mut Phase) -> Result<(), String> {
    *phase = Phase::Connect;
    let mut stream = TcpStream::connect(spec.addr)
        .await
        .map_err(|e| connect_error(&e))?;
    let CheckKind::Http {
        method,
        uri,
        expect,
        host,
    } = &spec.kind
    else {
        return Ok(());
    };
    *phase = Phase::Send;
    let _ = stream.set_nodelay(true);
    let request = http_request(method, uri, host.as_deref(), spec.addr);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| io_error("sending the request", &e))?;
    *phase = Phase::StatusLine;
    let line = read_status_line(&mut stream).await?;
    let status = parse_status(&line)?;
    if status == *expect {
        Ok(())
    } else {
        Err(format!("HTTP status {status}, expected {expect}"))
    }
}

/// The request an `http` check sends.
pub fn http_request(method: &str, uri: &str, host: Option<&str>, addr: SocketAddr) -> String {
    let host = match host {
        Some(h) => h.to_string(),
        None => match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        },
    };
    format!("{method} {uri} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: xlb-health\r\n\r\n")
}

fn connect_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset while connecting".to_string(),
        io::ErrorKind::NetworkUnreachable => "connect failed: network unreachable".to_string(),
        io::ErrorKind::HostUnreachable => "connect failed: host unreachable".to_string(),
        _ => format!("connect failed: {e}"),
    }
}

fn io_error(doing: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => format!("connection reset {doing}"),
        io::ErrorKind::BrokenPipe => format!("connection closed {doing}"),
        _ => format!("error {doing}: {e}"),
    }
}

async fn read_status_line(stream: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = &buf[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            return Ok(String::from_utf8_lossy(line).into_owned());
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(format!("status line longer than {MAX_STATUS_LINE} bytes"));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| io_error("before the status line", &e))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "connection closed before status line".to_string()
            } else {
                format!(
                    "connection closed in the status line {:?}",
                    excerpt(&String::from_utf8_lossy(&buf))
                )
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// "HTTP/1.1 200 OK" -> 200.
fn parse_status(line: &str) -> Result<u16, String> {
    let bad = || format!("malformed status line {:?}", excerpt(line));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    code.parse().map_err(|_| bad())
}

fn excerpt(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr, Ipv6Addr},
        sync::atomic::{AtomicUsize, Ordering},
    };

    use tokio::{
        io::AsyncBufReadExt,
        net::{TcpListener, TcpSocket},
        time::timeout,
    };

    use super::*;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    fn key(s: &str) -> TargetKey {
        ("svc".to_string(), s.to_string())
    }

    fn tcp_spec(addr: SocketAddr) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Tcp,
            addr,
            inter: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        }
    }

    fn http_spec(addr: SocketAddr, host: Option<&str>) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Http {
                method: "GET".into(),
                uri: "/health".into(),
                expect: 200,
                host: host.map(str::to_string),
            },
            ..tcp_spec(addr)
        }
    }

    /// A port on `ip` where nothing listens: bound, so that no other socket can take it while
    /// the test runs, but not listening, so connects to it are refused. `listen()` on it brings
    /// a server up at that very address.
    fn closed_port(ip: IpAddr) -> (TcpSocket, SocketAddr) {
        let s = match ip {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .unwrap();
        s.bind(SocketAddr::new(ip, 0)).unwrap();
        let addr = s.local_addr().unwrap();
        (s, addr)
    }

    struct Server {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
        task: JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    enum Behaviour {
        /// Read the request head, answer with this status and close.
        Status(u16),
        /// Accept and hold the connection without a word.
        Silent,
        /// Accept and close at once.
        Close,
        /// Read the request, answer garbage.
        Garbage,
    }

    async fn serve_on(listener: TcpListener, behaviour: Behaviour) -> Server {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn({
            let accepted = accepted.clone();
            let requests = requests.clone();
            async move {
                let mut held = Vec::new();
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let status = match *behaviour {
                        Behaviour::Silent => {
                            held.push(s);
                            continue;
                        }
                        Behaviour::Close => continue,
                        Behaviour::Status(c) => Some(c),
                        Behaviour::Garbage => None,
                    };
                    let requests = requests.clone();
                    tokio::spawn(async move {
                        let (r, mut w) = s.split();
                        let mut r = tokio::io::BufReader::new(r);
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            match r.read_line(&mut line).await {
                                Ok(0) | Err(_) => break,
                                Ok(_) => {
                                    head.push_str(&line);
                                    if line == "\r\n" {
                                        break;
                                    }
                                }
                            }
                        }
                        requests.lock().unwrap().push(head);
                        let answer = match status {
                            Some(c) => format!(
                                "HTTP/1.1 {c} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            ),
                            None => "SSH-2.0-OpenSSH\r\n".to_string(),
                        };
                        // Dribble the status line in two writes to exercise the reader.
                        let (a, b) = answer.split_at(6);
                        let _ = w.write_all(a.as_bytes()).await;
                        let _ = w.flush().await;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let _ = w.write_all(b.as_bytes()).await;
                    });
                }
            }
        });
        Server {
            addr,
            accepted,
            requests,
            task,
        }
    }

    async fn serve(ip: IpAddr, behaviour: Behaviour) -> Server {
        serve_on(TcpListener::bind((ip, 0)).await.unwrap(), behaviour).await
    }

    /// Whether [::1] is usable here (some sandboxes have no IPv6 at all).
    async fn have_v6() -> bool {
        TcpListener::bind((V6, 0)).await.is_ok()
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Transition>, within: Duration) -> Transition {
        timeout(within, rx.recv())
            .await
            .expect("no transition in time")
            .expect("channel closed")
    }

    async fn wait_until(within: Duration, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + within;
        while !f() {
            assert!(Instant::now() < end, "condition not met within {within:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn tcp_listening_ok_closed_refused() {
        let srv = serve(V4, Behaviour::Silent).await;
        let o = check_once(&tcp_spec(srv.addr)).await;
        assert!(o.is_ok(), "{o:?}");

        let (_held, closed) = closed_port(V4);
        let o = check_once(&tcp_spec(closed)).await;
        let reason = o.reason().expect("closed port must fail").to_string();
        assert!(reason.contains("refused"), "{reason}");
        assert_eq!(reason, "connect refused");
    }

    #[tokio::test]
    async fn http_200_ok_and_exact_request() {
        let srv = serve(V4, Behaviour::Status(200)).await;
        let o = check_once(&http_spec(srv.addr, None)).await;
        assert!(o.is_ok(), "{o:?}");
        let o = check_once(&http_spec(srv.addr, Some("app.example"))).await;
        assert!(o.is_ok(), "{o:?}");
        wait_until(Duration::from_secs(1), || srv.requests.lock().unwrap().len() == 2).await;
        let reqs = srv.requests.lock().unwrap().clone();
        assert_eq!(
            reqs[0],
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nUser-Agent: xlb-health\r\n\r\n"
        );
        assert!(reqs[1].contains("\r\nHost: app.example\r\n"), "{}", reqs[1]);
    }

    #[tokio::test]
    async fn http_503_fails_with_status() {
        let srv = serve(V4, Behaviour::Status(503)).await;
        let o = check_once(&http_spec(srv.addr, None)).await;
        assert_eq!(o.reason(), Some("HTTP status 503, expected 200"), "{o:?}");
    }

    #[tokio::test]
    async fn http_silent_server_times_out_within_timeout() {
        let srv = serve(V4, Behaviour::Silent).await;
        let mut spec = http_spec(srv.addr, None);
        spec.timeout = Duration::from_millis(300);
        let t0 = Instant::now();
        let o = check_once(&spec).await;
        let took = t0.elapsed();
        let reason = o.reason().expect("must fail").to_string();
        assert!(reason.contains("timeout"), "{reason}");
        assert_eq!(reason, "timeout after 300ms waiting for the status line");
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(800), "{took:?}");
        assert!(o.latency() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn http_closed_or_garbage() {
        let srv = serve(V4, Behaviour::Close).await;
        let o = check_once(&http_spec(srv.addr, None)).await;
        let reason = o.reason().expect("must fail");
        // A close before our request was read may surface as a reset instead.
        assert!(
            reason == "connection closed before status line" || reason.contains("connection reset"),
            "{reason}"
        );

        let srv = serve(V4, Behaviour::Garbage).await;
        let o = check_once(&http_spec(srv.addr, None)).await;
        let reason = o.reason().expect("must fail");
        assert!(reason.starts_with("malformed status line"), "{reason}");
    }

    #[test]
    fn status_line_parsing_and_durations() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status("HTTP/1.0 503"), Ok(503));
        assert!(parse_status("HTTP/1.1 20 OK").is_err());
        assert!(parse_status("ICY 200 OK").is_err());
        assert!(parse_status("").is_err());
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(150)), "150ms");
        assert_eq!(fmt_duration(Duration::from_micros(320)), "320us");
        let v6 = SocketAddr::new(V6, 8080);
        assert!(http_request("HEAD", "/", None, v6).contains("\r\nHost: [::1]\r\n"));
        for i in 0..100 {
            let j = jitter(&key("a"), i, Duration::from_millis(50));
            assert!(j < Duration::from_millis(50));
        }
        assert_eq!(jitter(&key("a"), 1, Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn fall_then_rise_with_exactly_one_transition_each() {
        let (sock, addr) = closed_port(V4);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        let k = key("s1");
        hc.set(k.clone(), tcp_spec(addr), Health::Up);
        assert_eq!(hc.status(&k).unwrap().health, Health::Up);

        let t = next(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(t.key, k);
        assert_eq!(t.to, Health::Down);
        assert_eq!(t.reason, "connect refused, 3/3 failed");
        let st = hc.status(&k).unwrap();
        assert_eq!(st.health, Health::Down);
        assert_eq!(st.consecutive_failed, 3);
        assert_eq!(st.last_failure.as_deref(), Some("connect refused"));
        assert_eq!(st.haproxy_health(), 0);

        // More failures, no more transitions.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err());
        assert!(hc.status(&k).unwrap().consecutive_failed > 3);

        // The server comes up on that port.
        let srv = serve_on(sock.listen(64).unwrap(), Behaviour::Close).await;
        let t = next(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(t.to, Health::Up);
        assert!(t.reason.starts_with("TCP connect in "), "{}", t.reason);
        assert!(t.reason.ends_with(", 2/2 succeeded"), "{}", t.reason);
        assert!(srv.accepted.load(Ordering::SeqCst) >= 2);
        let st = hc.status(&k).unwrap();
        assert_eq!(
            (st.health, st.consecutive_ok, st.consecutive_failed),
            (Health::Up, 2, 0)
        );
        assert_eq!(st.haproxy_health(), 4);

        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(rx.try_recv().is_err());
        hc.shutdown().await;
    }

    #[tokio::test]
    async fn http_rise_reason_and_counter_reset() {
        let srv = serve(V4, Behaviour::Status(200)).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        let k = key("web");
        hc.set(k.clone(), http_spec(srv.addr, None), Health::Down);
        let t = next(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(t.to, Health::Up);
        assert!(t.reason.starts_with("HTTP 200 in "), "{}", t.reason);
        assert!(t.reason.ends_with(", 2/2 succeeded"), "{}", t.reason);
        hc.shutdown().await;
    }

    #[tokio::test]
    async fn same_spec_is_noop_changed_spec_restarts_keeping_state() {
        let (_held, dead) = closed_port(V4);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        let k = key("s");
        let mut spec = tcp_spec(dead);
        spec.fall = 1;
        hc.set(k.clone(), spec.clone(), Health::Up);
        let t = next(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(
            (t.to, t.reason.as_str()),
            (Health::Down, "connect refused, 1/1 failed")
        );

        // Same spec again (a reload that changes nothing): the task and counters go on.
        wait_until(Duration::from_secs(2), || {
            hc.status(&k).unwrap().consecutive_failed >= 3
        })
        .await;
        hc.set(k.clone(), spec.clone(), Health::Up);
        assert!(hc.status(&k).unwrap().consecutive_failed >= 3);
        assert_eq!(hc.status(&k).unwrap().health, Health::Down);

        // A new address: restart, state kept Down although the caller says Up.
        let srv = serve(V4, Behaviour::Close).await;
        let mut spec2 = tcp_spec(srv.addr);
        spec2.rise = 3;
        hc.set(k.clone(), spec2.clone(), Health::Up);
        let st = hc.status(&k).unwrap();
        assert_eq!((st.health, st.consecutive_failed, st.rise), (Health::Down, 0, 3));
        assert_eq!(hc.spec(&k), Some(&spec2));
        let t = next(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(t.to, Health::Up);
        assert!(t.reason.ends_with("3/3 succeeded"), "{}", t.reason);
        hc.shutdown().await;
    }

    #[tokio::test]
    async fn remove_stops_the_task() {
        let srv = serve(V4, Behaviour::Status(200)).await;
        let other = serve(V4, Behaviour::Status(200)).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        let mut spec = http_spec(srv.addr, None);
        spec.inter = Duration::from_millis(20);
        let mut spec_other = http_spec(other.addr, None);
        spec_other.inter = Duration::from_millis(20);
        hc.set(key("gone"), spec, Health::Up);
        hc.set(key("stays"), spec_other, Health::Up);
        wait_until(Duration::from_secs(2), || {
            srv.accepted.load(Ordering::SeqCst) >= 3
        })
        .await;

        hc.remove(&key("gone"));
        assert!(hc.status(&key("gone")).is_none());
        assert_eq!(hc.keys(), vec![key("stays")]);
        // Let connections already in the accept queue drain, then nothing more may arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = srv.accepted.load(Ordering::SeqCst);
        let other_seen = other.accepted.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(srv.accepted.load(Ordering::SeqCst), seen);
        // The other target is untouched.
        assert!(other.accepted.load(Ordering::SeqCst) > other_seen);
        assert!(rx.try_recv().is_err());

        let view = hc.view();
        hc.shutdown().await;
        assert!(view.all().is_empty());
        let other_seen = other.accepted.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(other.accepted.load(Ordering::SeqCst), other_seen);
    }

    #[tokio::test]
    async fn shutdown_stops_all_tasks_and_waits() {
        let srv = serve(V4, Behaviour::Status(200)).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        for i in 0..5 {
            let mut spec = http_spec(srv.addr, None);
            spec.inter = Duration::from_millis(20);
            hc.set(key(&format!("s{i}")), spec, Health::Up);
        }
        let view = hc.view();
        wait_until(Duration::from_secs(2), || {
            view.all().iter().all(|(_, s)| s.checks >= 2)
        })
        .await;
        assert_eq!(view.all().len(), 5);
        timeout(Duration::from_secs(1), hc.shutdown())
            .await
            .expect("shutdown must be prompt");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = srv.accepted.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(srv.accepted.load(Ordering::SeqCst), seen);
        // The checker (and its sender) is gone: the channel ends without a transition.
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn shutdown_cancels_an_in_flight_check() {
        let srv = serve(V4, Behaviour::Silent).await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        let mut spec = http_spec(srv.addr, None);
        spec.inter = Duration::from_millis(1);
        spec.timeout = Duration::from_secs(30);
        hc.set(key("slow"), spec, Health::Up);
        wait_until(Duration::from_secs(2), || {
            srv.accepted.load(Ordering::SeqCst) >= 1
        })
        .await;
        timeout(Duration::from_millis(500), hc.shutdown())
            .await
            .expect("an in-flight check must not delay shutdown");
    }

    #[tokio::test]
    async fn ipv6_loopback() {
        assert!(
            have_v6().await,
            "this machine has no IPv6 loopback (::1); the IPv6 checks cannot be tested"
        );
        let srv = serve(V6, Behaviour::Status(200)).await;
        assert!(check_once(&tcp_spec(srv.addr)).await.is_ok());
        let o = check_once(&http_spec(srv.addr, None)).await;
        assert!(o.is_ok(), "{o:?}");
        // The TCP check's connection leaves an empty request behind; look at the HTTP one.
        let http_req = || {
            srv.requests
                .lock()
                .unwrap()
                .iter()
                .find(|r| !r.is_empty())
                .cloned()
        };
        wait_until(Duration::from_secs(1), || http_req().is_some()).await;
        let req = http_req().unwrap();
        assert!(req.contains("\r\nHost: [::1]\r\n"), "{req}");

        let bad = serve(V6, Behaviour::Status(503)).await;
        let o = check_once(&http_spec(bad.addr, None)).await;
        assert_eq!(o.reason(), Some("HTTP status 503, expected 200"));
        let (_held, closed) = closed_port(V6);
        let o = check_once(&tcp_spec(closed)).await;
        assert_eq!(o.reason(), Some("connect refused"));

        // And through the checker.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        hc.set(key("v6"), http_spec(bad.addr, None), Health::Up);
        let t = next(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(t.to, Health::Down);
        assert_eq!(t.reason, "HTTP status 503, expected 200, 3/3 failed");
        hc.shutdown().await;
    }
}
