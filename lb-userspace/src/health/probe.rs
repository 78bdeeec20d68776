//! The probes: one check of one target, `tcp` (the connect succeeds) or `http` (a request whose
//! status line must carry the expected status), bounded by the spec's `timeout` as a whole.
//!
//! An `http` probe connects, sends `"{method} {uri} HTTP/1.1"` with `Host` (the configured host,
//! or the address's IP, bracketed for IPv6), `Connection: close` and `User-Agent: xlb-health`,
//! and reads until the status line is complete; it succeeds iff the status equals `expect`.
//! A failure carries a reason an operator can read ("connect refused", "timeout after 2s while
//! connecting", "HTTP status 503, expected 200").

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{CheckSpec, Outcome};
use crate::config::{HealthKind, format_duration};

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
#[cfg(test)]
async fn check_once(spec: &CheckSpec) -> Outcome {
    check_within(spec, spec.timeout).await
}

/// Run one check now, bounded by `timeout`.
pub async fn check_within(spec: &CheckSpec, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut phase = Phase::Connect;
    let result = tokio::time::timeout(timeout, attempt(spec, &mut phase)).await;
    let latency = start.elapsed();
    match result {
        Ok(Ok(())) => Outcome::Ok { latency },
        Ok(Err(reason)) => Outcome::Failed { reason, latency },
        Err(_) => Outcome::Failed {
            reason: format!("timeout after {} {}", format_duration(timeout), phase.text()),
            latency,
        },
    }
}

async fn attempt(spec: &CheckSpec, phase: &mut Phase) -> Result<(), String> {
    *phase = Phase::Connect;
    let mut stream = TcpStream::connect(spec.addr)
        .await
        .map_err(|e| connect_error(&e))?;
    let HealthKind::Http {
        method,
        uri,
        expect,
        host,
    } = &spec.kind
    else {
        // `tcp` (a spec never holds `none`): the connect was the check.
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
    use std::time::Duration;

    use super::*;
    use crate::health::testing::*;

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
    fn status_line_parsing_and_host_header() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status("HTTP/1.0 503"), Ok(503));
        assert!(parse_status("HTTP/1.1 20 OK").is_err());
        assert!(parse_status("ICY 200 OK").is_err());
        assert!(parse_status("").is_err());
        let v6 = SocketAddr::new(V6, 8080);
        assert!(http_request("HEAD", "/", None, v6).contains("\r\nHost: [::1]\r\n"));
    }

    #[tokio::test]
    async fn ipv6_loopback() {
        require_v6().await;
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
    }
}
