//! The figures read from the balancers' stick tables through their pins: how fast a new
//! client's entry reaches every balancer (`replication_p99_ms`) and how long a rebooted one
//! takes to be taught a million-entry table (`full_teach_s`). See [`super`] for the scenarios.

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_common::{StickKey, StickPrefixes};
use xlb::datapath::stick_maps::StickTables;

use super::{Figures, host_dies, host_returns};
use crate::{
    fleet::{BALANCERS, Fleet, VIPS, syns::open_connections},
    topology::SPOOF_POOL4,
};

/// The rate of new clients for `replication_p99_ms` (the issue's).
pub const NEW_CLIENTS_PER_S: u32 = 5000;
/// New clients sent at that rate: addresses 10.77.64.1 onwards of the spoof pool, below the
/// client's own link (10.77.100.0/24).
const NEW_CLIENTS: u64 = 8000;
/// Entries in lb1's table for `full_teach_s`.
const TEACH_ENTRIES: u32 = 1_000_000;
/// be_app's service id (the same on every balancer: one config) and the table prefixes.
fn app_service(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>) -> Result<u32> {
    let probe = pins
        .keys()
        .find(|s| s.is_ipv4())
        .context("no IPv4 source pinned")?;
    let tables = StickTables::from_pin(&stick_pin(fleet, 0))?;
    tables
        .iter()
        .find_map(|(id, t)| {
            let k = StickKey::for_client(*probe, id as u16, 0, WHOLE);
            t.map.get(&k, 0).ok().map(|_| id)
        })
        .context("no table of lb1 holds a pinned IPv4 client")
}

const WHOLE: StickPrefixes = StickPrefixes { v4: 32, v6: 128 };

fn stick_pin(fleet: &Fleet, lb: usize) -> std::path::PathBuf {
    fleet.agents[lb]
        .bpffs
        .join("maps")
        .join(lb_common::MAP_STICK_TABLES)
}

pub(super) fn replication(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<()> {
    let service = app_service(fleet, pins)?;
    // The pool is the client's own and routed to it by the router: the backends' SYN-ACKs
    // come back there, and its kernel completes each handshake while the socket is held.
    let c4 = fleet.topo.host(fleet.client).ipv4;
    let (pool, len) = SPOOF_POOL4;
    fleet.topo.ip_batch(
        fleet.client,
        &[format!("route replace local {pool}/{len} dev lo")],
    )?;
    fleet
        .topo
        .ip_batch(fleet.router, &[format!("route replace {pool}/{len} via {c4}")])?;
    // Opened before the first connection: the poller must be polling when the first entry can
    // be made.
    let tables = (0..BALANCERS)
        .map(|lb| StickTables::from_pin(&stick_pin(fleet, lb)))
        .collect::<Result<Vec<_>, _>>()?;
    let per_ms = (NEW_CLIENTS_PER_S / 1000).max(1) as usize;
    let base = u32::from(pool) + 1;
    let (tx, rx) = mpsc::channel::<IpAddr>();
    let dst = SocketAddr::new(VIPS[0], 80);
    let (sent, send_s, arrivals) = std::thread::scope(|s| -> Result<_> {
        let poller = s.spawn(|| poll_arrivals(&tables, service, rx));
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut held = VecDeque::new();
        while sent < NEW_CLIENTS {
            let due = t0 + Duration::from_micros(sent * 1_000_000 / NEW_CLIENTS_PER_S as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let flows: Vec<(IpAddr, u16)> = (0..per_ms as u64)
                .map(|i| (IpAddr::from(Ipv4Addr::from(base + (sent + i) as u32)), 0))
                .collect();
            for (src, _) in &flows {
                let _ = tx.send(*src);
            }
            held.push_back((
                Instant::now(),
                open_connections(&fleet.topo, fleet.client, flows, dst)?,
            ));
            while held.front().is_some_and(|(at, _)| at.elapsed() > HOLD) {
                held.pop_front();
            }
            sent += per_ms as u64;
        }
        let send_s = t0.elapsed().as_secs_f64();
        drop(tx);
        let arrivals = poller.join().expect("poller thread")?;
        Ok((sent, send_s, arrivals))
    })?;
    let rate = sent as f64 / send_s;
    let mut ms: Vec<f64> = arrivals
        .latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let made = ms.len() + arrivals.partial;
    // p99 over every entry a balancer made; one never seen on all three counts as slower than any.
    let rank = ((made as f64) * 0.99).ceil() as usize;
    let p99 = ms.get(rank.saturating_sub(1)).copied();
    figs.note(format!(
        "replication: {sent} new clients at {rate:.0}/s (asked {NEW_CLIENTS_PER_S}/s); entries made by a balancer: \
         {made}; then on all three: {}; not on all three within 5 s: {}; never made (handshake not completed): {}; \
         p50 {:.2} ms, p99 {}, max {:.2} ms (first seen in any balancer's table -> seen in all three, polled)",
        ms.len(),
        arrivals.partial,
        arrivals.never,
        ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN),
        p99.map_or("beyond those not on all three".into(), |v| format!("{v:.2} ms")),
        ms.last().copied().unwrap_or(f64::NAN),
    ));
    figs.note(format!(
        "replication: the slowest entries (first seen, s after the first client; latency, ms): {}",
        arrivals
            .slowest
            .iter()
            .map(|(at, d)| format!("{:.3} s: {:.1}", at.as_secs_f64(), d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for lb in 0..BALANCERS {
        let peers = fleet.api(lb, "show peers")?;
        figs.note(format!(
            "replication: then lb{}'s `show peers`:\n{}",
            lb + 1,
            peers.trim_end()
        ));
    }
    match p99 {
        Some(v) => figs.set("replication_p99_ms", v),
        None => bail!(
            "{} of {made} new clients' entries never reached every balancer: no p99",
            arrivals.partial
        ),
    }
    Ok(())
}

/// How long each new client's socket is held (its handshake completes meanwhile).
const HOLD: Duration = Duration::from_millis(200);

/// What [`poll_arrivals`] saw.
struct Arrivals {
    /// Per entry seen in all tables: from its first sight in one to its sight in all.
    latencies: Vec<Duration>,
    /// The slowest of those: (first sight, counted from the poller's start; the latency).
    slowest: Vec<(Duration, Duration)>,
    /// Entries seen in some tables but not all within 5 s of the last client.
    partial: usize,
    /// Clients whose entry no table held within 5 s of the last client.
    never: usize,
}

/// Polls `tables` for each new client received on `rx` until every one is in all of them, or
/// 5 s after the last was sent.
fn poll_arrivals(tables: &[StickTables], service: u32, rx: mpsc::Receiver<IpAddr>) -> Result<Arrivals> {
    let maps: Vec<_> = tables
        .iter()
        .map(|t| t.get(service).map(|t| &t.map).context("no table for be_app"))
        .collect::<Result<_>>()?;
    // (key, first sight in any table, seen in each)
    let mut pending: Vec<(StickKey, Option<Instant>, Vec<bool>)> = Vec::new();
    let mut latencies = Vec::new();
    let mut slowest: Vec<(Duration, Duration)> = Vec::new();
    let started = Instant::now();
    let mut closed_at: Option<Instant> = None;
    loop {
        loop {
            match rx.try_recv() {
                Ok(src) => pending.push((
                    StickKey::for_client(src, service as u16, 0, WHOLE),
                    None,
                    vec![false; maps.len()],
                )),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        let now = Instant::now();
        pending.retain_mut(|(k, first, seen)| {
            for (m, s) in maps.iter().zip(seen.iter_mut()) {
                if !*s {
                    *s = m.get(k, 0).is_ok();
                }
            }
            if seen.iter().any(|s| *s) {
                first.get_or_insert(now);
            }
            match first {
                Some(at) if seen.iter().all(|s| *s) => {
                    latencies.push(now - *at);
                    slowest.push((*at - started, now - *at));
                    if slowest.len() > 20 {
                        slowest.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
                        slowest.truncate(10);
                    }
                    false
                }
                _ => true,
            }
        });
        match closed_at {
            Some(t) if pending.is_empty() || t.elapsed() > Duration::from_secs(5) => {
                let never = pending.iter().filter(|(_, first, _)| first.is_none()).count();
                slowest.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
                slowest.truncate(10);
                return Ok(Arrivals {
                    latencies,
                    slowest,
                    partial: pending.len() - never,
                    never,
                });
            }
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

pub(super) fn full_teach(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<()> {
    let service = app_service(fleet, pins)?;
    // Room for a million entries in be_app's table on lb1 and lb2 (the first `size =` of the
    // config is be_app's); lb1 resizes at its restart, keeping its entries.
    let size = TEACH_ENTRIES + 100_000;
    for lb in [0, 1] {
        let path = &fleet.agents[lb].config;
        let text = std::fs::read_to_string(path)?;
        let at = text.find("size = ").context("no stick size in the config")?;
        let end = at + text[at..].find(',').context("stick line")?;
        std::fs::write(path, format!("{}size = {size}{}", &text[..at], &text[end..]))?;
    }
    fleet.start_agent(0)?;
    host_dies(fleet, 1)?;
    let mut tables = StickTables::from_pin(&stick_pin(fleet, 0))?;
    let table = tables.get_mut(service).context("lb1 has no be_app table")?;
    let backend = {
        let probe = pins.keys().find(|s| s.is_ipv4()).context("no IPv4 source")?;
        table
            .map
            .get(&StickKey::for_client(*probe, service as u16, 0, WHOLE), 0)?
            .backend
    };
    let now = xlb::datapath::coarse_now_ns();
    let t0 = Instant::now();
    for i in 0..TEACH_ENTRIES {
        let [_, b, c, d] = i.to_be_bytes();
        let key = StickKey::new(
            crate::fixture::v4([10, 100 + b, c, d]),
            service as u16,
            0,
            lb_common::FAMILY_V4,
        );
        let entry = lb_common::StickEntry {
            last_seen_ns: now,
            backend,
            syn_at: 0,
        };
        table.map.insert(key, entry, 0)?;
    }
    figs.note(format!(
        "full teach: {TEACH_ENTRIES} entries written into lb1's table in {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
    let started = Instant::now();
    host_returns(fleet, 1)?;
    let taught = |p: &str| p.lines().any(|l| l.starts_with("lb1 ") && l.ends_with(" yes"));
    loop {
        let p = fleet.api(1, "show peers")?;
        if taught(&p) {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("lb2 was not taught by lb1 within 120 s:\n{p}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = started.elapsed().as_secs_f64();
    figs.set("full_teach_s", s);
    let last_line = |lb: usize, has: &str| {
        fleet.agents[lb]
            .log_text()
            .lines()
            .rfind(|l| l.contains(has))
            .unwrap_or("(nothing)")
            .to_string()
    };
    let logged = last_line(1, "taught us its table");
    // lb2's start, as its log tells it (the lines of this, its last, run).
    let log2 = fleet.agents[1].log_text();
    let start = log2.rfind("xlb: starting with").unwrap_or(0);
    figs.note(format!(
        "full teach: lb2's log of this start:\n{}",
        log2[start..].lines().take(25).collect::<Vec<_>>().join("\n")
    ));
    let sender = last_line(0, "sent the table");
    figs.note(format!(
        "full teach: lb2 started -> `show peers` says lb1 taught it: {s:.2}s (includes the agent's start); lb2 logged: {logged}; lb1 logged: {sender}"
    ));
    Ok(())
}
