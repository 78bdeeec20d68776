//! A backend server for end-to-end tests: TCP (HTTP/1.1) and UDP on `[::]:port` (dual-stack,
//! so it answers on every address of its namespace, the VIP on `lo` included), on a tokio
//! current-thread runtime inside a thread that entered the backend's namespace.
//!
//! HTTP: every request gets `200` with `X-Served-By: <name>`, `X-Client-Addr: <peer ip>`,
//! `Content-Length`, `Connection: close|keep-alive` (keep-alive when an HTTP/1.1 client does not
//! ask to close), body `<name>\n`. The health path, if any, answers with a status settable at
//! run time. UDP: each datagram is answered with the name, from the address it was sent to
//! (`IPV6_PKTINFO`), as a DSR backend must.

use std::{
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::Interest,
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::oneshot,
};

use crate::{HostId, Topology, netns};

/// How long a connection may stay idle before the server closes it.
const IDLE: Duration = Duration::from_secs(10);

struct Shared {
    name: String,
    health_path: Option<String>,
    health: AtomicU16,
    requests: AtomicU64,
    udp_queries: AtomicU64,
    /// When each health-path request arrived, and from whom.
    health_checks: Mutex<Vec<(IpAddr, Instant)>>,
}

struct Running {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// A running (or stopped) backend server. Dropping it stops it and joins its thread.
pub struct BackendServer {
    ns: String,
    port: u16,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl BackendServer {
    /// Starts a server named `name` on `[::]:port` (TCP and UDP; port 0 picks one) in `host`'s
    /// namespace. Returns once both sockets are bound. `health_path` (e.g. `/healthz`) answers
    /// with [`BackendServer::set_health_status`]'s status (200 at first).
    pub fn start(
        topology: &Topology,
        host: HostId,
        name: &str,
        port: u16,
        health_path: Option<&str>,
    ) -> Result<BackendServer> {
        Self::start_in_ns(&topology.host(host).ns, name, port, health_path)
    }

    /// Like [`BackendServer::start`], for a namespace given by name.
    pub fn start_in_ns(ns: &str, name: &str, port: u16, health_path: Option<&str>) -> Result<BackendServer> {
        let mut b = BackendServer {
            ns: ns.to_string(),
            port,
            shared: Arc::new(Shared {
                name: name.to_string(),
                health_path: health_path.map(str::to_string),
                health: AtomicU16::new(200),
                requests: AtomicU64::new(0),
                udp_queries: AtomicU64::new(0),
                health_checks: Mutex::new(Vec::new()),
            }),
            running: None,
        };
        b.restart()?;
        Ok(b)
    }

    /// The server's name (the `X-Served-By` value).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The port (TCP and UDP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True while listening.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Sets the status the health path answers with (e.g. 503).
    pub fn set_health_status(&self, status: u16) {
        self.shared.health.store(status, Ordering::Relaxed);
    }

    /// The status the health path answers with.
    pub fn health_status(&self) -> u16 {
        self.shared.health.load(Ordering::Relaxed)
    }

    /// HTTP requests answered so far, health checks excluded.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// When the health-path requests from `from` (a checker's address) arrived, in order.
    pub fn health_checks_from(&self, from: IpAddr) -> Vec<Instant> {
        let checks = self.shared.health_checks.lock().expect("health checks lock");
        checks
            .iter()
            .filter(|(a, _)| *a == from)
            .map(|(_, t)| *t)
            .collect()
    }

    /// UDP datagrams answered so far.
    pub fn udp_queries(&self) -> u64 {
        self.shared.udp_queries.load(Ordering::Relaxed)
    }

    /// Closes the listeners and every open connection (new connects get refused, UDP gets
    /// port-unreachable). No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
            let _ = r.thread.join();
        }
    }

    /// Binds again after [`BackendServer::stop`] (same port). No-op when running.
    pub fn restart(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<u16>>(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let shared = self.shared.clone();
        let port = self.port;
        let thread = netns::spawn_in(&self.ns, &format!("be-{}", shared.name), move || {
            serve_thread(shared, port, ready_tx, stop_rx)
        })?;
        match ready_rx.recv() {
            Ok(Ok(bound)) => {
                self.port = bound;
                self.running = Some(Running {
                    stop: stop_tx,
                    thread,
                });
                Ok(())
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e.context(format!("backend {} in {}", self.shared.name, self.ns)))
            }
            Err(_) => {
                let _ = thread.join();
                Err(anyhow!("backend {} thread died while starting", self.shared.name))
            }
        }
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_sockets(port: u16) -> Result<(std::net::TcpListener, std::net::UdpSocket)> {
    let any = |p| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), p);
    let t = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    t.set_only_v6(false)?;
    t.set_reuse_address(true)?;
    t.bind(&any(port).into())
        .with_context(|| format!("bind tcp [::]:{port}"))?;
    t.listen(1024)?;
    t.set_nonblocking(true)?;
    let bound = t.local_addr()?.as_socket().map(|a| a.port()).unwrap_or(port);
    let u = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    u.set_only_v6(false)?;
    u.set_reuse_address(true)?;
    set_int_opt(u.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
    u.bind(&any(bound).into())
        .with_context(|| format!("bind udp [::]:{bound}"))?;
    u.set_nonblocking(true)?;
    Ok((t.into(), u.into()))
}

fn set_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: valid fd and buffer.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of_val(&v) as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn serve_thread(
    shared: Arc<Shared>,
    port: u16,
    ready: mpsc::SyncSender<Result<u16>>,
    stop: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let socks = bind_sockets(port).and_then(|(t, u)| {
        let _g = rt.enter();
        Ok((TcpListener::from_std(t)?, UdpSocket::from_std(u)?))
    });
    let (tcp, udp) = match socks {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let bound = tcp.local_addr().map(|a| a.port()).unwrap_or(port);
    let _ = ready.send(Ok(bound));
    let tcp = Arc::new(tcp);
    let listener = tcp.clone();
    rt.block_on(async move {
        tokio::select! {
            _ = stop => {}
            _ = serve_tcp(listener, shared.clone()) => {}
            _ = serve_udp(udp, shared) => {}
        }
    });
    // Stop listening now, even if a child process forked by another thread still holds a
    // copy of the descriptor until its exec: `shutdown` on a listening socket ends the
    // listen state (and resets queued connections) whoever else holds the file.
    // SAFETY: the listener is still open.
    unsafe { libc::shutdown(tcp.as_raw_fd(), libc::SHUT_RDWR) };
    drop(tcp);
    // Dropping the runtime drops every connection task, closing their sockets.
    drop(rt);
    wait_port_released(bound);
}

/// Waits (at most 2 s) until nothing in this namespace is bound to TCP or UDP `port`, so a
/// stopped server refuses at once. A close is not final while a child process forked by
/// another thread still holds the descriptor (the window between its fork and its exec).
fn wait_port_released(port: u16) {
    let free = || -> bool {
        let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let probe = |ty, reuse: bool| -> bool {
            Socket::new(Domain::IPV6, ty, None)
                .and_then(|s| {
                    s.set_only_v6(false)?;
                    // SO_REUSEADDR lets TCP ignore TIME_WAIT leftovers; a listener still
                    // conflicts. The UDP probe goes without it so any bound socket conflicts.
                    s.set_reuse_address(reuse)?;
                    s.bind(&any.into())
                })
                .is_ok()
        };
        probe(Type::STREAM, true) && probe(Type::DGRAM, false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !free() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn serve_tcp(l: Arc<TcpListener>, shared: Arc<Shared>) {
    loop {
        match l.accept().await {
            Ok((s, peer)) => {
                tokio::spawn(serve_conn(s, peer, shared.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve_conn(mut s: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = s.set_nodelay(true);
    let client = peer.ip().to_canonical();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            if buf.len() > 16 * 1024 {
                return;
            }
            match tokio::time::timeout(IDLE, s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut rl = lines.next().unwrap_or("").split_whitespace();
        let (_method, path, version) = (rl.next(), rl.next().unwrap_or("/"), rl.next());
        let mut conn_hdr = String::new();
        let mut body_len = 0usize;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "connection" {
                    conn_hdr = v.trim().to_ascii_lowercase();
                } else if k == "content-length" {
                    body_len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let keep_alive = match version {
            Some("HTTP/1.1") => !conn_hdr.contains("close"),
            _ => conn_hdr.contains("keep-alive"),
        };
        // Skip a request body, if any (bounded).
        buf.drain(..end + 4);
        if body_len > 1 << 20 {
            return;
        }
        while buf.len() < body_len {
            match tokio::time::timeout(IDLE, s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        buf.drain(..body_len);

        let name = &shared.name;
        let (status, body) = if shared.health_path.as_deref() == Some(path) {
            shared
                .health_checks
                .lock()
                .expect("health checks lock")
                .push((client, Instant::now()));
            let st = shared.health.load(Ordering::Relaxed);
            (st, format!("{name} {st}\n"))
        } else {
            shared.requests.fetch_add(1, Ordering::Relaxed);
            (200, format!("{name}\n"))
        };
        let resp = format!(
            "HTTP/1.1 {status} {}\r\nX-Served-By: {name}\r\nX-Client-Addr: {client}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            reason(status),
            body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        if !keep_alive {
            let _ = s.shutdown().await;
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

async fn serve_udp(u: UdpSocket, shared: Arc<Shared>) {
    let fd = u.as_raw_fd();
    let mut buf = [0u8; 2048];
    loop {
        let Ok((_n, peer, local)) = u
            .async_io(Interest::READABLE, || recv_pktinfo(fd, &mut buf))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.udp_queries.fetch_add(1, Ordering::Relaxed);
        let name = shared.name.as_bytes();
        let _ = u
            .async_io(Interest::WRITABLE, || send_pktinfo(fd, name, &peer, local))
            .await;
    }
}

/// `recvmsg` returning the peer and the destination address of the datagram (IPV6_PKTINFO,
/// v4-mapped for IPv4 on this dual-stack socket).
fn recv_pktinfo(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, libc::sockaddr_in6, Option<libc::in6_addr>)> {
    // SAFETY: every pointer handed to recvmsg points into live locals of the right size;
    // the CMSG_* walk stays inside `cbuf` as the kernel filled it.
    unsafe {
        let mut peer: libc::sockaddr_in6 = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut peer as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut local = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                local = Some(info.ipi6_addr);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, peer, local))
    }
}

/// `sendmsg` to `peer` from `local` (IPV6_PKTINFO; the kernel takes a v4-mapped one for IPv4).
fn send_pktinfo(
    fd: RawFd,
    data: &[u8],
    peer: &libc::sockaddr_in6,
    local: Option<libc::in6_addr>,
) -> io::Result<usize> {
    // SAFETY: as in recv_pktinfo; `cbuf` is large and aligned enough for one in6_pktinfo cmsg.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut cbuf = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = peer as *const libc::sockaddr_in6 as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(addr) = local {
            let size = std::mem::size_of::<libc::in6_pktinfo>() as u32;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size) as _;
            std::ptr::write_unaligned(
                libc::CMSG_DATA(c) as *mut libc::in6_pktinfo,
                libc::in6_pktinfo {
                    ipi6_addr: addr,
                    ipi6_ifindex: 0,
                },
            );
        }
        let n = libc::sendmsg(fd, &msg, 0);
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}
