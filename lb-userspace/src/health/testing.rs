//! Test fixtures shared by the checker's and the probes' tests: loopback servers that answer
//! as told, refused ports, specs, and waiting helpers.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket},
    sync::mpsc,
    task::JoinHandle,
    time::timeout,
};

use super::{CheckSpec, HealthChecker, TargetKey, Transition};
use crate::config::HealthKind;

pub(super) const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub(super) const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A checker whose check loops run on a task of their own, as the agent runs them.
pub(super) fn checker(events: mpsc::UnboundedSender<Transition>) -> HealthChecker {
    let (checker, runner) = HealthChecker::new(events);
    tokio::spawn(runner.run());
    checker
}

pub(super) fn key(s: &str) -> TargetKey {
    ("svc".to_string(), s.to_string())
}

pub(super) fn tcp_spec(addr: SocketAddr) -> CheckSpec {
    CheckSpec {
        kind: HealthKind::Tcp,
        addr,
        inter: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 3,
        fastinter: Duration::from_millis(50),
        downinter: Duration::from_millis(50),
    }
}

pub(super) fn http_spec(addr: SocketAddr, host: Option<&str>) -> CheckSpec {
    CheckSpec {
        kind: HealthKind::Http {
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
pub(super) fn closed_port(ip: IpAddr) -> (TcpSocket, SocketAddr) {
    let s = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .unwrap();
    s.bind(SocketAddr::new(ip, 0)).unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

pub(super) struct Server {
    pub(super) addr: SocketAddr,
    /// Connections accepted so far.
    pub(super) accepted: Arc<AtomicUsize>,
    /// The request heads read so far (empty for a connection that sent nothing).
    pub(super) requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) enum Behaviour {
    /// Read the request head, answer with this status and close.
    Status(u16),
    /// Accept and hold the connection without a word.
    Silent,
    /// Accept and close at once.
    Close,
    /// Read the request, answer garbage.
    Garbage,
}

pub(super) async fn serve_on(listener: TcpListener, behaviour: Behaviour) -> Server {
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
                        Some(c) => {
                            format!("HTTP/1.1 {c} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        }
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

pub(super) async fn serve(ip: IpAddr, behaviour: Behaviour) -> Server {
    serve_on(TcpListener::bind((ip, 0)).await.unwrap(), behaviour).await
}

/// Fails the test when [::1] is not usable here (some sandboxes have no IPv6 at all): a skip
/// would hide the IPv6 checks.
pub(super) async fn require_v6() {
    assert!(
        TcpListener::bind((V6, 0)).await.is_ok(),
        "this machine has no IPv6 loopback (::1); the IPv6 checks cannot be tested"
    );
}

pub(super) async fn next(rx: &mut mpsc::UnboundedReceiver<Transition>, within: Duration) -> Transition {
    timeout(within, rx.recv())
        .await
        .expect("no transition in time")
        .expect("channel closed")
}

pub(super) async fn wait_until(within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "condition not met within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
