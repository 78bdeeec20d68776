//! Prometheus text endpoint (`metrics = "9100"` listens on 127.0.0.1; `"addr:port"` elsewhere): per-service and per-server
//! packets, bytes, stick counters, table use, announcement, server state; global data-path
//! counters; peers.
//!
//! A scrape asks the agent for a [`Snapshot`], which it reads under its lock — per-CPU
//! counters, the sweeper's last count of each table, the checker's view, the peers' atomics;
//! never a table walk — and `prometheus-client` encodes it in the text format (version 0.0.4)
//! once the lock is released: one `# HELP` and `# TYPE` per family, the family's samples
//! together.
//!
//! The same listener serves the stats page: `/stats` and its document `/stats.json` ([`stats`]).

mod snapshot;
pub mod stats;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use lb_common::ServiceStats;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text},
    metrics::{TypedMetric, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

pub use snapshot::{PeerFigures, PeersFigures, ServerFigures, ServiceFigures, Snapshot};

/// What a scrape asks of the agent, which alone takes the balancer's lock and spawns.
pub trait Agent: Send + Sync + 'static {
    /// [`Snapshot::read`] under the lock, on a thread that may block.
    fn snapshot(&self) -> impl Future<Output = Snapshot> + Send;

    /// The document of `show stat json` (read under the lock; stick entries as the sweeper
    /// counted them, no table walked), or why it could not be made.
    fn stat_json(&self) -> impl Future<Output = Result<Vec<u8>, String>> + Send;
}

/// How long a client may take to send its request, and then to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers every connection on `addr` with a scrape, until the agent stops. The connections
/// are served concurrently inside this future (which the agent spawns), each bounded by
/// [`CLIENT_TIMEOUT`], so a slow client delays no other scrape.
pub async fn serve<A: Agent>(addr: SocketAddr, agent: Arc<A>, mut shutdown: watch::Receiver<bool>) {
    let l = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            log::error!("metrics: cannot listen on {addr}: {e}");
            return;
        }
    };
    log::info!("metrics: http://{addr}/metrics");
    if addr.ip().is_unspecified() {
        log::warn!(
            "metrics: listening on every address ({addr}): anyone who reaches this host can read \
             the counters and server names; prefer 127.0.0.1 or a management address"
        );
    }
    log::info!("metrics: stats page at http://{addr}/stats");
    let turns = Arc::new(Semaphore::new(1));
    let mut scrapes = FuturesUnordered::new();
    loop {
        tokio::select! {
            r = l.accept() => if let Ok((s, _)) = r {
                scrapes.push(scrape(s, agent.clone(), turns.clone()));
            },
            Some(()) = scrapes.next() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection: the stats page or its document if it asks for them ([`stats::route`]),
/// else the exposition text; then close.
async fn scrape<A: Agent>(mut s: TcpStream, agent: Arc<A>, turns: Arc<Semaphore>) {
    let head = stats::read_head(&mut s, CLIENT_TIMEOUT).await;
    let answer = match stats::route(&head) {
        stats::Route::Page => stats::page().bytes(),
        stats::Route::Document => stats::document(&turns, agent.stat_json()).await.bytes(),
        stats::Route::Metrics => {
            let body = exposition(agent.snapshot().await);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                prometheus_text::CONTENT_TYPE,
                body.len()
            );
            [head.into_bytes(), body.into_bytes()].concat()
        }
    };
    let _ = tokio::time::timeout(CLIENT_TIMEOUT, s.write_all(&answer)).await;
}

/// The exposition text of `snapshot`.
pub fn exposition(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut o = String::new();
    // Writing into a String fails only if a collector fails, and ours do not.
    let _ = prometheus_text::encode(&mut o, &registry);
    o
}

const SERVER_STATES: [&str; 4] = ["UP", "DOWN", "DRAIN", "MAINT"];

/// A service counter family: name (without `_total`, which the encoder adds), help, field.
pub type ServiceCounter = (&'static str, &'static str, fn(&ServiceStats) -> u64);

/// The service counters (`show stat json` names them by the word after `xlb_service_`).
pub const SERVICE_COUNTERS: [ServiceCounter; 9] = [
    (
        "xlb_service_packets",
        "Packets of the service balanced by the data path.",
        |s| s.packets,
    ),
    (
        "xlb_service_bytes",
        "Bytes of the service balanced by the data path.",
        |s| s.bytes,
    ),
    (
        "xlb_service_stick_hits",
        "Packets whose client had a live entry in the service's stick table.",
        |s| s.stick_hits,
    ),
    (
        "xlb_service_stick_misses",
        "Packets whose client had no live entry in the service's stick table.",
        |s| s.stick_misses,
    ),
    (
        "xlb_service_stick_inserts",
        "Entries the data path created in the service's stick table.",
        |s| s.stick_inserts,
    ),
    (
        "xlb_service_stick_expired",
        "Entries found idle longer than the service's expire (replaced).",
        |s| s.stick_expired,
    ),
    (
        "xlb_service_redispatches",
        "Packets whose pinned server was down or in maintenance, sent elsewhere (redispatch on).",
        |s| s.redispatches,
    ),
    (
        "xlb_service_pinned_down",
        "Packets whose pinned server was down or in maintenance, kept on it (redispatch off).",
        |s| s.pinned_down,
    ),
    (
        "xlb_service_no_backend",
        "Packets dropped because the service had no usable server.",
        |s| s.no_backend,
    ),
];

/// A server's passive health counter family: name (without `_total`), help, field.
type PassiveCounter = (&'static str, &'static str, fn(&lb_common::PassiveStats) -> u64);

const PASSIVE_COUNTERS: [PassiveCounter; 3] = [
    (
        "xlb_server_syn_sent",
        "TCP connection attempts (SYNs) the data path sent to the server.",
        |p| p.syn_sent,
    ),
    (
        "xlb_server_syn_retransmits",
        "SYNs sent to the server again (same 4-tuple and sequence number): unanswered attempts.",
        |p| p.syn_retransmits,
    ),
    (
        "xlb_server_handshakes",
        "TCP handshakes to the server whose first ACK the data path saw.",
        |p| p.handshakes,
    ),
];
/// The peer update-line counter families, by the word in `xlb_peer_updates_<word>_total`.
pub const PEER_UPDATES: [(&str, &str); 8] = [
    ("sent", "Update lines sent to the peer."),
    (
        "dropped",
        "Update lines not sent to the peer because the connection was down or too slow.",
    ),
    (
        "received",
        "Update lines received from the peer in authenticated frames.",
    ),
    (
        "applied",
        "Update lines from the peer written to the stick table.",
    ),
    (
        "older",
        "Update lines from the peer that changed nothing (the local entry was as recent, or the update had expired).",
    ),
    (
        "unknown",
        "Update lines from the peer naming a service or server this instance does not have.",
    ),
    ("malformed", "Update lines from the peer that do not parse."),
    (
        "refused",
        "Update lines from the peer not written: over its budget, or the table refused the write.",
    ),
];

impl Snapshot {
    /// Encodes every family that has samples, each once, its samples together.
    pub fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        if let Some(g) = &self.datapath {
            family(
                e,
                "xlb_datapath_packets",
                "Packets the data path handled, by what it did with them (event).",
                g.iter().map(|(n, v)| ([("event", *n)], ConstCounter::new(*v))),
            )?;
        }
        let services = || self.services.iter();
        let with_stats = || services().filter_map(|s| Some((s.name.as_str(), s.stats.as_ref()?)));
        for (name, help, field) in SERVICE_COUNTERS {
            family(
                e,
                name,
                help,
                with_stats().map(|(n, t)| ([("service", n)], ConstCounter::new(field(t)))),
            )?;
        }
        family(
            e,
            "xlb_stick_table_used",
            "Live entries of the service's stick table, as of the sweeper's last pass.",
            services().map(|s| ([("service", s.name.as_str())], ConstGauge::new(s.table_used))),
        )?;
        family(
            e,
            "xlb_stick_table_size",
            "Capacity of the service's stick table (0: it keeps none).",
            services().map(|s| ([("service", s.name.as_str())], ConstGauge::new(s.table_size))),
        )?;
        family(
            e,
            "xlb_frontend_announced",
            "1 while the service's VIP is announced (its route is in the [announce] table), else 0.",
            services().filter_map(|s| {
                Some((
                    [("service", s.name.as_str())],
                    ConstGauge::new(u64::from(s.announced?)),
                ))
            }),
        )?;
        // Each server with its labels.
        let servers = || {
            services().flat_map(|s| {
                s.servers
                    .iter()
                    .map(move |v| ([("service", s.name.as_str()), ("server", v.name.as_str())], v))
            })
        };
        let server_stats = || servers().filter_map(|(l, v)| Some((l, v.stats.as_ref()?)));
        family(
            e,
            "xlb_server_packets",
            "Packets the data path sent to the server.",
            server_stats().map(|(l, t)| (l, ConstCounter::new(t.packets))),
        )?;
        family(
            e,
            "xlb_server_bytes",
            "Bytes the data path sent to the server.",
            server_stats().map(|(l, t)| (l, ConstCounter::new(t.bytes))),
        )?;
        let passive = || servers().filter_map(|(l, v)| Some((l, v.passive.as_ref()?)));
        for (name, help, field) in PASSIVE_COUNTERS {
            family(
                e,
                name,
                help,
                passive().map(|(l, p)| (l, ConstCounter::new(field(p)))),
            )?;
        }
        family(
            e,
            "xlb_server_last_down_info",
            "1, with the reason the server last went DOWN (its checks, or passive health's suspicion and how it was confirmed).",
            servers().filter_map(|([service, server], v)| {
                Some((
                    [service, server, ("reason", v.last_down.as_deref()?)],
                    ConstGauge::new(1u64),
                ))
            }),
        )?;
        family(
            e,
            "xlb_server_check_latency_seconds",
            "Latency of the server's latest completed health check.",
            servers().filter_map(|(l, v)| Some((l, ConstGauge::new(v.check_latency?)))),
        )?;
        family(
            e,
            "xlb_server_checks",
            "Health checks run on the server.",
            servers().filter_map(|(l, v)| Some((l, ConstCounter::new(v.checks?)))),
        )?;
        family(
            e,
            "xlb_server_state",
            "1 for the server's current state (UP, DOWN, DRAIN or MAINT), 0 for the others.",
            servers().flat_map(|([service, server], v)| {
                SERVER_STATES.map(|st| {
                    (
                        [service, server, ("state", st)],
                        ConstGauge::new(u64::from(v.state == st)),
                    )
                })
            }),
        )?;
        let Some(p) = &self.peers else { return Ok(()) };
        let no_labels: [(&str, &str); 0] = [];
        let peers = || p.peers.iter().map(|c| ([("peer", c.name.as_str())], c));
        family(
            e,
            "xlb_peer_connected",
            "1 while the connection to the peer is up.",
            peers().map(|(l, c)| (l, ConstGauge::new(u64::from(c.connected)))),
        )?;
        for (i, (word, help)) in PEER_UPDATES.iter().enumerate() {
            family(
                e,
                &format!("xlb_peer_updates_{word}"),
                help,
                peers().map(|(l, c)| (l, ConstCounter::new(c.updates[i]))),
            )?;
        }
        family(
            e,
            "xlb_peer_auth_failures",
            "Connections with the peer closed because a side did not prove the shared key.",
            peers().map(|(l, c)| (l, ConstCounter::new(c.auth_failures))),
        )?;
        family(
            e,
            "xlb_peer_write_timeouts",
            "Connections to the peer closed because it stopped reading.",
            peers().map(|(l, c)| (l, ConstCounter::new(c.write_timeouts))),
        )?;
        family(
            e,
            "xlb_peer_connections_refused",
            "Connections refused because they came from an address that is not a peer's.",
            [(no_labels, ConstCounter::new(p.connections_refused))],
        )?;
        family(
            e,
            "xlb_peer_connections_refused_busy",
            "Connections refused because the peer's address had too many waiting to authenticate.",
            [(no_labels, ConstCounter::new(p.connections_refused_busy))],
        )
    }
}

impl Collector for Snapshot {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        Snapshot::encode(self, encoder)
    }
}

/// One family: its `# HELP` and `# TYPE` (counters get `_total` from the encoder), then every
/// sample; nothing at all when there is no sample.
fn family<L, M>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> std::fmt::Result
where
    L: EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
