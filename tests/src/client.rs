//! Client calls with blocking std sockets, every step bounded by a timeout. Call them on a
//! thread inside the client's namespace ([`crate::NsWorker::run`], [`crate::Topology::run_in`]
//! or the `Topology::http_get` shorthands).

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A parsed HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header `X-Served-By` (empty when absent).
    pub served_by: String,
    /// Header `X-Client-Addr`: the client address the backend saw (empty when absent).
    pub client_addr: String,
    /// Every header, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

/// True when `e` comes from a refused connection (TCP RST, or ICMP port unreachable for UDP).
pub fn is_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::ConnectionRefused)
    })
}

/// True when `e` comes from a timeout.
pub fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock))
    })
}

/// A fresh TCP connection from `src` (port chosen at connect time, `IP_BIND_ADDRESS_NO_PORT`)
/// to `dst`, within `timeout`.
pub fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    let one: libc::c_int = 1;
    // SAFETY: valid fd and option buffer. Failure only costs port-range headroom.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of_val(&one) as libc::socklen_t,
        );
    }
    sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
        .with_context(|| format!("bind {src}"))?;
    sock.connect_timeout(&SockAddr::from(dst), timeout)
        .with_context(|| format!("connect {src} -> {dst}"))?;
    let s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    Ok(s)
}

/// `GET path` over a fresh connection from `src` to `dst` (`Connection: close`), reads the
/// whole response; the whole exchange is bounded by `timeout`.
pub fn http_request(src: IpAddr, dst: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(src, dst, head.as_bytes(), timeout)
}

/// `POST /` of `body` over a fresh connection from `src` to `dst` (`Connection: close`), reads
/// the whole response; bounded by `timeout`.
pub fn http_post(src: IpAddr, dst: SocketAddr, body: &[u8], timeout: Duration) -> Result<HttpResponse> {
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    exchange(src, dst, &request, timeout)
}

/// Send `request` over a fresh connection from `src` to `dst`, read the whole response.
fn exchange(src: IpAddr, dst: SocketAddr, request: &[u8], timeout: Duration) -> Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let mut s = connect_from(src, dst, timeout)?;
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left(deadline)))?;
    s.write_all(request)
        .with_context(|| format!("send request {src} -> {dst}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() >= deadline {
            bail!(
                "timeout reading response {src} -> {dst} after {} bytes",
                buf.len()
            );
        }
        s.set_read_timeout(Some(left(deadline)))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 1 << 20 {
                    bail!("response from {dst} too large");
                }
                if let Some(r) = parse_complete(&buf)? {
                    return Ok(r);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e).with_context(|| format!("read response {src} -> {dst}"));
            }
        }
    }
    parse_complete(&buf)?.with_context(|| {
        format!(
            "incomplete response from {dst}: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// `GET /` over a fresh connection from `src` to `dst`; returns `X-Served-By` (an error when
/// the status is not 200 or the header is missing).
pub fn http_get(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<String> {
    let r = http_request(src, dst, "/", timeout)?;
    if r.status != 200 {
        bail!("{src} -> {dst}: status {}", r.status);
    }
    if r.served_by.is_empty() {
        bail!("{src} -> {dst}: no X-Served-By header");
    }
    Ok(r.served_by)
}

/// Parses `buf` when it holds a complete response (head, and `Content-Length` bytes of body
/// when given); `None` when more is needed.
pub fn parse_complete(buf: &[u8]) -> Result<Option<HttpResponse>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let body_start = end + 4;
    let body = match get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) if buf.len() - body_start < len => return Ok(None),
        Some(len) => &buf[body_start..body_start + len],
        None => &buf[body_start..],
    };
    Ok(Some(HttpResponse {
        status,
        served_by: get("x-served-by").unwrap_or_default(),
        client_addr: get("x-client-addr").unwrap_or_default(),
        body: String::from_utf8_lossy(body).into_owned(),
        headers,
    }))
}

/// Sends one datagram from `src` (port 0) to `dst` and returns the reply as text (the
/// backend's name), within `timeout`. The socket is connected, so only a reply from `dst`
/// itself counts (DSR backends must answer from the VIP).
pub fn udp_query(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<String> {
    let s = UdpSocket::bind(SocketAddr::new(src, 0)).with_context(|| format!("bind udp {src}"))?;
    s.connect(dst)?;
    s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    s.send(b"who")
        .with_context(|| format!("udp send {src} -> {dst}"))?;
    let mut buf = [0u8; 1500];
    let n = s
        .recv(&mut buf)
        .with_context(|| format!("udp reply {dst} -> {src}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// One keep-alive HTTP/1.1 connection: requests go one after another on the same TCP
/// connection (the same 5-tuple, so the same router hash and balancer while it lives).
pub struct KeepAlive {
    stream: TcpStream,
    src: IpAddr,
    dst: SocketAddr,
}

impl KeepAlive {
    /// Connects from `src` to `dst` within `timeout` (see [`connect_from`]).
    pub fn open(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<KeepAlive> {
        Ok(KeepAlive {
            stream: connect_from(src, dst, timeout)?,
            src,
            dst,
        })
    }

    /// The connection's local address (source address and port).
    pub fn local(&self) -> Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// `GET /` on this connection, bounded by `timeout`; returns `X-Served-By`.
    pub fn get(&mut self, timeout: Duration) -> Result<String> {
        let (src, dst) = (self.src, self.dst);
        let deadline = Instant::now() + timeout;
        let left = |d: Instant| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        self.stream.set_write_timeout(Some(left(deadline)))?;
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .with_context(|| format!("send request {src} -> {dst} (keep-alive)"))?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(r) = parse_complete(&buf)? {
                if r.status != 200 || r.served_by.is_empty() {
                    bail!("{src} -> {dst}: status {}, served by {:?}", r.status, r.served_by);
                }
                return Ok(r.served_by);
            }
            if Instant::now() >= deadline {
                bail!("timeout reading a keep-alive response {src} -> {dst}");
            }
            self.stream.set_read_timeout(Some(left(deadline)))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("{src} -> {dst}: the connection closed"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("read response {src} -> {dst}")),
            }
            if buf.len() > 1 << 20 {
                bail!("response from {dst} too large");
            }
        }
    }
}
