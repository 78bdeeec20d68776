//! Issue 11's figures on a fleet of three balancers behind a router (BIRD, BGP + BFD, ECMP
//! with an L4 hash), four backends, 1000 IPv4 and 200 IPv6 client sources
//! ([`crate::fleet::Fleet::with_agents`]). One fleet, the scenarios one after another:
//!
//! 1. `split_sources`: every source opens 5 fresh connections; sources that reached more than
//!    one backend, summed over three rounds: all backends ready; with every table cleared and
//!    app1 draining on lb1 only; after app1 is ready again on lb1.
//! 2. Losing lb2's host (link cut at the switch, agent killed: no goodbye): `lb_loss_detect_s`
//!    (cut until the router's route has the two others only), `lb_loss_moved_sources` (a fresh
//!    connection per source after, against its backend before), `lb_loss_failed_conns` (240
//!    keep-alive connections asked during and after the loss).
//! 3. Its return, as after a reboot (routes and pins gone, link up, agent started): it
//!    announces after its peers' teach or the warm-up; `rejoin_moved_sources`,
//!    `rejoin_failed_conns` as above.
//! 4. `disable announce` on lb3: `drain_failed_conns` (240 keep-alive connections); the time
//!    until the router drops lb3 is printed.
//! 5. Every backend fails its health check: `withdraw_s` from the last balancer's last
//!    server DOWN until the router has no route to the VIP, as an upper bound (from the last
//!    `show stat` poll that still saw a server up; each side polled about every millisecond).
//! 6. `replication_p99_ms`: new clients (spoofed SYNs from the harness's own pool, paced) at
//!    [`NEW_CLIENTS_PER_S`]; from each SYN's send to its entry in all three balancers'
//!    stick tables (read through their pins, polled).
//! 7. `agent_kill_failed_conns`: lb1's agent killed with -9 while 240 keep-alive connections
//!    and a fresh connection per source run; both counted; then it is started again.
//! 8. `full_teach_s`: lb1's table filled with a million entries (through its pinned map, so
//!    nothing is streamed), lb2 rebooted as in 3: from its agent's start until `show peers`
//!    says lb1 taught it.
//!
//! A figure whose scenario failed is `null` in the JSON, and the table says why.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_common::{StickKey, StickPrefixes};
use serde_json::json;

use super::{
    Report,
    fleet_clients::{Held, Round, backends_by_source, check_all, moved},
};
use crate::{
    fleet::{AgentOpts, BALANCERS, Fleet, VIP_TABLE, VIPS, syns::send_syns},
    topology::{SPOOF_POOL4, VIP4},
};

/// The figures of `fleet.json`, in the order.
pub const KEYS: [&str; 11] = [
    "split_sources",
    "lb_loss_detect_s",
    "lb_loss_moved_sources",
    "lb_loss_failed_conns",
    "rejoin_moved_sources",
    "rejoin_failed_conns",
    "drain_failed_conns",
    "withdraw_s",
    "replication_p99_ms",
    "full_teach_s",
    "agent_kill_failed_conns",
];

/// Fresh connections per source in a consistency round.
const CONNS_PER_SOURCE: usize = 5;
/// Keep-alive connections held across a loss, a rejoin, a drain or a kill.
const HELD: usize = 240;
/// The rate of new clients for `replication_p99_ms` (the issue's).
pub const NEW_CLIENTS_PER_S: u32 = 5000;
/// New clients sent at that rate: addresses 10.77.64.1 onwards of the spoof pool, below the
/// client's own link (10.77.100.0/24).
const NEW_CLIENTS: u64 = 8000;
/// Entries in lb1's table for `full_teach_s`.
const TEACH_ENTRIES: u32 = 1_000_000;
/// Bound of every wait for the router.
const ROUTER_BOUND: Duration = Duration::from_secs(30);

/// The figures measured so far, and why the others are missing.
#[derive(Default)]
struct Figures {
    values: BTreeMap<&'static str, f64>,
    missing: Vec<String>,
    notes: Vec<String>,
}

impl Figures {
    /// Runs one scenario; on failure its `keys` stay null, with the error as the reason.
    fn measure(&mut self, what: &str, keys: &[&'static str], f: impl FnOnce(&mut Figures) -> Result<()>) {
        eprintln!("-- {what}");
        if let Err(e) = f(self) {
            eprintln!("   failed: {e:#}");
            for k in keys {
                if !self.values.contains_key(k) {
                    self.missing.push(format!("{k}: {what} failed: {e:#}"));
                }
            }
        }
    }

    fn set(&mut self, key: &'static str, v: f64) {
        debug_assert!(KEYS.contains(&key), "{key} is not a figure of fleet.json");
        self.values.insert(key, v);
    }

    fn note(&mut self, line: String) {
        eprintln!("   {line}");
        self.notes.push(line);
    }

    /// Notes the first few of `failures` (connection: error), if any.
    fn failures(&mut self, what: &str, failures: impl Iterator<Item = String>) {
        let all: Vec<String> = failures.collect();
        if !all.is_empty() {
            let first: Vec<&str> = all.iter().take(3).map(String::as_str).collect();
            self.note(format!("{what}: {} failed, e.g. {}", all.len(), first.join("; ")));
        }
    }
}

pub fn run() -> Result<Report> {
    let fleet = Fleet::with_agents("bench-fleet", AgentOpts::default())?;
    let mut figs = Figures::default();
    figs.note(format!(
        "fleet: {BALANCERS} balancers, {} backends, {} sources; router's route to {VIP4}: {}",
        fleet.backends.len(),
        fleet.sources.len(),
        one_line(&fleet.router_route(VIPS[0])?)
    ));
    let mut pins = BTreeMap::new();
    figs.measure("consistency", &["split_sources"], |f| {
        pins = consistency(&fleet, f)?;
        Ok(())
    });
    figs.measure(
        "losing lb2's host",
        &[
            "lb_loss_detect_s",
            "lb_loss_moved_sources",
            "lb_loss_failed_conns",
        ],
        |f| lb_loss(&fleet, &pins, f),
    );
    figs.measure(
        "lb2 returns",
        &["rejoin_moved_sources", "rejoin_failed_conns"],
        |f| rejoin(&fleet, &pins, f),
    );
    figs.measure("taking lb3 out", &["drain_failed_conns"], |f| drain(&fleet, f));
    figs.measure("every server DOWN", &["withdraw_s"], |f| withdraw(&fleet, f));
    figs.measure("replication", &["replication_p99_ms"], |f| {
        replication(&fleet, &pins, f)
    });
    figs.measure("agent kill -9", &["agent_kill_failed_conns"], |f| {
        agent_kill(&fleet, f)
    });
    figs.measure("full teach", &["full_teach_s"], |f| full_teach(&fleet, &pins, f));
    Ok(report(figs))
}

fn report(figs: Figures) -> Report {
    let mut table = String::from("fleet: issue 11's figures (goal in brackets)\n");
    let goals = ["0", "< 1", "0", "0", "0", "0", "0", "< 1", "< 50", "< 5", "0"];
    let mut obj = serde_json::Map::new();
    for (k, goal) in KEYS.iter().zip(goals) {
        let v = figs.values.get(k).copied();
        obj.insert(k.to_string(), v.map_or(serde_json::Value::Null, |v| json!(v)));
        let shown = match v {
            Some(v) if v.fract() == 0.0 && !k.ends_with("_s") && !k.ends_with("_ms") => format!("{v:.0}"),
            Some(v) => format!("{v:.3}"),
            None => "null".into(),
        };
        table.push_str(&format!("  {k:<26}{shown:>10}   [{goal}]\n"));
    }
    for n in &figs.notes {
        table.push_str(&format!("  - {n}\n"));
    }
    for m in &figs.missing {
        table.push_str(&format!("  NOT MEASURED {m}\n"));
    }
    Report {
        table,
        json: serde_json::Value::Object(obj),
    }
}

/// Scenario 1; returns each source's backend after it (the pins later scenarios compare to).
fn consistency(fleet: &Fleet, figs: &mut Figures) -> Result<BTreeMap<IpAddr, String>> {
    let mut split = BTreeSet::new();
    let mut round = |what: &str, figs: &mut Figures| -> Result<Round> {
        let t0 = Instant::now();
        let r = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, CONNS_PER_SOURCE)?;
        figs.note(format!(
            "{what}: {} sources x {CONNS_PER_SOURCE} connections in {:.1}s: {} split, {} failed; sources per backend {:?}",
            fleet.sources.len(),
            t0.elapsed().as_secs_f64(),
            r.split(),
            r.failed.len(),
            r.per_backend()
        ));
        split.extend(r.reached.iter().filter(|(_, b)| b.len() > 1).map(|(s, _)| *s));
        Ok(r)
    };
    round("all ready", figs)?;
    for lb in 0..BALANCERS {
        for svc in ["be_app", "be_app6"] {
            fleet.api(lb, &format!("clear table {svc}"))?;
        }
    }
    for svc in ["be_app", "be_app6"] {
        expect_empty(fleet.api(0, &format!("set server {svc}/app1 state drain"))?)?;
    }
    round("tables cleared, app1 draining on lb1 only", figs)?;
    for svc in ["be_app", "be_app6"] {
        expect_empty(fleet.api(0, &format!("set server {svc}/app1 state ready"))?)?;
    }
    let last = round("app1 ready again on lb1", figs)?;
    figs.set("split_sources", split.len() as f64);
    Ok(last.first())
}

/// Emulates a host that dies: its link goes down at the switch and its agent is killed.
pub fn host_dies(fleet: &Fleet, lb: usize) -> Result<()> {
    fleet.cut_link(lb)?;
    fleet.kill_agent(lb);
    Ok(())
}

/// Emulates the dead host's reboot: what lived in its kernel is gone (table 200's routes, the
/// agent's pins and with them its XDP program), its link comes up, its agent starts.
pub fn host_returns(fleet: &Fleet, lb: usize) -> Result<()> {
    let id = fleet.balancers[lb];
    for family in ["-4", "-6"] {
        fleet.topo.exec(
            id,
            &["ip", family, "route", "flush", "table", &VIP_TABLE.to_string()],
        )?;
    }
    crate::lbenv::remove_agent_files(&fleet.agents[lb].bpffs);
    fleet.restore_link(lb)?;
    fleet.start_agent(lb)
}

/// A fresh connection per source; (moved against `pins`, failed). Notes the first failures.
fn moved_now(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<(usize, usize)> {
    let r = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, 1)?;
    figs.failures("fresh connections", r.failed.iter().cloned());
    Ok((moved(pins, &r.first()), r.failed.len()))
}

/// The keep-alive connections for a scenario: from the first [`HELD`] sources.
fn hold(fleet: &Fleet) -> Result<Vec<Held>> {
    let v4 = fleet.sources.iter().filter(|s| s.is_ipv4()).take(HELD * 5 / 6);
    let v6 = fleet.sources.iter().filter(|s| s.is_ipv6()).take(HELD / 6);
    let sources: Vec<IpAddr> = v4.chain(v6).copied().collect();
    Held::open(&fleet.topo, fleet.client, &sources)
}

fn lb_loss(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<()> {
    let mut held = hold(fleet)?;
    let mut failed = BTreeMap::new();
    let cut = Instant::now();
    host_dies(fleet, 1)?;
    // Requests during the loss (those hashed to lb2 wait for TCP's retransmission) while the
    // router's route is watched.
    let detect = std::thread::scope(|s| {
        let asked = s.spawn(|| check_all(&mut held, &mut failed));
        let d = fleet
            .wait_next_hops(VIPS[0], &[0, 2], ROUTER_BOUND)
            .map(|_| cut.elapsed());
        asked.join().expect("keep-alive thread");
        d
    })?;
    figs.set("lb_loss_detect_s", detect.as_secs_f64());
    let during = failed.len();
    check_all(&mut held, &mut failed);
    figs.set("lb_loss_failed_conns", failed.len() as f64);
    figs.failures(
        "lb2 lost, keep-alive",
        failed.iter().map(|(s, e)| format!("{s}: {e}")),
    );
    let (m, f) = moved_now(fleet, pins, figs)?;
    figs.set("lb_loss_moved_sources", m as f64);
    figs.note(format!(
        "lb2 lost: router dropped it {detect:?} after the cut; {HELD} keep-alive connections: {during} failed during, {} in all; fresh connections: {m} moved, {f} failed; route now {}",
        failed.len(),
        one_line(&fleet.router_route(VIPS[0])?)
    ));
    Ok(())
}

fn rejoin(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<()> {
    let mut held = hold(fleet)?;
    let started = Instant::now();
    host_returns(fleet, 1)?;
    let all: Vec<usize> = (0..BALANCERS).collect();
    fleet.wait_next_hops(VIPS[0], &all, ROUTER_BOUND)?;
    let back = started.elapsed();
    let peers = fleet.api(1, "show peers")?;
    let mut failed = BTreeMap::new();
    check_all(&mut held, &mut failed);
    figs.set("rejoin_failed_conns", failed.len() as f64);
    figs.failures(
        "lb2 back, keep-alive",
        failed.iter().map(|(s, e)| format!("{s}: {e}")),
    );
    let (m, f) = moved_now(fleet, pins, figs)?;
    figs.set("rejoin_moved_sources", m as f64);
    figs.note(format!(
        "lb2 back (rebooted): its next hop returned {:.2}s after its agent started (warm-up {}); \
         keep-alive: {} failed; fresh: {m} moved, {f} failed; lb2 `show peers` then: {}",
        back.as_secs_f64(),
        AgentOpts::default().warmup,
        failed.len(),
        one_line(&peers)
    ));
    Ok(())
}

fn drain(fleet: &Fleet, figs: &mut Figures) -> Result<()> {
    let mut held = hold(fleet)?;
    let t0 = Instant::now();
    expect_empty(fleet.api(2, "disable announce")?)?;
    let gone = fleet.wait_next_hops(VIPS[0], &[0, 1], ROUTER_BOUND)?;
    let mut failed = BTreeMap::new();
    check_all(&mut held, &mut failed);
    figs.set("drain_failed_conns", failed.len() as f64);
    figs.failures(
        "lb3 out, keep-alive",
        failed.iter().map(|(s, e)| format!("{s}: {e}")),
    );
    figs.note(format!(
        "`disable announce` on lb3: the router dropped it {gone:?} after the command ({:?} in all); keep-alive: {} failed",
        t0.elapsed(),
        failed.len()
    ));
    expect_empty(fleet.api(2, "enable announce")?)?;
    let all: Vec<usize> = (0..BALANCERS).collect();
    fleet.wait_next_hops(VIPS[0], &all, ROUTER_BOUND)?;
    Ok(())
}

/// Whether `show stat` says every server of be_app is DOWN.
fn all_down(stat: &str) -> bool {
    let states: Vec<&str> = stat
        .lines()
        .filter(|l| l.starts_with("be_app,"))
        .filter_map(|l| l.split(',').nth(10))
        .collect();
    !states.is_empty() && states.iter().all(|s| *s == "DOWN")
}

/// Polls `done` (every millisecond or so) until it says yes or `ROUTER_BOUND` passes:
/// (when the last poll that said no began, when yes was seen). What `done` watches changed
/// between the two.
fn first_yes(mut done: impl FnMut() -> Result<bool>) -> Result<Option<(Instant, Instant)>> {
    let t0 = Instant::now();
    let mut last_no = t0;
    while t0.elapsed() < ROUTER_BOUND {
        let asked = Instant::now();
        if done()? {
            return Ok(Some((last_no, Instant::now())));
        }
        last_no = asked;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(None)
}

fn withdraw(fleet: &Fleet, figs: &mut Figures) -> Result<()> {
    for h in &fleet.http {
        h.set_health_status(503);
    }
    let t0 = Instant::now();
    // One watcher per balancer and one on the router, each polling on its own.
    let (downs, gone) = std::thread::scope(|s| {
        let downs: Vec<_> = (0..BALANCERS)
            .map(|lb| s.spawn(move || first_yes(|| Ok(all_down(&fleet.api(lb, "show stat")?)))))
            .collect();
        let gone = first_yes(|| Ok(fleet.router_next_hops(VIPS[0])?.is_empty()));
        let downs: Vec<Result<Option<(Instant, Instant)>>> = downs
            .into_iter()
            .map(|h| h.join().expect("watcher thread"))
            .collect();
        (downs, gone)
    });
    for h in &fleet.http {
        h.set_health_status(200);
    }
    let downs = downs.into_iter().collect::<Result<Option<Vec<_>>>>()?;
    let (Some(downs), Some((_, gone))) = (downs, gone?) else {
        bail!("within {ROUTER_BOUND:?}, not every balancer saw be_app's servers DOWN or the route stayed");
    };
    // The last DOWN came after the last poll of its balancer that still saw a server up
    // began: the time from then until the route was seen gone bounds `withdraw_s` from above.
    let last_down_after = downs.iter().map(|(no, _)| *no).max().expect("three balancers");
    let last_down_seen = downs.iter().map(|(_, yes)| *yes).max().expect("three balancers");
    let s = gone.saturating_duration_since(last_down_after);
    figs.set("withdraw_s", s.as_secs_f64());
    let all: Vec<usize> = (0..BALANCERS).collect();
    let back = Instant::now();
    fleet.wait_next_hops(VIPS[0], &all, ROUTER_BOUND)?;
    figs.note(format!(
        "every server DOWN: the last balancer's `show stat` said so {:?} after the checks began failing; \
         withdraw_s is an upper bound: from the last poll that still saw a server up to the route seen gone \
         ({s:?}; the route was seen gone {:?} after the last DOWN was seen); back on all three {:?} after the \
         servers were healthy again",
        last_down_seen - t0,
        gone.saturating_duration_since(last_down_seen),
        back.elapsed()
    ));
    Ok(())
}

/// be_app's service id (the same on every balancer: one config) and the table prefixes.
fn app_service(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>) -> Result<u32> {
    let probe = pins
        .keys()
        .find(|s| s.is_ipv4())
        .context("no IPv4 source pinned")?;
    let tables = xlb::datapath::stick_maps::StickTables::from_pin(&stick_pin(fleet, 0))?;
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

fn replication(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<()> {
    let service = app_service(fleet, pins)?;
    // The spoof pool is the client's own and routed to it by the router: the backends'
    // SYN-ACKs come back there and its kernel answers them with RSTs.
    let c4 = fleet.topo.host(fleet.client).ipv4;
    let (pool, len) = SPOOF_POOL4;
    fleet.topo.ip_batch(
        fleet.client,
        &[format!("route replace local {pool}/{len} dev lo")],
    )?;
    fleet
        .topo
        .ip_batch(fleet.router, &[format!("route replace {pool}/{len} via {c4}")])?;
    let total = NEW_CLIENTS;
    let per_ms = (NEW_CLIENTS_PER_S / 1000).max(1) as usize;
    let base = u32::from(pool) + 1;
    let (tx, rx) = mpsc::channel::<(IpAddr, Instant)>();
    let pins_of: Vec<_> = (0..BALANCERS).map(|lb| stick_pin(fleet, lb)).collect();
    let dst = SocketAddr::new(VIPS[0], 80);
    let (sent, send_s, latencies, missing) = std::thread::scope(|s| -> Result<_> {
        let poller = s.spawn(move || poll_arrivals(&pins_of, service, rx));
        let t0 = Instant::now();
        let mut sent = 0u64;
        while sent < total {
            let due = t0 + Duration::from_micros(sent * 1_000_000 / NEW_CLIENTS_PER_S as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let flows: Vec<(IpAddr, u16)> = (0..per_ms as u64)
                .map(|i| {
                    (
                        IpAddr::from(std::net::Ipv4Addr::from(base + (sent + i) as u32)),
                        0,
                    )
                })
                .collect();
            send_syns(&fleet.topo, fleet.client, flows.clone(), dst)?;
            let at = Instant::now();
            for (src, _) in flows {
                let _ = tx.send((src, at));
            }
            sent += per_ms as u64;
        }
        let send_s = t0.elapsed().as_secs_f64();
        drop(tx);
        let (lat, missing) = poller.join().expect("poller thread")?;
        Ok((sent, send_s, lat, missing))
    })?;
    let rate = sent as f64 / send_s;
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    // p99 over every new client; one that never arrived counts as slower than any.
    let rank = ((sent as f64) * 0.99).ceil() as usize;
    let p99 = ms.get(rank.saturating_sub(1)).copied();
    figs.note(format!(
        "replication: {sent} new clients at {rate:.0}/s (asked {NEW_CLIENTS_PER_S}/s); on all three balancers: {}; \
         {missing} never seen on all three within 5 s; p50 {:.2} ms, p99 {}, max {:.2} ms \
         (SYN sent -> entry in the pinned stick table, polled)",
        ms.len(),
        ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN),
        p99.map_or("beyond the missing".into(), |v| format!("{v:.2} ms")),
        ms.last().copied().unwrap_or(f64::NAN),
    ));
    match p99 {
        Some(v) => figs.set("replication_p99_ms", v),
        None => bail!("{missing} of {sent} new clients never reached every balancer: no p99"),
    }
    Ok(())
}

/// Polls the stick tables at `pins` for each new client received on `rx` until every one is
/// in all of them, or 5 s after the last was sent; (latencies, never seen everywhere).
fn poll_arrivals(
    pins: &[std::path::PathBuf],
    service: u32,
    rx: mpsc::Receiver<(IpAddr, Instant)>,
) -> Result<(Vec<Duration>, usize)> {
    let tables = pins
        .iter()
        .map(|p| xlb::datapath::stick_maps::StickTables::from_pin(p))
        .collect::<Result<Vec<_>, _>>()?;
    let maps: Vec<_> = tables
        .iter()
        .map(|t| t.get(service).map(|t| &t.map).context("no table for be_app"))
        .collect::<Result<_>>()?;
    let mut pending: Vec<(StickKey, Instant, Vec<bool>)> = Vec::new();
    let mut done = Vec::new();
    let mut closed_at: Option<Instant> = None;
    loop {
        loop {
            match rx.try_recv() {
                Ok((src, at)) => pending.push((
                    StickKey::for_client(src, service as u16, 0, WHOLE),
                    at,
                    vec![false; maps.len()],
                )),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        pending.retain_mut(|(k, at, seen)| {
            for (m, s) in maps.iter().zip(seen.iter_mut()) {
                if !*s {
                    *s = m.get(k, 0).is_ok();
                }
            }
            if seen.iter().all(|s| *s) {
                done.push(at.elapsed());
                false
            } else {
                true
            }
        });
        match closed_at {
            Some(t) if pending.is_empty() || t.elapsed() > Duration::from_secs(5) => {
                return Ok((done, pending.len()));
            }
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

fn agent_kill(fleet: &Fleet, figs: &mut Figures) -> Result<()> {
    let mut held = hold(fleet)?;
    let mut failed = BTreeMap::new();
    fleet.kill_agent(0);
    let fresh = std::thread::scope(|s| {
        let asked = s.spawn(|| check_all(&mut held, &mut failed));
        let fresh = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, 1);
        asked.join().expect("keep-alive thread");
        fresh
    })?;
    check_all(&mut held, &mut failed);
    let all: Vec<usize> = (0..BALANCERS).collect();
    let hops = fleet.router_next_hops(VIPS[0])?;
    let kept = hops.len() == BALANCERS;
    figs.set(
        "agent_kill_failed_conns",
        (failed.len() + fresh.failed.len()) as f64,
    );
    figs.failures(
        "lb1's agent killed",
        failed
            .iter()
            .map(|(s, e)| format!("{s} (keep-alive): {e}"))
            .chain(fresh.failed.iter().cloned()),
    );
    fleet.start_agent(0)?;
    fleet.wait_next_hops(VIPS[0], &all, ROUTER_BOUND)?;
    figs.note(format!(
        "lb1's agent killed (-9): keep-alive {} failed, fresh {} of {} failed; the router kept {} next hops{}",
        failed.len(),
        fresh.failed.len(),
        fleet.sources.len(),
        hops.len(),
        if kept { "" } else { " (SOME WITHDRAWN)" }
    ));
    Ok(())
}

fn full_teach(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<()> {
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
    let mut tables = xlb::datapath::stick_maps::StickTables::from_pin(&stick_pin(fleet, 0))?;
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
            _pad: 0,
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
    let logged = fleet.agents[1]
        .log_text()
        .lines()
        .rfind(|l| l.contains("taught us its table"))
        .unwrap_or("(nothing)")
        .to_string();
    figs.note(format!(
        "full teach: lb2 started -> `show peers` says lb1 taught it: {s:.2}s (includes the agent's start); lb2 logged: {logged}"
    ));
    Ok(())
}

/// An API answer that must be empty (a command that succeeded).
fn expect_empty(answer: String) -> Result<()> {
    if answer.trim().is_empty() {
        Ok(())
    } else {
        bail!("the agent answered: {}", answer.trim())
    }
}

/// `text` on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
