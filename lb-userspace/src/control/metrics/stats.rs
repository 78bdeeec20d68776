//! The stats page on the metrics listener, like HAProxy's: `GET /stats` answers one static HTML
//! page (`stats_page.html`: inline CSS and JS, no outside assets) that fetches `GET /stats.json`
//! — the document of `show stat json` — every two seconds and renders it (rates are computed in
//! the page from two successive documents). Any other request gets the Prometheus text, as every
//! request did before the page existed.
//!
//! The document walks no stick table: its entry counts (per service and per server) are the
//! sweeper's, from its last pass (at most one `sweep_interval` old), so a page left open costs
//! a snapshot of the counters every refresh, whatever the table holds. One document is made at
//! a time, however many pages are open.

use std::{future::Future, time::Duration};

use tokio::{io::AsyncReadExt as _, net::TcpStream, sync::Semaphore};

/// The page.
pub const PAGE: &str = include_str!("stats_page.html");

/// Longest request head read; the rest is left unread.
const MAX_HEAD: usize = 8192;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Page,
    Document,
}

/// The route of a request from its head's first line (`GET /stats HTTP/1.1`): `/stats` and
/// `/stats.json` (a query string is ignored), else the metrics.
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| b.is_ascii_whitespace());
    let (method, target) = (words.next(), words.next().unwrap_or_default());
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (Some(b"GET"), b"/stats" | b"/stats/") => Route::Page,
        (Some(b"GET"), b"/stats.json") => Route::Document,
        _ => Route::Metrics,
    }
}

/// Reads the request's head, up to its blank line, [`MAX_HEAD`] bytes or `timeout`: a browser
/// sends more than one read's worth at times, and bytes left unread when the answer's socket
/// closes make the kernel reset the connection, which can lose the answer.
pub async fn read_head(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let mut head = Vec::new();
    let _ = tokio::time::timeout(timeout, async {
        let mut buf = [0u8; 1024];
        let ended = |h: &[u8]| h.windows(4).any(|w| w == b"\r\n\r\n") || h.windows(2).any(|w| w == b"\n\n");
        while head.len() < MAX_HEAD && !ended(&head) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    head
}

/// An HTTP answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// `200 OK`, ...
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    /// The head and the body, for a connection that closes after it.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// `GET /stats`.
pub fn page() -> Answer {
    Answer {
        status: "200 OK",
        content_type: "text/html; charset=utf-8",
        body: PAGE.as_bytes().to_vec(),
    }
}

/// `GET /stats.json`: `document` (the agent's `show stat json`, with the sweeper's counts), run
/// once `turns` lets it (one at a time); `503` with `{"error": ...}` when it fails.
pub async fn document(turns: &Semaphore, document: impl Future<Output = Result<Vec<u8>, String>>) -> Answer {
    let json = "application/json";
    let result = match turns.acquire().await {
        Ok(_permit) => document.await,
        Err(_) => Err("the agent is stopping".into()),
    };
    match result {
        Ok(body) => Answer {
            status: "200 OK",
            content_type: json,
            body,
        },
        Err(error) => Answer {
            status: "503 Service Unavailable",
            content_type: json,
            body: format!("{}\n", serde_json::json!({ "error": error })).into_bytes(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_its_document_have_routes_and_everything_else_is_the_metrics() {
        for (head, want) in [
            (&b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"[..], Route::Page),
            (b"GET /stats/ HTTP/1.1\r\n\r\n", Route::Page),
            (b"GET /stats?refresh=1 HTTP/1.1\r\n\r\n", Route::Page),
            (b"GET /stats.json HTTP/1.1\r\n\r\n", Route::Document),
            (b"GET /stats.json?t=5 HTTP/1.0\n\n", Route::Document),
            (b"GET /metrics HTTP/1.1\r\n\r\n", Route::Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", Route::Metrics),
            (b"POST /stats HTTP/1.1\r\n\r\n", Route::Metrics),
            (b"GET /statsx HTTP/1.1\r\n\r\n", Route::Metrics),
            (b"", Route::Metrics),
            (b"\xff\xfe garbage", Route::Metrics),
        ] {
            assert_eq!(route(head), want, "{}", String::from_utf8_lossy(head));
        }
    }

    /// The page is whole by itself: nothing fetched from elsewhere, only its own document.
    #[test]
    fn the_page_has_no_outside_assets() {
        // Any URL with a scheme or a host (`"//host/...`), a stylesheet link, a script or
        // image source, a CSS import or url().
        for outside in [
            "http:", "https:", "\"//", "'//", "<link", " src=", "@import", "url(",
        ] {
            let hits: Vec<&str> = PAGE.lines().filter(|l| l.contains(outside)).collect();
            assert!(hits.is_empty(), "{outside:?} in the page: {hits:?}");
        }
        assert!(PAGE.contains("fetch(\"stats.json\""));
        assert!(PAGE.starts_with("<!doctype html>"));
    }

    /// A head sent in pieces is read whole, up to its blank line (CRLF or bare LF).
    #[tokio::test]
    async fn the_request_head_is_read_to_its_blank_line() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        static CRLF: [&[u8]; 3] = [b"GET /stats HTTP/1.1\r\nHost:", b" x\r\nAccept: */*\r\n", b"\r\n"];
        static LF: [&[u8]; 2] = [b"GET /stats.json HTTP/1.0\n", b"\n"];
        for pieces in [&CRLF[..], &LF[..]] {
            let client = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let mut c = TcpStream::connect(addr).await.unwrap();
                for p in pieces {
                    c.write_all(p).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                c
            });
            let (mut s, _) = l.accept().await.unwrap();
            let head = read_head(&mut s, Duration::from_secs(5)).await;
            assert_eq!(head, pieces.concat());
            drop(client.await.unwrap());
        }
    }

    #[tokio::test]
    async fn the_document_is_json_and_a_failure_is_a_503_that_says_why() {
        let turns = Semaphore::new(1);
        let ok = document(&turns, async { Ok(b"{\"version\":1}\n".to_vec()) }).await;
        assert_eq!((ok.status, ok.content_type), ("200 OK", "application/json"));
        let text = String::from_utf8(ok.bytes()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n{\"version\":1}\n"), "{text}");
        let failed = document(&turns, async { Err("cannot open the stick tables".into()) }).await;
        assert_eq!(failed.status, "503 Service Unavailable");
        let body: serde_json::Value = serde_json::from_slice(&failed.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "error": "cannot open the stick tables" })
        );
        turns.close();
        let stopping = document(&turns, async { Ok(Vec::new()) }).await;
        assert_eq!(stopping.status, "503 Service Unavailable");
    }
}
