//! Prometheus text endpoint (`metrics = "9100"` listens on 127.0.0.1; `"addr:port"` elsewhere): per-service and per-server
//! packets, bytes, stick counters, table use, server state; global data-path counters.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc, sync::Mutex};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::watch,
};

use crate::{services::Balancer, state::AgentState};

pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Mutex<Balancer>>,
    state: Arc<AgentState>,
    mut shutdown: watch::Receiver<bool>,
) {
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
    loop {
        let (mut s, _) = tokio::select! {
            r = l.accept() => match r { Ok(c) => c, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let (shared, state) = (shared.clone(), state.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
            let body =
                tokio::task::spawn_blocking(move || render(&shared.lock().expect("balancer lock"), &state))
                    .await
                    .unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

/// The exposition text.
pub fn render(b: &Balancer, state: &AgentState) -> String {
    let mut o = String::new();
    if let Ok(g) = b.dp.global_stats() {
        let _ = writeln!(o, "# TYPE xlb_datapath_packets_total counter");
        for (n, v) in g.shown() {
            let _ = writeln!(o, "xlb_datapath_packets_total{{event=\"{n}\"}} {v}");
        }
    }
    let _ = writeln!(o, "# TYPE xlb_service_packets_total counter");
    for s in &b.services {
        let n = &s.cfg.name;
        if let Ok(t) = b.dp.service_stats(s.id) {
            for (k, v) in [
                ("packets", t.packets),
                ("bytes", t.bytes),
                ("stick_hits", t.stick_hits),
                ("stick_misses", t.stick_misses),
                ("stick_inserts", t.stick_inserts),
                ("stick_expired", t.stick_expired),
                ("redispatches", t.redispatches),
                ("pinned_down", t.pinned_down),
                ("no_backend", t.no_backend),
            ] {
                let _ = writeln!(o, "xlb_service_{k}_total{{service=\"{n}\"}} {v}");
            }
        }
        // As of the sweeper's last pass: walking the table here would hold the agent's lock
        // for seconds at a million entries.
        let _ = writeln!(
            o,
            "xlb_stick_table_used{{service=\"{n}\"}} {}",
            state.table_used(s.id as u16)
        );
        // The capacity of the service's own table (0: it keeps none).
        let _ = writeln!(
            o,
            "xlb_stick_table_size{{service=\"{n}\"}} {}",
            b.dp.stick_capacity_of(s.id).unwrap_or(0)
        );
        for v in &s.servers {
            let sv = &v.cfg.name;
            if let Ok(t) = b.dp.backend_stats(v.id) {
                let _ = writeln!(
                    o,
                    "xlb_server_packets_total{{service=\"{n}\",server=\"{sv}\"}} {}",
                    t.packets
                );
                let _ = writeln!(
                    o,
                    "xlb_server_bytes_total{{service=\"{n}\",server=\"{sv}\"}} {}",
                    t.bytes
                );
            }
            if let Some(c) = state.checks.get(&(n.clone(), sv.clone())) {
                if let Some(l) = c.last_latency {
                    let _ = writeln!(
                        o,
                        "xlb_server_check_latency_seconds{{service=\"{n}\",server=\"{sv}\"}} {:.6}",
                        l.as_secs_f64()
                    );
                }
                let _ = writeln!(
                    o,
                    "xlb_server_checks_total{{service=\"{n}\",server=\"{sv}\"}} {}",
                    c.checks
                );
            }
            for st in ["UP", "DOWN", "DRAIN", "MAINT"] {
                let _ = writeln!(
                    o,
                    "xlb_server_state{{service=\"{n}\",server=\"{sv}\",state=\"{st}\"}} {}",
                    (v.state_word() == st) as u8
                );
            }
        }
    }
    if let Some(p) = &state.peers {
        use std::sync::atomic::Ordering::Relaxed;
        for (peer, c) in &p.list {
            let pn = &peer.name;
            let _ = writeln!(
                o,
                "xlb_peer_connected{{peer=\"{pn}\"}} {}",
                c.connected.load(Relaxed) as u8
            );
            for (k, v) in [
                ("sent", &c.sent),
                ("dropped", &c.dropped),
                ("received", &c.received),
                ("applied", &c.applied),
                ("older", &c.older),
                ("unknown", &c.unknown),
                ("malformed", &c.malformed),
                ("refused", &c.refused),
            ] {
                let _ = writeln!(
                    o,
                    "xlb_peer_updates_{k}_total{{peer=\"{pn}\"}} {}",
                    v.load(Relaxed)
                );
            }
        }
        for (peer, c) in &p.list {
            let pn = &peer.name;
            let _ = writeln!(
                o,
                "xlb_peer_auth_failures_total{{peer=\"{pn}\"}} {}",
                c.bad_auth.load(Relaxed)
            );
            let _ = writeln!(
                o,
                "xlb_peer_write_timeouts_total{{peer=\"{pn}\"}} {}",
                c.timeouts.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "xlb_peer_connections_refused_total {}",
            p.refused.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "xlb_peer_connections_refused_busy_total {}",
            p.refused_busy.load(Relaxed)
        );
    }
    o
}
