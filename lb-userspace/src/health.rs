//! Health checks as HAProxy defines them: one tokio task per server, a check every `inter`
//! (the first after a jitter in [0, inter)), each bounded by `timeout`; `rise` consecutive
//! successes bring a server UP, `fall` consecutive failures take it DOWN. Only real changes are
//! reported, with the reason ("connect refused, 3/3 failed").

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::{mpsc::UnboundedSender, watch},
    task::JoinHandle,
};

#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    Tcp,
    Http {
        method: String,
        uri: String,
        expect: u16,
        host: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub addr: SocketAddr,
    pub inter: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ok { latency: Duration, detail: String },
    Failed { reason: String, latency: Duration },
}

/// (service, server).
pub type TargetKey = (String, String);

/// A state change, for the agent.
#[derive(Debug, Clone)]
pub struct Transition {
    pub key: TargetKey,
    pub to: Health,
    pub reason: String,
}

/// What `show servers state` and metrics read.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckStatus {
    pub health: Health,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    pub last_latency: Option<Duration>,
    pub last_failure: Option<String>,
    pub checks: u64,
}

struct Task {
    spec: CheckSpec,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

pub struct HealthChecker {
    events: UnboundedSender<Transition>,
    tasks: HashMap<TargetKey, Task>,
    status: Arc<Mutex<HashMap<TargetKey, CheckStatus>>>,
}

impl HealthChecker {
    pub fn new(events: UnboundedSender<Transition>) -> Self {
        HealthChecker {
            events,
            tasks: HashMap::new(),
            status: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Start (or restart with a new spec) the checks of `key`. A restarted target keeps its
    /// current state; a new one starts in `initial`. Must be called inside a tokio runtime.
    pub fn set(&mut self, key: TargetKey, spec: CheckSpec, initial: Health) {
        if let Some(t) = self.tasks.get(&key)
            && t.spec == spec
        {
            return;
        }
        let health = match self.tasks.remove(&key) {
            Some(old) => {
                let _ = old.stop.send(true);
                old.handle.abort();
                self.status
                    .lock()
                    .expect("status lock")
                    .get(&key)
                    .map(|s| s.health)
                    .unwrap_or(initial)
            }
            None => initial,
        };
        self.status.lock().expect("status lock").insert(
            key.clone(),
            CheckStatus {
                health,
                consecutive_ok: 0,
                consecutive_failed: 0,
                last_latency: None,
                last_failure: None,
                checks: 0,
            },
        );
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(run_target(
            key.clone(),
            spec.clone(),
            self.events.clone(),
            self.status.clone(),
            stop_rx,
        ));
        self.tasks.insert(key, Task { spec, stop, handle });
    }

    pub fn remove(&mut self, key: &TargetKey) {
        if let Some(t) = self.tasks.remove(key) {
            let _ = t.stop.send(true);
            t.handle.abort();
        }
        self.status.lock().expect("status lock").remove(key);
    }

    pub fn status(&self, key: &TargetKey) -> Option<CheckStatus> {
        self.status.lock().expect("status lock").get(key).cloned()
    }

    /// A handle other tasks can read statuses through.
    pub fn statuses(&self) -> Arc<Mutex<HashMap<TargetKey, CheckStatus>>> {
        self.status.clone()
    }

    /// Stop every task and wait for them.
    pub async fn shutdown(mut self) {
        for (_, t) in self.tasks.drain() {
            let _ = t.stop.send(true);
            let _ = t.handle.await;
        }
    }
}

/// A cheap jitter in [0, inter): from the target's name and the clock's nanoseconds.
fn jitter(key: &TargetKey, inter: Duration) -> Duration {
    let seed = lb_common::hash::name_hash(
        format!("{}/{}", key.0, key.1).as_bytes(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    );
    let ms = inter.as_millis().max(1) as u64;
    Duration::from_millis(seed as u64 % ms)
}

async fn run_target(
    key: TargetKey,
    spec: CheckSpec,
    events: UnboundedSender<Transition>,
    status: Arc<Mutex<HashMap<TargetKey, CheckStatus>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = tokio::time::Instant::now() + jitter(&key, spec.inter);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        next += spec.inter;
        let outcome = tokio::select! {
            o = check_once(&spec) => o,
            _ = stop.changed() => return,
        };
        let transition = {
            let mut all = status.lock().expect("status lock");
            let Some(st) = all.get_mut(&key) else { return };
            st.checks += 1;
            match &outcome {
                Outcome::Ok { latency, detail } => {
                    st.consecutive_ok += 1;
                    st.consecutive_failed = 0;
                    st.last_latency = Some(*latency);
                    (st.health == Health::Down && st.consecutive_ok >= spec.rise).then(|| {
                        st.health = Health::Up;
                        format!(
                            "{detail} in {}ms, {}/{} succeeded",
                            latency.as_millis(),
                            spec.rise,
                            spec.rise
                        )
                    })
                }
                Outcome::Failed { reason, latency } => {
                    st.consecutive_failed += 1;
                    st.consecutive_ok = 0;
                    st.last_latency = Some(*latency);
                    st.last_failure = Some(reason.clone());
                    (st.health == Health::Up && st.consecutive_failed >= spec.fall).then(|| {
                        st.health = Health::Down;
                        format!("{reason}, {}/{} failed", spec.fall, spec.fall)
                    })
                }
            }
            .map(|reason| Transition {
                key: key.clone(),
                to: st.health,
                reason,
            })
        };
        if let Some(t) = transition {
            let _ = events.send(t);
        }
        if next < tokio::time::Instant::now() {
            next = tokio::time::Instant::now();
        }
    }
}

/// One check, bounded by the spec's timeout.
pub async fn check_once(spec: &CheckSpec) -> Outcome {
    let t0 = Instant::now();
    match tokio::time::timeout(spec.timeout, attempt(spec)).await {
        Ok(Ok(detail)) => Outcome::Ok {
            latency: t0.elapsed(),
            detail,
        },
        Ok(Err(reason)) => Outcome::Failed {
            reason,
            latency: t0.elapsed(),
        },
        Err(_) => Outcome::Failed {
            reason: format!("timeout after {}ms", spec.timeout.as_millis()),
            latency: t0.elapsed(),
        },
    }
}

async fn attempt(spec: &CheckSpec) -> Result<String, String> {
    let mut s = TcpStream::connect(spec.addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
        _ => format!("connect failed: {e}"),
    })?;
    let CheckKind::Http {
        method,
        uri,
        expect,
        host,
    } = &spec.kind
    else {
        return Ok("TCP connect".into());
    };
    let host = host.clone().unwrap_or_else(|| match spec.addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    });
    let req = format!(
        "{method} {uri} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: xlb-health\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    // Read until the status line is complete.
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("connection closed before status line".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {:?}", line.lines().next().unwrap_or("")))?;
    if status == *expect {
        Ok(format!("HTTP {status}"))
    } else {
        Err(format!("HTTP status {status}, expected {expect}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::{net::TcpListener, sync::mpsc};

    use super::*;

    fn spec(kind: CheckKind, addr: SocketAddr) -> CheckSpec {
        CheckSpec {
            kind,
            addr,
            inter: Duration::from_millis(50),
            timeout: Duration::from_millis(300),
            rise: 2,
            fall: 3,
        }
    }

    fn http(expect: u16) -> CheckKind {
        CheckKind::Http {
            method: "GET".into(),
            uri: "/healthz".into(),
            expect,
            host: None,
        }
    }

    /// A loopback HTTP server answering `status`, counting connections; `mute` = never answer.
    async fn server(bind: &str, status: u16, mute: bool) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
        let l = TcpListener::bind(bind).await.unwrap();
        let addr = l.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let h = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut b = [0u8; 512];
                    let _ = s.read(&mut b).await;
                    if mute {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        return;
                    }
                    let _ = s
                        .write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                        .await;
                });
            }
        });
        (addr, count, h)
    }

    /// A loopback port with nothing listening.
    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn tcp_check() {
        let (addr, _, h) = server("127.0.0.1:0", 200, false).await;
        assert!(matches!(
            check_once(&spec(CheckKind::Tcp, addr)).await,
            Outcome::Ok { .. }
        ));
        h.abort();
        let dead = closed_port().await;
        match check_once(&spec(CheckKind::Tcp, dead)).await {
            Outcome::Failed { reason, .. } => assert!(reason.contains("refused"), "{reason}"),
            o => panic!("{o:?}"),
        }
    }

    #[tokio::test]
    async fn http_check_status_and_timeout() {
        let (ok, _, h1) = server("127.0.0.1:0", 200, false).await;
        assert!(matches!(
            check_once(&spec(http(200), ok)).await,
            Outcome::Ok { .. }
        ));
        let (bad, _, h2) = server("127.0.0.1:0", 503, false).await;
        match check_once(&spec(http(200), bad)).await {
            Outcome::Failed { reason, .. } => assert_eq!(reason, "HTTP status 503, expected 200"),
            o => panic!("{o:?}"),
        }
        let (mute, _, h3) = server("127.0.0.1:0", 200, true).await;
        let t0 = Instant::now();
        match check_once(&spec(http(200), mute)).await {
            Outcome::Failed { reason, .. } => assert!(reason.starts_with("timeout"), "{reason}"),
            o => panic!("{o:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(2));
        for h in [h1, h2, h3] {
            h.abort();
        }
    }

    #[tokio::test]
    async fn ipv6_loopback() {
        let (addr, _, h) = server("[::1]:0", 200, false).await;
        assert!(matches!(
            check_once(&spec(http(200), addr)).await,
            Outcome::Ok { .. }
        ));
        h.abort();
    }

    #[tokio::test]
    async fn fall_then_rise_with_one_transition_each() {
        // A port we own but do not serve yet.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        let key: TargetKey = ("be".into(), "s1".into());
        hc.set(key.clone(), spec(CheckKind::Tcp, addr), Health::Up);
        let t = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.to, Health::Down);
        assert!(
            t.reason.contains("refused") && t.reason.contains("3/3 failed"),
            "{}",
            t.reason
        );
        assert!(hc.status(&key).unwrap().checks >= 3);
        // Bring it up.
        let l = TcpListener::bind(addr).await.unwrap();
        let srv = tokio::spawn(async move {
            loop {
                let _ = l.accept().await;
            }
        });
        let t = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.to, Health::Up);
        assert!(t.reason.contains("2/2 succeeded"), "{}", t.reason);
        // No further transition while it stays up.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err()
        );
        hc.shutdown().await;
        srv.abort();
    }

    #[tokio::test]
    async fn remove_and_shutdown_stop_checking() {
        let (addr, count, h) = server("127.0.0.1:0", 200, false).await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut hc = HealthChecker::new(tx);
        let key: TargetKey = ("be".into(), "s1".into());
        hc.set(key.clone(), spec(http(200), addr), Health::Up);
        hc.set(("be".into(), "s2".into()), spec(http(200), addr), Health::Up);
        tokio::time::sleep(Duration::from_millis(300)).await;
        hc.remove(&key);
        hc.shutdown().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = count.load(Ordering::SeqCst);
        assert!(after >= 4, "checks ran ({after})");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count.load(Ordering::SeqCst), after, "no checks after shutdown");
        h.abort();
    }
}
