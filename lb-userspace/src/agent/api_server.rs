//! The runtime API's socket: accept, read one command, answer it (streamed), close.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
    sync::{mpsc, watch},
};

use super::Shared;
use crate::control::{api, state::AgentState};

/// The runtime API's listener (0600 from the moment it exists; see `admin_socket`).
pub(super) fn bind_socket(path: &Path) -> Result<UnixListener> {
    let l = crate::control::admin_socket::bind(path)?;
    l.set_nonblocking(true)
        .with_context(|| format!("admin_socket {}: cannot make it non-blocking", path.display()))?;
    Ok(UnixListener::from_std(l)?)
}

pub(super) async fn api_loop(
    l: UnixListener,
    shared: Shared,
    state: Arc<AgentState>,
    stick_pin: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((stream, _)) => {
                    tokio::spawn(api_conn(stream, shared.clone(), state.clone(), stick_pin.clone()));
                }
                Err(e) => {
                    log::warn!("runtime API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// How long the client may take to read each part of an answer before it is dropped.
const API_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection: one line in (bounded in size and time), one answer out, close.
///
/// The command runs on a blocking thread: first under the balancer's lock for what needs the
/// balancer only ([`api::prepare`], quick), then without the lock for a table walk, whose
/// answer streams to the client in chunks as it is made ([`api::Prepared::finish`]).
async fn api_conn(
    stream: tokio::net::UnixStream,
    shared: Shared,
    state: Arc<AgentState>,
    stick_pin: PathBuf,
) {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(api::MAX_LINE as u64 + 1);
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_until(b'\n', &mut line)).await;
    let refused = match read {
        Err(_) => Some("Timeout: no command received within 10 s.\n".to_string()),
        Ok(Err(e)) => Some(format!("Read error: {e}\n")),
        Ok(Ok(_)) if line.len() > api::MAX_LINE => {
            Some(format!("Command too long: at most {} bytes.\n", api::MAX_LINE))
        }
        Ok(Ok(_)) => std::str::from_utf8(&line).is_err().then(|| {
            "Unknown command: input is not text. Type 'help' for the list of commands.\n".to_string()
        }),
    };
    if let Some(answer) = refused {
        let _ = w.write_all(answer.as_bytes()).await;
        let _ = w.shutdown().await;
        return;
    }
    let text = String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    let (chunks, mut answer) = mpsc::channel::<Vec<u8>>(4);
    let job = tokio::task::spawn_blocking(move || {
        let prepared = api::prepare(&mut shared.lock().expect("balancer lock"), &state, &text);
        // `set server`, `disable frontend` and the like change what is announced.
        state.poke_announcer();
        let mut out = ChunkSender {
            chunks,
            buf: Vec::new(),
        };
        prepared.finish(&stick_pin, &mut out)?;
        std::io::Write::flush(&mut out)
    });
    while let Some(chunk) = answer.recv().await {
        match tokio::time::timeout(API_WRITE_TIMEOUT, w.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            // The client went away or stopped reading: the walk stops at its next chunk.
            _ => break,
        }
    }
    drop(answer);
    if let Err(e) = job.await {
        let _ = w.write_all(format!("Internal error: {e}\n").as_bytes()).await;
    }
    let _ = w.shutdown().await;
}

/// An answer written on a blocking thread, handed to the connection's task in chunks.
struct ChunkSender {
    chunks: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    const CHUNK: usize = 64 * 1024;
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.chunks
            .blocking_send(std::mem::take(&mut self.buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}
